"""Lists of inputs: a UTF-8 BOM, CRLF line ends and ``#`` comment lines are handled; names that are
not UTF-8 (Linux names are bytes) keep working; a file that is not text is one line naming the file
and the line, exit 2."""

from __future__ import annotations

import os
import pytest

from tests.helpers import write_test_video
from tests.trust.trust_helpers import assert_no_traceback, cli_args, features, features_folder, run


@pytest.mark.slow
def test_bom_crlf_comments_and_non_utf8_names(tmp_path):
    folder = tmp_path / "videos"
    a = write_test_video(folder / "a.mp4")
    b = write_test_video(folder / "b b.mp4", num_frames=20)
    latin1 = os.fsdecode(os.fsencode(folder) + b"/caf\xe9.mp4")  # not UTF-8: its bytes are its name
    os.rename(write_test_video(folder / "cafe.mp4"), latin1)  # (OpenCV cannot take such a name itself)
    content = (b"\xef\xbb\xbf" + os.fsencode(a) + b"\r\n# a comment line\r\n   \r\n  #another.mp4\r\n"
               + os.fsencode(b) + b"  \r\n" + os.fsencode(latin1) + b"\r\n")
    listing = tmp_path / "list.txt"
    listing.write_bytes(content)
    proc = run(cli_args(tmp_path, f"file_with_video_paths={listing}"))
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc)
    assert "3 done" in proc.stderr, proc.stderr
    for stem in ("a", "b b"):
        features(tmp_path, stem)
    saved = [p for p in os.listdir(os.fsencode(features_folder(tmp_path))) if p.endswith(b".npy")]
    assert b"caf\xe9_r21d.npy" in saved  # the same bytes as the video's name
    assert "line 6" in proc.stderr  # told which line was taken as raw bytes


def test_binary_file_given_as_list_is_one_line_naming_file_and_line(tmp_path):
    video = write_test_video(tmp_path / "clip.mp4")
    for listing in (video, tmp_path / "random.bin"):
        if not listing.exists():
            listing.write_bytes(bytes(range(256)) * 16)
        proc = run(cli_args(tmp_path, f"file_with_video_paths={listing}"))
        assert proc.returncode == 2, proc.stderr
        assert_no_traceback(proc)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "file_with_video_paths" in lines[0] and str(listing) in lines[0], lines
        assert "line " in lines[0]
    assert not (tmp_path / "out").exists()

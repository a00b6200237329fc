"""Shared folders: files we write where other workers (or other users) can plant things, the run
report, outputs, provenance records, claims and re-encodes, are never opened through a symlink."""

from __future__ import annotations


import pytest

from tests.helpers import write_test_video
from tests.trust.trust_helpers import (MODEL, assert_no_traceback, cli_args, failed_lines, features,
                                       features_folder, run)


@pytest.mark.slow
def test_planted_symlinks_are_never_followed(tmp_path):
    clips = [write_test_video(tmp_path / f"{name}.mp4") for name in ("a", "b", "c")]
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = features_folder(tmp_path)
    folder.mkdir(parents=True)
    tmp_folder = tmp_path / "tmp" / "r21d" / MODEL
    tmp_folder.mkdir(parents=True)
    planted = {
        folder / "run_report.jsonl": outside / "report",
        folder / "a_r21d.npy": outside / "features",
        folder / ".b_r21d.npy.provenance.json": outside / "record",
        tmp_folder / "b_new_fps.mp4": outside / "reencode",
    }
    for link, target in planted.items():
        target.write_text("not yours\n")
        link.symlink_to(target)
    (folder / ".c_r21d.npy.lock").symlink_to("/dev/zero")  # a claim that would never finish reading

    proc = run(cli_args(tmp_path, "video_paths=[" + ",".join(map(str, clips)) + "]", "extraction_fps=10"))
    assert_no_traceback(proc)
    assert proc.returncode == 1, proc.stderr
    assert [line.split(":")[0] for line in failed_lines(proc.stdout + proc.stderr)] == [f"FAILED {clips[2]}"]
    assert "run report" in proc.stderr  # told that it was not written
    for target in planted.values():
        assert target.read_text() == "not yours\n"
    features(tmp_path, "a"), features(tmp_path, "b")
    assert not (folder / "a_r21d.npy").is_symlink()
    assert (folder / ".b_r21d.npy.provenance.json").is_file() and not (folder / ".b_r21d.npy.provenance.json").is_symlink()
    assert (folder / "run_report.jsonl").is_symlink()  # left alone, not followed
    assert (tmp_folder / "b_new_fps.mp4").is_symlink()  # left alone: re-encodes go to private names first

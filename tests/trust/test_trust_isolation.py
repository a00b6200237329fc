"""Isolation: whatever a list line holds (NUL bytes, names over 255 bytes, long stems, FIFOs,
devices, sockets), that one video fails with one line and every other video is extracted, with
or without the ffmpeg re-encode; no run hangs, and nothing (file or process) is left behind."""

from __future__ import annotations

import os
import socket

import pytest

from tests.helpers import write_test_video
from tests.trust.trust_helpers import (assert_no_traceback, cli_args, failed_lines, features, leftovers,
                                       processes_mentioning, run)


@pytest.fixture
def inputs(tmp_path):
    """``(list file, good stems, {bad path: expected reason})``."""
    folder = tmp_path / "videos"
    folder.mkdir()
    good = [write_test_video(folder / "good1.mp4"), write_test_video(folder / "good2.mp4", num_frames=20),
            write_test_video(folder / ("L" * 235 + ".mp4"))]  # its hidden temporary names must stay <= 255 bytes
    fifo = folder / "pipe.mp4"
    os.mkfifo(fifo)
    sock_path = folder / "sock.mp4"
    server = socket.socket(socket.AF_UNIX)
    server.bind(os.fspath(sock_path))
    stem_250 = write_test_video(folder / ("S" * 250 + ".mp4"))  # the file exists; <stem>_r21d.npy cannot
    bad = {
        os.fspath(folder / "nul\x00byte.mp4"): "NUL byte",
        os.fspath(folder / ("x" * 300 + ".mp4")): "a part of the path is 304 bytes long",
        os.fspath(stem_250): "output name",
        os.fspath(fifo): "FIFO",
        "/dev/null": "character device",
        os.fspath(sock_path): "socket",
    }
    lines = [os.fspath(good[0]), *list(bad)[:3], os.fspath(good[1]), *list(bad)[3:], os.fspath(good[2])]
    list_file = tmp_path / "list.txt"
    list_file.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
    yield list_file, [p.stem for p in good], bad
    server.close()


@pytest.mark.slow
@pytest.mark.parametrize("reencode", [False, True], ids=["decode", "extraction_fps"])
def test_each_bad_input_fails_alone_and_the_rest_is_extracted(tmp_path, inputs, reencode):
    list_file, good, bad = inputs
    extra = ["extraction_fps=10"] if reencode else []
    args = cli_args(tmp_path, f"file_with_video_paths={list_file}", *extra)
    proc = run(args, timeout=240)  # a FIFO read by ffmpeg would hang here
    assert proc.returncode == 1, proc.stderr
    assert_no_traceback(proc)
    lines = failed_lines(proc.stdout + proc.stderr)
    assert len(lines) == len(bad), lines
    for reason in bad.values():
        assert sum(reason in line for line in lines) == 1, (reason, lines)
    for stem in good:
        assert features(tmp_path, stem).shape[0] >= 4
    assert leftovers(tmp_path) == []
    assert processes_mentioning(os.fspath(tmp_path)) == []
    assert not (tmp_path / "tmp").exists()  # re-encodes deleted, empty folders too

    again = run(args)  # the same command: good videos skipped, the bad ones tried (and failing) again
    assert again.returncode == 1
    assert f"{len(good)} skipped, {len(bad)} failed" in again.stderr, again.stderr

"""Per-video cost that does not grow with the run: no step done per video scans a folder.

A run over a list of a million entries only finishes if each video's steps (resume check,
claim, leftovers of killed writes, failure marks, provenance, report) look things up by name.
These tests count the folder scans (``os.scandir``, ``os.listdir``) a run makes and require the
same count for a short list and a list four times longer, for missing files, for finished
videos on resume, and for new ones; for HDF5, whose parts are found by a listing per video,
the entries listed per video must not grow with the run. Lists of many lines are held in
bounded memory per line, and their repeats are found exactly.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from r21d_features.utils.core.path_table import PathTable, first_of_each
from r21d_features.utils.outputs.output_paths import check_unique_outputs
from r21d_features.utils.run.driver import VideoOutcome
from r21d_features.utils.run.summary import SHOWN_IN_SUMMARY, Outcomes, RunSummary
from r21d_features.utils.video.path_list import PathListError, collect_video_paths, read_path_list
from tests.conftest import run_here


@pytest.fixture
def count_scans(monkeypatch):
    """The number of folder scans made so far, through every path that lists a folder."""
    calls = {"n": 0}
    real_scandir, real_listdir = os.scandir, os.listdir

    def scandir(*args, **kwargs):
        calls["n"] += 1
        return real_scandir(*args, **kwargs)

    def listdir(*args, **kwargs):
        calls["n"] += 1
        return real_listdir(*args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)
    return lambda: calls["n"]


@pytest.fixture
def count_listed(monkeypatch):
    """The number of folder entries listed so far (what a scan costs grows with them)."""
    calls = {"n": 0}
    real_scandir, real_listdir = os.scandir, os.listdir

    class Counted:
        def __init__(self, it):
            self.it = it

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.it.close()

        def __iter__(self):
            return self

        def __next__(self):
            entry = next(self.it)
            calls["n"] += 1
            return entry

        def close(self):
            self.it.close()

    def scandir(*args, **kwargs):
        return Counted(real_scandir(*args, **kwargs))

    def listdir(*args, **kwargs):
        names = real_listdir(*args, **kwargs)
        calls["n"] += len(names)
        return names

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)
    return lambda: calls["n"]


def _run(paths: list[Path], out: Path, tmp_path: Path, *extra: str):
    listed = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
    return run_here("feature_type=r21d", "device=cpu", "progress=false", "random_weights=true",
                    "on_extraction=save_numpy", "stack_size=4", "step_size=4", f"video_paths={listed}",
                    f"output_path={out}", f"tmp_path={tmp_path / 'tmp'}", *extra)


def _scans(count_scans, paths: list[Path], out: Path, tmp_path: Path, expect: str, *extra: str) -> int:
    """The scans of one run (after a first run in this process, which pays the one-time costs:
    imports, compiled kernels' caches)."""
    _run(paths[:1], tmp_path / "warm-up", tmp_path, *extra)
    before = count_scans()
    proc = _run(paths, out, tmp_path, *extra)
    assert expect in proc.stderr, proc.stderr
    return count_scans() - before


def test_missing_files_cost_the_same_scans_in_a_short_and_a_long_list(count_scans, tmp_path):
    short = [tmp_path / f"gone {i}.mp4" for i in range(5)]
    long = [tmp_path / f"missing {i}.mp4" for i in range(20)]
    short_scans = _scans(count_scans, short, tmp_path / "a", tmp_path, "0 done, 0 skipped, 5 failed")
    long_scans = _scans(count_scans, long, tmp_path / "b", tmp_path, "0 done, 0 skipped, 20 failed")
    assert long_scans == short_scans


def test_new_and_finished_videos_cost_the_same_scans_in_a_short_and_a_long_list(count_scans, tmp_path,
                                                                                make_video):
    videos = [make_video(f"v{i}.mp4", num_frames=8, height=32, width=32, seed=i) for i in range(8)]
    new_short = _scans(count_scans, videos[:2], tmp_path / "a", tmp_path, "2 done")
    new_long = _scans(count_scans, videos, tmp_path / "b", tmp_path, "8 done")
    assert new_long == new_short
    # Resume: the finished outputs sit in the folder being written to.
    done_short = _scans(count_scans, videos[:2], tmp_path / "b", tmp_path, "0 done, 2 skipped")
    done_long = _scans(count_scans, videos, tmp_path / "b", tmp_path, "0 done, 8 skipped")
    assert done_long == done_short


def test_missing_files_leave_no_claim_or_failure_mark_in_the_output_folder(tmp_path):
    missing = [tmp_path / f"gone {i}.mp4" for i in range(6)]
    proc = _run(missing, tmp_path / "out", tmp_path)
    assert proc.returncode == 1 and "0 done, 0 skipped, 6 failed" in proc.stderr
    assert proc.stderr.count(": file not found") == len(missing)  # in the summary
    folder = tmp_path / "out" / "r21d" / "r2plus1d_18_16_kinetics"
    assert sorted(os.listdir(folder)) == ["run_report.jsonl"]


def test_hdf5_lists_as_many_entries_per_video_in_a_short_and_a_long_run(count_listed, tmp_path):
    def undecodable(name, n):  # each fails after its claim, leaving a failure mark
        paths = [tmp_path / f"{name} {i}.mp4" for i in range(n)]
        for p in paths:
            p.write_text("not a video\n")
        return paths

    short, long = undecodable("short", 5), undecodable("long", 20)
    short_listed = _scans(count_listed, short, tmp_path / "a", tmp_path, "5 failed", "on_extraction=save_hdf5")
    long_listed = _scans(count_listed, long, tmp_path / "b", tmp_path, "20 failed", "on_extraction=save_hdf5")
    assert long_listed / len(long) <= short_listed / len(short) + 1, (short_listed, long_listed)
    folder = tmp_path / "b" / "r21d" / "r2plus1d_18_16_kinetics"
    assert sorted(os.listdir(folder)) == [".claims", "run_report.jsonl"]  # the marks sit in .claims
    assert len(list((folder / ".claims").glob(".*.failed"))) == len(long)


# ---------------------------------------------------------------------- big lists in bounded memory
ODD_NAMES = ["plain.mp4", "with space.mp4", "ünïcödé 動画.mkv", os.fsdecode(b"latin1 \xe9.avi"),
             "lone \ud800 surrogate.mp4", "", "s3://bucket/key with space.mp4", "a" * 300]


def test_a_path_table_gives_back_every_name_as_it_was_given():
    table = PathTable(ODD_NAMES)
    assert list(table) == ODD_NAMES and len(table) == len(ODD_NAMES) and table == ODD_NAMES
    assert [table[i] for i in range(len(ODD_NAMES))] == ODD_NAMES and table[-1] == ODD_NAMES[-1]
    assert table[1::3] == ODD_NAMES[1::3] and table[::-1] == ODD_NAMES[::-1]
    with pytest.raises(IndexError):
        table[len(ODD_NAMES)]


class _Colliding(str):
    """A key whose hash is the same for every value: only exact comparison tells them apart."""

    def __hash__(self):
        return 7


@pytest.mark.parametrize("key", [str, _Colliding])
def test_repeats_are_found_exactly_whatever_the_hashes(key):
    items = ["a", "b", "a", "c", "b", "d", "a"]
    assert first_of_each(items, key).tolist() == [True, True, False, True, False, True, False]


def _naive_read(data: bytes) -> list[str]:
    """What a list file means, read whole at once."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    paths = []
    for raw in data.split(b"\n"):
        raw = raw.rstrip(b"\r").strip(b" \t")
        if raw and not raw.startswith(b"#"):
            paths.append(os.fsdecode(raw))
    return paths


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n"])
def test_a_list_read_as_a_stream_means_what_it_says_across_every_block_boundary(tmp_path, ending):
    # Lines of every length around the 4 KiB head, CRLF, comments, blanks, a BOM, non-UTF-8 bytes.
    lines = [b"\xef\xbb\xbf# made by a crawler"]
    for i in range(600):
        lines.append(b"  " + (b"x" * (i % 23)) + f"/clip {i}.mp4".encode() + (b"\r" if i % 5 == 0 else b""))
        if i % 37 == 0:
            lines += [b"", b"# a comment", b"caf\xe9 %d.avi" % i]
    data = b"\n".join(lines) + ending
    list_file = tmp_path / "list.txt"
    list_file.write_bytes(data)
    assert list(read_path_list(list_file)) == _naive_read(data)


def test_a_binary_file_given_as_a_list_is_refused_before_any_path_is_used(tmp_path):
    list_file = tmp_path / "video.mp4"
    list_file.write_bytes(bytes(range(32)) * 200)
    with pytest.raises(PathListError, match="is not a text file"):
        collect_video_paths(None, str(list_file))


def test_a_long_list_is_held_in_bounded_memory_per_line(tmp_path):
    n = 50_000
    list_file = tmp_path / "list.txt"
    with open(list_file, "w") as f:
        for i in range(n):
            f.write(f"/data/crawl/part-{i // 1000:04d}/video_{i:07d}.mp4\n")
        f.write("/data/crawl/part-0000/video_0000007.mp4\n")  # one repeat, dropped
    tracemalloc.start()
    try:
        paths = collect_video_paths(None, str(list_file))
        held = tracemalloc.get_traced_memory()[0]
        check_unique_outputs(paths)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(paths) == n and paths[7] == "/data/crawl/part-0000/video_0000007.mp4"
    # A Python list of these names holds ~100 bytes per line, and a set or dict of them for the
    # repeats and the output names as much again, with the whole file read at once on top.
    assert held / n < 70, f"{held / n:.0f} bytes per line held"
    # The peak also holds a fixed few MB (numpy's sort buffers, the first pages of the table).
    assert peak < 170 * n + 4_000_000, f"{peak / n:.0f} bytes per line at the peak"


def test_the_outcomes_of_a_run_are_given_back_as_added_in_little_memory():
    outcomes = [VideoOutcome("a.mp4", "done", "", 3, 40, 1.25, ["short"], "node1", 42),
                VideoOutcome("b.mp4", "failed", "file not found"), VideoOutcome("ü.mp4", "skipped", "output exists")]
    table = Outcomes(outcomes)
    assert list(table) == outcomes and table[-1] == outcomes[-1] and table[:2] == outcomes[:2]
    n = 30_000
    tracemalloc.start()
    try:
        many = Outcomes(VideoOutcome(f"/data/crawl/video_{i:07d}.mp4", "failed", "file not found")
                        for i in range(n))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held / n < 110, f"{held / n:.0f} bytes per outcome"
    summary = RunSummary(many)
    assert summary.count("failed") == n and summary.exit_code == 1
    text = summary.format().splitlines()
    assert text[0] == f"Summary: 0 done, 0 skipped, {n} failed, of {n} videos"
    assert len(text) == 1 + SHOWN_IN_SUMMARY + 1 and text[1] == "  FAILED /data/crawl/video_0000000.mp4: file not found"
    assert text[-1] == f"  ... and {n - SHOWN_IN_SUMMARY} more failures (the run report lists every video)"

"""Whole runs as users start them: kill -9 and resume, several workers on one folder, shards.

Every test compares the saved files with the features of each clip extracted
alone (``reference``), so "nothing lost, nothing corrupt" is checked value by value.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from r21d_features.main import run as run_cli
from r21d_features.utils.run.cli import EXIT_BAD_CONFIG
from r21d_features.utils.video.path_list import shard
from r21d_features.utils.outputs.sinks import load_feature_file

from tests.conftest import REPO_ROOT, run_main
from tests.reliability.reliability_helpers import (BATCH, MODEL, ONE_THREAD, STACK, STEP, cli_args, corrupt_jpeg_frame,
                                                   feature_folder, leftovers, main_command, make_clip, read_report)


def start_worker(args: list[str], **streams) -> subprocess.Popen:
    """``python main.py ARGS`` in the background, as a user starts one worker per GPU or node."""
    return subprocess.Popen(main_command(args), cwd=REPO_ROOT, env={**os.environ, **ONE_THREAD}, **streams)


def write_list(path: Path, videos: list) -> Path:
    path.write_text("".join(f"{v}\n" for v in videos), encoding="utf-8")
    return path


def assert_outputs_equal_reference(output: Path, clips: list[Path], reference: dict) -> None:
    folder = feature_folder(output)
    for clip in clips:
        np.testing.assert_array_equal(load_feature_file(folder / f"{clip.stem}_r21d.npy"), reference[clip.stem])
    assert leftovers(folder) == []


@pytest.mark.slow
def test_kill_9_mid_run_then_the_same_command_finishes_with_identical_outputs(
        tmp_path, checkpoint_file, good_clips, reference):
    out = tmp_path / "out"
    folder = feature_folder(out)
    args = cli_args(checkpoint_file, out, f"file_with_video_paths={write_list(tmp_path / 'list.txt', good_clips)}")
    proc = start_worker(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not (folder.is_dir() and any(folder.glob("*_r21d.npy"))):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no output appeared"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = {p.name: p.read_bytes() for p in folder.glob("*_r21d.npy")}
    assert 0 < len(done_before) < len(good_clips)
    for name in done_before:  # whatever is visible under a final name is complete
        np.testing.assert_array_equal(load_feature_file(folder / name), reference[name[: -len("_r21d.npy")]])

    rerun = run_main(*args, env=ONE_THREAD)
    assert rerun.returncode == 0, rerun.stderr
    assert_outputs_equal_reference(out, good_clips, reference)
    assert {name: (folder / name).read_bytes() for name in done_before} == done_before  # untouched
    second = [r for r in read_report(out) if r["pid"] != proc.pid]
    assert Counter(r["path"] for r in second) == Counter(str(c) for c in good_clips)
    assert {r["path"] for r in second if r["status"] == "skipped"} == {
        str(c) for c in good_clips if f"{c.stem}_r21d.npy" in done_before}


@pytest.mark.slow
def test_leftovers_of_a_killed_writer_are_swept_for_every_file_of_the_video(tmp_path, checkpoint_file, good_clips):
    """kill -9 can land inside any of a video's writes: its record, its metadata, its features."""
    out = tmp_path / "out"
    args = cli_args(checkpoint_file, out, f"video_paths=[{good_clips[0]}]", "save_metadata=true")
    assert run_main(*args, env=ONE_THREAD).returncode == 0
    folder = feature_folder(out)
    stem = good_clips[0].stem
    planted = [folder / f"..{stem}_r21d.npy.provenance.json.tmp",
               folder / f".{stem}_fps.npy.tmp", folder / f".{stem}_r21d.npy.tmp"]
    for leftover in planted:
        leftover.write_bytes(b"half written")
    (folder / f"{stem}_r21d.npy").unlink()  # killed before the features landed: extracted again
    rerun = run_main(*args, env=ONE_THREAD)
    assert rerun.returncode == 0 and "1 done" in rerun.stderr, rerun.stderr
    assert leftovers(folder) == []


WORKERS = 3


@pytest.mark.slow
def test_several_workers_on_one_folder_extract_everything_once(tmp_path, checkpoint_file, good_clips, reference):
    bad = [tmp_path / "missing.mp4", tmp_path / "notes.mp4"]
    bad[1].write_text("not a video\n")
    videos = [*good_clips[:6], bad[0], *good_clips[6:], bad[1]]
    out = tmp_path / "out"
    # A worker claims a video when it starts decoding it, up to one batch of windows ahead of the
    # network; these clips have 2-4 windows each, so with batches of 2 the claims follow the
    # work and a worker that starts first cannot claim the whole list before the others start.
    args = cli_args(checkpoint_file, out, f"file_with_video_paths={write_list(tmp_path / 'list.txt', videos)}",
                    "batch_size=2")
    procs = [start_worker(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(WORKERS)]
    codes = {p.pid: p.wait(timeout=300) for p in procs}
    errors = {p.pid: p.stderr.read() for p in procs}
    for p in procs:
        p.stderr.close()

    for clip in good_clips:
        np.testing.assert_array_equal(load_feature_file(feature_folder(out) / f"{clip.stem}_r21d.npy"),
                                      reference[clip.stem])
    assert leftovers(feature_folder(out)) == []
    records = read_report(out)
    assert Counter(r["pid"] for r in records) == {pid: len(videos) for pid in codes}  # each worker: every video once
    done = Counter(r["path"] for r in records if r["status"] == "done")
    failed = Counter(r["path"] for r in records if r["status"] == "failed")
    assert done == {str(c): 1 for c in good_clips}  # no video extracted twice
    # A file that does not decode is tried once; a missing one costs each worker one stat (no
    # claim, no marker), so every worker reports it.
    assert failed == {str(bad[0]): WORKERS, str(bad[1]): 1}
    assert not list(feature_folder(out).glob(f".{bad[0].stem}*"))
    assert len({r["pid"] for r in records if r["status"] == "done"}) >= 2  # the work was shared
    for pid, code in codes.items():
        own_failures = [r for r in records if r["pid"] == pid and r["status"] == "failed"]
        assert code == (1 if own_failures else 0), errors[pid]
        assert "Traceback" not in errors[pid]


def test_bad_inputs_give_one_clear_line_each_and_a_failing_exit_status(tmp_path, checkpoint_file, good_clips):
    mjpeg = make_clip(tmp_path / "mjpeg.avi", codec_args=("-c:v", "mjpeg"))
    corrupt_jpeg_frame(mjpeg, tmp_path / "corrupt.avi", 4)  # FFmpeg's decoder complains loudly about this one
    (tmp_path / "notes.mp4").write_text("not a video\n")
    odd_name = tmp_path / "-it's a \"clip\" ü.mp4"
    odd_name.write_bytes(good_clips[0].read_bytes())
    short = make_clip(tmp_path / "short.mp4", frames=1)
    bad = {tmp_path / "missing.mp4": "file not found", tmp_path / "notes.mp4": "cannot be opened as a video",
           tmp_path / "corrupt.avi": "frame 4 does not decode but later frames do"}
    videos = [good_clips[2], *bad, odd_name, short]
    result = run_main(*cli_args(checkpoint_file, tmp_path / "out",
                                f"file_with_video_paths={write_list(tmp_path / 'list.txt', videos)}"), env=ONE_THREAD)
    console = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in console and "[mjpeg @" not in console and "WARN:" not in console
    for path, reason in bad.items():
        lines = [line for line in console.splitlines() if str(path) in line]
        assert len(lines) == 2, console  # when it happens, and in the summary
        assert all(line.strip().startswith(f"FAILED {path}: {reason}") for line in lines)
    assert "Summary: 3 done, 0 skipped, 3 failed, of 6 videos" in console
    assert f"warning {short}: 1 frame is shorter than one window of {STACK} frames" in console
    assert (feature_folder(tmp_path / "out") / f"{odd_name.stem}_r21d.npy").is_file()


def test_debug_shows_the_traceback_of_a_failure(tmp_path, checkpoint_file, caplog):
    settings = dict(feature_type="r21d", model_name=MODEL, device="cpu", stack_size=STACK, step_size=STEP,
                    checkpoint_path=str(checkpoint_file), on_extraction="save_numpy", output_path=str(tmp_path),
                    video_paths=[str(tmp_path / "notes.mp4")], progress=False, debug=True)
    (tmp_path / "notes.mp4").write_text("not a video\n")
    with caplog.at_level(logging.ERROR):
        assert run_cli(settings, stdout=io.StringIO(), stderr=io.StringIO()) == 1
    [record] = [r for r in caplog.records if r.exc_info]
    assert "cannot be opened as a video" in str(record.exc_info[1])


@pytest.mark.parametrize("num_shards", [1, 2, 3, 5])
def test_shards_are_disjoint_cover_the_list_and_never_change(num_shards):
    paths = [f"v{i:02d}.mp4" for i in range(13)]
    shards = [shard(paths, num_shards, i) for i in range(num_shards)]
    assert sorted(p for s in shards for p in s) == paths  # union = all, no repeats
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards == [shard(list(paths), num_shards, i) for i in range(num_shards)]  # deterministic


def test_sharded_runs_together_extract_each_video_once(tmp_path, checkpoint_file, good_clips, reference):
    clips = good_clips[:5]
    for index in range(3):
        settings = dict(feature_type="r21d", model_name=MODEL, device="cpu", stack_size=STACK, step_size=STEP,
                        checkpoint_path=str(checkpoint_file), on_extraction="save_numpy",
                        output_path=str(tmp_path / "out"), video_paths=[str(c) for c in clips], progress=False,
                        batch_size=BATCH, num_shards=3, shard_index=index)
        assert run_cli(settings, stdout=io.StringIO(), stderr=io.StringIO()) == 0
    assert_outputs_equal_reference(tmp_path / "out", clips, reference)
    records = read_report(tmp_path / "out")
    assert sorted(r["path"] for r in records) == sorted(str(c) for c in clips)
    assert {r["status"] for r in records} == {"done"}


@pytest.mark.parametrize("num_shards,shard_index,message", [
    (0, 0, "num_shards=0 is invalid: it must be >= 1"),
    (3, 3, "shard_index=3 is invalid: it must be in 0..2"),
])
def test_impossible_shard_settings_are_refused(tmp_path, good_clips, num_shards, shard_index, message):
    err = io.StringIO()
    code = run_cli(dict(feature_type="r21d", device="cpu", random_weights=True, video_paths=[str(good_clips[0])],
                        num_shards=num_shards, shard_index=shard_index), stdout=io.StringIO(), stderr=err)
    assert code == EXIT_BAD_CONFIG and message in err.getvalue()


@pytest.mark.slow
def test_workers_on_overlapping_shard_lists_extract_each_member_once(tmp_path, checkpoint_file, good_clips, reference):
    import tarfile  # noqa: PLC0415

    shards = tmp_path / "shards"
    shards.mkdir()
    per_shard = {f"s-{i}": good_clips[i::3] for i in range(3)}
    for stem, clips in per_shard.items():
        with tarfile.open(shards / f"{stem}.tar", "w") as tar:
            for clip in clips:
                tar.add(clip, arcname=f"{clip.stem}.mp4")
    out = tmp_path / "out"
    lists = [write_list(tmp_path / "a.txt", [f"{shards}/s-{{0..1}}.tar"]),
             write_list(tmp_path / "b.txt", [f"{shards}/s-{{1..2}}.tar"])]
    procs = [start_worker(cli_args(checkpoint_file, out, f"file_with_video_paths={lst}", "batch_size=2"),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for lst in lists]
    codes = [p.wait(timeout=300) for p in procs]
    errors = [p.stderr.read() for p in procs]
    for p in procs:
        p.stderr.close()
    assert codes == [0, 0], errors
    for stem, clips in per_shard.items():
        for clip in clips:
            np.testing.assert_array_equal(load_feature_file(feature_folder(out) / stem / f"{clip.stem}_r21d.npy"),
                                          reference[clip.stem])
    done = Counter(r["path"] for r in read_report(out) if r["status"] == "done")
    assert done == {f"{shards}/{stem}.tar#{clip.stem}.mp4": 1 for stem, clips in per_shard.items() for clip in clips}

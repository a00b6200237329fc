"""Features written to an object store, tested against a real S3 API server (moto on 127.0.0.1).

A run with ``output_path=s3://bucket/prefix`` must leave the same files as a local run (same
names, same arrays, provenance records, run report), resume and refuse like a local run, and
let workers share the prefix through the store's conditional writes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from r21d_features.utils.core.object_store import ObjectPath, store_for
from r21d_features.utils.outputs.sinks import load_feature_file
from r21d_features.utils.run.object_claims import ObjectClaimBook
from r21d_features.utils.run.runner import ObjectRunReport, flush_pause_s
from r21d_features.utils.run.driver import VideoOutcome
from tests.conftest import REPO_ROOT, S3_BUCKET as BUCKET, S3_SECRET as SECRET, SAMPLES, run_here

R18 = "r2plus1d_18_16_kinetics"


@pytest.fixture
def ckpt(checkpoints):
    return f"checkpoint_path={checkpoints[R18]}"


def listed(*names: object) -> str:
    return "[" + ", ".join(f"'{name}'" for name in names) + "]"


def short_windows(args) -> tuple[str, ...]:
    """Short windows, 4 frames every 16 (a quarter of the frames through the network: these tests
    compare stores, not windows), unless ``args`` set the step."""
    return ("stack_size=4",) + (() if any(a.startswith("step_size=") for a in args) else ("step_size=16",))


def extract(*args: str):
    """The command line, with :func:`short_windows`."""
    window = short_windows(args)
    return run_here("feature_type=r21d", "device=cpu", "progress=false", "on_extraction=save_numpy", *window, *args)


def objects(s3, prefix: str) -> dict[str, dict]:
    """Every object under ``prefix`` of the bucket: relative key -> {ETag, LastModified, Size}."""
    found = {}
    for page in s3.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            found[item["Key"][len(prefix) + 1:]] = item
    return found


def local_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def body(s3, key: str) -> bytes:
    return s3.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


@pytest.fixture
def videos(make_video):
    return [make_video("a clip.mp4", num_frames=40), make_video("vidéo ü.avi", num_frames=36, seed=1),
            make_video("third.mp4", num_frames=20, height=64, width=80, seed=2)]


def test_a_run_into_the_store_leaves_the_files_of_a_local_run_and_an_unchanged_rerun_rewrites_nothing(
        s3, ckpt, tmp_path, videos):
    local = tmp_path / "local"
    prefix = "runs/layout one"
    for out in (local, f"s3://{BUCKET}/{prefix}"):
        proc = extract(f"video_paths={listed(*videos)}", f"output_path={out}", "save_metadata=true", ckpt)
        assert proc.returncode == 0 and "3 done, 0 skipped, 0 failed" in proc.stderr, proc.stderr
    assert f"Run report: s3://{BUCKET}/{prefix}/r21d/{R18}/run_report.jsonl" in proc.stderr
    stored = objects(s3, prefix)
    # The same names: features, metadata, provenance records and the report; no claim or probe is left.
    assert set(stored) == local_files(local)
    assert not Path("s3:").exists() and not (REPO_ROOT / "s3:").exists()
    for name in stored:
        if name.endswith(".npy"):
            got = load_feature_file(f"s3://{BUCKET}/{prefix}/{name}")
            expected = np.load(local / name)
            assert got.dtype == expected.dtype and np.array_equal(got, expected), name
        elif name.endswith(".provenance.json"):
            assert (json.loads(body(s3, f"{prefix}/{name}"))["entries"]
                    == json.loads((local / name).read_text())["entries"])
    report = [json.loads(line) for line in body(s3, f"{prefix}/r21d/{R18}/run_report.jsonl").splitlines()]
    assert sorted(r["path"] for r in report) == sorted(map(str, videos)) and {r["status"] for r in report} == {"done"}

    proc = extract(f"video_paths={listed(*videos)}", f"output_path=s3://{BUCKET}/{prefix}", "save_metadata=true", ckpt)
    assert proc.returncode == 0 and "0 done, 3 skipped" in proc.stderr, proc.stderr
    again = objects(s3, prefix)
    report_key = f"r21d/{R18}/run_report.jsonl"
    assert {k: (v["ETag"], v["LastModified"]) for k, v in again.items() if k != report_key} == \
        {k: (v["ETag"], v["LastModified"]) for k, v in stored.items() if k != report_key}
    assert len(body(s3, f"{prefix}/{report_key}").splitlines()) == 6  # the rerun's 3 skipped lines added


def test_other_settings_are_refused_before_any_work_and_overwrite_redoes_them(s3, ckpt, tmp_path, videos):
    out = f"s3://{BUCKET}/runs/provenance"
    proc = extract(f"video_paths={listed(*videos[:2])}", f"output_path={out}", "on_extraction=save_pickle", ckpt)
    assert proc.returncode == 0, proc.stderr
    before = objects(s3, "runs/provenance")
    proc = extract(f"video_paths={listed(*videos[:2])}", f"output_path={out}", "on_extraction=save_pickle",
                   "step_size=8", ckpt)
    assert proc.returncode == 2 and "2 existing output(s)" in proc.stderr and "step_size=16 (now 8)" in proc.stderr
    assert f"in {out}/r21d/{R18}" in proc.stderr
    assert objects(s3, "runs/provenance") == before  # nothing written, nothing removed
    local = tmp_path / "local"
    for target in (local, out):
        proc = extract(f"video_paths={listed(*videos[:2])}", f"output_path={target}", "on_extraction=save_pickle",
                       "step_size=8", "overwrite=true", ckpt)
        assert proc.returncode == 0 and "2 done" in proc.stderr, proc.stderr
    for video in videos[:2]:
        name = f"r21d/{R18}/{video.stem}_r21d.pkl"
        assert np.array_equal(load_feature_file(f"{out}/{name}"), load_feature_file(local / name))


def test_output_locations_that_cannot_work_stop_before_any_work_with_one_line(s3, ckpt, tmp_path):
    video = f"video_paths=[{SAMPLES[0]}]"
    cases = [
        (("output_path=s3://no-such-bucket/out",), "bucket s3://no-such-bucket does not exist"),
        (("output_path=s3://videos/h5", "on_extraction=save_hdf5"), "save_hdf5 writes one HDF5 file in a folder"),
        (("output_path=s3://videos/plots", "save_plots=true"), "save_plots=true draws pictures into a folder"),
        (("output_path=gs://bucket/out",), "gs:// is read only"),
        (("output_path=s3://videos/a/../b",), "has an empty, '.' or '..' part"),
    ]
    for args, message in cases:
        proc = extract(video, *args, ckpt)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert not Path("s3:").exists() and not Path("gs:").exists()
    assert objects(s3, "h5") == {} and objects(s3, "plots") == {}


def test_claims_in_the_store_go_to_one_worker_and_a_stale_one_is_taken_over_once(s3):
    folder = ObjectPath.from_url(f"s3://{BUCKET}/claims/unit")
    output_for = lambda video: folder / f"{Path(video).stem}_r21d.npy"  # noqa: E731
    with ObjectClaimBook(output_for, stale_s=0.6) as first, ObjectClaimBook(output_for, stale_s=0.6) as second:
        assert first.try_claim("a.mp4") is None
        holder = second.try_claim("a.mp4")
        assert holder is not None and holder.pid == os.getpid()
        time.sleep(1.0)  # the heartbeat (every stale_s / 4) keeps it alive
        assert second.try_claim("a.mp4") is not None
        first._stop.set()  # the first worker stops refreshing (paused, or its host is gone)
        first._heartbeat.join()
        time.sleep(1.8)  # stale_s, and the second of LastModified's resolution
        # Several workers take over one stale claim: exactly one wins.
        others = [ObjectClaimBook(output_for, stale_s=0.6) for _ in range(4)]
        results: list[object] = []
        threads = [threading.Thread(target=lambda b=b: results.append(b.try_claim("a.mp4"))) for b in others]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r is None for r in results) == 1, results
        # The first worker's release does not remove the new owner's claim.
        first.release("a.mp4")
        assert store_for("s3").info(folder / ".a_r21d.npy.lock") is not None
        for book in others:
            book.close()
        assert store_for("s3").info(folder / ".a_r21d.npy.lock") is None
        second.pid += 1  # as another worker would write it
        second.record_failure("b.mp4", "broken")
        assert first.failed_elsewhere("b.mp4").reason == "broken"
        second.clear_failure("b.mp4")
        assert first.failed_elsewhere("b.mp4") is None


def test_workers_adding_to_one_report_object_never_drop_each_others_lines(s3):
    path = ObjectPath.from_url(f"s3://{BUCKET}/reports/run_report.jsonl")
    reports = [ObjectRunReport(path, flush_s=0.0) for _ in range(4)]

    def write(i: int, report: ObjectRunReport) -> None:
        for n in range(15):
            report.add(VideoOutcome(f"w{i}-{n}.mp4", "done"))
        report.close()

    threads = [threading.Thread(target=write, args=(i, r)) for i, r in enumerate(reports)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [json.loads(line)["path"] for line in body(s3, "reports/run_report.jsonl").splitlines()]
    assert sorted(lines) == sorted(f"w{i}-{n}.mp4" for i in range(4) for n in range(15))


def test_a_growing_report_object_is_rewritten_less_often(s3):
    path = ObjectPath.from_url(f"s3://{BUCKET}/reports/growing.jsonl")
    report = ObjectRunReport(path, flush_s=0.0)
    report.add(VideoOutcome("first.mp4", "done"))  # flushed at once: the object is small
    assert body(s3, "reports/growing.jsonl").count(b"\n") == 1
    report._report_bytes = 50_000_000  # as if the report held 50 MB: the next flush waits 50 s
    report.add(VideoOutcome("second.mp4", "done"))
    assert body(s3, "reports/growing.jsonl").count(b"\n") == 1
    report.close()  # the end of the run flushes what is held
    assert body(s3, "reports/growing.jsonl").count(b"\n") == 2
    assert flush_pause_s(15.0, 0) == 15.0 and flush_pause_s(15.0, 300_000_000) == 300.0


def _worker(out: str, paths: list[str], ckpt: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "main.py"), "feature_type=r21d", "device=cpu", "progress=false",
         "on_extraction=save_numpy", f"video_paths={listed(*paths)}", f"output_path={out}", ckpt, *short_windows(extra), *extra],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_workers_on_one_prefix_extract_each_video_once(s3, ckpt, tmp_path, make_video):
    paths = [make_video(f"w {i}.mp4", num_frames=16, seed=i) for i in range(4)]
    out = f"s3://{BUCKET}/runs/shared"
    workers = [_worker(out, paths if i == 0 else paths[::-1], ckpt, "batch_size=1") for i in range(2)]
    results = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), results
    done = sum(int(err.split("Summary: ")[1].split(" done")[0]) for _, err in results)
    assert done == len(paths), results
    report = [json.loads(line) for line in body(s3, f"runs/shared/r21d/{R18}/run_report.jsonl").splitlines()]
    assert sorted(r["path"] for r in report if r["status"] == "done") == sorted(map(str, paths))
    assert {r["pid"] for r in report if r["status"] == "done"} == {w.pid for w in workers}  # both did work
    local = tmp_path / "local"
    # The same batch size as the workers: oneDNN's kernels round by batch shape.
    assert extract(f"video_paths={listed(*paths)}", f"output_path={local}", ckpt, "batch_size=1").returncode == 0
    for p in paths:
        name = f"r21d/{R18}/{p.stem}_r21d.npy"
        assert np.array_equal(load_feature_file(f"{out}/{name}"), np.load(local / name))
    assert not any(k.endswith(".lock") for k in objects(s3, "runs/shared"))


@pytest.mark.slow
def test_a_run_killed_mid_upload_leaves_only_whole_objects_and_the_rerun_finishes(s3, ckpt, make_video):
    paths = [make_video(f"k {i}.mp4", num_frames=64, seed=i) for i in range(8)]
    out, prefix = f"s3://{BUCKET}/runs/killed", "runs/killed"
    worker = _worker(out, paths, ckpt, "batch_size=1", "step_size=4")  # 16 windows a video: killed mid-run
    deadline = time.time() + 300
    while time.time() < deadline and not any(k.endswith("_r21d.npy") for k in objects(s3, prefix)):
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=60)
    saved = [k for k in objects(s3, prefix) if k.endswith("_r21d.npy")]
    assert 0 < len(saved) < len(paths)
    for key in saved:  # every object under a final name is whole
        assert load_feature_file(f"{out}/{key}").shape[1:] == (512,)
    proc = extract(f"video_paths={listed(*paths)}", f"output_path={out}", ckpt, "step_size=4")
    assert proc.returncode == 0, proc.stderr
    skipped = int(proc.stderr.split(" skipped")[0].rsplit(" ", 1)[1])
    assert skipped >= len(saved) and "0 failed" in proc.stderr
    assert len([k for k in objects(s3, prefix) if k.endswith("_r21d.npy")]) == len(paths)
    assert not any(k.endswith(".lock") for k in objects(s3, prefix))  # the killed worker's claim was taken over


def test_no_secret_reaches_any_object_written(s3, ckpt, videos):
    out = f"s3://{BUCKET}/runs/secret"
    proc = extract(f"video_paths={listed(*videos[:1])}", f"output_path={out}", "debug=true", "save_metadata=true",
                   f"storage_options={{key: AKIDTESTONLY, secret: {SECRET}, endpoint_url: {s3.endpoint_url}}}", ckpt)
    assert proc.returncode == 0, proc.stderr
    stored = objects(s3, "runs/secret")
    assert stored
    for key in stored:
        assert SECRET.encode() not in body(s3, f"runs/secret/{key}"), key
    assert SECRET not in proc.stdout + proc.stderr and "Signature=" not in proc.stderr

"""Claim files: one worker per video, stale claims taken over, failures shared within a run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import numpy as np

from r21d_features.utils.core.processes import host_id
from r21d_features.utils.run.claims import ClaimBook
from r21d_features.utils.run.runner import run_extraction
from r21d_features.utils.outputs.sinks import FileSink, load_feature_file

from tests.reliability.reliability_helpers import FEATURE_DIM, MODEL, leftovers

VIDEO = "/videos/a.mp4"


def book(folder: Path, stale_s: float = 60.0, started_at: float | None = None) -> ClaimBook:
    return ClaimBook(lambda p: folder / f"{Path(p).stem}_r21d.npy", stale_s=stale_s, started_at=started_at)


def plant(path: Path, host: str, pid: int, age_s: float = 0.0, **extra) -> None:
    """A claim or failure file as another worker would have left it, ``age_s`` seconds old."""
    path.write_text(json.dumps({"host": host, "pid": pid, "token": "theirs", **extra}))
    then = time.time() - age_s
    os.utime(path, (then, then))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_claimed_video_cannot_be_claimed_again_until_released(tmp_path):
    with book(tmp_path) as mine, book(tmp_path) as other:
        assert mine.try_claim(VIDEO) is None
        holder = other.try_claim(VIDEO)
        assert holder is not None and holder.pid == os.getpid()
        mine.release(VIDEO)
        assert other.try_claim(VIDEO) is None
    assert leftovers(tmp_path) == []


def test_claim_of_a_live_worker_elsewhere_is_respected(tmp_path):
    with book(tmp_path) as b:
        plant(b.lock_path(VIDEO), "node7/1", 4242, age_s=10)
        holder = b.try_claim(VIDEO)
    assert holder is not None and holder.describe() == "pid 4242 on node7"
    assert b.lock_path(VIDEO).exists()  # not ours: left alone


def test_claim_not_refreshed_for_stale_s_is_taken_over(tmp_path):
    with book(tmp_path, stale_s=5) as b:
        plant(b.lock_path(VIDEO), "node7/1", 4242, age_s=6)
        assert b.try_claim(VIDEO) is None
        assert json.loads(b.lock_path(VIDEO).read_text())["pid"] == os.getpid()


def test_claim_of_a_killed_process_on_this_host_is_taken_over_at_once(tmp_path):
    with book(tmp_path) as b:
        plant(b.lock_path(VIDEO), host_id(), dead_pid(), age_s=0)
        assert b.try_claim(VIDEO) is None


def test_claim_of_a_live_process_on_this_host_is_respected(tmp_path):
    with book(tmp_path, stale_s=5) as b:
        plant(b.lock_path(VIDEO), host_id(), os.getppid(), age_s=1)
        assert b.try_claim(VIDEO) is not None


def test_half_written_claim_counts_as_held_until_it_is_stale(tmp_path):
    with book(tmp_path, stale_s=5) as b:
        b.lock_path(VIDEO).parent.mkdir(exist_ok=True)
        b.lock_path(VIDEO).write_bytes(b"")  # created, owner not written yet
        assert b.try_claim(VIDEO) is not None
        old = time.time() - 6
        os.utime(b.lock_path(VIDEO), (old, old))
        assert b.try_claim(VIDEO) is None


def test_heartbeat_keeps_a_long_job_claimed(tmp_path):
    with book(tmp_path, stale_s=0.4) as b:
        assert b.try_claim(VIDEO) is None
        time.sleep(1.2)  # three times stale_s
        age_s = time.time() - b.lock_path(VIDEO).stat().st_mtime
        assert age_s < 0.4
        with book(tmp_path, stale_s=0.4) as other:
            assert other.try_claim(VIDEO) is not None


def test_many_workers_breaking_one_stale_claim_leave_exactly_one_owner(tmp_path):
    books = [book(tmp_path, stale_s=5) for _ in range(8)]
    plant(books[0].lock_path(VIDEO), "node7/1", 4242, age_s=60)
    results: list = [None] * len(books)
    barrier = threading.Barrier(len(books))

    def claim(i: int) -> None:
        barrier.wait()
        results[i] = books[i].try_claim(VIDEO)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(books))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is None for r in results) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a_r21d.npy.lock"]  # no moved-away copies left
    for b in books:
        b.close()
    assert leftovers(tmp_path) == []


def test_release_never_removes_a_claim_someone_else_took_over(tmp_path):
    with book(tmp_path) as b:
        assert b.try_claim(VIDEO) is None
        plant(b.lock_path(VIDEO), "node7/1", 4242)  # taken over while we were paused
        b.release(VIDEO)
        assert json.loads(b.lock_path(VIDEO).read_text())["pid"] == 4242


def test_failures_are_shared_with_workers_of_the_same_run_only(tmp_path):
    started = time.time()
    with book(tmp_path, started_at=started) as b:
        plant(b.failed_path(VIDEO), "node7/1", 4242, reason="file not found")
        failed_by = b.failed_elsewhere(VIDEO)
        assert failed_by is not None and failed_by.reason == "file not found"
        plant(b.failed_path(VIDEO), "node7/1", 4242, age_s=60, reason="file not found")  # an earlier run
        assert b.failed_elsewhere(VIDEO) is None
        b.record_failure(VIDEO, "ours")  # our own: we never skip our own failures
        assert b.failed_elsewhere(VIDEO) is None
        b.clear_failure(VIDEO)
        assert not b.failed_path(VIDEO).exists()


# ---------------------------------------------------------------- the run loop with claims


@pytest.mark.slow
def test_video_claimed_by_another_worker_is_waited_for_and_counted_as_skipped(
        tmp_path, extractor, good_clips, reference):
    sink = FileSink(tmp_path, "r21d", MODEL, "npy", FEATURE_DIM)
    theirs, mine = str(good_clips[0]), str(good_clips[1])
    claims = ClaimBook(sink.path_for, stale_s=2)
    sink.folder.mkdir(parents=True)
    plant(claims.lock_path(theirs), "node7/1", 4242)

    def other_worker_finishes() -> None:
        time.sleep(1.0)
        sink.write(theirs, {"r21d": reference["clip00"]})
        claims.lock_path(theirs).unlink()

    helper = threading.Thread(target=other_worker_finishes)
    helper.start()
    with claims:
        summary = run_extraction(extractor, [theirs, mine], sink, progress=False, claims=claims)
    helper.join()
    assert {o.path: (o.status, o.reason) for o in summary.outcomes} == {
        theirs: ("skipped", "extracted by another worker"), mine: ("done", "")}


def test_claim_that_goes_stale_while_waiting_is_taken_over(tmp_path, extractor, good_clips, reference, caplog):
    sink = FileSink(tmp_path, "r21d", MODEL, "npy", FEATURE_DIM)
    video = str(good_clips[2])
    stale_s = 2.0
    with ClaimBook(sink.path_for, stale_s=stale_s) as claims, caplog.at_level(logging.INFO, logger="r21d_features.utils.run.claims"):
        sink.folder.mkdir(parents=True)
        plant(claims.lock_path(video), "node7/1", 4242)  # a worker on another node that died just now
        planted_at = claims.lock_path(video).stat().st_mtime
        summary = run_extraction(extractor, [video], sink, progress=False, claims=claims)
    # When the takeover happened (the log record's clock), not when the run ended, so the time the
    # extraction takes under load does not count: never before stale_s, and within one poll
    # (stale_s / 4) plus a second of scheduling slack after it; waiting twice stale_s fails.
    [takeover] = [r for r in caplog.records if r.getMessage().startswith("taking over the stale claim")]
    assert stale_s <= takeover.created - planted_at < stale_s + stale_s / 4 + 1.0
    assert [(o.status, o.reason) for o in summary.outcomes] == [("done", "")]
    np.testing.assert_array_equal(load_feature_file(sink.path_for(video)), reference["clip02"])
    assert leftovers(sink.folder) == []


def test_failure_in_another_worker_is_not_repeated(tmp_path, extractor, good_clips):
    sink = FileSink(tmp_path, "r21d", MODEL, "npy", FEATURE_DIM)
    video = str(good_clips[3])
    with ClaimBook(sink.path_for, stale_s=60, started_at=time.time() - 1) as claims:
        sink.folder.mkdir(parents=True)
        plant(claims.failed_path(video), "node7/1", 4242, reason="decoding stopped at frame 3 of the 16")
        summary = run_extraction(extractor, [video], sink, progress=False, claims=claims)
    [outcome] = summary.outcomes
    assert (outcome.status, outcome.reason) == (
        "skipped", "failed in another worker (pid 4242 on node7): decoding stopped at frame 3 of the 16")
    assert not sink.path_for(video).exists()


def test_partial_file_of_a_killed_writer_never_counts_and_is_cleaned_up(tmp_path, extractor, good_clips, reference):
    sink = FileSink(tmp_path, "r21d", MODEL, "npy", FEATURE_DIM)
    video = str(good_clips[4])
    sink.folder.mkdir(parents=True)
    partial = sink.folder / ".clip04_r21d.npy.tmp"
    partial.write_bytes(b"\x93NUMPY\x01\x00")  # what kill -9 during np.save leaves
    truncated = sink.path_for(str(good_clips[5]))
    truncated.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'")  # a foreign, cut-off file under the final name
    with ClaimBook(sink.path_for, stale_s=60) as claims:
        summary = run_extraction(extractor, [video, str(good_clips[5])], sink, progress=False, claims=claims)
    assert [o.status for o in summary.outcomes] == ["done", "done"]
    np.testing.assert_array_equal(load_feature_file(sink.path_for(video)), reference["clip04"])
    np.testing.assert_array_equal(load_feature_file(truncated), reference["clip05"])
    assert leftovers(sink.folder) == []

"""The local run over many videos: claims, the run report, the summary, around the driver.

One bad video never stops the run: its failure is recorded with a one-line
reason and the loop goes on. Outputs are written atomically by the sink, so an
interrupted run can simply be started again. Several runs can share one output
folder: with a :class:`~utils.run.claims.ClaimBook` each video is extracted by one
of them.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import socket
import threading
import time
from dataclasses import asdict
from typing import Callable, Iterable, Iterator, Sequence

from tqdm import tqdm

from r21d_features.utils.core.console import plural
from r21d_features.utils.core.path_table import PathTable
from r21d_features.utils.core.errors import UserError
from r21d_features.utils.core.safe_fs import display_path, open_append_nofollow
from r21d_features.utils.core.shard_names import shown_name
from r21d_features.utils.core.object_store import ChangedMeanwhile, ObjectPath, store_of
from r21d_features.utils.outputs.sinks import Sink
from r21d_features.utils.outputs.storage import OutputPath, listed, output_location, storage_of
from r21d_features.utils.run.claims import ClaimBook, ClaimOwner
from r21d_features.utils.run.driver import Driver, ExtractsVideos, VideoOutcome, one_line_reason
from r21d_features.utils.run.summary import RunSummary

log = logging.getLogger(__name__)

REPORT_FILE_NAME = "run_report.jsonl"


def report_path_in(folder: str | os.PathLike) -> OutputPath:
    """The run report of the outputs in ``folder`` (a key when ``folder`` is an object-store prefix)."""
    return output_location(folder) / REPORT_FILE_NAME


class RunReport:
    """Appends one JSON line per video to ``path``: time, host, pid, then the :class:`VideoOutcome`.

    Each line is one ``write`` to a file opened with ``O_APPEND``, so workers
    sharing the file do not mix their lines (on local disks; NFS does not
    promise it). A report that cannot be written (full disk, or a symlink planted
    in its place, which is never followed) gives one warning and the run goes on:
    the console still shows every failure as it happens. ``extra``: fields added to every
    line (e.g. ``"weights": "random"``).
    """

    def __init__(self, path: str | os.PathLike | None, extra: dict | None = None) -> None:
        self.path = output_location(path) if path is not None else None
        self.host = socket.gethostname()
        self.extra = dict(extra or {})
        self._warned = False

    def add(self, outcome: VideoOutcome) -> None:
        if self.path is None:
            return
        fields = asdict(outcome)
        fields["path"] = shown_name(fields["path"])  # a shard member as <shard>#<member>
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": fields.pop("host") or self.host,
                  "pid": fields.pop("pid") or os.getpid(), **fields, **self.extra}
        # Names that are not UTF-8 (Linux paths are bytes) are written as \udcXX escapes.
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
        try:
            self._append(line)
        except (OSError, UserError) as exc:
            self._warn(exc)

    def _warn(self, exc: BaseException) -> None:
        if not self._warned:
            log.warning("cannot write the run report %s (%s); every failure is still printed as it happens",
                        self.path, exc)
            self._warned = True

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_append_nofollow(self.path)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Write what is still held back (nothing for a local report: each line is written at once)."""


class ObjectRunReport(RunReport):
    """The run report as one object (``run_report.jsonl`` under an ``s3://`` prefix).

    An object cannot be appended to: lines are held back and added every ``flush_s`` seconds
    and at :meth:`close` by rewriting the object with ``If-Match`` on the ETag read just
    before, so workers sharing the report never drop each other's lines (a worker that lost
    the race reads again and retries). Each flush rewrites the whole object, so the pause
    between flushes grows with it: ``flush_s`` seconds, or one second per MB the report already
    holds when that is longer (a report of 280 MB, a million videos, is rewritten about
    every 5 minutes, not every 15 s): the bytes rewritten over a run stay proportional to the report.
    A run killed with ``kill -9`` loses the lines of its last pause; its outputs are unaffected.
    """

    FLUSH_S = 15.0
    MAX_TRIES = 50

    def __init__(self, path: ObjectPath, extra: dict | None = None, flush_s: float = FLUSH_S) -> None:
        super().__init__(path, extra)
        self.flush_s = flush_s
        self._held: list[bytes] = []
        self._last_flush = time.monotonic()
        self._report_bytes = 0  # the object's size at the last flush
        self._lock = threading.Lock()

    def _append(self, line: bytes) -> None:
        with self._lock:
            self._held.append(line)
            due = time.monotonic() - self._last_flush >= flush_pause_s(self.flush_s, self._report_bytes)
        if due:
            self.flush()

    def flush(self) -> None:
        """Add the held lines to the report object."""
        with self._lock:
            lines, self._held = b"".join(self._held), []
            self._last_flush = time.monotonic()
        if not lines:
            return
        try:
            self._add_to_object(lines)
        except BaseException:
            with self._lock:  # kept for the next flush (or close)
                self._held.insert(0, lines)
            raise

    def _add_to_object(self, lines: bytes) -> None:
        store = store_of(self.path)
        for attempt in range(self.MAX_TRIES):
            info = store.info(self.path, check_bucket=False)
            try:
                if info is None:
                    store.put(self.path, lines, if_absent=True)
                    self._report_bytes = len(lines)
                else:
                    content = store.read_bytes(self.path) + lines
                    store.put(self.path, content, if_match=info.etag)
                    self._report_bytes = len(content)
                return
            except (ChangedMeanwhile, FileExistsError, FileNotFoundError):
                time.sleep(min(0.05 * (attempt + 1), 1.0) * (0.5 + random.random()))
        raise OSError(errno.EAGAIN, f"the report kept changing under {self.MAX_TRIES} tries")

    def close(self) -> None:
        try:
            self.flush()
        except (OSError, UserError) as exc:
            self._warn(exc)


def flush_pause_s(flush_s: float, report_bytes: int) -> float:
    """Seconds between two flushes of a report object holding ``report_bytes``: ``flush_s``, or
    one second per MB when that is longer."""
    return max(flush_s, report_bytes / 1e6)


def run_report_for(path: str | os.PathLike | None, extra: dict | None = None) -> RunReport:
    """The run report at ``path``: a local file appended line by line, or an object (:class:`ObjectRunReport`)."""
    if path is not None and isinstance(output_location(path), ObjectPath):
        return ObjectRunReport(output_location(path), extra)
    return RunReport(path, extra)


class OutcomeLog:
    """Where each video's outcome goes, in every runner: the :class:`RunSummary`, the
    :class:`RunReport`, a ``FAILED`` line on the console and the progress bar (videos,
    with the frames per second of the videos done so far)."""

    def __init__(self, total: int | None, report_path: str | os.PathLike | None, progress: bool,
                 report_extra: dict | None = None) -> None:
        """``total``: videos the bar counts; None: no bar until :meth:`start_bar`."""
        self.summary = RunSummary()
        self.report = run_report_for(report_path, report_extra)
        self.progress = progress
        self.bar = tqdm(disable=True)
        if total is not None:
            self.start_bar(total)
        self.frames_done = 0
        self.t_start = time.perf_counter()

    def start_bar(self, total: int, initial: int = 0) -> None:
        """The progress bar, over ``total`` videos of which ``initial`` are already counted."""
        self.bar.close()
        self.bar = tqdm(total=total, initial=initial, unit="video", disable=not self.progress or not total,
                        dynamic_ncols=True)

    def restart_clock(self) -> None:
        """Frames per second count from now (e.g. once the first worker is ready)."""
        self.t_start = time.perf_counter()

    def add(self, outcome: VideoOutcome, counted: bool = True, **postfix: object) -> None:
        """Record ``outcome``; ``counted``: it advances the progress bar (``postfix``: extra bar fields)."""
        if outcome.status == "failed":
            tqdm.write(f"FAILED {display_path(outcome.path)}: {outcome.reason}")
        self.summary.outcomes.append(outcome)
        self.report.add(outcome)
        if outcome.status == "done":
            self.frames_done += outcome.frames or 0
        if counted:
            elapsed_s = time.perf_counter() - self.t_start
            self.bar.update()
            self.bar.set_postfix(frames_per_s=f"{self.frames_done / max(elapsed_s, 1e-9):.1f}", **postfix)

    def close(self) -> None:
        self.bar.close()
        self.report.close()


class _Run:
    """One call of :func:`run_extraction`: the :class:`~utils.run.driver.Driver`, claims and records."""

    def __init__(self, driver: Driver, log: OutcomeLog, claims: ClaimBook | None) -> None:
        self.driver = driver
        self.sink = driver.sink
        self.log = log
        self.claims = claims
        self.deferred: list[str] = []  # claimed by other workers: looked at again later
        self.holders: dict[str, ClaimOwner] = {}
        self.kept: set[str] = set()  # done, but still held back by the sink: claims kept
        self.t_last = time.perf_counter()
        self._lock = threading.Lock()  # outcomes come from the writer thread and from claimed()

    def record(self, outcome: VideoOutcome, counted: bool = True) -> None:
        with self._lock:
            now = time.perf_counter()
            if counted and outcome.status != "skipped":
                outcome.seconds = round(now - self.t_last, 3)
                self.t_last = now
            self.log.add(outcome, counted=counted)

    def claimed(self, paths: Iterable[str]) -> Iterator[str]:
        """The paths of ``paths`` this worker gets to extract; never waits for other workers."""
        for path in paths:
            if self.claims is None:
                yield path
                continue
            try:
                holder = self.claims.try_claim(path)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                self.record(VideoOutcome(path, "failed", f"cannot create its claim file: {one_line_reason(exc)}"))
                continue
            if holder is not None:
                self.deferred.append(path)
                self.holders[path] = holder
                continue
            try:
                failed_by = self.claims.failed_elsewhere(path)
                done = self.sink.is_done(path)
                for output in self.sink.output_paths(path):
                    storage_of(output).remove_leftovers(output)  # a killed writer's (record, metadata, features)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                self.claims.release(path)
                self.record(VideoOutcome(path, "failed", f"cannot check its output: {one_line_reason(exc)}"))
                continue
            if done or failed_by is not None:
                self.claims.release(path)
                reason = ("extracted by another worker" if failed_by is None
                          else f"failed in another worker ({failed_by.describe()}): {failed_by.reason}")
                self.record(VideoOutcome(path, "skipped", reason))
                continue
            yield path

    def extract(self, paths: Sequence[str]) -> None:
        """Extract the claimed ones of ``paths`` through the driver; each outcome settles its claim."""
        self.driver.run(self.claimed(paths), self.settle)

    def settle(self, outcome: VideoOutcome) -> None:
        """An extracted video's outcome: its claim settled, then recorded (the writer thread).

        A video the sink still holds back (:meth:`~utils.outputs.sinks.Sink.pending`: a Parquet
        row not yet in a part) keeps its claim until a later outcome finds it written, or the
        run's end (the sink closed first), so no worker sharing the folder extracts it again.
        """
        if self.claims is not None:
            if outcome.status == "failed":
                self.claims.record_failure(outcome.path, outcome.reason)
            else:
                self.claims.clear_failure(outcome.path)
            pending = set(self.sink.pending()) if outcome.status == "done" or self.kept else set()
            if outcome.status == "done" and outcome.path in pending:
                self.kept.add(outcome.path)
            else:
                self.claims.release(outcome.path)
            for path in [p for p in self.kept if p not in pending]:  # written meanwhile
                self.kept.discard(path)
                self.claims.release(path)
        self.record(outcome)

    def close_sink(self) -> None:
        """Write what the sink holds back, then release the claims kept for it; a video whose output
        could not be written after all is recorded failed (it is extracted again by the next run)."""
        held = list(self.sink.pending())
        try:
            self.sink.close()
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            reason = f"cannot save output: {one_line_reason(exc)}"
            log.error("%s held back could not be written: %s", plural(len(held), "video"), reason)
            for path in held:
                self.record(VideoOutcome(path, "failed", reason), counted=False)
        if self.claims is not None:
            for path in self.kept:
                self.claims.release(path)
        self.kept.clear()

    def wait_for_others(self) -> None:
        """Go back to videos other workers held until each is done, failed, or free to take."""
        told, pause_s = False, 0.1
        while self.deferred:
            # What this worker holds back is written first: its claims go, and a worker waiting
            # for them (while holding the videos waited for here) is not waited for in turn.
            self.close_sink()
            paths, self.deferred = self.deferred, []
            self.extract(paths)
            if len(self.deferred) < len(paths):
                pause_s = 0.1
            elif self.claims is not None:  # all still held by live workers: look again soon, then less often
                if not told:
                    owners = sorted({self.holders[p].describe() for p in self.deferred})
                    log.info("waiting for %s claimed by other workers (%s)",
                             plural(len(self.deferred), "video"), ", ".join(owners))
                    told = True
                time.sleep(pause_s)
                pause_s = min(2 * pause_s, self.claims.poll_s)
                self.t_last = time.perf_counter()  # waiting is not the next video's time


def run_extraction(
    extractor: ExtractsVideos,
    video_paths: Sequence[str],
    sink: Sink,
    on_result: Callable[[object], None] | None = None,
    report_path: str | os.PathLike | None = None,
    debug: bool = False,
    progress: bool = True,
    with_metadata: bool = False,
    claims: ClaimBook | None = None,
    report_extra: dict | None = None,
) -> RunSummary:
    """Extract every video in ``video_paths`` into ``sink``; never raises for a single bad video.

    ``with_metadata``: also write each video's window spans (see :mod:`utils.outputs.metadata`).

    With ``claims``, workers sharing the output folder split the list: a video
    claimed by another worker is skipped, and looked at again once this
    worker's own share is done (until it is done, failed, or its claim went
    stale and this worker takes it over).

    ``report_extra``: fields added to every line of the run report. The sink is closed at the
    end (what it holds back is written, then the claims are released). Interrupted
    (KeyboardInterrupt, e.g. by :mod:`utils.run.signals`), it releases its claims and
    re-raises with the outcomes so far as ``exc.partial_summary``.
    """
    driver = Driver(extractor, sink, on_result=on_result, debug=debug, with_metadata=with_metadata)
    outcome_log = OutcomeLog(None, report_path, progress, report_extra)
    run = _Run(driver, outcome_log, claims)
    todo = PathTable()  # a million paths in about 70 MB (utils/core/path_table.py)
    failed_early = 0

    def decided_early(outcome: VideoOutcome) -> None:  # failed before any work, or skipped: the output exists
        nonlocal failed_early
        if outcome.status == "skipped" and claims is not None:
            claims.drop_stale(outcome.path)  # a killed worker's claim on a video it had finished
        failed_early += outcome.status == "failed"
        run.record(outcome, counted=False)

    # Outputs that exist are found in one listing of the folder (re-checked under each claim).
    # Each early outcome is recorded as it is decided, so nothing per video is held but its path.
    try:
        with listed(sink.folder):
            for path in driver.admitted(video_paths, decided_early):
                todo.append(path)
        outcome_log.start_bar(len(todo) + failed_early, initial=failed_early)
        run.extract(todo)
        run.wait_for_others()
    except KeyboardInterrupt as exc:
        exc.partial_summary = outcome_log.summary
        raise
    finally:
        try:
            run.close_sink()  # rows held back are written before their claims go
        finally:
            outcome_log.close()
            if claims is not None:
                claims.release_all()
    return outcome_log.summary

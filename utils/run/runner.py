"""The run loop over many videos: skip what is done, isolate failures, report.

One bad video never stops the run: its failure is recorded with a one-line
reason and the loop goes on. Outputs are written atomically by the sink, so an
interrupted run can simply be started again. Several runs can share one output
folder: with a :class:`~utils.run.claims.ClaimBook` each video is extracted by one
of them.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from r21d_features.utils.outputs.atomic import remove_temp_files
from r21d_features.utils.run.claims import ClaimBook, ClaimOwner
from r21d_features.utils.core.console import plural
from r21d_features.utils.core.errors import UserError, VideoError
from r21d_features.utils.core.safe_fs import display_path, input_problem, open_append_nofollow, output_name_problem
from r21d_features.utils.outputs.sinks import PrintSink, Sink
from r21d_features.utils.pipeline.writer import InputOrder, ResultWriter

log = logging.getLogger(__name__)

REPORT_FILE_NAME = "run_report.jsonl"


def report_path_in(folder: str | os.PathLike) -> Path:
    """The run report of the outputs in ``folder``."""
    return Path(folder) / REPORT_FILE_NAME


class ExtractsVideos(Protocol):
    """What the runner needs from an extractor (see models.r21d.R21DExtractor)."""

    def extract_many(self, video_paths: Iterable[str]) -> Iterator[tuple[str, object]]: ...


@dataclass
class VideoOutcome:
    path: str
    status: str  # "done" | "skipped" | "failed"
    reason: str = ""
    windows: int | None = None
    frames: int | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    host: str = ""  # where the video was extracted (a Ray worker's host); empty: this process
    pid: int | None = None


@dataclass
class RunSummary:
    outcomes: list[VideoOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[VideoOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def format(self) -> str:
        lines = [
            f"Summary: {self.count('done')} done, {self.count('skipped')} skipped, "
            f"{self.count('failed')} failed, of {plural(len(self.outcomes), 'video')}"
        ]
        lines += [f"  FAILED {display_path(o.path)}: {o.reason}" for o in self.failed]
        lines += [f"  warning {display_path(o.path)}: {w}" for o in self.outcomes for w in o.warnings]
        return "\n".join(lines)


def one_line_reason(exc: BaseException) -> str:
    """``exc`` as one line: a :class:`~utils.core.errors.UserError` by its message, anything else
    (a bug, a library's error) prefixed by its type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, UserError):
        return text
    return f"{type(exc).__name__}: {text}"


class RunReport:
    """Appends one JSON line per video to ``path``: time, host, pid, then the :class:`VideoOutcome`.

    Each line is one ``write`` to a file opened with ``O_APPEND``, so workers
    sharing the file do not mix their lines (on local disks; NFS does not
    promise it). A report that cannot be written (full disk, or a symlink planted
    in its place, which is never followed) gives one warning and the run goes on:
    the console summary still lists everything. ``extra``: fields added to every
    line (e.g. ``"weights": "random"``).
    """

    def __init__(self, path: str | os.PathLike | None, extra: dict | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.host = socket.gethostname()
        self.extra = dict(extra or {})
        self._warned = False

    def add(self, outcome: VideoOutcome) -> None:
        if self.path is None:
            return
        fields = asdict(outcome)
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": fields.pop("host") or self.host,
                  "pid": fields.pop("pid") or os.getpid(), **fields, **self.extra}
        # Names that are not UTF-8 (Linux paths are bytes) are written as \udcXX escapes.
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = open_append_nofollow(self.path)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot write the run report %s (%s); the summary below still lists every video",
                            self.path, exc)
                self._warned = True


class OutcomeLog:
    """Where each video's outcome goes, in every runner: the :class:`RunSummary`, the
    :class:`RunReport`, a ``FAILED`` line on the console and the progress bar (videos,
    with the frames per second of the videos done so far)."""

    def __init__(self, total: int, report_path: str | os.PathLike | None, progress: bool,
                 report_extra: dict | None = None) -> None:
        self.summary = RunSummary()
        self.report = RunReport(report_path, report_extra)
        self.bar = tqdm(total=total, unit="video", disable=not progress or not total, dynamic_ncols=True)
        self.frames_done = 0
        self.t_start = time.perf_counter()

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


def skip_if_done(sink: Sink, path: str) -> VideoOutcome | None:
    """A "skipped" outcome when ``path``'s output already exists and loads, else None."""
    if not sink.is_done(path):
        return None
    log.info("skipping %s: its output already exists and loads", path)
    return VideoOutcome(path=path, status="skipped", reason="output exists")


def precheck(sink: Sink, path: str) -> VideoOutcome | None:
    """A "failed" or "skipped" outcome for ``path`` decided before any work, else None.

    Never raises: a name no file can have, a FIFO/device/socket (refused before it is
    opened), an output name over the file-system limit, or any error while looking at the
    existing output becomes this video's failure, and the other videos go on.
    """
    try:
        problem = input_problem(path)
        output = sink.claim_path(path)
        if problem is None and output is not None:
            problem = output_name_problem(output)
        if problem is not None:
            return VideoOutcome(path=path, status="failed", reason=problem)
        return skip_if_done(sink, path)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        return VideoOutcome(path=path, status="failed", reason=f"cannot check its output: {one_line_reason(exc)}")


def check_finite(features: np.ndarray) -> None:
    """Refuse features holding NaN or Inf: they are never saved (a broken model or an fp16 overflow)."""
    bad = features.size - int(np.isfinite(features).sum())
    if bad:
        raise VideoError(
            f"{bad} of the {features.size} feature values are NaN or Inf (broken weights, or an fp16 overflow: "
            "try precision=fp32); nothing was saved"
        )


def store_result(
    path: str,
    result: object,
    sink: Sink,
    on_result: Callable[[object], None] | None = None,
    debug: bool = False,
    with_metadata: bool = False,
) -> VideoOutcome:
    """Write one ``extract_many`` result to ``sink``; its outcome ("done" or "failed"), never raises
    for the video (``seconds`` is left for the caller to fill). ``with_metadata``: also the
    window spans (see :mod:`utils.outputs.metadata`)."""
    outcome = VideoOutcome(path=path, status="done")
    if isinstance(result, BaseException):
        outcome.status, outcome.reason = "failed", one_line_reason(result)
        if debug:
            log.error("%s failed", path, exc_info=result)
        return outcome
    # An HDF5 sink records fps and the window stride of every video, metadata or not.
    features = result.as_dict(metadata=with_metadata or sink.needs_metadata)
    first = next(iter(features.values()), np.zeros((0, 0)))
    outcome.windows, outcome.frames = int(first.shape[0]), int(result.num_frames)
    outcome.warnings = list(result.warnings)
    try:
        check_finite(np.asarray(first))
        if on_result is not None:
            on_result(result)
        sink.write(path, features)
    except (KeyboardInterrupt, SystemExit, BrokenPipeError):  # a closed stdout ends the run (utils/run/cli.py)
        raise
    except Exception as exc:  # unwritable folder, full disk, ...
        outcome.status, outcome.reason = "failed", f"cannot save output: {one_line_reason(exc)}"
        if debug:
            log.error("%s: %s", path, traceback.format_exc())
    return outcome


class _Run:
    """One call of :func:`run_extraction`: the loop, its records and its claims."""

    def __init__(self, extractor: ExtractsVideos, sink: Sink, log: OutcomeLog, claims: ClaimBook | None,
                 on_result: Callable[[object], None] | None, debug: bool, with_metadata: bool) -> None:
        self.extractor = extractor
        self.sink = sink
        self.log = log
        self.claims = claims
        self.on_result = on_result
        self.debug = debug
        self.with_metadata = with_metadata
        self.deferred: list[str] = []  # claimed by other workers: looked at again later
        self.holders: dict[str, ClaimOwner] = {}
        self.t_last = time.perf_counter()
        # Printed output names no path: keep it in input order (results complete out of order).
        self.in_order = on_result is not None or isinstance(sink, PrintSink)
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
                    remove_temp_files(output)  # a killed writer's leftovers (record, metadata, features)
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
        """Extract ``paths``; writing, claims and the report happen on a writer thread
        (utils/pipeline/writer.py), which finishes what it was handed even when this stops early."""
        order = InputOrder() if self.in_order else None
        todo = self.claimed(paths) if order is None else order.track(self.claimed(paths))
        results = self.extractor.extract_many(todo)
        if order is not None:
            results = order.reorder(results)
        with ResultWriter(self.store) as writer:
            for path, result in results:
                writer.submit(path, result)

    def store(self, path: str, result: object) -> None:
        """Write one result, settle its claim, record its outcome (the writer thread)."""
        outcome = store_result(path, result, self.sink, self.on_result, self.debug, self.with_metadata)
        if self.claims is not None:
            if outcome.status == "failed":
                self.claims.record_failure(path, outcome.reason)
            else:
                self.claims.clear_failure(path)
            self.claims.release(path)
        self.record(outcome)

    def wait_for_others(self) -> None:
        """Go back to videos other workers held until each is done, failed, or free to take."""
        told, pause_s = False, 0.1
        while self.deferred:
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

    ``report_extra``: fields added to every line of the run report. Interrupted
    (KeyboardInterrupt, e.g. by :mod:`utils.run.signals`), it releases its claims and
    re-raises with the outcomes so far as ``exc.partial_summary``.
    """
    todo, early = [], []
    for path in video_paths:
        outcome = precheck(sink, path)
        if outcome is not None:
            early.append(outcome)
        else:
            todo.append(path)
    failed_early = [o for o in early if o.status == "failed"]
    outcome_log = OutcomeLog(len(todo) + len(failed_early), report_path, progress, report_extra)
    run = _Run(extractor, sink, outcome_log, claims, on_result, debug, with_metadata)
    for outcome in early:
        if claims is not None and outcome.status == "skipped":
            claims.drop_stale(outcome.path)  # a killed worker's claim on a video it had finished
        run.record(outcome, counted=outcome.status == "failed")
    try:
        run.extract(todo)
        run.wait_for_others()
    except KeyboardInterrupt as exc:
        exc.partial_summary = outcome_log.summary
        raise
    finally:
        outcome_log.close()
        if claims is not None:
            claims.release_all()
    return outcome_log.summary

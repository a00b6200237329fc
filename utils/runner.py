"""The run loop over many videos: skip what is done, isolate failures, report.

One bad video never stops the run: its failure is recorded with a one-line
reason and the loop goes on. Outputs are written atomically by the sink, so an
interrupted run can simply be started again.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from .sinks import Sink

log = logging.getLogger(__name__)


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
            f"{self.count('failed')} failed, of {len(self.outcomes)} videos"
        ]
        lines += [f"  FAILED {o.path}: {o.reason}" for o in self.failed]
        return "\n".join(lines)


def one_line_reason(exc: BaseException) -> str:
    """``exc`` as one line: our own errors by message, others prefixed by their type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if type(exc).__module__.split(".")[0] in ("utils", "models"):
        return text
    return f"{type(exc).__name__}: {text}"


class RunReport:
    """Appends one JSON line per video to ``path`` (path, status, reason, windows, frames, seconds)."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, outcome: VideoOutcome) -> None:
        if self.path is None:
            return
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid(), **asdict(outcome)}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def skip_if_done(sink: Sink, path: str) -> VideoOutcome | None:
    """A "skipped" outcome when ``path``'s output already exists and loads, else None."""
    if not sink.is_done(path):
        return None
    log.info("skipping %s: its output already exists and loads", path)
    return VideoOutcome(path=path, status="skipped", reason="output exists")


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
    window spans (see :mod:`utils.metadata`)."""
    outcome = VideoOutcome(path=path, status="done")
    if isinstance(result, BaseException):
        outcome.status, outcome.reason = "failed", one_line_reason(result)
        if debug:
            log.error("%s failed", path, exc_info=result)
        return outcome
    features = result.as_dict(metadata=True) if with_metadata else result.as_dict()
    first = next(iter(features.values()), np.zeros((0, 0)))
    outcome.windows, outcome.frames = int(first.shape[0]), int(result.num_frames)
    try:
        if on_result is not None:
            on_result(result)
        sink.write(path, features)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # unwritable folder, full disk, ...
        outcome.status, outcome.reason = "failed", f"cannot save output: {one_line_reason(exc)}"
        if debug:
            log.error("%s: %s", path, traceback.format_exc())
    return outcome


def run_extraction(
    extractor: ExtractsVideos,
    video_paths: Sequence[str],
    sink: Sink,
    on_result: Callable[[object], None] | None = None,
    report_path: str | os.PathLike | None = None,
    debug: bool = False,
    progress: bool = True,
    with_metadata: bool = False,
) -> RunSummary:
    """Extract every video in ``video_paths`` into ``sink``; never raises for a single bad video.

    ``with_metadata``: also write each video's window spans (see :mod:`utils.metadata`).
    """
    summary = RunSummary()
    report = RunReport(report_path)
    todo = []
    for path in video_paths:
        skipped = skip_if_done(sink, path)
        if skipped is not None:
            summary.outcomes.append(skipped)
            report.add(skipped)
        else:
            todo.append(path)

    bar = tqdm(total=len(todo), unit="video", disable=not progress or not todo, dynamic_ncols=True)
    frames_total, t_start = 0, time.perf_counter()
    t_last = t_start
    try:
        for path, result in extractor.extract_many(todo):
            outcome = store_result(path, result, sink, on_result, debug, with_metadata)
            frames_total += outcome.frames or 0
            now = time.perf_counter()
            outcome.seconds = round(now - t_last, 3)
            t_last = now
            if outcome.status == "failed":
                tqdm.write(f"FAILED {path}: {outcome.reason}")
            summary.outcomes.append(outcome)
            report.add(outcome)
            bar.update()
            bar.set_postfix(frames_per_s=f"{frames_total / max(now - t_start, 1e-9):.1f}")
    finally:
        bar.close()
    return summary

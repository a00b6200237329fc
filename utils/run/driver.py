"""The one driver: every run, local or inside a Ray actor, takes its videos through here.

::

    paths --admitted()--> extractor.extract_many --(path, result)--> writer thread --> store()
          (precheck:       (decoder threads -> windows ->            (utils/pipeline/   (finite check,
           bad names,       padded batches across videos ->           writer.py)         sink.write:
           FIFOs, outputs   network; in completion order)                                atomic)
           that exist)                                                                   -> VideoOutcome

A :class:`Driver` owns that path and nothing else: the local runner (:mod:`utils.run.runner`)
adds claims and the run report around it, a Ray actor (:mod:`utils.run.ray_runner`) a queue of
paths and a queue of outcomes. The Python API's ``extract_video`` is the same
``extract_many`` without a sink. So every entry point extracts a video with the same code.

A video's problem never leaves this module as an exception: each path ends as one
:class:`VideoOutcome` (done, skipped or failed, with a one-line reason) handed to the caller's
``on_outcome``.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np

from r21d_features.utils.core.errors import UserError, VideoError
from r21d_features.utils.core.safe_fs import output_name_problem
from r21d_features.utils.outputs.sinks import PrintSink, Sink
from r21d_features.utils.pipeline.writer import InputOrder, ResultWriter
from r21d_features.utils.video.sources import open_source

log = logging.getLogger(__name__)


class ExtractsVideos(Protocol):
    """What the driver needs from an extractor (see models.r21d.R21DExtractor)."""

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


def one_line_reason(exc: BaseException) -> str:
    """``exc`` as one line: a :class:`~utils.core.errors.UserError` by its message, anything else
    (a bug, a library's error) prefixed by its type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, UserError):
        return text
    return f"{type(exc).__name__}: {text}"


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
        problem = open_source(path).problem()
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


class Driver:
    """Paths in, one :class:`VideoOutcome` per path out: extract, check, write to ``sink``.

    ``on_result(result)``: called with each video's result before it is written (the console's
    predictions, plots). ``with_metadata``: also write each video's window spans. Results are
    written in completion order, except where the output names no path (printed features, or an
    ``on_result``): then in input order.
    """

    def __init__(self, extractor: ExtractsVideos, sink: Sink, *, on_result: Callable[[object], None] | None = None,
                 debug: bool = False, with_metadata: bool = False) -> None:
        self.extractor = extractor
        self.sink = sink
        self.on_result = on_result
        self.debug = debug
        self.with_metadata = with_metadata
        self.in_order = on_result is not None or isinstance(sink, PrintSink)

    def admitted(self, paths: Iterable[str], on_outcome: Callable[[VideoOutcome], None]) -> Iterator[str]:
        """The paths of ``paths`` that need extracting; the others' outcomes (failed before any work,
        or skipped: the output exists) go to ``on_outcome``."""
        for path in paths:
            outcome = precheck(self.sink, path)
            if outcome is None:
                yield path
            else:
                on_outcome(outcome)

    def run(self, paths: Iterable[str], on_outcome: Callable[[VideoOutcome], None]) -> None:
        """Extract ``paths`` (consumed lazily: the caller may still be adding to them) and store each
        result; ``on_outcome`` runs on the writer thread, which finishes what it was handed even when
        this stops early (Ctrl-C, a fatal device error)."""
        order = InputOrder() if self.in_order else None
        results = self.extractor.extract_many(paths if order is None else order.track(paths))
        if order is not None:
            results = order.reorder(results)
        with ResultWriter(lambda path, result: on_outcome(self.store(path, result))) as writer:
            for path, result in results:
                writer.submit(path, result)

    def store(self, path: str, result: object) -> VideoOutcome:
        """One result written to the sink; its outcome (never raises for the video)."""
        return store_result(path, result, self.sink, self.on_result, self.debug, self.with_metadata)

"""Many videos in flight: decoder threads stream their own videos, one batcher feeds the device.

::

    decode threads (decode_workers)         model thread (the caller of WindowBatcher.run)
    video A: start, chunk, chunk, ... end -\
    video B: start, chunk, ... end ---------+-> one bounded queue -> per video: prepare(chunk) -> WindowStream
    video C: start, chunk, ...  -----------/                        windows of every video -> batches of batch_size
                                                                   -> output rows handed back to each video
                                                                   -> a video whose decoder ended and whose
                                                                      windows are all computed is yielded

Every decoder works on its own video at its own pace, so a long video never stops the
others from decoding; batches take windows from whichever videos have them, so they stay
full across video boundaries. A batch is run when it is full, or when no video still
decoding could add to it; never early because the decoders are slow: every batch has the
network's one shape, so a batch run with 2 windows costs as much as a full one (measured on a
CPU at 1080p, where a chunk takes longer than a short wait: 2.6x the model time). Results
come out in completion order.

Host memory is bounded whatever the video lengths: chunks come from a fixed
:class:`BufferPool`, the queue holds at most a few chunks per decoder, and each video keeps
only the frames a later window still needs (:class:`~utils.video.window_stream.WindowStream`).

What the model side does is given as a :class:`BatchModel` (see models.r21d.extractor), so
this module knows nothing of networks or preprocessing.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np
import torch

from r21d_features.utils.pipeline.prefetch import put_unless
from r21d_features.utils.video.window_stream import WindowStream

log = logging.getLogger(__name__)

_START, _ITEM, _END, _ERROR = "start", "item", "end", "error"


class BufferPool:
    """A fixed set of equal host tensors, reused: decoders gather into them, the model side gives
    them back. ``acquire`` blocks while all are in use, which is what bounds host memory.

    With ``pin`` the tensors are page-locked (copies to a GPU run asynchronously); a buffer
    given back with a CUDA event is reused only once that event (the copy) has completed.
    """

    def __init__(self, shape: tuple[int, ...], count: int, dtype: torch.dtype = torch.uint8, pin: bool = False) -> None:
        self.shape = shape
        self._free: queue.Queue = queue.Queue()
        for _ in range(max(1, count)):
            buffer = torch.empty(shape, dtype=dtype)
            self._free.put((buffer.pin_memory() if pin else buffer, None))

    def acquire(self, cancelled: Callable[[], bool] = lambda: False) -> torch.Tensor | None:
        """A free buffer, or None once ``cancelled()`` says to give up waiting."""
        while True:
            try:
                buffer, event = self._free.get(timeout=0.05)
            except queue.Empty:
                if cancelled():
                    return None
                continue
            if event is not None:
                event.synchronize()  # the asynchronous copy out of this buffer has finished
            return buffer

    def release(self, buffer: torch.Tensor, event: Any = None) -> None:
        self._free.put((buffer, event))


class BatchModel(Protocol):
    """The model side of a :class:`WindowBatcher`; all methods but ``decode`` run on the model thread."""

    stack_size: int
    step_size: int
    batch_size: int

    def decode(self, path: str, cancelled: Callable[[], bool]) -> Iterator[Any]:
        """Decoder thread: a start item, then chunks (``prepare`` reads them); may raise for the video."""

    def prepare(self, video: "VideoState", chunk: Any) -> tuple[np.ndarray, torch.Tensor]:
        """``(frame_indices, frames_tchw)`` of a chunk, preprocessed on the device."""

    def drop(self, chunk: Any) -> None:
        """Give back what a chunk holds when it is thrown away unread (a failed video's)."""

    def forward(self, windows_tchw: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """Outputs of a batch of windows, one ``(n, ...)`` tensor per output (``None``: not asked for)."""

    def finish(self, video: "VideoState", outputs: list[torch.Tensor | None]) -> Any:
        """The result of a finished video from its outputs (``(num_windows, ...)`` each, window order;
        an empty list when it had no window). Starts the copy to the host; ``ready`` says when it is done."""

    def timed_out(self, video: "VideoState") -> Exception:
        """The error of a video that ran past its deadline."""

    def classify(self, exc: BaseException) -> str:
        """``"fatal"`` (stop everything: raise it), ``"oom"`` (free and retry) or ``"video"``."""

    def free_memory(self) -> None:
        """Release cached device memory (after an out-of-memory error)."""

    def ready(self, result: Any) -> bool:
        """Whether a result from ``finish`` can be handed out (its copy to the host is done)."""


@dataclass
class VideoState:
    """One video in flight: its decoder's start item, its window stream and its output rows."""

    id: int
    path: str
    deadline: float | None
    cancel: threading.Event = field(default_factory=threading.Event)
    start: Any = None
    context: Any = None  # whatever prepare() keeps per video (e.g. the blend constants on the device)
    stream: WindowStream | None = None
    parts: list[tuple[list[torch.Tensor | None], list[tuple[int, int]]]] = field(default_factory=list)
    windows_cut: int = 0
    windows_done: int = 0
    decoded: bool = False  # the decoder sent its end marker
    replaced: bool = False  # timed out while decoding: its decoder thread ends, another took its place
    thread: threading.Thread | None = None  # the decoder thread that took it up

    @property
    def decode_deadline(self) -> float | None:
        """When its decoding runs out of time: None before a decoder takes it up, and once decoded
        (a decoded video whose windows wait for batch-mates is done with its part)."""
        return None if self.decoded else self.deadline

    @property
    def complete(self) -> bool:
        return self.decoded and self.windows_done == self.windows_cut

    def outputs(self) -> list[torch.Tensor | None]:
        """Each output's rows of this video, in window order (still on the device; slices only,
        so no index has to be copied to the device)."""
        if not self.parts:
            return []
        per_output: list[torch.Tensor | None] = []
        for k in range(len(self.parts[0][0])):
            if self.parts[0][0][k] is None:
                per_output.append(None)
            else:
                per_output.append(torch.cat([outs[k][a:b] for outs, runs in self.parts for a, b in runs]))
        return per_output


class WindowBatcher:
    """Runs ``model`` over ``paths`` with ``workers`` decoder threads; see the module docstring.

    ``run(paths)`` yields ``(path, result or exception)`` as videos complete. A video that fails
    (decode error, ``timeout_s`` passed, an error in a batch of its windows) yields its
    exception; its windows leave the pending batch, so batch-mates are unaffected. An error
    that ``model.classify`` calls fatal is raised at once and stops everything.
    """

    def __init__(self, model: BatchModel, workers: int, timeout_s: float | None = None,
                 max_queued: int | None = None) -> None:
        self.model = model
        self.workers = max(1, workers)
        self.timeout_s = timeout_s
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued or 2 * self.workers + 2)
        self._jobs: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._abandoned: set[threading.Thread] = set()  # stuck on a timed-out video: not waited for

    # ------------------------------------------------------------------ decoder threads
    def _start_decoder(self) -> None:
        thread = threading.Thread(target=self._decode_loop, name=f"decode-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _decode_loop(self) -> None:
        while True:
            video = self._jobs.get()
            if video is None or self._stop.is_set():  # stopping: queued videos are not started
                return
            video.thread = threading.current_thread()
            cancelled = lambda: self._stop.is_set() or video.cancel.is_set()  # noqa: E731
            if self.timeout_s is not None:  # its time runs from when a decoder takes it up
                video.deadline = time.monotonic() + self.timeout_s
            items = None
            try:
                items = iter(self.model.decode(video.path, cancelled))
                kind = _START
                for item in items:
                    if not put_unless(self._queue, (video, kind, item), cancelled):
                        if kind == _ITEM:
                            self.model.drop(item)
                        break
                    kind = _ITEM
                else:
                    put_unless(self._queue, (video, _END, None), cancelled)
            except BaseException as exc:  # the video's failure, reported by the model thread
                put_unless(self._queue, (video, _ERROR, exc), cancelled)
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()  # a generator's cleanup (temporary files) runs on this thread
            if video.replaced:  # timed out while this thread was in it: a new thread took its place
                return

    # ------------------------------------------------------------------ model thread
    def run(self, paths: Iterable[str]) -> Iterator[tuple[str, Any]]:
        for _ in range(self.workers):
            self._start_decoder()
        try:
            yield from self._loop(iter(paths))
        finally:
            self._stop.set()
            while True:  # videos still waiting for a decoder are never started
                try:
                    self._jobs.get_nowait()
                except queue.Empty:
                    break
            for _ in self._threads:
                self._jobs.put(None)
            self._drain_queue()
            for thread in self._threads:
                if thread not in self._abandoned:  # (an abandoned one may be stuck for good)
                    thread.join(timeout=5)
            self._drain_queue()

    def _drain_queue(self) -> None:
        while True:
            try:
                _, kind, item = self._queue.get_nowait()
            except queue.Empty:
                return
            if kind == _ITEM:
                self.model.drop(item)

    def _loop(self, paths: Iterator[str]) -> Iterator[tuple[str, Any]]:
        state = _LoopState()
        ids = itertools.count()
        exhausted = False
        while True:
            # One video waiting per decoder besides the ones decoding: a decoder that ends a
            # video starts the next at once, not once this thread has read its end marker.
            while not exhausted and state.decoding() < 2 * self.workers:
                try:
                    path = next(paths)
                except StopIteration:
                    exhausted = True
                    break
                video = VideoState(id=next(ids), path=path, deadline=None)
                state.active[video.id] = video
                self._jobs.put(video)
            yield from state.ready(self.model)
            if not state.active and exhausted:
                if state.done:  # results whose copy to the host is still running
                    time.sleep(0.001)
                    continue
                return
            if state.pending and state.decoding() == 0:  # nothing more can join this batch
                self._run_batch(state)
                continue
            if state.active and not state.pending and state.decoding() == 0:
                stuck = [v.path for v in state.active.values() if not v.complete]
                raise RuntimeError(f"batcher bug: windows of {stuck} were never computed")  # instead of a hang
            wait_s = 0.002 if state.done else 0.5  # (a timeout only to look at deadlines and results)
            deadlines = [d for d in (v.decode_deadline for v in state.active.values()) if d is not None]
            if deadlines:
                wait_s = max(0.0, min(wait_s, min(deadlines) - time.monotonic()))
            try:
                video, kind, item = self._queue.get(timeout=wait_s)
            except queue.Empty:
                self._check_deadlines(state)
                continue
            self._handle(state, video, kind, item)
            if deadlines:
                self._check_deadlines(state)

    def _handle(self, state: "_LoopState", video: VideoState, kind: str, item: Any) -> None:
        if video.id not in state.active:  # failed or timed out already: throw its leftovers away
            if kind == _ITEM:
                self.model.drop(item)
            return
        if kind == _START:
            video.start, video.stream = item, WindowStream(self.model.stack_size, self.model.step_size)
        elif kind == _ITEM:
            try:
                indices, frames = self.model.prepare(video, item)
                windows = video.stream.push(indices, frames)
            except Exception as exc:  # noqa: BLE001
                if self.model.classify(exc) == "fatal":
                    raise
                state.fail(video, exc)
                return
            for _, window in windows:
                state.pending.append((video, window))
                video.windows_cut += 1
            while len(state.pending) >= self.model.batch_size:
                self._run_batch(state)
        elif kind == _END:
            video.decoded = True
            if video.complete:
                state.finish(self.model, video)
        else:  # _ERROR
            if self.model.classify(item) == "fatal":  # e.g. a poisoned CUDA context seen by a decoder
                raise item
            state.fail(video, item)

    def _check_deadlines(self, state: "_LoopState") -> None:
        now = time.monotonic()
        for video in list(state.active.values()):
            deadline = video.decode_deadline
            if deadline is not None and now > deadline:
                state.fail(video, self.model.timed_out(video))
                # Its decoder may be stuck inside one native call: a new one takes its place
                # (the old one ends when it returns), so the videos after it still start.
                video.replaced = True
                if video.thread is not None:
                    self._abandoned.add(video.thread)
                self._start_decoder()

    def _run_batch(self, state: "_LoopState") -> None:
        size = self.model.batch_size
        batch, state.pending = state.pending[:size], state.pending[size:]
        for video, outputs, runs in self._forward(batch, state.fail):
            video.parts.append((outputs, runs))
            video.windows_done += sum(b - a for a, b in runs)
        for video in {id(v): v for v, _ in batch}.values():
            if video.id in state.active and video.complete:
                state.finish(self.model, video)

    def _forward(self, batch: list[tuple[VideoState, torch.Tensor]],
                 fail: Callable[[VideoState, BaseException], None]) -> list[tuple[VideoState, list, list]]:
        """Run one batch; ``(video, outputs of the batch, row runs of this video)`` per video in it.

        Out of memory: the batch's tensors are dropped and the cache freed, then it is tried once
        more; if that fails too, each video's windows are run on their own and a video that still
        does not fit fails alone. Any other error fails the videos of the batch; a fatal one is raised.
        """
        videos = list({id(v): v for v, _ in batch}.values())
        error = self._try_forward(batch)
        if not isinstance(error, BaseException):
            return error
        if self.model.classify(error) == "oom":
            del error  # drop the failed batch's references: the cache frees only what nothing holds
            self.model.free_memory()
            error = self._try_forward(batch)
            if not isinstance(error, BaseException):
                return error
            if self.model.classify(error) == "oom":
                del error
                self.model.free_memory()
                out = []
                for video in videos:
                    result = self._try_forward([entry for entry in batch if entry[0] is video])
                    if isinstance(result, BaseException):
                        self.model.free_memory()
                        fail(video, result)
                    else:
                        out += result
                return out
        for video in videos:
            fail(video, error)
        return []

    def _try_forward(self, batch: list[tuple[VideoState, torch.Tensor]]) -> list | BaseException:
        """The split outputs of ``batch``, or the (non-fatal) exception it raised."""
        try:
            outputs = self.model.forward([w for _, w in batch])
        except Exception as exc:  # noqa: BLE001
            if self.model.classify(exc) == "fatal":
                raise
            return exc
        runs: dict[int, tuple[VideoState, list[list[int]]]] = {}
        for position, (video, _) in enumerate(batch):
            video_runs = runs.setdefault(id(video), (video, []))[1]
            if video_runs and video_runs[-1][1] == position:
                video_runs[-1][1] = position + 1
            else:
                video_runs.append([position, position + 1])
        return [(video, outputs, [tuple(r) for r in video_runs]) for video, video_runs in runs.values()]


class _LoopState:
    """The model thread's books: videos in flight, windows waiting for a batch, results to yield."""

    def __init__(self) -> None:
        self.active: dict[int, VideoState] = {}
        self.pending: list[tuple[VideoState, torch.Tensor]] = []
        self.done: deque[tuple[str, Any]] = deque()

    def decoding(self) -> int:
        return sum(not v.decoded for v in self.active.values())

    def fail(self, video: VideoState, exc: BaseException) -> None:
        if self.active.pop(video.id, None) is None:
            return
        video.cancel.set()
        self.pending = [p for p in self.pending if p[0] is not video]
        video.stream, video.parts = None, []  # its frames and rows are freed now
        self.done.append((video.path, exc))

    def finish(self, model: BatchModel, video: VideoState) -> None:
        del self.active[video.id]
        try:
            result = model.finish(video, video.outputs())
        except Exception as exc:  # noqa: BLE001 (the video's own failure, e.g. no decodable frame)
            if model.classify(exc) == "fatal":
                raise
            result = exc
        video.stream, video.parts = None, []
        self.done.append((video.path, result))

    def ready(self, model: BatchModel) -> Iterator[tuple[str, Any]]:
        """The finished results whose copy to the host is complete (never waits for one)."""
        waiting = deque()
        while self.done:
            path, result = self.done.popleft()
            if isinstance(result, BaseException) or model.ready(result):
                yield path, result
            else:
                waiting.append((path, result))
        self.done = waiting

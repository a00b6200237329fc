"""Per-video results handled off the device's thread, and back in input order where it matters.

The thread that feeds the device should never wait for a file system: an atomic write with
fsync, a claim release and a report line take tens of milliseconds on NFS or Lustre, about the
GPU time of a whole 10-second clip. :class:`ResultWriter` runs that work on one thread of its
own, in the order results arrive; the device thread only hands results over.

A result handed over is never lost: :meth:`ResultWriter.close` (also on Ctrl-C or any other
exception in the producer, through ``with``) waits until every queued result is written. So an
interrupted run leaves each finished video either written or not started, and running the same
command again completes the rest.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger(__name__)

_STOP = object()


class ResultWriter:
    """Calls ``handle(path, result)`` on a background thread for each :meth:`submit`, in order.

    ``max_queued`` bounds the results waiting (their features stay in memory meanwhile): a
    producer faster than the file system waits in :meth:`submit`. An exception raised by
    ``handle`` is re-raised by the next :meth:`submit` or by :meth:`close`; handlers catch what
    belongs to one video themselves (see utils.run.driver.store_result).
    """

    def __init__(self, handle: Callable[[str, Any], None], max_queued: int = 64, name: str = "writer") -> None:
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_queued))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                continue  # a handler failed: keep draining so submit() never blocks forever
            try:
                self._handle(*item)
            except BaseException as exc:  # handed to the producer's thread
                self._error = exc

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, path: str, result: Any) -> None:
        self._raise_pending()
        self._queue.put((path, result))

    def close(self) -> None:
        """Wait until every submitted result is handled; re-raise a handler's exception."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_pending()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # the producer stopped (Ctrl-C, a fatal device error): still write what was handed over
            self.close()
        except Exception as error:  # noqa: BLE001 (the producer's exception is the one to show)
            log.error("while stopping, a result could not be written: %s", error)


class InputOrder:
    """Puts ``(path, result)`` pairs that come in completion order back into input order.

    ``track(paths)`` wraps the paths given to the extractor and notes the order in which it
    takes them; ``reorder(results)`` yields each result once all earlier paths have theirs.
    Held results are few (the videos in flight) and small (features, not frames). Used where
    output has no path to tell videos apart (printed features and predictions).
    """

    def __init__(self) -> None:
        self._order: list[str] = []

    def track(self, paths: Iterable[str]) -> Iterator[str]:
        for path in paths:
            self._order.append(os.fspath(path))  # results name their video as a str
            yield path

    def reorder(self, results: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        held: dict[str, list[Any]] = {}
        next_index = 0
        for path, result in results:
            held.setdefault(path, []).append(result)
            while next_index < len(self._order) and held.get(self._order[next_index]):
                path_now = self._order[next_index]
                yield path_now, held[path_now].pop(0)
                next_index += 1
        for path_now in self._order[next_index:]:  # anything left (should not happen) still comes out
            for result in held.pop(path_now, []):
                yield path_now, result

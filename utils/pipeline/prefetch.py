"""Run several producers ahead of an in-order consumer, each through a bounded queue.

Used to decode the next videos on background threads while the current one is
on the model. OpenCV's decoder and torch's CPU ops release the GIL, so threads
give real parallelism here without copying frames between processes.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")
K = TypeVar("K")

_DONE = object()


def default_decode_workers(cpus: int | None = None) -> int:
    """Decode threads when the user leaves ``decode_workers`` unset: half of ``cpus``
    (default: this machine's), 1 to 8; the other half runs the model's CPU work."""
    return max(1, min(8, (cpus or os.cpu_count() or 2) // 2))


def put_unless(q: queue.Queue, item: object, stopped: Callable[[], bool], poll_s: float = 0.05) -> bool:
    """Put ``item`` on the bounded queue ``q``, waiting for room; False (not put) once ``stopped()``."""
    while not stopped():
        try:
            q.put(item, timeout=poll_s)
            return True
        except queue.Full:
            continue
    return False


class DeadlinePassed(Exception):
    """The consumer's deadline passed while it waited for the next item."""


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Producer(Generic[T]):
    """Fills a bounded queue from ``make_items()`` on a worker thread."""

    def __init__(self, make_items: Callable[[], Iterable[T]], max_queued: int) -> None:
        self._make_items = make_items
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_queued))
        self._stop = threading.Event()

    def run(self) -> None:
        try:
            for item in self._make_items():
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, who decides
            self._put(_Failure(exc))

    def _put(self, item: object) -> bool:
        return put_unless(self._queue, item, self._stop.is_set)

    def items(self, deadline: float | None = None) -> Iterator[T]:
        """The produced items in order; re-raises the producer's exception.

        ``deadline`` (``time.monotonic()`` seconds): raise :class:`DeadlinePassed`
        instead of waiting past it for the next item.
        """
        while True:
            if deadline is None:
                item = self._queue.get()
            else:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise DeadlinePassed from None
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def cancel(self) -> None:
        """Stop the worker and drop what it queued."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return


def prefetch_in_order(
    keys: Iterable[K],
    make_items: Callable[[K], Iterable[T]],
    workers: int,
    max_queued: int,
) -> Iterator[tuple[K, Producer[T]]]:
    """Yield ``(key, producer)`` in the order of ``keys``, ``workers`` of them running ahead.

    The consumer must drain or ``cancel()`` each producer before asking for the next.
    """
    workers = max(1, workers)
    pending: deque[tuple[K, Producer[T]]] = deque()
    key_iter = iter(keys)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        try:
            while True:
                while len(pending) < workers:
                    try:
                        key = next(key_iter)
                    except StopIteration:
                        break
                    producer = Producer(lambda key=key: make_items(key), max_queued)
                    pool.submit(producer.run)
                    pending.append((key, producer))
                if not pending:
                    return
                key, producer = pending.popleft()
                try:
                    yield key, producer
                finally:
                    producer.cancel()
        finally:
            for _, producer in pending:
                producer.cancel()

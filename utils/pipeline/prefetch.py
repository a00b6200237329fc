"""Decode threads: how many by default, and the bounded put they hand their items over with.

OpenCV's and PyAV's decoders and torch's CPU ops release the GIL, so threads give real
parallelism here without copying frames between processes.
"""

from __future__ import annotations

import os
import queue
from typing import Callable




def default_decode_workers(cpus: int | None = None) -> int:
    """Decode threads when the user leaves ``decode_workers`` unset: half of ``cpus``
    (default: the host's), 1 to 8; the other half runs the model's CPU work."""
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

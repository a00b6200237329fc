"""The network's intra-op threads on a CPU, for the extractor's own forward passes only.

``torch.set_num_threads`` is process-wide. With ``num_threads`` set, it is applied around
each of our forward passes and put back as it was afterwards, so a caller's own code
around the Python API keeps its own thread count. Unset, PyTorch's default stands (one
thread per core this process may use) and nothing is touched.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def network_threads(device: torch.device, num_threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(num_threads)`` while the block runs on a CPU ``device``, then
    restored (also when the block raises); nothing changes on a GPU or when ``num_threads`` is None."""
    saved = torch.get_num_threads()
    if device.type != "cpu" or num_threads is None or num_threads == saved:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)

"""cuDNN autotuning for the extractor's own forward passes only.

Every batch the network sees has one shape (padded to ``batch_size``), so cuDNN's autotuner
(``torch.backends.cudnn.benchmark``) picks the fastest convolutions once and reuses them. The
switch is process-wide; it is turned on around each of our forward passes and put back as it
was afterwards, so a caller's own code around the Python API runs with its own setting.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def tuned_convolutions(device: torch.device) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` on while the block runs on a CUDA ``device``, then
    restored (also when the block raises); nothing changes for other devices."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved

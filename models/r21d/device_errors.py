"""Device errors, told apart by what they mean for the run.

- **fatal**: the CUDA context is poisoned (an illegal memory access, a launch failure, a
  device-side assert) or the GPU cannot run our kernels at all (no kernel image for this
  architecture). Every later call on the device fails too, so the run stops at once with one
  line (:class:`~utils.core.errors.DeviceFailure`) instead of failing every remaining video and
  leaving ``.failed`` claim markers that would tell other workers to skip good videos.
- **oom**: out of memory. Transient: the batch is freed and retried (see utils/pipeline/batcher.py).
- **video**: anything else belongs to the videos of the batch.

CUDA reports these as ``RuntimeError`` (``torch.AcceleratorError`` in recent PyTorch) whose
message carries the CUDA error string, so the message is what is matched.
"""

from __future__ import annotations

from typing import Callable

import torch

from r21d_features.utils.core.errors import DeviceFailure

# Substrings of CUDA's own error strings (cudaGetErrorString) after which the context is unusable.
FATAL_MESSAGES = (
    "an illegal memory access was encountered",
    "illegal instruction",
    "misaligned address",
    "unspecified launch failure",
    "device-side assert triggered",
    "no kernel image is available",
    "cuda error: invalid device function",
    "the launch timed out and was terminated",
    "uncorrectable ecc error",
    "cudnn_status_execution_failed",
    "cuda driver version is insufficient",
    "cuda error: unknown error",
)
RERUN_HINT = "the run stopped; fix the device (or use another) and run the same command again to resume"


def classify(exc: BaseException) -> str:
    """``"fatal"``, ``"oom"`` or ``"video"`` for an exception raised while running a batch."""
    if isinstance(exc, DeviceFailure):
        return "fatal"
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "oom"
    text = str(exc).lower()
    if "out of memory" in text and ("cuda" in text or "hip" in text):
        return "oom"
    if any(message in text for message in FATAL_MESSAGES):
        return "fatal"
    return "video"


def device_failure(exc: BaseException, device: torch.device | str) -> DeviceFailure:
    """The one line that stops the run for a fatal ``exc`` on ``device``."""
    first = " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__
    if "no kernel image" in first.lower() or "invalid device function" in first.lower():
        why = ("this PyTorch build has no kernels for this GPU's architecture: install a torch wheel "
               "built for it (see pytorch.org), or use device=cpu")
    else:
        why = RERUN_HINT
    return DeviceFailure(f"device {device} failed: {first}; {why}")


def probe(run_once: Callable[[], object], device: torch.device) -> None:
    """Run ``run_once`` (one forward pass of the real shape) before any video is touched.

    Catches "no kernel image" and other fatal errors as a :class:`DeviceFailure` at start-up;
    on a GPU it also lets cuDNN pick its algorithms for the one batch shape the run uses.
    """
    try:
        run_once()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:
        if classify(exc) == "fatal":
            raise device_failure(exc, device) from None
        raise

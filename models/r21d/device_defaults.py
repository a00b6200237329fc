"""What the extractor picks for a device when a key is left null, and when bf16 will be slow.

- ``batch_size``: on a CPU the fewest windows that make :data:`CPU_FRAMES_PER_PASS` frames a
  pass (crops count: their clips share the pass): one 16-frame window, two 8-frame ones.
  oneDNN's convolutions run at their best from 16 frames a pass (8-frame clips one at a time
  run at half speed) and slower at 16 windows (the working set outgrows the caches), and a
  small pass leaves few padded rows: a video of 22 16-frame windows costs 22, not 32. On a
  GPU 16 clips, padded, one shape for cuDNN to tune once.
- bf16 on a CPU: fast only where oneDNN has bf16 instructions (:mod:`utils.core.cpu`);
  elsewhere a warning names the measured slowdown and the fix, before any work.
"""

from __future__ import annotations

import math

import torch

from r21d_features.utils.core.cpu import NATIVE_BF16_FLAGS, CpuInfo

# Clips per forward pass on a GPU when batch_size is null (windows x crops).
GPU_BATCH_CLIPS = 16
# Frames (windows x crops x stack_size) a CPU forward pass should hold at least.
CPU_FRAMES_PER_PASS = 16
# bf16 / fp32 time per window where oneDNN has no bf16 instructions, by the widest vectors it
# may use, measured with benchmarks/model_ablation.py (docs/benchmarks.md, "bf16 on the
# CPU"): AVX-512 converts bf16 in registers; with AVX2 only the convolutions fall back to
# reference kernels.
BF16_EMULATED_SLOWDOWN = {"avx512": "about 2x", "avx2": "about 85x"}


def default_batch_clips(device: torch.device, num_crops: int, stack_size: int) -> int:
    """Clips per forward pass for ``batch_size=null``: on a CPU the fewest whole windows
    (``num_crops`` clips of ``stack_size`` frames each) that hold :data:`CPU_FRAMES_PER_PASS`
    frames; on a GPU :data:`GPU_BATCH_CLIPS` (at least one window)."""
    if device.type == "cuda":
        return max(GPU_BATCH_CLIPS, num_crops)
    windows = max(1, math.ceil(CPU_FRAMES_PER_PASS / (stack_size * num_crops)))
    return windows * num_crops


def slow_bf16_warning(cpu: CpuInfo) -> str | None:
    """The one-line warning for ``precision=bf16`` on ``cpu``, or None where bf16 is native."""
    if cpu.native_bf16:
        return None
    if cpu.has_bf16_instructions:
        why = f"ONEDNN_MAX_CPU_ISA={cpu.isa_cap} rules out its bf16 instructions"
    else:
        why = f"it has no {' or '.join(NATIVE_BF16_FLAGS)}"
    return (f"precision=bf16 on this CPU ({cpu.model}) is slow: {why}, so bf16 runs emulated, "
            f"{bf16_emulated_slowdown(cpu)} slower than fp32; use precision=fp32")


def bf16_emulated_slowdown(cpu: CpuInfo) -> str:
    """The measured bf16 slowdown over fp32 that applies to ``cpu`` (one without native bf16)."""
    return BF16_EMULATED_SLOWDOWN["avx512" if cpu.avx512_usable else "avx2"]

"""What the CPU can do fast: its model name, its vector flags, and whether bf16 is native.

oneDNN (PyTorch's CPU convolutions) runs bf16 at full speed only with the ``avx512_bf16``
or ``amx_bf16`` instructions; on a CPU without them (AVX2 only, or AVX-512 without bf16)
every bf16 convolution falls back to slow paths, many times slower than fp32. oneDNN also
obeys ``ONEDNN_MAX_CPU_ISA`` (``DNNL_MAX_CPU_ISA`` in older builds): capped below
``AVX512_CORE_BF16`` it uses no bf16 instruction even where the CPU has them.

Reads ``/proc/cpuinfo`` (Linux); elsewhere asks PyTorch's own CPU probe. Imports no
torch unless it has to.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

# The flags /proc/cpuinfo names for the instructions oneDNN's bf16 kernels need.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Vector flags worth naming in a benchmark report.
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
# ONEDNN_MAX_CPU_ISA values (upper-cased) under which oneDNN uses no AVX-512 at all, and
# those under which it issues no bf16 instruction.
ISA_CAPS_WITHOUT_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")
ISA_CAPS_WITHOUT_BF16 = (*ISA_CAPS_WITHOUT_AVX512, "AVX512_CORE", "AVX512_CORE_VNNI")


@dataclass(frozen=True)
class CpuInfo:
    """``model``: the CPU's name; ``flags``: the :data:`REPORTED_FLAGS` it has;
    ``isa_cap``: ``ONEDNN_MAX_CPU_ISA`` when set (upper-cased), else None."""

    model: str
    cores: int
    flags: tuple[str, ...]
    isa_cap: str | None = None

    @property
    def has_bf16_instructions(self) -> bool:
        """True when the CPU has bf16 instructions, whether or not oneDNN may use them."""
        return any(flag in self.flags for flag in NATIVE_BF16_FLAGS)

    @property
    def native_bf16(self) -> bool:
        """True when oneDNN runs bf16 convolutions with bf16 instructions on this CPU."""
        return self.has_bf16_instructions and self.isa_cap not in ISA_CAPS_WITHOUT_BF16

    @property
    def avx512_usable(self) -> bool:
        """True when the CPU has AVX-512 and oneDNN is not capped below it."""
        return "avx512f" in self.flags and self.isa_cap not in ISA_CAPS_WITHOUT_AVX512

    def describe(self) -> str:
        """One line for reports, e.g. ``AMD EPYC, 2 cores, flags avx2 avx512f avx512_bf16``."""
        flags = " ".join(self.flags) or "none of " + " ".join(REPORTED_FLAGS)
        cap = f", ONEDNN_MAX_CPU_ISA={self.isa_cap}" if self.isa_cap else ""
        return f"{self.model}, {self.cores} cores, flags {flags}{cap}"


def _proc_cpuinfo() -> tuple[str, set[str]] | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return (model, flags) if flags else None


def _torch_flags() -> set[str]:
    import torch  # only where /proc/cpuinfo is missing (macOS, Windows)

    probes = {"avx2": "_is_avx2_supported", "avx512f": "_is_avx512_supported",
              "avx512_vnni": "_is_vnni_supported", "avx512_bf16": "_is_avx512_bf16_supported",
              "amx_tile": "_is_amx_tile_supported"}
    return {flag for flag, name in probes.items() if getattr(torch.cpu, name, lambda: False)()}


def read_cpu_info() -> CpuInfo:
    """The running CPU's :class:`CpuInfo` (read fresh each call; :func:`cpu_info` caches it)."""
    found = _proc_cpuinfo()
    model, flags = found if found is not None else (platform.processor() or "unknown CPU", _torch_flags())
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return CpuInfo(model=model or "unknown CPU", cores=os.cpu_count() or 1,
                   flags=tuple(f for f in REPORTED_FLAGS if f in flags), isa_cap=cap or None)


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """The running CPU's :class:`CpuInfo`, read once per process."""
    return read_cpu_info()

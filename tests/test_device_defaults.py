"""What the extractor picks when keys are left null: batch shape per device, threads, and the
bf16 warning on CPUs without bf16 instructions (their flags faked both ways)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from r21d_features.models.r21d import R21DExtractor
from r21d_features.models.r21d import extractor as extractor_module
from r21d_features.models.r21d.device_defaults import (
    BF16_EMULATED_SLOWDOWN, CPU_FRAMES_PER_PASS, GPU_BATCH_CLIPS, default_batch_clips, slow_bf16_warning)
from r21d_features.utils.core import cpu as cpu_module
from r21d_features.utils.core.cpu import CpuInfo, read_cpu_info

ROOT = Path(__file__).resolve().parents[1]
R18 = "r2plus1d_18_16_kinetics"
AVX2_ONLY = CpuInfo("Test CPU AVX2", 2, ("avx2",))
AVX512_NO_BF16 = CpuInfo("Test CPU AVX-512", 2, ("avx2", "avx512f", "avx512_vnni"))
AVX512_BF16 = CpuInfo("Test CPU bf16", 2, ("avx2", "avx512f", "avx512_bf16"))
AMX = CpuInfo("Test CPU AMX", 2, ("avx2", "avx512f", "amx_tile", "amx_bf16"))


def r18(**settings) -> R21DExtractor:
    return R21DExtractor(R18, device="cpu", random_weights=True, **settings)


# ---------------------------------------------------------------- CPU capability
@pytest.mark.parametrize("cpu,cap,native", [
    (AVX2_ONLY, None, False),
    (AVX512_NO_BF16, None, False),
    (AVX512_BF16, None, True),
    (AMX, None, True),
    (AVX512_BF16, "AVX2", False),  # oneDNN told to stay below its bf16 instructions
    (AMX, "AVX512_CORE", False),
    (AVX512_BF16, "AVX512_CORE_BF16", True),
    (AMX, "AVX512_CORE_AMX", True),
])
def test_native_bf16_follows_the_flags_and_the_onednn_cap(cpu, cap, native):
    assert CpuInfo(cpu.model, cpu.cores, cpu.flags, cap).native_bf16 is native


def test_cpu_flags_are_read_from_proc_cpuinfo(monkeypatch):
    monkeypatch.setattr(cpu_module, "_proc_cpuinfo", lambda: ("Some CPU", {"fpu", "avx2", "amx_bf16", "sse2"}))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    info = read_cpu_info()
    assert (info.model, info.flags, info.isa_cap) == ("Some CPU", ("avx2", "amx_bf16"), "AVX2")
    assert not info.native_bf16
    assert info.describe() == f"Some CPU, {info.cores} cores, flags avx2 amx_bf16, ONEDNN_MAX_CPU_ISA=AVX2"


def test_this_machines_flags_agree_with_torchs_own_probe():
    info = read_cpu_info()
    assert ("avx512_bf16" in info.flags) == torch.cpu._is_avx512_bf16_supported()
    assert ("avx2" in info.flags) == torch.cpu._is_avx2_supported()


# ---------------------------------------------------------------- the bf16 warning
@pytest.mark.parametrize("cpu,slowdown", [(AVX2_ONLY, "avx2"), (AVX512_NO_BF16, "avx512"),
                                          (CpuInfo("Capped", 2, AVX512_BF16.flags, "AVX2"), "avx2")])
def test_bf16_without_native_support_warns_once_with_the_slowdown_and_the_fix(monkeypatch, caplog, cpu, slowdown):
    monkeypatch.setattr(extractor_module, "cpu_info", lambda: cpu)
    with caplog.at_level(logging.WARNING):
        r18(precision="bf16")
    lines = [r.getMessage() for r in caplog.records if "bf16" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert cpu.model in lines[0] and "use precision=fp32" in lines[0]
    assert f"{BF16_EMULATED_SLOWDOWN[slowdown]} slower than fp32" in lines[0]


@pytest.mark.parametrize("cpu,precision", [(AVX512_BF16, "bf16"), (AMX, "bf16"), (AVX2_ONLY, "fp32")])
def test_no_bf16_warning_where_bf16_is_native_or_unused(monkeypatch, caplog, cpu, precision):
    monkeypatch.setattr(extractor_module, "cpu_info", lambda: cpu)
    with caplog.at_level(logging.WARNING):
        r18(precision=precision)
    assert not [r for r in caplog.records if "bf16" in r.getMessage()]


def test_the_docs_give_the_warnings_slowdowns_and_fix():
    """The precision advice in the docs names what the warning says, figure for figure."""
    guide = (ROOT / "docs" / "guides" / "speed.md").read_text()
    start = re.search(r"^#{2,3} Precision$", guide, re.M)
    assert start, "docs/guides/speed.md has no Precision section"
    end = re.compile(r"^#{2,3} ", re.M).search(guide, start.end())
    section = guide[start.end(): end.start() if end else None]
    for flag in ("avx512_bf16", "amx_bf16"):
        assert flag in section
    for slowdown in BF16_EMULATED_SLOWDOWN.values():
        assert f"{slowdown} slower" in section
    assert "precision=fp32" in section
    opening = slow_bf16_warning(AVX2_ONLY).split(":")[0].replace(AVX2_ONLY.model, "<model>")
    assert "warns in one line before any work" in section and opening in section


def test_the_warning_comes_before_any_work_on_the_command_line(tmp_path):
    """oneDNN capped below its bf16 instructions (a real cap the CPU check obeys): the command
    line warns before it opens the first video, within seconds."""
    missing = tmp_path / "missing.mp4"
    proc = subprocess.run(
        [sys.executable, "main.py", "feature_type=r21d", "device=cpu", "precision=bf16", "random_weights=true",
         f"video_paths=[{missing}]", f"output_path={tmp_path / 'out'}", f"tmp_path={tmp_path / 'tmp'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"})
    err = proc.stderr
    assert "precision=bf16 on this CPU" in err and "use precision=fp32" in err, err
    assert err.index("precision=bf16 on this CPU") < err.index("missing.mp4"), err


# ---------------------------------------------------------------- batch shape and threads
@pytest.mark.parametrize("model,stack,crops,clips,windows", [
    (R18, None, "center", 1, 1),  # 16-frame windows: one a pass
    ("r2plus1d_34_32_ig65m_ft_kinetics", None, "center", 1, 1),
    ("r2plus1d_34_8_ig65m_ft_kinetics", None, "center", 2, 2),  # 8-frame windows: two a pass
    (R18, 5, "center", 4, 4),  # 20 frames: the fewest windows reaching 16
    (R18, 4, "five", 5, 1),  # the crops' clips share the pass: 20 frames
    (R18, 1, "ten", 20, 2),
    (R18, None, "ten", 10, 1),
])
def test_the_cpu_default_is_the_fewest_windows_of_sixteen_frames(model, stack, crops, clips, windows):
    ex = R21DExtractor(model, device="cpu", random_weights=True, stack_size=stack, crops=crops)
    assert (ex.batch_size, ex.windows_per_batch) == (clips, windows)
    assert CPU_FRAMES_PER_PASS == 16


def test_a_set_batch_size_is_kept_on_the_cpu():
    ex = r18(batch_size=6)
    assert (ex.batch_size, ex.windows_per_batch) == (6, 6)


@pytest.mark.parametrize("crops,clips", [(1, GPU_BATCH_CLIPS), (5, GPU_BATCH_CLIPS), (10, GPU_BATCH_CLIPS),
                                         (GPU_BATCH_CLIPS + 1, GPU_BATCH_CLIPS + 1)])
def test_the_gpu_default_is_sixteen_clips_and_at_least_one_window(crops, clips):
    assert GPU_BATCH_CLIPS == 16
    assert default_batch_clips(torch.device("cuda"), crops, 16) == clips
    assert default_batch_clips(torch.device("cuda"), crops, 8) == clips


class ThreadsSeen(torch.nn.Module):
    """Records torch's intra-op thread count at every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def forward(self, clips_bcthw: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return clips_bcthw.new_zeros(clips_bcthw.shape[0], 512)


@pytest.mark.parametrize("num_threads", [1, 3])
def test_num_threads_holds_for_the_networks_passes_only(num_threads):
    ex = r18(num_threads=num_threads)
    ex.network = ThreadsSeen()
    before = torch.get_num_threads()
    ex.forward_clips(torch.zeros(1, 3, 16, 112, 112))
    ex.forward_clips(torch.zeros(1, 3, 16, 112, 112))
    assert ex.network.seen == [num_threads, num_threads]
    assert torch.get_num_threads() == before


def test_without_num_threads_the_process_setting_stands():
    ex = r18()
    ex.network = ThreadsSeen()
    ex.forward_clips(torch.zeros(1, 3, 16, 112, 112))
    assert ex.network.seen == [torch.get_num_threads()]

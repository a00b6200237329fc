"""Shared by the trust tests: the CLI as a user types it, with a tiny random model, and what a
clean finish leaves behind (see docs/guides/reliability.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil

from tests.conftest import REPO_ROOT, run_here
from r21d_features.utils.outputs.sinks import load_feature_file

MODEL = "r2plus1d_18_16_kinetics"
STACK = 4
# One torch thread: several of these tests' processes share 2 cores.
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def cli_args(out: Path, *extra: str) -> list[str]:
    """``key=value`` arguments shared by these tests: cpu, random weights, windows of 4, save_numpy."""
    return ["feature_type=r21d", f"model_name={MODEL}", "device=cpu", "random_weights=true",
            f"stack_size={STACK}", f"step_size={STACK}", "on_extraction=save_numpy", f"output_path={out / 'out'}",
            f"tmp_path={out / 'tmp'}", "progress=false", "decode_workers=1", *extra]


def main_command(args: list[str]) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "main.py"), *args]


def run(args: list[str], timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    """``python main.py ARGS`` in a subprocess; stdout/stderr as text (undecodable bytes replaced)."""
    return subprocess.run(main_command(args), cwd=REPO_ROOT, env=ENV, capture_output=True, timeout=timeout,
                          text=True, errors="replace", **kwargs)


def run_in_process(args: list[str]) -> subprocess.CompletedProcess:
    """What :func:`run` gives, from ``main.run_command`` in this process (no Python and torch to
    start: for the runs of a test that only check a message and an exit status)."""
    return run_here(*args)


def features_folder(out: Path) -> Path:
    return out / "out" / "r21d" / MODEL


def features(out: Path, stem: str) -> np.ndarray:
    """The saved features of ``stem``: they must load, be float32, 512 wide and finite."""
    array = load_feature_file(features_folder(out) / f"{stem}_r21d.npy")
    assert array.dtype == np.float32 and array.ndim == 2 and array.shape[1] == 512
    assert np.isfinite(array).all()
    return array


def failed_lines(stderr_and_stdout: str) -> list[str]:
    """The ``FAILED`` lines printed while the run went (not the summary's repeat)."""
    return [line for line in stderr_and_stdout.splitlines() if line.startswith("FAILED ")]


def assert_no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]


def leftovers(root: Path) -> list[str]:
    """Files and folders a clean finish never leaves under ``root``: claims, temporary and partial files."""
    bad = (".lock", ".tmp", ".break", ".partial", ".partial.mp4")
    return sorted(os.fspath(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(bad))


def processes_mentioning(marker: str) -> list[str]:
    """Live processes whose command line holds ``marker`` (e.g. an ffmpeg left behind)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(marker in arg for arg in proc.info["cmdline"] or []):
                found.append(" ".join(proc.info["cmdline"]))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found

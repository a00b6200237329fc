"""Shared fixtures: small synthetic videos and random checkpoints in the upstream format."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Test processes side by side (pytest -n 2) share the cores: one thread each, set before torch
    # loads, and inherited by the subprocesses the tests start, so that runs in a test process and
    # in a subprocess compute with the same thread count (and give the same floats).
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

from r21d_features.main import run_command  # noqa: E402 (after the thread settings)
from tests.helpers import synthetic_frames, write_video
from tests.reference_oracle import FLAVOURS, make_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((REPO_ROOT / "sample").glob("*.mp4"))


S3_SECRET = "s3cr3t-Never-Print-This-9f2c"
S3_KEY_ID = "AKIDTESTONLY"
S3_BUCKET = "videos"


@dataclass
class S3Server:
    client: Any  # boto3's S3 client of the server
    endpoint_url: str

    def upload(self, key: str, path_or_bytes: Path | bytes) -> str:
        """Put a file (or bytes) under ``key`` of the bucket ``videos``; its ``s3://`` URL."""
        body = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
        self.client.put_object(Bucket=S3_BUCKET, Key=key, Body=body)
        return f"s3://{S3_BUCKET}/{key}"

    def options(self) -> dict[str, Any]:
        """storage_options reaching this server from a process without its environment (Ray workers)."""
        return {"endpoint_url": self.endpoint_url, "key": S3_KEY_ID, "secret": S3_SECRET}


@pytest.fixture(scope="module")
def s3() -> Iterator["S3Server"]:
    """A fresh S3 API server (moto's standalone server on 127.0.0.1) with the bucket ``videos``;
    the environment points the product at it the standard way (AWS_ENDPOINT_URL, key pair)."""
    import boto3  # noqa: PLC0415 (only the object-store tests need them)
    from moto.server import ThreadedMotoServer  # noqa: PLC0415
    from r21d_features.utils.core.object_store import set_storage_options  # noqa: PLC0415

    # The test server's own request log (werkzeug) shows signed URLs; it is not the product's output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        mp.setenv("AWS_ACCESS_KEY_ID", S3_KEY_ID)
        mp.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.delenv("AWS_PROFILE", raising=False)
        client = boto3.client("s3")
        client.create_bucket(Bucket=S3_BUCKET)
        set_storage_options(None)
        yield S3Server(client, f"http://{host}:{port}")
        set_storage_options(None)
    server.stop()


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """``make_video(name, num_frames=40, height=48, width=64, fps=25.0, seed=0) -> path``."""

    def make(name: str = "clip.mp4", num_frames: int = 40, height: int = 48, width: int = 64,
             fps: float = 25.0, seed: int = 0) -> Path:
        return write_video(tmp_path / name, synthetic_frames(num_frames, height, width, seed), fps)

    return make


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random state dict per flavour, saved like the upstream files (plain state dict, strict keys).

    Built by the test oracle's own networks (tests/reference_oracle.py), not the product's
    builders, with random BatchNorm weight, bias and running statistics, as trained weights have.
    """
    folder = tmp_path_factory.mktemp("checkpoints")
    by_arch: dict[str, Path] = {}
    for name, flavour in FLAVOURS.items():
        if flavour.architecture not in by_arch:
            by_arch[flavour.architecture] = make_checkpoint(folder / f"random_{flavour.architecture}.pth", name)
    return {name: by_arch[flavour.architecture] for name, flavour in FLAVOURS.items()}


def run_here(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """What ``python main.py ARGS`` does, run in this process (``main.run_command``) from folder ``cwd``.

    The exit status and the text the command writes to its streams, as :func:`run_main` returns
    them, without starting a Python (and loading torch) per call. Output that C libraries write
    straight to the file descriptors is not seen here: tests of that use :func:`run_main`.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    before = Path.cwd()
    os.chdir(cwd)
    try:
        code = run_command(list(args), stdout=stdout, stderr=stderr)
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["main.py", *args], code, stdout.getvalue(), stderr.getvalue())


def run_main(*args: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
    """``python main.py ARGS`` as a user types it; returns the completed process (text output)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)

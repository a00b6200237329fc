"""runner=ray joining a real cluster that `ray start --head` runs on the local host, with token authentication.

Marked ``ray`` (CI: ``pytest -m ray``). The cluster runs in its own HOME (its token in
``HOME/.ray/auth_token``) and its own process group, stopped by signal: never ``ray stop``,
which would stop every Ray cluster of the machine. The driver joins it as ``127.0.0.1:PORT``
(Ray itself replaces 127.0.0.1 by the machine's address, where the GCS listens too).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.ray
MODEL = "r2plus1d_18_16_kinetics"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_node(ray_bin: str, address: str, env: dict, head: subprocess.Popen, head_log: Path) -> None:
    """Until `ray status` (with the token) lists the head's node; fails with the head's log if it never does."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"`ray start --head` exited ({head.returncode}):\n{head_log.read_text()[-3000:]}")
        try:
            status = subprocess.run([ray_bin, "status", f"--address={address}"], env=env, capture_output=True,
                                    text=True, timeout=60)
        except subprocess.TimeoutExpired:
            continue
        if " node_" in status.stdout:  # "Active:" lists it: GCS up and the raylet registered
            return
        time.sleep(1)
    pytest.fail(f"the Ray head at {address} did not come up in 120 s:\n{head_log.read_text()[-3000:]}")


@pytest.fixture
def token_cluster(tmp_path):
    ray_bin = str(Path(sys.executable).with_name("ray"))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(home)
    # The workers `ray start` launches import the project the way an installed copy would be
    # found: through PYTHONPATH (this checkout is not installed in the test venv).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    subprocess.run([ray_bin, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=120)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head_env = {**env, "RAY_AUTH_MODE": "token",
                # Nothing to drain at teardown: without this, SIGTERM waits 30 s for a drain first.
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    # Ray's unix sockets live under the temp dir and may not exceed 107 bytes: under pytest's
    # tmp_path they would, and `ray start` exits at once, before the GCS starts (the driver then
    # timed out with "Failed to connect to GCS").
    temp_dir = tempfile.mkdtemp(prefix="r", dir="/tmp")
    head_log = tmp_path / "ray_head.log"
    with head_log.open("w") as log_file:
        head = subprocess.Popen(
            [ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=false", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
            env=head_env, start_new_session=True, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_for_node(ray_bin, address, head_env, head, head_log)
        yield address, env
    finally:
        _stop_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop_group(head: subprocess.Popen) -> None:
    """SIGTERM the head's process group, then SIGKILL what is left of it (its children may outlive it)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(head.pid, sig)
        except ProcessLookupError:
            return
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass


def test_joins_a_token_cluster_by_host_port_and_reports_the_workers_pid(token_cluster, checkpoints, make_video, tmp_path):
    address, env = token_cluster
    video = make_video("clip.mp4", num_frames=16)
    out = tmp_path / "out"
    driver = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "main.py"), "feature_type=r21d", "runner=ray", f"ray_address={address}",
         f"video_paths=[{video}]", "device=cpu", f"checkpoint_path={checkpoints[MODEL]}", "stack_size=8",
         "step_size=8", "on_extraction=save_numpy", f"output_path={out}", f"tmp_path={tmp_path / 'tmp'}",
         "progress=false"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = driver.communicate(timeout=240)
    assert driver.returncode == 0, stderr[-2000:]
    assert (out / "r21d" / MODEL / "clip_r21d.npy").is_file()
    (record,) = [json.loads(line) for line in (out / "r21d" / MODEL / "run_report.jsonl").read_text().splitlines()]
    assert record["status"] == "done" and record["host"] == socket.gethostname()
    assert record["pid"] != driver.pid  # the Ray worker's, not the driver's

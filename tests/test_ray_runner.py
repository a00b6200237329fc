"""runner=ray: the same outputs as one process, skip-existing, and surviving a killed worker.

Tests marked ``ray`` start one local Ray cluster for the module (2 CPUs, 80 MB
object store) and are left out of the default run: ``pytest -m ray tests/test_ray_runner.py``.
The others need no Ray and run by default.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.conftest import REPO_ROOT, run_main, synthetic_frames, write_video
from r21d_features.main import run as run_cli
from r21d_features.models.r21d import R21DExtractor, R21DSettings
from r21d_features.utils.run.ray_runner import ExtractionWorker, WorkerPlan, _RayRun, plan_workers
from r21d_features.utils.run.settings import RaySettings, RaySetupError
from r21d_features.utils.run.driver import VideoOutcome
from r21d_features.utils.outputs.sinks import load_feature_file

MODEL = "r2plus1d_18_16_kinetics"
GOOD_FRAMES = (16, 20, 24, 17, 18, 22, 16, 19, 21)  # nine small videos of different lengths and sizes
SHORT_FRAMES = 3  # shorter than one window: a (0, 512) output, not a failure


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Path]) -> dict:
    """A dozen inputs (9 good, 1 too short, 2 bad) and a checkpoint every process loads alike."""
    folder = tmp_path_factory.mktemp("ray_videos")
    good = []
    for i, n in enumerate(GOOD_FRAMES):
        frames = synthetic_frames(n, 48 + 8 * (i % 2), 64 + 16 * (i % 3), seed=i)
        good.append(str(write_video(folder / f"good_{i:02d}.mp4", frames)))
    short = write_video(folder / "short.mp4", synthetic_frames(SHORT_FRAMES, 48, 64, seed=99))
    junk = folder / "junk.mp4"
    junk.write_bytes(b"this is not a video\n" * 10)
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(Path(good[0]).read_bytes()[:3000])
    bad = [str(junk), str(truncated)]
    return {"all": good[:5] + bad[:1] + [str(short)] + good[5:] + bad[1:], "good": good + [str(short)],
            "bad": bad, "checkpoint": str(checkpoints[MODEL])}


def _settings(dataset: dict, output_path: Path, **extra) -> dict:
    return {
        "video_paths": dataset["all"], "model_name": MODEL, "device": "cpu", "checkpoint_path": dataset["checkpoint"],
        "stack_size": 4, "step_size": 8, "batch_size": 4, "on_extraction": "save_numpy", "save_metadata": True,
        "output_path": str(output_path), "tmp_path": str(output_path.parent / "tmp"), "progress": False, **extra,
    }


def _outputs(output_path: Path) -> dict[str, np.ndarray]:
    folder = output_path / "r21d" / MODEL
    return {p.name: load_feature_file(p) for p in sorted(folder.glob("*.npy"))}


def _report(output_path: Path) -> list[dict]:
    lines = (output_path / "r21d" / MODEL / "run_report.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _assert_same_outputs(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)


@pytest.fixture(scope="module")
def reference(dataset: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Outputs of the plain single-process run (runner=local) of the same list.

    With the thread count of the Ray workers here (1 CPU each, so 1 torch thread):
    float32 sums over another number of threads round differently (about 1e-7 relative).
    """
    out = tmp_path_factory.mktemp("local") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = run_cli(_settings(dataset, out), stdout=io.StringIO(), stderr=io.StringIO())
    finally:
        torch.set_num_threads(threads)
    assert code == 1  # the two bad videos
    outputs = _outputs(out)
    assert len([name for name in outputs if name.endswith("_r21d.npy")]) == len(dataset["good"])
    assert outputs["short_r21d.npy"].shape == (0, 512)
    assert "good_00_window_times_s.npy" in outputs  # save_metadata: the window spans too
    return outputs


# ---------------------------------------------------------------------- without Ray (default suite)
def test_runner_ray_without_ray_installed_says_how_to_install(tmp_path: Path) -> None:
    no_ray = tmp_path / "no_ray" / "ray"
    no_ray.mkdir(parents=True)
    (no_ray / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    proc = run_main("feature_type=r21d", "runner=ray", "device=cpu", "random_weights=true",
                    "video_paths=[./sample/bbb_4x3_25fps.mp4]", "on_extraction=save_numpy",
                    f"output_path={tmp_path / 'out'}", env={"PYTHONPATH": str(no_ray.parent)}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ['error: runner=ray needs Ray, which is not installed: pip install ".[ray]"']
    assert not (tmp_path / "out").exists()


def test_ray_keys_compose_with_types_and_local_defaults() -> None:
    from hydra import compose, initialize_config_dir  # noqa: PLC0415 (config tests only)
    from hydra.errors import ConfigCompositionException  # noqa: PLC0415

    from r21d_features.configs.schema import register_configs  # noqa: PLC0415

    register_configs()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        default = compose("config")
        assert (default.runner, default.ray_address, default.ray_num_workers) == ("local", None, None)
        cfg = compose("config", overrides=["runner=ray", "ray_address=auto", "ray_num_workers=2",
                                           "ray_gpus_per_worker=0.5", "ray_cpus_per_worker=4"])
        assert (cfg.runner, cfg.ray_address, cfg.ray_num_workers, cfg.ray_gpus_per_worker) == ("ray", "auto", 2, 0.5)
        with pytest.raises(ConfigCompositionException, match="ray_num_workers"):
            compose("config", overrides=["ray_num_workers=two"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"runner": "dask"}, "runner='dask' is unknown; allowed: local, ray"),
        ({"runner": "ray", "on_extraction": "print"}, "runner=ray saves features to files"),
        ({"runner": "ray", "show_pred": True}, "show_pred=true prints predictions and needs runner=local"),
        ({"runner": "ray", "save_plots": True}, "save_plots=true draws pictures"),
        ({"runner": "ray", "ray_num_workers": 0}, "ray_num_workers=0 is invalid"),
    ],
)
def test_runner_settings_refused_before_any_work(tmp_path: Path, extra: dict, message: str) -> None:
    settings = {"video_paths": str(REPO_ROOT / "sample" / "bbb_4x3_25fps.mp4"), "device": "cpu", "random_weights": True,
                "on_extraction": "save_numpy", "output_path": str(tmp_path / "out"), **extra}
    stderr = io.StringIO()
    assert run_cli(settings, stdout=io.StringIO(), stderr=stderr) == 2
    assert message in stderr.getvalue()
    assert not (tmp_path / "out").exists()


def test_worker_plan_defaults_follow_the_cluster() -> None:
    eight_gpu_node = [(64.0, 8.0), (8.0, 0.0)]  # a GPU box plus a CPU-only head node
    plan = plan_workers(RaySettings(), eight_gpu_node, want_gpu=True)
    assert (plan.num_workers, plan.gpus_per_worker, plan.cpus_per_worker, plan.decode_workers) == (8, 1.0, 8.0, 4)
    assert plan_workers(RaySettings(), eight_gpu_node, want_gpu=False).gpus_per_worker == 0  # device=cpu
    laptop = [(2.0, 0.0)]
    assert plan_workers(RaySettings(), laptop, want_gpu=True).num_workers == 1
    two = plan_workers(RaySettings(ray_num_workers=2), laptop, want_gpu=False)
    assert (two.num_workers, two.cpus_per_worker, two.decode_workers) == (2, 1.0, 1)
    with pytest.raises(RaySetupError, match="ray_gpus_per_worker=1 but the Ray cluster has no GPU"):
        plan_workers(RaySettings(ray_gpus_per_worker=1), laptop, want_gpu=True)
    with pytest.raises(RaySetupError, match="needs 4 CPUs but the Ray cluster has 2"):
        plan_workers(RaySettings(ray_num_workers=4, ray_cpus_per_worker=1), laptop, want_gpu=False)


def test_worker_without_ray_matches_the_local_run(dataset: dict, reference: dict, tmp_path: Path) -> None:
    """The actor's class on its own: queued paths in, one outcome each, the same files as runner=local."""
    settings = _settings(dataset, tmp_path / "out")
    kwargs = {k: settings[k] for k in ("model_name", "device", "checkpoint_path", "stack_size", "step_size",
                                      "batch_size", "tmp_path")}
    threads = torch.get_num_threads()
    worker = ExtractionWorker(R21DExtractor, R21DSettings(**kwargs), "save_numpy", settings["output_path"], num_threads=1,
                              with_metadata=True)
    try:
        assert worker.ready()["error"] is None
        paths = dataset["all"][4:7]  # good, junk, short
        outcomes = worker.exchange(paths[:2], close=False, wait_s=0)
        outcomes += worker.exchange(paths[2:], close=True, wait_s=0)
        deadline = time.monotonic() + 120
        while len(outcomes) < len(paths) and time.monotonic() < deadline:
            outcomes += worker.exchange([], close=False, wait_s=1.0)
    finally:
        worker.stop()
        torch.set_num_threads(threads)
    assert {o.path: o.status for o in outcomes} == {p: "failed" if p in dataset["bad"] else "done" for p in paths}
    written = {name for name in reference if any(name.startswith(Path(p).stem + "_") for p in paths)}
    _assert_same_outputs(_outputs(tmp_path / "out"), {name: reference[name] for name in written})

    missing = R21DSettings(**{**kwargs, "checkpoint_path": str(tmp_path / "missing.pth")})
    broken = ExtractionWorker(R21DExtractor, missing, "save_numpy", settings["output_path"])
    assert broken.ready()["error"].startswith("checkpoint_path=")  # reported by ready(), not a crash


class _FakeRay:
    """Just enough of Ray to drive _RayRun in-process: an actor dies whenever it holds ``poison``."""

    class _Error(Exception):
        pass

    exceptions = SimpleNamespace(RayActorError=_Error, RayTaskError=_Error)

    def __init__(self, poison: str) -> None:
        self.poison = poison
        self.actors_started = 0

    def remote(self, cls: type) -> SimpleNamespace:
        return SimpleNamespace(options=lambda **_: SimpleNamespace(remote=self._actor))

    def _actor(self, *args) -> SimpleNamespace:  # noqa: ANN002
        self.actors_started += 1
        held: list[str] = []
        state = {"dead": False}

        def exchange(paths: list[str], close: bool, wait_s: float) -> list[VideoOutcome]:
            held.extend(paths)
            if state["dead"] or os.path.abspath(self.poison) in held:
                state["dead"] = True
                raise self._Error("The actor died unexpectedly before finishing this task.")
            done = [VideoOutcome(path=p, status="done", windows=1, frames=16) for p in held]
            held.clear()
            return done

        ready = {"error": None, "pid": self.actors_started, "model_name": MODEL, "feature_type": "r21d", "device": "cpu"}
        call = lambda fn: SimpleNamespace(remote=lambda *a: (lambda: fn(*a)))  # noqa: E731 (a ref is a thunk)
        return SimpleNamespace(ready=call(lambda: ready), exchange=call(exchange), state=state)

    def wait(self, refs: list, num_returns: int = 1) -> tuple[list, list]:
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):  # noqa: ANN001, ANN201
        return ref()

    def kill(self, actor: SimpleNamespace) -> None:
        actor.state["dead"] = True


def test_video_that_kills_its_worker_fails_alone_and_the_rest_completes(tmp_path: Path) -> None:
    paths = [f"v{i:02d}.mp4" for i in range(10)]
    fake = _FakeRay(poison="v05.mp4")  # held with v03, v04; retried after them
    plan = WorkerPlan(num_workers=2, gpus_per_worker=0, cpus_per_worker=1, decode_workers=1)
    summary, report_path = _RayRun(fake, plan, (), paths, tmp_path / "run_report.jsonl", progress=False).run()
    assert [(o.path, o.status) for o in summary.outcomes] == [(p, "failed" if p == "v05.mp4" else "done") for p in paths]
    assert summary.failed[0].reason == (
        "its Ray worker died 2 times while extracting it (last: The actor died unexpectedly before finishing this task)")
    assert fake.actors_started == 3  # replaced after the first crash; after the second nothing was left to do
    assert len(report_path.read_text().splitlines()) == len(paths)


# ---------------------------------------------------------------------- on a local Ray cluster
@pytest.fixture(scope="module")
def ray_cluster() -> str:
    """One small local cluster for the module; yields its address for subprocesses to join."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, object_store_memory=80 * 1024 * 1024, include_dashboard=False,
             logging_level="WARNING", configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.mark.ray
def test_ray_run_equals_local_run_and_rerun_skips(dataset: dict, reference: dict, ray_cluster: str,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    stderr = io.StringIO()
    code = run_cli(_settings(dataset, out, runner="ray", ray_num_workers=2), stdout=io.StringIO(), stderr=stderr)
    assert code == 1, stderr.getvalue()
    _assert_same_outputs(_outputs(out), reference)
    summary = stderr.getvalue()
    assert "Summary: 10 done, 0 skipped, 2 failed, of 12 videos" in summary
    for bad in dataset["bad"]:
        assert f"FAILED {bad}: " in summary
    records = _report(out)
    assert sorted(r["path"] for r in records) == sorted(dataset["all"])
    assert {r["path"]: r["status"] for r in records} == {
        p: "failed" if p in dataset["bad"] else "done" for p in dataset["all"]}

    mtimes = {p: p.stat().st_mtime_ns for p in (out / "r21d" / MODEL).glob("*.npy")}
    stderr = io.StringIO()
    code = run_cli(_settings(dataset, out, runner="ray", ray_num_workers=2), stdout=io.StringIO(), stderr=stderr)
    assert code == 1
    assert "Summary: 0 done, 10 skipped, 2 failed, of 12 videos" in stderr.getvalue()
    assert {p: p.stat().st_mtime_ns for p in (out / "r21d" / MODEL).glob("*.npy")} == mtimes
    assert len(_report(out)) == 2 * len(dataset["all"])


@pytest.mark.ray
def test_ray_worker_setup_error_is_one_line_before_any_video(dataset: dict, ray_cluster: str, tmp_path: Path) -> None:
    stderr = io.StringIO()
    missing = str(tmp_path / "missing.pth")
    settings = _settings(dataset, tmp_path / "out", runner="ray", ray_num_workers=1, checkpoint_path=missing)
    assert run_cli(settings, stdout=io.StringIO(), stderr=stderr) == 2
    assert f"error: a Ray worker could not build the extractor: checkpoint_path={missing!r}" in stderr.getvalue()
    assert not (tmp_path / "out").exists()
    # a bad value is refused by the settings themselves, on the driver, before Ray starts
    stderr = io.StringIO()
    settings = _settings(dataset, tmp_path / "out", runner="ray", ray_num_workers=1, stack_size=0)
    assert run_cli(settings, stdout=io.StringIO(), stderr=stderr) == 2
    assert stderr.getvalue() == "error: stack_size=0 is invalid: it must be an integer >= 1 (or null for the default)\n"


def _wait_for(condition, timeout_s: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


@pytest.mark.ray
def test_cli_joins_cluster_and_survives_a_killed_worker(dataset: dict, reference: dict, ray_cluster: str,
                                                        tmp_path: Path) -> None:
    """A user's command joins a running cluster; one worker is SIGKILLed mid-run; nothing is lost."""
    out = tmp_path / "out"
    list_file = tmp_path / "videos.txt"
    list_file.write_text("\n".join(dataset["all"]) + "\n")
    s = _settings(dataset, out)
    args = [sys.executable, str(REPO_ROOT / "main.py"), "feature_type=r21d", "runner=ray", f"ray_address={ray_cluster}",
            "ray_num_workers=2", f"file_with_video_paths={list_file}", f"model_name={MODEL}", "device=cpu",
            f"checkpoint_path={s['checkpoint_path']}", "stack_size=4", "step_size=8", "batch_size=4",
            "on_extraction=save_numpy", "save_metadata=true", f"output_path={out}", f"tmp_path={s['tmp_path']}", "progress=false"]
    log_path = tmp_path / "stderr.txt"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log_file, text=True)
        try:
            pids = lambda: [int(p) for p in re.findall(r"Ray worker \d+ ready \(pid (\d+)", log_path.read_text())]  # noqa: E731
            _wait_for(lambda: len(pids()) == 2 or proc.poll() is not None, 180, "two Ray workers")
            _wait_for(lambda: any((out / "r21d" / MODEL).glob("*.npy")) or proc.poll() is not None, 180,
                      "the first output")
            assert proc.poll() is None, "the run ended before a worker could be killed"
            victim = pids()[0]
            os.kill(victim, signal.SIGKILL)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = log_path.read_text()
    assert proc.returncode == 1, stderr
    assert re.search(rf"Ray worker \d \(pid {victim}\) died", stderr), stderr
    # A video the dead worker had saved but not reported yet is found done on retry: "skipped".
    counts = re.search(r"Summary: (\d+) done, (\d+) skipped, 2 failed, of 12 videos", stderr)
    assert counts and int(counts[1]) + int(counts[2]) == 10, stderr
    _assert_same_outputs(_outputs(out), reference)

    stderr_io = io.StringIO()
    assert run_cli(_settings(dataset, out, runner="ray", ray_num_workers=2), stdout=io.StringIO(),
                   stderr=stderr_io) == 1
    assert "Summary: 0 done, 10 skipped, 2 failed, of 12 videos" in stderr_io.getvalue()


@pytest.mark.ray
def test_ray_workers_read_and_write_an_object_store(dataset: dict, reference: dict, ray_cluster: str, s3,
                                                   tmp_path: Path) -> None:
    good = dataset["good"][:3]
    urls = [s3.upload(f"ray/{Path(p).name}", Path(p)) for p in good]
    out = "s3://videos/ray out"
    settings = {**_settings(dataset, tmp_path / "out", runner="ray", ray_num_workers=2), "video_paths": urls,
                "output_path": out,
                "storage_options": s3.options()}  # the workers started before the server: options, not the environment
    stderr = io.StringIO()
    code = run_cli(settings, stdout=io.StringIO(), stderr=stderr)
    assert code == 0, stderr.getvalue()
    assert "Summary: 3 done, 0 skipped, 0 failed, of 3 videos" in stderr.getvalue()
    assert f"Run report: {out}/r21d/{MODEL}/run_report.jsonl" in stderr.getvalue()
    for path in good:
        name = f"{Path(path).stem}_r21d.npy"
        got = load_feature_file(f"{out}/r21d/{MODEL}/{name}")
        np.testing.assert_array_equal(got, reference[name], err_msg=name)
    report = s3.client.get_object(Bucket="videos", Key=f"ray out/r21d/{MODEL}/run_report.jsonl")["Body"].read()
    assert sorted(json.loads(line)["path"] for line in report.splitlines()) == sorted(urls)


@pytest.mark.ray
def test_ray_workers_read_tar_shard_members_in_place(dataset: dict, reference: dict, ray_cluster: str,
                                                     tmp_path: Path) -> None:
    import tarfile  # noqa: PLC0415

    shard = tmp_path / "train-000.tar"
    with tarfile.open(shard, "w") as tar:
        for path in dataset["all"]:
            tar.add(path, arcname=Path(path).name)
    out = tmp_path / "out"
    stderr = io.StringIO()
    code = run_cli(_settings(dataset, out, video_paths=[str(shard)], runner="ray", ray_num_workers=2),
                   stdout=io.StringIO(), stderr=stderr)
    assert code == 1, stderr.getvalue()
    assert "Summary: 10 done, 0 skipped, 2 failed, of 12 videos" in stderr.getvalue()
    for bad in dataset["bad"]:
        assert f"FAILED {shard}#{Path(bad).name}: " in stderr.getvalue()
    got = {p.name: load_feature_file(p) for p in sorted((out / "r21d" / MODEL / "train-000").glob("*.npy"))}
    _assert_same_outputs(got, reference)
    assert {r["path"] for r in _report(out)} == {f"{shard}#{Path(p).name}" for p in dataset["all"]}

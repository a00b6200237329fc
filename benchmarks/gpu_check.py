"""One call that checks and measures the pipeline on a device: ``python benchmarks/gpu_check.py``.

    python benchmarks/gpu_check.py --device cuda:0 --out gpu_check_out       # full, about 9 minutes on an H100
    python benchmarks/gpu_check.py --quick --device cpu --out /tmp/gc         # about a minute on a CPU (CI)

Sections, each skipped (and said so in the report) once the time budget is spent:

1. the GPU test suite (``pytest -m gpu``; only when the device is CUDA);
2. parity: features on the device against the CPU, the three flavours, random weights
   (seed 0, no download), within 2e-3 (TF32 allowed);
3. throughput against the reference flow on a generated set (240p-1080p, short and
   long), the three flavours at fp32/bf16/fp16 and batch 16/32/64 (``--quick``: r2plus1d_18,
   fp32, batch 16, the tiny set), with the model-only and decode-only ceilings and end to end
   / min(ceilings);
4. the pipeline with a near-free stand-in model against the parallel decode ceiling (the
   regime of a GPU much faster than the decoders), many videos in flight, over a decode-worker sweep, on a long video and on many short ones;
5. memory: peak host RSS and peak GPU memory for a short video and one ten times longer.

Writes ``OUT/gpu_check.json`` (``device``, ``parity_max_rel_err``, ``throughput``: rows with
``mode``, ``frames_per_s``, ``x_reference``; plus ``stand_in``, ``memory``, ``skipped``) and
``OUT/gpu_check.md``. Reuses the workers of ``benchmarks/run_benchmark.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script from the project root: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.make_dataset import VideoSpec, make_dataset  # noqa: E402
from benchmarks.run_benchmark import (  # noqa: E402
    GB, WorkerProcess, benchmark_model, load_text, machine_description, rel_err, summarize,
)
from benchmarks.workers import WorkerConfig, save_random_checkpoint  # noqa: E402
from r21d_features.models.r21d.zoo import MODEL_ZOO  # noqa: E402

log = logging.getLogger("gpu_check")
ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(str(p) for p in (ROOT / "sample").glob("*.mp4"))
PARITY_TOL = 2e-3


class Budget:
    """Seconds left of ``total_s``; sections ask before they start and say what they skip."""

    def __init__(self, total_s: float) -> None:
        self.t0, self.total_s = time.monotonic(), total_s
        self.skipped: list[str] = []

    def left(self) -> float:
        return self.total_s - (time.monotonic() - self.t0)

    def allows(self, what: str, need_s: float) -> bool:
        if self.left() >= need_s:
            return True
        self.skipped.append(f"{what} (needs ~{need_s:.0f} s, {max(0.0, self.left()):.0f} s left)")
        log.warning("skipped: %s", self.skipped[-1])
        return False


def gpu_tests(device: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                           "tests/test_gpu.py"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", device.split(":")[-1])})
    return {"returncode": proc.returncode, "summary": (proc.stdout.strip().splitlines() or [""])[-1]}


def parity(device: str, flavours: list[str], videos: list[str], weights: Path) -> dict[str, float]:
    """Max relative error of device features against CPU features, per flavour."""
    from r21d_features.models.r21d import R21DExtractor  # noqa: PLC0415

    out = {}
    for name in flavours:
        checkpoint = save_random_checkpoint(name, weights / f"{name}.pth")
        common = dict(checkpoint_path=checkpoint, batch_size=8)
        cpu = R21DExtractor(name, device="cpu", **common)
        dev = R21DExtractor(name, device=device, **common)
        want = {p: r for p, r in cpu.extract_many(videos)}
        got = {p: r for p, r in dev.extract_many(videos)}
        errs = [rel_err(got[p].features, want[p].features) for p in videos if want[p].features.size]
        out[name] = max(errs) if errs else 0.0
        del cpu, dev
    return out


def stand_in(device: str, paths_by_set: dict[str, list[str]], workers_sweep: list[int], rounds: int,
             weights: Path) -> list[dict[str, Any]]:
    """Stand-in model: the pipeline (many videos in flight) against the decode ceiling;
    returns one row per set, workers and mode."""
    name = "r2plus1d_18_16_kinetics"
    checkpoint = save_random_checkpoint(name, weights / "standin.pth")
    rows = []
    for decode_workers in workers_sweep:
        base = WorkerConfig(mode="ours", model_name=name, device=device, checkpoint_path=checkpoint,
                            batch_size=32, decode_workers=decode_workers, stand_in=True)
        procs = {"many in flight": WorkerProcess(base)}
        try:
            for set_name, paths in paths_by_set.items():
                results: dict[str, list[float]] = {"decode ceiling": []}
                results.update({m: [] for m in procs})
                frames = 0
                for r in range(rounds):
                    order = list(procs) if r % 2 == 0 else list(procs)[::-1]
                    for mode in order:
                        run = procs[mode].ask("run", paths=paths)
                        frames = sum(v["frames"] or 0 for v in run["videos"].values())
                        results[mode].append(frames / run["seconds"])
                    ceiling = procs[order[0]].ask("decode_ceiling", paths=paths, streams=decode_workers)
                    results["decode ceiling"].append(ceiling["frames_per_s"])
                for mode, fps in results.items():
                    ratios = [f / c for f, c in zip(fps, results["decode ceiling"])]
                    rows.append({"set": set_name, "decode_workers": decode_workers, "mode": mode,
                                 "frames_per_s": float(np.median(fps)), "of_ceiling": float(np.median(ratios)),
                                 "frames": frames, "load": load_text()})
        finally:
            for proc in procs.values():
                proc.stop()
    return rows


def memory(device: str, short: str, long: str, weights: Path, batch_size: int) -> list[dict[str, Any]]:
    name = "r2plus1d_18_16_kinetics"
    checkpoint = save_random_checkpoint(name, weights / "memory.pth")
    proc = WorkerProcess(WorkerConfig(mode="ours", model_name=name, device=device, checkpoint_path=checkpoint,
                                      batch_size=batch_size, decode_workers=1))
    try:
        out = []
        for label, path in (("short", short), ("10x longer", long)):
            run = proc.ask("run", paths=[path])
            frames = sum(v["frames"] or 0 for v in run["videos"].values())
            out.append({"video": label, "frames": frames, "peak_rss_gb": run["peak_rss"] / GB,
                        "peak_gpu_gb": None if run["peak_gpu"] is None else run["peak_gpu"] / GB})
        return out
    finally:
        proc.stop()


def _spec_set(folder: Path, specs: list[VideoSpec]) -> list[str]:
    return [str(p) for p in make_dataset("custom", folder, specs)]


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# gpu_check on {report['device']}", "",
             f"Machine: {report['machine']}", f"Command: `{report['command']}`",
             f"Load before/after: {report['load'][0]} / {report['load'][1]}; {report['seconds']:.0f} s.", ""]
    if report.get("gpu_tests"):
        lines += [f"GPU tests: `{report['gpu_tests']['summary']}` (exit {report['gpu_tests']['returncode']})", ""]
    lines += ["## Parity (device vs CPU, max rel err; limit 2e-3)", "", "| flavour | max rel err |", "|---|---|"]
    lines += [f"| {k} | {v:.1e} |" for k, v in report["parity"].items()]
    lines += ["", "## Throughput against the reference flow", "",
              "| flavour | mode | batch | frames/s | x reference | of min(ceilings) | peak RSS GB | peak GPU GB |",
              "|---|---|---|---|---|---|---|---|"]
    for row in report["throughput"]:
        lines.append(f"| {row['model_name']} | {row['mode']} | {row['batch_size']} | {row['frames_per_s']:.1f} | "
                     f"{row['x_reference'] if row['x_reference'] is None else format(row['x_reference'], '.2f')} | "
                     f"{'-' if row.get('of_ceiling') is None else format(row['of_ceiling'], '.0%')} | "
                     f"{row['peak_rss_gb']:.2f} | {'-' if row['peak_gpu_gb'] is None else format(row['peak_gpu_gb'], '.2f')} |")
    lines += ["", "## Stand-in model against the parallel decode ceiling", "",
              "| set | decode workers | mode | frames/s | of decode ceiling |", "|---|---|---|---|---|"]
    lines += [f"| {r['set']} | {r['decode_workers']} | {r['mode']} | {r['frames_per_s']:.1f} | {r['of_ceiling']:.0%} |"
              for r in report["stand_in"]]
    lines += ["", "## Memory: short vs ten times longer", "", "| video | frames | peak RSS GB | peak GPU GB |",
              "|---|---|---|---|"]
    lines += [f"| {m['video']} | {m['frames']} | {m['peak_rss_gb']:.2f} | "
              f"{'-' if m['peak_gpu_gb'] is None else format(m['peak_gpu_gb'], '.2f')} |" for m in report["memory"]]
    if report["skipped"]:
        lines += ["", "## Skipped (time budget)", ""] + [f"- {s}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--quick", action="store_true", help="a minute on a CPU: tiny set, one flavour/precision/batch")
    parser.add_argument("--out", default="gpu_check_out")
    parser.add_argument("--budget-s", type=float, default=None, help="time budget (default 540 full, 60 quick)")
    parser.add_argument("--videos", default=None, help="folder for generated videos (default bench_out/videos)")
    parser.add_argument("--stand-in-only", action="store_true",
                        help="only the stand-in section (60 s 720p and 10 s clips, decode_workers = cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    budget = Budget(args.budget_s or (60 if args.quick else 540))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    videos_root = Path(args.videos or ROOT / "bench_out" / "videos")
    cuda = args.device.startswith("cuda") and torch.cuda.is_available()
    cores = os.cpu_count() or 1
    info = machine_description(args.device)
    report: dict[str, Any] = {
        "device": args.device, "machine": ", ".join(f"{k} {v}" for k, v in info.items()),
        "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick, "load": [load_text()], "throughput": [], "stand_in": [], "memory": [], "parity": {},
    }
    flavours = ["r2plus1d_18_16_kinetics"] if args.quick else list(MODEL_ZOO)
    precisions = ["fp32"] if args.quick else ["fp32", "bf16", "fp16"]
    batches = [16] if args.quick else [16, 32, 64]
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp)
        if args.stand_in_only:
            long = _spec_set(videos_root / "standin", [VideoSpec("720p_060s_standin", 1280, 720, 25, 60, "testsrc2", 7)])
            shorts = _spec_set(videos_root / "standin", [VideoSpec(f"360p_010s_standin{i}", 640, 360, 25, 10,
                                                                   ("testsrc2", "life", "gradients")[i % 3], i)
                                                         for i in range(6)])
            report["stand_in"] = stand_in(args.device, {"60 s 720p": long, "10 s clips x6": shorts}, [cores], 3, weights)
            flavours = []
        elif cuda and budget.allows("GPU test suite", 60):
            report["gpu_tests"] = gpu_tests(args.device)
        tiny = [str(p) for p in make_dataset("tiny", videos_root / "tiny")] if flavours else []
        if flavours and budget.allows("parity", 20 if args.quick else 60):
            # --quick: one flavour (on a CPU this is CPU against CPU: a smoke test of the section).
            report["parity"] = parity(args.device, flavours, tiny if args.quick else SAMPLES, weights)
        bench_set = tiny if args.quick or not flavours else [
            str(p) for p in make_dataset("full", videos_root / "full") if "_010s_" in p.name or "_060s_" in p.name]
        for name in flavours:
            for batch in batches:
                if not budget.allows(f"throughput {name} batch {batch}", 15 if args.quick else 60):
                    continue
                bench_args = argparse.Namespace(
                    device=args.device, batch_size=batch, decode_workers=max(1, cores // 2), channels_last=None,
                    threads=None, precision=precisions, rounds=1, reference_max_gb=8.0, skip_reference=batch != batches[0],
                    model_seconds=1.0 if args.quick else 5.0)
                result = benchmark_model(bench_args, name, bench_set, weights)
                rows = summarize(result)
                decode_max = max(result["decode_ceiling"].values())
                for mode, row in rows.items():
                    model_fps = result["model_ceiling"].get(mode, {}).get("frames_per_s")
                    bound = None if model_fps is None else min(decode_max, model_fps)
                    report["throughput"].append({
                        "model_name": name, "mode": mode, "batch_size": batch, "frames_per_s": row["frames_per_s"],
                        "x_reference": 1.0 if mode.startswith("reference") else row.get("speedup"),
                        "of_ceiling": None if bound is None else row["frames_per_s"] / bound,
                        "model_ceiling_fps": model_fps, "decode_ceiling_fps": decode_max,
                        "peak_rss_gb": row["peak_rss_gb"], "peak_gpu_gb": row["peak_gpu_gb"],
                        "max_rel_err_vs_reference": row.get("max_rel_err"),
                    })
        if args.quick or not flavours:
            sets = {"short clips": tiny}
            sweep = [1, cores]
        else:
            long = _spec_set(videos_root / "standin", [VideoSpec("720p_060s_standin", 1280, 720, 25, 60, "testsrc2", 7)])
            shorts = [str(p) for p in make_dataset("full", videos_root / "full") if "_010s_" in p.name]
            sets = {"60 s 720p": long, "10 s clips": shorts}
            sweep = sorted({max(1, cores // 4), max(1, cores // 2), cores})
        if flavours and budget.allows("stand-in sweep", 20 if args.quick else 120):
            report["stand_in"] = stand_in(args.device, sets, sweep, 1 if args.quick else 2, weights)
        if flavours and budget.allows("memory short vs 10x longer", 20 if args.quick else 60):
            seconds = (1, 10) if args.quick else (6, 60)
            height, width = (240, 320) if args.quick else (1080, 1920)
            short, long = (_spec_set(videos_root / "memory", [VideoSpec(f"mem_{s:03d}s_{height}p", width, height, 25, s,
                                                                        "testsrc2", 3)])[0] for s in seconds)
            report["memory"] = memory(args.device, short, long, weights, 16)
    errs = report["parity"].values()
    report["parity_max_rel_err"] = max(errs) if errs else None
    report["parity_ok"] = None if not errs else max(errs) <= PARITY_TOL
    report["skipped"] = budget.skipped
    report["load"].append(load_text())
    report["seconds"] = time.monotonic() - budget.t0
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    written = json.loads((out / "gpu_check.json").read_text())
    missing = [k for k in ("device", "parity_max_rel_err", "throughput") if k not in written]
    if missing or any(k not in row for row in written["throughput"] for k in ("mode", "frames_per_s", "x_reference")):
        log.error("%s lacks %s", out / "gpu_check.json", missing or "throughput row keys")
        return 1
    return 0 if report["parity_ok"] in (None, True) and report.get("gpu_tests", {}).get("returncode", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Our pipeline against the reference flow, side by side on the same videos, in one run.

    python -m benchmarks.run_benchmark --preset cpu-quick --device cpu --precision fp32,bf16
    python -m benchmarks.run_benchmark --preset full --device cuda:0 --precision fp32,bf16,fp16 \\
        --model-name r2plus1d_18_16_kinetics,r2plus1d_34_32_ig65m_ft_kinetics,r2plus1d_34_8_ig65m_ft_kinetics

Each mode runs in its own worker process (its own peak RSS and GPU memory); the modes
take turns, round after round, in alternating order, so load from other processes on a
shared machine hits them alike. Prints a markdown report (and writes it, with the raw
numbers as JSON, under ``--out``): frames/s, videos/s, the speed-up over the reference flow,
peak host RSS, peak GPU memory, the largest relative feature difference to the reference
mode, the decode ceiling (the default decoder alone, 1 and N streams), the model ceiling (random
clips on the device) and per-stage costs. Networks have random weights (seed 0): speed
does not depend on the weight values, and both modes get the same ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from benchmarks.make_dataset import make_dataset
from benchmarks.reference_flow import reference_peak_bytes
from benchmarks.workers import WorkerConfig, save_random_checkpoint, worker_main
from r21d_features.models.r21d.extractor import PRECISIONS
from r21d_features.utils.pipeline.prefetch import default_decode_workers
from r21d_features.models.r21d.zoo import MODEL_ZOO
from r21d_features.utils.video.decoders import open_video
from r21d_features.utils.core.console import plural
from r21d_features.utils.core.cpu import cpu_info

log = logging.getLogger(__name__)
GB = 1024**3


class WorkerProcess:
    """A :func:`benchmarks.workers.worker_main` process and its pipe."""

    def __init__(self, config: WorkerConfig) -> None:
        ctx = mp.get_context("spawn")
        self.config = config
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, args=(child, config), daemon=True)
        self.process.start()
        self._answer()

    def _answer(self) -> dict[str, Any]:
        answer = self.conn.recv()
        if not answer.pop("ok"):
            raise RuntimeError(f"{self.config.mode} worker failed:\n{answer['error']}")
        return answer

    def ask(self, kind: str, **args: Any) -> dict[str, Any]:
        self.conn.send({"kind": kind, **args})
        return self._answer()

    def stop(self) -> None:
        try:
            self.conn.send({"kind": "stop"})
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=30)


def machine_description(device: str) -> dict[str, str]:
    """The CPU (model, cores, the vector flags oneDNN uses), memory, torch, and the GPU if any."""
    cpu = cpu_info()
    info = {"cpu": cpu.describe(), "native_bf16": "yes" if cpu.native_bf16 else "no",
            "memory": f"{psutil.virtual_memory().total / GB:.0f} GiB", "torch": torch.__version__}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def load_text() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    if got.shape != want.shape:
        return float("inf")
    if want.size == 0:
        return 0.0
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-12))


def video_sizes(paths: list[str]) -> dict[str, tuple[int, int, int]]:
    """``path -> (frame_count_hint, height, width)`` from the container."""
    sizes = {}
    for path in paths:
        reader = open_video(path)
        sizes[path] = (reader.info.frame_count_hint, reader.info.height, reader.info.width)
        reader.close()
    return sizes


def benchmark_model(args: argparse.Namespace, model_name: str, paths: list[str], weights_dir: Path) -> dict[str, Any]:
    """All modes of one model flavour: rounds of end-to-end runs, then ceilings and stages."""
    sizes = video_sizes(paths)
    reference_limit = args.reference_max_gb * GB
    reference_paths = [p for p in paths if reference_peak_bytes(*sizes[p]) <= reference_limit]
    skipped = {p: reference_peak_bytes(*sizes[p]) / GB for p in paths if p not in reference_paths}
    for path, need in skipped.items():
        log.warning("reference flow skips %s: it would need about %.1f GB (limit --reference-max-gb %.1f)",
                    path, need, args.reference_max_gb)
    checkpoint = save_random_checkpoint(model_name, weights_dir / f"{model_name}_random_seed0.pth")
    base = WorkerConfig(mode="ours", model_name=model_name, device=args.device, checkpoint_path=checkpoint,
                        batch_size=args.batch_size,
                        decode_workers=args.decode_workers, channels_last=args.channels_last,
                        num_threads=args.threads)
    configs = {f"ours {p}": replace(base, precision=p) for p in args.precision}
    if not args.skip_reference and reference_paths:
        reference = WorkerConfig(mode="reference", model_name=model_name, device=args.device, checkpoint_path=checkpoint,
                             num_threads=args.threads)
        configs = {"reference fp32": reference, **configs}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    extras: dict[str, Any] = {"reference_skipped_gb": skipped}
    workers = {}
    try:
        for name, config in configs.items():
            workers[name] = WorkerProcess(config)
        order = list(configs)
        for round_index in range(args.rounds):
            for name in order if round_index % 2 == 0 else order[::-1]:
                todo = reference_paths if name.startswith("reference") else paths
                log.info("%s: round %d, %s (load %s)", model_name, round_index + 1, name, load_text())
                runs[name].append(workers[name].ask("run", paths=todo))
        first_ours = next(n for n in configs if n.startswith("ours"))
        ours = workers[first_ours]
        log.info("%s: ceilings and stage times (load %s)", model_name, load_text())
        extras["decode_ceiling"] = {
            n: ours.ask("decode_ceiling", paths=paths, streams=n)["frames_per_s"]
            for n in sorted({1, args.decode_workers or default_decode_workers()})
        }
        extras["model_ceiling"] = {
            name: workers[name].ask("model_ceiling", seconds=args.model_seconds)
            for name in configs if name.startswith("ours")
        }
        extras["stages"] = ours.ask("stages", paths=paths)
    finally:
        for worker in workers.values():
            worker.stop()
    return {"model_name": model_name, "runs": runs, **extras}


def summarize(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per mode: medians over rounds, speed-up over reference per round, max feature error."""
    runs = result["runs"]
    reference_runs = runs.get("reference fp32", [])
    reference_paths = list(reference_runs[0]["videos"]) if reference_runs else []
    rows = {}
    for name, mode_runs in runs.items():
        frames = sum(v.get("frames") or 0 for v in runs[name][0]["videos"].values())
        if name.startswith("reference"):
            frames = sum(_frames_of(runs, p) for p in reference_paths)
        seconds = [r["seconds"] for r in mode_runs]
        row = {
            "rounds": len(mode_runs),
            "frames": frames,
            "videos": len(mode_runs[0]["videos"]),
            "seconds": statistics.median(seconds),
            "frames_per_s": frames / statistics.median(seconds),
            "frames_per_cpu_s": frames / statistics.median(r["cpu_s"] for r in mode_runs),
            "videos_per_s": len(mode_runs[0]["videos"]) / statistics.median(seconds),
            "peak_rss_gb": max(r["peak_rss"] for r in mode_runs) / GB,
            "peak_gpu_gb": (max(r["peak_gpu"] for r in mode_runs) / GB) if mode_runs[0]["peak_gpu"] is not None else None,
        }
        if reference_runs and not name.startswith("reference"):
            speedups = []
            for ours_run, reference_run in zip(mode_runs, reference_runs):
                # Each video's seconds are its share of the wall clock (from the previous video's
                # end to its own), so their sum is the run's time on the videos both modes ran.
                ours_s = (ours_run["seconds"] if len(reference_paths) == len(ours_run["videos"])
                          else sum(ours_run["videos"][p]["seconds"] for p in reference_paths))
                speedups.append(reference_run["seconds"] / ours_s)
            row["speedup"] = statistics.median(speedups)
            row["speedups"] = speedups
            row["max_rel_err"] = max(
                rel_err(mode_runs[0]["features"][p], reference_runs[0]["features"][p]) for p in reference_paths
            )
            row["same_windows"] = all(
                mode_runs[0]["features"][p].shape == reference_runs[0]["features"][p].shape for p in reference_paths
            )
        rows[name] = row
    return rows


def _frames_of(runs: dict[str, list[dict[str, Any]]], path: str) -> int:
    for name, mode_runs in runs.items():
        if name.startswith("ours"):
            return mode_runs[0]["videos"][path]["frames"] or 0
    return 0


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_report(results: list[dict[str, Any]], info: dict[str, str], command: str,
                    loads: tuple[str, str], args: argparse.Namespace) -> str:
    lines = [
        f"Machine: {info['cpu']}; native bf16 {info['native_bf16']}; {info['memory']} RAM"
        + (f", GPU {info['gpu']}" if "gpu" in info else "") + f"; torch {info['torch']}.",
        f"Load average (1/5/15 min) before: {loads[0]}; after: {loads[1]}.",
        f"Command: `{command}`",
        f"Device {args.device}; batch_size {args.batch_size or 'default'}; decode_workers "
        f"{args.decode_workers or default_decode_workers()}; {plural(args.rounds, 'round')}, modes in alternating order; "
        "medians over rounds; random weights (seed 0).",
        "",
    ]
    for result in results:
        rows = summarize(result)
        lines += [
            f"### {result['model_name']}",
            "",
            "| mode | frames/s | videos/s | x reference (per round) | frames per CPU-s | peak RSS GB | peak GPU GB "
            "| max rel err vs reference | same windows |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, row in rows.items():
            speed = "1.00" if name.startswith("reference") else (
                f"{row['speedup']:.2f} ({', '.join(f'{s:.2f}' for s in row['speedups'])})" if "speedup" in row else "-"
            )
            err = f"{row['max_rel_err']:.1e}" if "max_rel_err" in row else "-"
            lines.append(
                f"| {name} | {_fmt(row['frames_per_s'])} | {_fmt(row['videos_per_s'], 3)} | {speed} "
                f"| {_fmt(row['frames_per_cpu_s'])} | {_fmt(row['peak_rss_gb'], 2)} | {_fmt(row['peak_gpu_gb'], 2)} "
                f"| {err} | {row.get('same_windows', '-')} |"
            )
        if result["reference_skipped_gb"]:
            skipped = ", ".join(f"{Path(p).name} (~{gb:.0f} GB)" for p, gb in result["reference_skipped_gb"].items())
            lines.append(f"\nThe reference flow skipped (over --reference-max-gb {args.reference_max_gb}): {skipped}; "
                         "its ratios use the videos it ran.")
        decode = result["decode_ceiling"]
        models = {name: row["frames_per_s"] for name, row in result["model_ceiling"].items()}
        models_batch = {name: row["batch"] for name, row in result["model_ceiling"].items()}
        lines += ["", "| ceiling | frames/s |", "|---|---|"]
        lines += [f"| decode (default decoder), {plural(n, 'stream')} | {fps:.1f} |" for n, fps in decode.items()]
        lines += [f"| model only, {name}, batch {models_batch[name]} | {fps:.1f} |" for name, fps in models.items()]
        for name, fps in models.items():
            bound = min(max(decode.values()), fps)
            lines.append(f"| end to end / min(decode, model), {name} | {rows[name]['frames_per_s'] / bound:.0%} |")
        stages = result["stages"]
        runs = result["runs"]
        ours_names = [n for n in runs if n.startswith("ours")]
        lines += [
            "",
            "Stage costs, each stage alone (ms per frame): "
            f"decode {1e3 * stages['decode_s_per_frame']:.2f}, "
            f"tap gather {1e3 * stages['gather_s_per_frame']:.3f}, "
            f"blend + normalise {1e3 * stages['blend_s_per_frame']:.3f}, "
            + ", ".join(f"model ({name}) {1e3 / fps:.2f}" for name, fps in models.items()) + ".",
            "",
            "| video | frames | " + " | ".join(f"{name} s" for name in rows)
            + "".join(f" | {name} x reference" for name in ours_names) + " | reference peak RSS GB |",
            "|---|---|" + "---|" * (len(rows) + len(ours_names)) + "---|",
        ]
        for path, video in runs[ours_names[0]][0]["videos"].items():
            medians = {}
            for name in rows:
                per_round = [r["videos"][path]["seconds"] for r in runs[name] if path in r["videos"]]
                medians[name] = statistics.median(per_round) if per_round else None
            cells = [_fmt(medians[name], 2) if medians[name] is not None else "skipped" for name in rows]
            reference_s = medians.get("reference fp32")
            cells += [f"{reference_s / medians[name]:.2f}" if reference_s and medians[name] else "-" for name in ours_names]
            reference_rss = [r["videos"][path]["peak_rss"] for r in runs.get("reference fp32", []) if path in r["videos"]]
            lines.append(f"| {Path(path).name} | {video['frames']} | " + " | ".join(cells)
                         + f" | {_fmt(max(reference_rss) / GB, 2) if reference_rss else '-'} |")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu-quick", choices=("full", "cpu-quick", "short-set", "tiny"))
    parser.add_argument("--videos", default=None, help="folder of the benchmark set (default bench_out/videos/<preset>)")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--model-name", default="r2plus1d_18_16_kinetics", help="comma-separated flavours")
    parser.add_argument("--precision", default="fp32", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--paths", nargs="+", default=None, help="these video files instead of a preset")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per forward pass (default: the product's)")
    parser.add_argument("--decode-workers", type=int, default=None)
    parser.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every worker")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model-seconds", type=float, default=10.0, help="how long to time the model ceiling")
    parser.add_argument("--reference-max-gb", type=float, default=psutil.virtual_memory().available / GB / 2,
                        help="skip the reference flow on videos that would need more host memory")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--out", default="bench_out/results")
    args = parser.parse_args(argv)
    args.model_name = args.model_name.split(",")
    args.precision = args.precision.split(",")
    for key, values, allowed in (("--model-name", args.model_name, MODEL_ZOO), ("--precision", args.precision, PRECISIONS)):
        for value in values:
            if value not in allowed:
                parser.error(f"{key} {value!r} is unknown; allowed: {', '.join(allowed)}")
    args.channels_last = {"auto": None, "on": True, "off": False}[args.channels_last]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    command = "python -m benchmarks.run_benchmark " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    paths = args.paths or [str(p) for p in make_dataset(args.preset, Path(args.videos or f"bench_out/videos/{args.preset}"))]
    info = machine_description(args.device)
    load_before = load_text()
    with tempfile.TemporaryDirectory() as weights_dir:
        results = [benchmark_model(args, name, paths, Path(weights_dir)) for name in args.model_name]
    report = markdown_report(results, info, command, (load_before, load_text()), args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"benchmark-{stamp}.md").write_text(report)
    raw = [{**r, "runs": {n: [{k: v for k, v in run.items() if k != "features"} for run in rs]
                          for n, rs in r["runs"].items()}} for r in results]
    (out / f"benchmark-{stamp}.json").write_text(json.dumps({"args": vars(args), "machine": info, "results": raw},
                                                            indent=1, default=str))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

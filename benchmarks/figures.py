"""The benchmark report's plots: throughput against batch size and precision, time and memory
against video length. Measures, writes the figures and a JSON of every number, prints tables.

    python -m benchmarks.figures --out docs/img --json bench_out/figures.json

- **Throughput**: the network alone (:func:`benchmarks.model_ablation.measure_variants`,
  channels-last, BatchNorm folded, as the extractor runs it), frames/s at each batch size
  (clips per forward pass) and precision, medians over ``--rounds`` taken in turns.
- **Length**: the command line as users run it (defaults, ``device=cpu``, random weights,
  ``save_numpy``), one fresh process per video and precision, on synthetic videos of
  ``--lengths`` seconds (``--resolution``, 25 fps, made by :mod:`benchmarks.make_dataset`):
  wall seconds and the process's peak resident memory.

The figures are SVG with fixed metadata, so the same numbers give the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.make_dataset import _spec, make_dataset
from r21d_features.utils.core.cpu import cpu_info

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "r2plus1d_18_16_kinetics"
PRECISIONS = ("fp32", "bf16")
# The figures, in docs/img/ (the benchmarks page shows each).
FIGURE_NAMES = ("throughput_vs_batch.svg", "time_vs_length.svg", "memory_vs_length.svg")

# One extraction in this process: wall seconds and peak RSS. The peak is the process's VmHWM
# (KiB), not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent across
# fork + exec, so a child of a large parent would report the parent's peak.
_CHILD = """
import json, sys, time
from r21d_features.main import run_command
t0 = time.perf_counter()
rc = run_command(sys.argv[1:])
wall_s = time.perf_counter() - t0
with open("/proc/self/status") as status:
    hwm_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"rc": rc, "wall_s": wall_s, "peak_rss_mib": hwm_kib / 1024}))
"""


def measure_throughput(batches: list[int], rounds: int, device: str) -> list[dict[str, Any]]:
    """Frames/s of the network alone per ``(precision, batch)``."""
    from benchmarks.model_ablation import measure_variants  # noqa: PLC0415 (imports torch)

    variants = [(precision, str(batch), "cl", "folded") for precision in PRECISIONS for batch in batches]
    results = measure_variants(variants, MODEL_NAME, device, rounds, clips=max(batches))
    return [{"precision": v[0], "batch": int(v[1]), "frames_per_s": wall, "frames_per_cpu_s": cpu}
            for v, (wall, cpu) in results.items()]


def measure_lengths(lengths_s: list[int], resolution: str, videos_dir: Path, work_dir: Path) -> list[dict[str, Any]]:
    """Wall seconds and peak RSS of one command-line run per ``(video length, precision)``."""
    specs = [_spec(resolution, length, 25, index) for index, length in enumerate(lengths_s)]
    paths = make_dataset("length", videos_dir, specs=specs)
    rows = []
    for spec, path in zip(specs, paths):
        for precision in PRECISIONS:
            out = work_dir / f"{spec.name}_{precision}"
            shutil.rmtree(out, ignore_errors=True)  # a finished output would be skipped, not timed
            argv = ["feature_type=r21d", "device=cpu", "random_weights=true", "progress=false",
                    f"precision={precision}", f"video_paths=[{path}]", "on_extraction=save_numpy",
                    f"output_path={out}", f"tmp_path={work_dir / 'tmp'}"]
            proc = subprocess.run([sys.executable, "-c", _CHILD, *argv], cwd=ROOT, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if proc.returncode != 0 or not proc.stdout.strip():
                raise RuntimeError(f"{path.name} {precision}: {proc.stderr.strip()[-500:]}")
            child = json.loads(proc.stdout.strip().splitlines()[-1])
            if child["rc"] != 0:
                raise RuntimeError(f"{path.name} {precision}: exit status {child['rc']}: {proc.stderr.strip()[-500:]}")
            reports = list(out.rglob("run_report.jsonl"))
            statuses = [json.loads(line)["status"] for line in reports[0].read_text().splitlines()] if reports else []
            if statuses != ["done"]:
                raise RuntimeError(f"{path.name} {precision}: expected one extraction, the run report says {statuses}")
            rows.append({"video": path.name, "length_s": spec.duration_s, "frames": spec.num_frames,
                         "precision": precision, "wall_s": child["wall_s"], "peak_rss_mib": child["peak_rss_mib"]})
            print(f"  {path.name} {precision}: {child['wall_s']:.1f} s, {child['peak_rss_mib']:.0f} MiB", flush=True)
    return rows


def _figure(title: str, xlabel: str, ylabel: str, series: dict[str, tuple[list[float], list[float]]],
            path: Path, logx: bool = False) -> None:
    import matplotlib  # noqa: PLC0415 (the plots extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plt.rcParams["svg.hashsalt"] = "r21d-features"  # stable ids: the same numbers give the same file
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({x for xs, _ in series.values() for x in xs}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)


def write_figures(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """The three SVGs of ``report`` (as :func:`main` measures it) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = report["machine"]["cpu"].split(",")[0]
    throughput = {p: ([r["batch"] for r in report["throughput"] if r["precision"] == p],
                      [r["frames_per_s"] for r in report["throughput"] if r["precision"] == p]) for p in PRECISIONS}
    lengths = {p: [r for r in report["lengths"] if r["precision"] == p] for p in PRECISIONS}
    paths = [out_dir / name for name in FIGURE_NAMES]
    _figure(f"{MODEL_NAME}, network alone ({machine})", "batch size (clips per forward pass)", "frames/s",
            throughput, paths[0], logx=True)
    _figure(f"Extraction time, defaults ({machine})", "video length (s)", "wall time (s)",
            {p: ([r["length_s"] for r in rows], [r["wall_s"] for r in rows]) for p, rows in lengths.items()}, paths[1])
    _figure(f"Peak memory, defaults ({machine})", "video length (s)", "peak resident memory (MiB)",
            {p: ([r["length_s"] for r in rows], [r["peak_rss_mib"] for r in rows]) for p, rows in lengths.items()},
            paths[2])
    return paths


def markdown_tables(report: dict[str, Any]) -> str:
    """The report's numbers as two Markdown tables, with machine, date and commit."""
    lines = [f"Machine: {report['machine']['cpu']}; torch {report['machine']['torch']}; "
             f"{report['date']}; commit {report['commit']}", "",
             "| precision | batch | frames/s | frames per CPU-s |", "|---|---|---|---|"]
    lines += [f"| {r['precision']} | {r['batch']} | {r['frames_per_s']:.1f} | {r['frames_per_cpu_s']:.1f} |"
              for r in report["throughput"]]
    lines += ["", "| video | frames | precision | wall s | peak RSS MiB |", "|---|---|---|---|---|"]
    lines += [f"| `{r['video']}` | {r['frames']} | {r['precision']} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} |"
              for r in report["lengths"]]
    return "\n".join(lines) + "\n"


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return (proc.stdout.strip() or "unknown") + (" (with local changes)" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/img", help="folder for the SVG figures")
    parser.add_argument("--json", default="bench_out/figures.json", help="every measured number")
    parser.add_argument("--from-json", default=None, help="redraw the figures from an earlier --json, measuring nothing")
    parser.add_argument("--batches", default="1,2,4,8,16", help="batch sizes of the throughput figure")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lengths", default="10,20,40,80", help="video lengths in seconds")
    parser.add_argument("--resolution", default="360p", choices=("240p", "360p", "720p", "1080p"))
    parser.add_argument("--videos", default="bench_out/videos/length", help="folder for the synthetic videos")
    parser.add_argument("--work", default="bench_out/figures_work", help="scratch folder for the runs' outputs")
    args = parser.parse_args(argv)
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
    else:
        import torch  # noqa: PLC0415

        work = Path(args.work)
        report = {"machine": {"cpu": cpu_info().describe(), "torch": torch.__version__},
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": _commit(),
                  "command": " ".join(["python -m benchmarks.figures", *(argv if argv is not None else sys.argv[1:])])}
        print("throughput against batch size ...", flush=True)
        report["throughput"] = measure_throughput([int(b) for b in args.batches.split(",")], args.rounds, "cpu")
        print("time and memory against video length ...", flush=True)
        report["lengths"] = measure_lengths([int(s) for s in args.lengths.split(",")], args.resolution,
                                            Path(args.videos), work)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    for path in write_figures(report, Path(args.out)):
        print(f"wrote {path}")
    print(markdown_tables(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

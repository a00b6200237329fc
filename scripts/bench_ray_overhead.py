"""Ray overhead: the same video list through the plain CLI and through ``runner=ray``.

Runs ``python main.py`` twice as a user would (fresh processes, saved features),
first ``runner=local`` then ``runner=ray`` with the given Ray keys, and prints
the wall time, frames/s and the Ray overhead, and how far the two outputs differ.

    python scripts/bench_ray_overhead.py --list videos.txt --out /tmp/bench \\
        -- device=cuda:0 random_weights=true
    python scripts/bench_ray_overhead.py --list videos.txt --out /tmp/bench \\
        --ray ray_num_workers=1 -- device=cpu

Everything after ``--`` goes to both runs. Use a list long enough that start-up
(Ray's cluster and actor start, the model build) is small next to the work.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], output_path: Path) -> tuple[float, float, int]:
    """Wall seconds of one CLI run, the sum of its per-video seconds (start-up excluded;
    the busy time of the worker when there is one) and the frames it extracted."""
    shutil.rmtree(output_path, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "main.py", *args, f"output_path={output_path}", "progress=false"], cwd=ROOT)
    wall_s = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} exited with {proc.returncode}")
    records = [json.loads(line) for report in output_path.glob("*/*/run_report.jsonl")
               for line in report.read_text().splitlines()]
    return wall_s, sum(r["seconds"] for r in records), sum(r.get("frames") or 0 for r in records)


def max_relative_difference(a_root: Path, b_root: Path) -> tuple[int, float]:
    """Number of feature files in ``a_root`` and the largest |a - b| / max|a| over them."""
    worst, count = 0.0, 0
    for a_file in sorted(a_root.glob("*/*/*.npy")):
        a = np.load(a_file)
        b = np.load(b_root / a_file.relative_to(a_root))
        if a.shape != b.shape:
            raise SystemExit(f"{a_file.name}: shapes differ {a.shape} vs {b.shape}")
        if a.size:
            worst = max(worst, float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12)))
        count += 1
    return count, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", required=True, help="text file with one video path per line")
    parser.add_argument("--out", required=True, type=Path, help="scratch folder for both runs' features")
    parser.add_argument("--ray", nargs="*", default=["ray_num_workers=1"], help="keys for the Ray run only")
    parser.add_argument("common", nargs="*", help="key=value for both runs (after --)")
    opts = parser.parse_args()
    common = ["feature_type=r21d", f"file_with_video_paths={opts.list}", "on_extraction=save_numpy", *opts.common]

    local_s, local_busy_s, frames = run(common, opts.out / "local")
    ray_s, ray_busy_s, ray_frames = run([*common, "runner=ray", *opts.ray], opts.out / "ray")
    files, diff = max_relative_difference(opts.out / "local", opts.out / "ray")
    print(f"local: {local_s:8.1f} s wall, {frames / local_s:8.1f} frames/s; {local_busy_s:8.1f} s extracting")
    print(f"ray:   {ray_s:8.1f} s wall, {ray_frames / ray_s:8.1f} frames/s; {ray_busy_s:8.1f} s extracting"
          f" (summed over workers; {' '.join(opts.ray)})")
    print(f"Ray overhead: {100 * (ray_s - local_s) / local_s:+.1f}% wall time, "
          f"{100 * (ray_busy_s - local_busy_s) / local_busy_s:+.1f}% extracting time; "
          f"{files} feature files, max relative difference {diff:.2e}")


if __name__ == "__main__":
    main()

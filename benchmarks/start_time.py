"""How fast the command line answers before any work: ``--help`` and a bad setting.

Each case runs ``python main.py ARGS`` and the ``r21d-extract ARGS`` entry point
``--repeat`` times in fresh processes; prints the median wall time and the peak resident memory
of the process (Linux ``ru_maxrss``). These answers never import torch, OpenCV or PyAV.

    python benchmarks/start_time.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "--help": ["--help"],
    "bad key": ["feature_type=r21d", "stak_size=4"],
    "bad value": ["feature_type=r21d", "stack_size=0"],
    "bad type": ["feature_type=r21d", "stack_size=1.5"],
}

# One measurement in a fresh parent: the child's peak RSS is all that parent's RUSAGE_CHILDREN holds.
_MEASURE = """
import resource, subprocess, sys, time
t = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""


def measure(command: list[str], repeat: int) -> dict[str, float]:
    seconds, peaks, codes = [], [], set()
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout.split()
        seconds.append(float(out[0]))
        peaks.append(int(out[1]) / 1024)
        codes.add(int(out[2]))
    return {"seconds": round(statistics.median(seconds), 3), "peak_rss_mb": round(max(peaks), 1),
            "exit": sorted(codes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    # r21d-extract is the console script of r21d_features.main:cli; run here as that script runs
    # it, on this checkout's code (an r21d-extract on PATH may be another install).
    entry_point = "import sys; from r21d_features.main import cli; sys.argv[0] = 'r21d-extract'; cli()"
    entries = {"python main.py": [sys.executable, str(ROOT / "main.py")],
               "r21d-extract": [sys.executable, "-c", entry_point]}
    rows = []
    for entry, prefix in entries.items():
        for case, argv in CASES.items():
            row = {"command": f"{entry} {' '.join(argv)}", "case": case, **measure(prefix + argv, args.repeat)}
            rows.append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

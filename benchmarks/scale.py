"""Per-video overhead at 1k, 10k and 100k videos: does each video cost the same at the end of a run?

    python -m benchmarks.scale --sizes 1000 10000 100000 --out bench_out/scale

Runs the command line as users do (``python main.py``, one fresh process per run, defaults,
``device=cpu``, random weights, ``save_numpy``) over lists of:

- **missing**: paths of files that do not exist (a crawl whose downloads failed);
- **tiny**: 1-frame clips, shorter than one window (each is opened, decoded, claimed, written
  and reported, but the network does not run: what is left is the per-video overhead);
- **resume**: the finished output of the ``tiny`` run, run again (every video must be skipped).

While a run goes, the benchmark counts the lines of its run report (one per video) every 20 ms;
from those counts it prints when the first video was decided (after the start and the checks
of the whole list), videos/s per decade of the list (the first 1,000, 1,000 to 10,000,
10,000 to 100,000) and over the first and the last 2,000 entries, the wall time and the peak
memory (RSS) of the run's process. ``--memory-lines N`` also runs a list of N missing files
against a 10-line one and prints the memory the long list adds. The tiny clips are hard links
of a few files, so 100,000 of them cost almost no disk. Writes ``scale.json`` and ``scale.png`` (videos/s
over the run) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from r21d_features.utils.core.cpu import cpu_info
from r21d_features.utils.video.ffmpeg import find_ffmpeg

ROOT = Path(__file__).resolve().parents[1]
FEATURES = Path("r21d") / "r2plus1d_18_16_kinetics"
EDGE = 2000
LINKS_PER_FILE = 50_000  # entries at the start and at the end whose rates are compared


def _tiny_clip(path: Path) -> Path:
    """A 1-frame H.264 clip (64x48), made with ffmpeg."""
    subprocess.run([find_ffmpeg(), "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25",
                    "-frames:v", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def _inputs(kind: str, n: int, work: Path) -> Path:
    """A list file of ``n`` inputs of ``kind`` ("missing" or "tiny")."""
    folder = work / f"{kind}-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    names = [folder / f"clip {i:07d}.mp4" for i in range(n)]
    if kind == "tiny":
        source = _tiny_clip(names[0])
        for i, name in enumerate(names[1:], 1):
            if i % LINKS_PER_FILE == 0:  # file systems cap the links of one file (ext4: 65,000)
                shutil.copyfile(source, name)
                source = name
            else:
                os.link(source, name)
    listing = work / f"{kind}-{n}.txt"
    listing.write_text("".join(f"{name}\n" for name in names))
    return listing


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


class _LineCounter:
    """Lines of a file that grows, reading only what was added since the last count."""

    def __init__(self, path: Path) -> None:
        self.path, self.file, self.lines = path, None, 0

    def count(self) -> int:
        if self.file is None:
            try:
                self.file = open(self.path, "rb")  # noqa: SIM115 (kept open while the run goes)
            except FileNotFoundError:
                return 0
        while chunk := self.file.read(1 << 20):
            self.lines += chunk.count(b"\n")
        return self.lines


def _run(listing: Path, out: Path, tmp: Path) -> dict:
    """One run of the command line over ``listing`` into ``out``: wall time, peak RSS, report growth."""
    argv = [sys.executable, str(ROOT / "main.py"), "feature_type=r21d", "device=cpu", "random_weights=true",
            "progress=false", "on_extraction=save_numpy", f"file_with_video_paths={listing}",
            f"output_path={out}", f"tmp_path={tmp}"]
    report = out / FEATURES / "run_report.jsonl"
    samples: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True)
    reader.start()
    done = threading.Event()
    result: dict = {}

    def wait() -> None:
        _, status, usage = os.wait4(proc.pid, 0)
        result["status"], result["peak_rss_mb"] = os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024
        proc.returncode = result["status"]
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    counter = _LineCounter(report)
    last = -1
    while not done.wait(0.02):
        lines = counter.count()
        if lines != last:
            samples.append((time.perf_counter() - t0, lines))
            last = lines
    wall_s = time.perf_counter() - t0
    reader.join(timeout=10)
    samples.append((wall_s, counter.count()))
    result.update(wall_s=wall_s, samples=samples, stderr=b"".join(stderr).decode(errors="replace"))
    return result


def _time_at(samples: list[tuple[float, int]], lines: int) -> float:
    """When the report first held ``lines`` lines (the first sample that did)."""
    return next(t for t, n in samples if n >= lines)


def _rates(samples: list[tuple[float, int]], n: int) -> dict:
    """Videos/s per decade of the list, and over the first and last :data:`EDGE` entries."""
    rates = {}
    start = 0
    for end in (1_000, 10_000, 100_000, 1_000_000):
        if end > n:
            break
        t_start = _time_at(samples, start) if start else _time_at(samples, 1)
        seconds = _time_at(samples, end) - t_start
        rates[f"{start}-{end}"] = (end - max(start, 1)) / seconds if seconds > 0 else None
        start = end
    if n >= 2 * EDGE:
        first = _time_at(samples, EDGE) - _time_at(samples, 1)
        last = _time_at(samples, n) - _time_at(samples, n - EDGE)
        rates["first_2000"] = (EDGE - 1) / first if first > 0 else None
        rates["last_2000"] = EDGE / last if last > 0 else None
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--kinds", nargs="+", default=["missing", "tiny", "resume"],
                        choices=["missing", "tiny", "resume"])
    parser.add_argument("--memory-lines", type=int, default=0,
                        help="also compare the peak RSS of a run over this many missing files with a 10-line run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out" / "scale")
    args = parser.parse_args(argv)
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    for n in args.sizes:
        for kind in args.kinds:
            if kind == "resume":
                if "tiny" not in args.kinds:
                    continue
                listing, out = work / f"tiny-{n}.txt", work / f"out-tiny-{n}"
            else:
                listing, out = _inputs(kind, n, work), work / f"out-{kind}-{n}"
                shutil.rmtree(out, ignore_errors=True)
            lines_before = _count_lines(out / FEATURES / "run_report.jsonl")
            run = _run(listing, out, work / "tmp")
            samples = [(t, lines - lines_before) for t, lines in run.pop("samples") if lines >= lines_before]
            expect = {"missing": f"0 done, 0 skipped, {n} failed", "tiny": f"{n} done, 0 skipped, 0 failed",
                      "resume": f"0 done, {n} skipped, 0 failed"}[kind]
            if expect not in run["stderr"]:
                print(f"{kind} {n}: the run did not end with {expect!r}:\n{run['stderr'][-2000:]}", file=sys.stderr)
                return 1
            row = {"kind": kind, "videos": n, "wall_s": round(run["wall_s"], 2),
                   "first_line_s": round(_time_at(samples, 1), 2),
                   "peak_rss_mb": round(run["peak_rss_mb"], 1), "videos_per_s": round(n / run["wall_s"], 1),
                   **{k: (None if v is None else round(v, 1)) for k, v in _rates(samples, n).items()},
                   "curve": samples}
            results.append(row)
            shown = {k: v for k, v in row.items() if k != "curve"}
            print(json.dumps(shown), flush=True)
            if kind == "missing":
                shutil.rmtree(out, ignore_errors=True)
    memory = None
    if args.memory_lines:
        peaks = {}
        for n in (10, args.memory_lines):
            listing, out = _inputs("missing", n, work), work / f"out-memory-{n}"
            shutil.rmtree(out, ignore_errors=True)
            run = _run(listing, out, work / "tmp")
            peaks[n] = run["peak_rss_mb"]
            shutil.rmtree(out, ignore_errors=True)
        memory = {"lines": args.memory_lines, "peak_rss_mb_10_lines": round(peaks[10], 1),
                  "peak_rss_mb_long": round(peaks[args.memory_lines], 1),
                  "added_mb": round(peaks[args.memory_lines] - peaks[10], 1)}
        print(json.dumps(memory), flush=True)
    report = {"machine": cpu_info().describe(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": "python -m benchmarks.scale " + " ".join(argv if argv is not None else sys.argv[1:]),
              "runs": results, "memory": memory}
    (args.out / "scale.json").write_text(json.dumps(report, indent=1))
    _plot(results, args.out / "scale.png")
    return 0


def _plot(results: list[dict], path: Path) -> None:
    """Videos/s over the run (per 2% of the list) for the largest size of each kind."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind in ("missing", "tiny", "resume"):
        rows = [r for r in results if r["kind"] == kind]
        if not rows:
            continue
        row = max(rows, key=lambda r: r["videos"])
        n, curve = row["videos"], row["curve"]
        step = max(1, n // 50)
        xs, ys = [], []
        for lo in range(0, n - step + 1, step):
            seconds = _time_at(curve, lo + step) - _time_at(curve, max(lo, 1))
            if seconds > 0:
                xs.append(lo + step)
                ys.append(step / seconds)
        ax.plot(xs, ys, marker=".", label=f"{kind} ({n:,} videos)")
    ax.set_xlabel("entries of the list done")
    ax.set_ylabel("videos/s (per 2% of the list)")
    ax.set_yscale("log")
    ax.set_title("Per-video rate over one run")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())

"""The same videos as plain files and as tar shards: throughput and peak memory.

    python -m benchmarks.shards --clips 96 --tiny 4000 --out bench_out/shards

Runs the command line as users do (``python main.py``, one fresh process per run, defaults,
``device=cpu``, random weights, ``save_numpy``) twice over each set of videos: once over a list
of the files, once over the same files packed in webdataset-style shards (each video with a
``.json`` and a ``.txt`` side file, ``--per-shard`` videos a shard, named by one brace range).
Two sets:

- **clips**: ``--clips`` synthetic 2-second clips of 160x120 at 25 fps (3 windows each): the
  network's work, where reading members in place should cost nothing measurable;
- **tiny**: ``--tiny`` 1-frame clips, shorter than one window: no network, so what is left is
  the per-video cost of listing, opening and reading a member against a file.

Prints, per run, the wall time, videos/s and the peak RSS of the run's process; writes
``shards.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from benchmarks.scale import _run
from r21d_features.utils.core.cpu import cpu_info
from r21d_features.utils.video.ffmpeg import find_ffmpeg


def _clip(path: Path, seconds: float, seed: int) -> Path:
    """A synthetic clip (ffmpeg's testsrc2 with seeded noise), libx264, 160x120 at 25 fps."""
    subprocess.run([find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=size=160x120:rate=25:duration={seconds}",
                    "-vf", f"noise=alls=20:allf=t:all_seed={seed}", "-pix_fmt", "yuv420p", "-c:v", "libx264",
                    "-preset", "veryfast", str(path)], check=True)
    return path


def _videos(kind: str, n: int, work: Path) -> list[Path]:
    """``n`` clips of ``kind`` under ``work``; tiny ones are hard links of one file (no disk to speak of)."""
    folder = work / kind
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "tiny":
        first = _clip(folder / "seed.mp4", 0.04, 0)
        paths = []
        for i in range(n):
            path = folder / f"v{i:06d}.mp4"
            if not path.exists():
                path.hardlink_to(first)
            paths.append(path)
        return paths
    return [_clip(folder / f"v{i:06d}.mp4", 2.0, i) if not (folder / f"v{i:06d}.mp4").exists()
            else folder / f"v{i:06d}.mp4" for i in range(n)]


def _shards(videos: list[Path], per_shard: int, folder: Path) -> str:
    """The videos packed ``per_shard`` a shard, with side files; the brace range naming the shards."""
    folder.mkdir(parents=True, exist_ok=True)
    count = (len(videos) + per_shard - 1) // per_shard
    for s in range(count):
        with tarfile.open(folder / f"shard-{s:04d}.tar", "w") as tar:
            for video in videos[s * per_shard:(s + 1) * per_shard]:
                info = tarfile.TarInfo(video.name)  # a plain member even where the files are hard links
                info.size = video.stat().st_size
                with open(video, "rb") as f:
                    tar.addfile(info, f)
                for ext, data in ((".json", b'{"source": "synthetic"}'), (".txt", b"a caption")):
                    info = tarfile.TarInfo(video.stem + ext)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return f"{folder}/shard-{{0000..{count - 1:04d}}}.tar"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=96, help="2-second clips (0: skip)")
    parser.add_argument("--tiny", type=int, default=4000, help="1-frame clips (0: skip)")
    parser.add_argument("--per-shard", type=int, default=1000, help="videos per shard (at most)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/shards"))
    args = parser.parse_args(argv)
    work = args.out / "work"
    results = []
    for kind, n in (("clips", args.clips), ("tiny", args.tiny)):
        if not n:
            continue
        videos = _videos(kind, n, work)
        per_shard = min(args.per_shard, max(1, n // 4)) if kind == "clips" else args.per_shard
        pattern = _shards(videos, per_shard, work / f"{kind}-shards")
        inputs = {"files": "".join(f"{v}\n" for v in videos), "shards": pattern + "\n"}
        for form, text in inputs.items():
            listing = work / f"{kind}-{form}.txt"
            listing.write_text(text)
            out = work / f"out-{kind}-{form}"
            shutil.rmtree(out, ignore_errors=True)
            run = _run(listing, out, work / "tmp")
            if run["status"] != 0:
                print(run["stderr"][-2000:], file=sys.stderr)
                return 1
            done = sum(1 for _ in out.rglob("*_r21d.npy"))
            row = {"set": kind, "input": form, "videos": n, "videos_done": done, "wall_s": round(run["wall_s"], 2),
                   "videos_per_s": round(n / run["wall_s"], 1), "peak_rss_mb": round(run["peak_rss_mb"], 1)}
            if kind == "clips" and done != n:
                print(f"{kind}/{form}: {done} of {n} videos written", file=sys.stderr)
                return 1
            results.append(row)
            print(f"{kind:5s} {form:6s} {n:6d} videos  {row['wall_s']:8.2f} s  {row['videos_per_s']:8.1f} videos/s  "
                  f"peak RSS {row['peak_rss_mb']:7.1f} MB", flush=True)
    info = cpu_info()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": info.model, "cores": info.cores, "flags": list(info.flags),
            "per_shard": args.per_shard}
    (args.out / "shards.json").write_text(json.dumps({"machine": meta, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

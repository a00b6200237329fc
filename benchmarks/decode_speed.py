"""Decode + preprocess frames/s of each decoder backend, one worker and several, in one run.

    python -m benchmarks.make_dataset --preset cpu-quick --out bench_out/videos/cpu-quick
    python -m benchmarks.decode_speed bench_out/videos/cpu-quick --decoders opencv pyav --workers 1 2 --rounds 3

"Decode + preprocess" is what the extractor does before the network: decode every frame,
gather the crop's taps on the decode thread, then (chunks of 32 frames) convert YUV taps
to RGB where the backend gave YUV, blend and normalise with torch on the CPU. ``workers``
videos are processed at once on threads, as ``decode_workers`` does. The backends
alternate within each round, so a busy machine slows both alike. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from models.r21d.preprocess import blend_taps, crop_taps, gather_planes
from models.r21d.zoo import get_record
from utils.decoders import DECODERS, open_video
from utils.decoders.yuv import yuv_taps_to_rgb

CHUNK_FRAMES = 32


def decode_and_preprocess(path: str, decoder: str) -> int:
    """Frames of ``path`` through decode, tap gathering, colour conversion, blend and normalise."""
    spec = get_record("r2plus1d_18_16_kinetics").preprocessing
    taps, device_taps, chunk, yuv, frames = None, None, [], None, 0

    def flush() -> None:
        x = torch.from_numpy(np.stack(chunk))
        if yuv is not None:
            x = yuv_taps_to_rgb(x, yuv)
        blend_taps(x, device_taps)
        chunk.clear()

    for _, planes in open_video(path, decoder).frames():
        if taps is None:
            taps = crop_taps(planes.height, planes.width, spec)
            device_taps = taps.to("cpu")
        if chunk and planes.yuv != yuv:
            flush()
        yuv = planes.yuv
        chunk.append(gather_planes(planes, taps))
        frames += 1
        if len(chunk) == CHUNK_FRAMES:
            flush()
    if chunk:
        flush()
    return frames


def frames_per_s(paths: list[str], decoder: str, workers: int, repeat: int) -> float:
    """Frames/s over ``repeat`` passes of ``paths``, ``workers`` videos at a time."""
    todo = [p for _ in range(repeat) for p in paths]
    lock = threading.Lock()
    counts: list[int] = []

    def work() -> None:
        n = 0
        while True:
            with lock:
                if not todo:
                    break
                path = todo.pop(0)
            n += decode_and_preprocess(path, decoder)
        counts.append(n)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", help="folder of videos; grouped by the name's prefix before '_' (e.g. 720p)")
    parser.add_argument("--decoders", nargs="+", default=list(DECODERS), choices=DECODERS)
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="passes over each group's videos per measurement")
    args = parser.parse_args(argv)
    groups: dict[str, list[str]] = defaultdict(list)
    for path in sorted(Path(args.videos).glob("*.mp4")):
        groups[path.name.split("_")[0]].append(str(path))
    for paths in groups.values():  # warm up: libraries loaded, files in the page cache
        for decoder in args.decoders:
            decode_and_preprocess(paths[0], decoder)
    results: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        for group, paths in groups.items():
            for workers in args.workers:
                for decoder in args.decoders:
                    results[group, workers, decoder].append(frames_per_s(paths, decoder, workers, args.repeat))
    base = args.decoders[0]
    print(f"| videos | workers | {' | '.join(f'{d} frames/s' for d in args.decoders)} | "
          f"{' | '.join(f'{d} / {base}' for d in args.decoders[1:])} |")
    print("|---|---|" + "---|" * (2 * len(args.decoders) - 1))
    for group in groups:
        for workers in args.workers:
            med = {d: statistics.median(results[group, workers, d]) for d in args.decoders}
            rounds = {d: ", ".join(f"{v:.0f}" for v in results[group, workers, d]) for d in args.decoders}
            cells = " | ".join(f"{med[d]:.0f} ({rounds[d]})" for d in args.decoders)
            ratios = " | ".join(f"{med[d] / med[base]:.2f}x" for d in args.decoders[1:])
            print(f"| {group} | {workers} | {cells} | {ratios} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

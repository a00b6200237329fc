"""Decode + preprocess frames/s of each decoder backend, one worker and several, in one run.

    python -m benchmarks.make_dataset --preset decode --out bench_out/videos/decode
    python -m benchmarks.decode_speed bench_out/videos/decode --decoders opencv pyav pyav-lut --workers 1 2 --rounds 5
    python -m benchmarks.decode_speed bench_out/videos/decode --end-to-end --decoders opencv pyav --rounds 3
    python -m benchmarks.decode_speed bench_out/videos/decode --peak-rss 10

"Decode + preprocess" is what the extractor does before the network. ``opencv`` and ``pyav``
are the product's own code on a CPU (``R21DExtractor.decode_chunks`` + ``chunk_frames`` with that
``decoder``): decode every used frame and finish it in the decode thread (YUV or RGB ->
normalised 112 x 112 region in one compiled pass, models/r21d/host_blend.py). Two earlier
paths are kept to compare old and new in one run: ``opencv-old`` is the OpenCV path the
decoder issue measured against (OpenCV decode + whole-frame BGR -> RGB, tap gather, then
torch blend + normalise in chunks of 32 frames), ``pyav-taps`` the first PyAV path (YUV taps
gathered, converted to RGB by swscale on the taps, torch blend). ``workers`` videos are
processed at once on threads, as ``decode_workers`` does. The paths alternate within each
round, so a busy machine slows all alike. Prints a Markdown table: median frames/s (wall)
with each round's, and the median CPU milliseconds per frame (the whole process's user +
system time: the number least moved by other processes).

Torch runs the old paths' blend on ``--torch-threads`` threads (default 1): on a loaded
2-core machine a 2-thread OpenMP team waits for its descheduled thread (4-7 ms a frame
instead of 0.3-0.4), which would bury the decoders' difference under noise.

``--end-to-end``: the extractor itself (random weights, CPU, ``extract_many`` over each
group's videos, default settings but ``decoder``), backends alternating. ``--peak-rss N``:
peak RSS (VmHWM) of one process extracting a group's first video and the same video
stream-copied N times over, with the default decoder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from benchmarks.workers import count_in_threads
from r21d_features.models.r21d.preprocess import blend_taps, crop_taps, gather_planes
from r21d_features.models.r21d.zoo import get_record
from r21d_features.utils.video.decoders import DECODERS, open_video
from r21d_features.utils.video.decoders.yuv import yuv_taps_to_rgb

CHUNK_FRAMES = 32
OLD_PATHS = {"opencv-old": "opencv", "pyav-taps": "pyav"}  # earlier paths -> the backend they decode with
MODEL = "r2plus1d_18_16_kinetics"
_extractors: dict = {}


def extractor_for(decoder: str):  # noqa: ANN201
    """One CPU extractor (random weights) per decoder, shared by the threads."""
    if decoder not in _extractors:
        from r21d_features.models.r21d.extractor import R21DExtractor

        _extractors[decoder] = R21DExtractor(MODEL, device="cpu", random_weights=True, decoder=decoder)
    return _extractors[decoder]


def decode_and_preprocess(path: str, decoder: str) -> int:
    """Frames of ``path`` decoded and made ready for the windows, by the path named ``decoder``."""
    if decoder in OLD_PATHS:
        return old_decode_and_preprocess(path, decoder)
    extractor, frames, taps = extractor_for(decoder), 0, None
    chunks = extractor.decode_chunks(path)
    next(chunks)  # the video's start record
    for chunk in chunks:
        if taps is None:
            taps = chunk.crop_taps.to(extractor.device)
        extractor.chunk_frames(chunk, taps)
        frames += len(chunk.frame_indices)
    return frames


def old_decode_and_preprocess(path: str, decoder: str) -> int:
    """An earlier path (see the module docstring): decode, tap gathering, colour conversion, torch
    blend and normalise in chunks."""
    spec = get_record(MODEL).preprocessing
    taps, device_taps, chunk, yuv, frames = None, None, [], None, 0

    def flush() -> None:
        x = torch.from_numpy(np.stack(chunk))
        if yuv is not None:
            x = yuv_taps_to_rgb(x, yuv)
        blend_taps(x, device_taps)
        chunk.clear()

    for _, planes in open_video(path, OLD_PATHS[decoder]).frames():
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


def frames_per_s(paths: list[str], decoder: str, workers: int, repeat: int) -> tuple[float, float]:
    """Frames/s over ``repeat`` passes of ``paths``, ``workers`` videos at a time, and CPU ms per frame."""
    frames, wall_s, cpu_s = count_in_threads([p for _ in range(repeat) for p in paths], workers,
                                             lambda p: decode_and_preprocess(p, decoder))
    return frames / wall_s, 1e3 * cpu_s / frames


def end_to_end(paths: list[str], extractor) -> tuple[float, float]:
    """Frames/s and CPU ms per frame of ``extract_many`` over ``paths``."""
    t0, c0 = time.perf_counter(), time.process_time()
    frames = 0
    for path, result in extractor.extract_many(paths):
        if isinstance(result, Exception):
            raise result
        frames += result.num_frames
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return frames / wall, 1e3 * cpu / frames


def peak_rss_gb(path: str) -> float:
    """Peak RSS (GB) of a fresh process extracting ``path`` (random weights, CPU, defaults)."""
    code = (f"from r21d_features.models.r21d.extractor import R21DExtractor; import resource\n"
            f"R21DExtractor({MODEL!r}, device='cpu', random_weights=True).extract({path!r})\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1]) / 1024**2


def repeated_video(path: str, times: int, out_dir: str) -> str:
    """``path`` stream-copied ``times`` over into one mp4 (same frames, ``times`` x longer)."""
    from r21d_features.utils.video.ffmpeg import find_ffmpeg

    listing = Path(out_dir) / "list.txt"
    listing.write_text("".join(f"file '{os.path.abspath(path)}'\n" for _ in range(times)))
    out = str(Path(out_dir) / f"x{times}_{Path(path).name}")
    subprocess.run([find_ffmpeg(), "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                    "-c", "copy", out], check=True)
    return out


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def print_table(groups: dict[str, list[str]], decoders: list[str], workers: list[int],
                results: dict[tuple[str, int, str], list[tuple[float, float]]]) -> None:
    base = decoders[0]
    print(f"| videos | workers | {' | '.join(f'{d} frames/s' for d in decoders)} | "
          f"{' | '.join(f'{d} / {base}' for d in decoders[1:])} | "
          f"{' | '.join(f'{d} CPU ms/frame' for d in decoders)} |")
    print("|---|---|" + "---|" * (3 * len(decoders) - 1))
    for group in groups:
        for w in workers:
            runs = {d: results[group, w, d] for d in decoders}
            med = {d: statistics.median(r[0] for r in runs[d]) for d in decoders}
            cpu = {d: statistics.median(r[1] for r in runs[d]) for d in decoders}
            cells = " | ".join(f"{med[d]:.0f} ({', '.join(f'{r[0]:.0f}' for r in runs[d])})" for d in decoders)
            ratios = " | ".join(f"{med[d] / med[base]:.2f}x" for d in decoders[1:])
            cpus = " | ".join(f"{cpu[d]:.2f}" for d in decoders)
            print(f"| {group} | {w} | {cells} | {ratios} | {cpus} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", help="folder of videos; grouped by the name's prefix before '_' (e.g. 720p)")
    parser.add_argument("--decoders", nargs="+", default=["opencv-old", *DECODERS], choices=[*OLD_PATHS, *DECODERS])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--groups", nargs="+", default=None, help="only these groups (e.g. 720p 1080p)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="passes over each group's videos per measurement")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads for the old paths' blend (see above)")
    parser.add_argument("--end-to-end", action="store_true", help="time the extractor instead (see above)")
    parser.add_argument("--peak-rss", type=int, default=0, metavar="N",
                        help="peak RSS of a group's first video and of it N times over (see above)")
    args = parser.parse_args(argv)
    groups: dict[str, list[str]] = defaultdict(list)
    for path in sorted(Path(args.videos).glob("*.mp4")):
        group = path.name.split("_")[0]
        if args.groups is None or group in args.groups:
            groups[group].append(str(path))
    print(f"load average before: {load()}")
    if args.peak_rss:
        print("| video | frames x | peak RSS GB |\n|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            for group, paths in groups.items():
                for times, path in ((1, paths[0]), (args.peak_rss, repeated_video(paths[0], args.peak_rss, tmp))):
                    print(f"| {Path(paths[0]).name} | {times} | {peak_rss_gb(path):.2f} |", flush=True)
        print(f"load average after: {load()}")
        return 0
    results: dict[tuple[str, int, str], list[tuple[float, float]]] = defaultdict(list)
    if args.end_to_end:
        from r21d_features.models.r21d.extractor import R21DExtractor

        decoders = [d for d in args.decoders if d in DECODERS]  # the product's paths only
        extractors = {d: R21DExtractor(MODEL, device="cpu", random_weights=True, decoder=d) for d in decoders}
        for paths in groups.values():  # warm up
            for d in decoders:
                end_to_end(paths[:1], extractors[d])
        for r in range(args.rounds):
            for group, paths in groups.items():
                for d in (decoders if r % 2 == 0 else decoders[::-1]):
                    results[group, 0, d].append(end_to_end(paths, extractors[d]))
        print_table(groups, decoders, [0], results)
        print(f"load average after: {load()}")
        return 0
    torch.set_num_threads(args.torch_threads)
    for paths in groups.values():  # warm up: libraries loaded, files in the page cache
        for decoder in args.decoders:
            decode_and_preprocess(paths[0], decoder)
    for r in range(args.rounds):
        for group, paths in groups.items():
            for workers in args.workers:
                for decoder in (args.decoders if r % 2 == 0 else args.decoders[::-1]):
                    results[group, workers, decoder].append(frames_per_s(paths, decoder, workers, args.repeat))
    print_table(groups, args.decoders, args.workers, results)
    print(f"load average after: {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

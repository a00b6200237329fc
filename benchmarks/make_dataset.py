"""Generate the deterministic benchmark video set with ffmpeg (lavfi sources, libx264).

    python -m benchmarks.make_dataset --preset full       # 24 videos 240p..1080p, 10 s..3 min, + 10-min 1080p
    python -m benchmarks.make_dataset --preset cpu-quick  # 4 short videos, minutes on a 2-core CPU
    python -m benchmarks.make_dataset --preset short-set  # 20 clips of 4-6 s, 240p and 360p
    python -m benchmarks.make_dataset --preset decode     # 10 s at each of 240p, 360p, 720p, 1080p
    python -m benchmarks.make_dataset --preset tiny       # 2 one-second clips, for smoke tests

Every video is synthetic (ffmpeg test sources with fixed seeds plus seeded grain, so the
codec has real work to do), encoded with the same arguments each time: the same ffmpeg
binary gives the same files. Existing files whose frame count matches are kept. A
``manifest.json`` next to the videos lists each file with its size, fps and frame count.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2

from r21d_features.utils.video.ffmpeg import find_ffmpeg

log = logging.getLogger(__name__)

SOURCES = ("testsrc2", "mandelbrot", "life", "gradients")
# Sources that are slow to render large are drawn at most this size, then scaled up.
RENDER_MAX_WH = (640, 360)


@dataclass(frozen=True)
class VideoSpec:
    """One benchmark video: ``width x height`` pixels, ``fps``, ``duration_s`` seconds."""

    name: str
    width: int
    height: int
    fps: int
    duration_s: int
    source: str
    seed: int

    @property
    def num_frames(self) -> int:
        return self.fps * self.duration_s


RESOLUTIONS = {"240p": (320, 240), "360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}


def _spec(label: str, duration_s: int, fps: int, index: int) -> VideoSpec:
    width, height = RESOLUTIONS[label]
    source = SOURCES[index % len(SOURCES)]
    return VideoSpec(f"{label}_{duration_s:03d}s_{source}_{fps}fps", width, height, fps, duration_s, source, seed=index)


def preset_specs(preset: str) -> list[VideoSpec]:
    """The videos of ``preset``: ``full``, ``cpu-quick``, ``decode`` or ``tiny``."""
    if preset == "full":
        specs, index = [], 0
        for label in RESOLUTIONS:
            for duration_s in (10, 20, 30, 60, 120, 180):
                specs.append(_spec(label, duration_s, 25 if index % 2 else 30, index))
                index += 1
        specs.append(_spec("1080p", 600, 30, index))
        return specs
    if preset == "cpu-quick":
        # About 550 frames in all: a few minutes for both modes at ~30-40 frames/s on 2 cores.
        return [_spec("240p", 8, 25, 0), _spec("360p", 6, 30, 1), _spec("720p", 4, 25, 2), _spec("1080p", 3, 25, 3)]
    if preset == "short-set":
        # 20 short clips (4-6 s, 240p and 360p, 25 and 30 fps: 2,720 frames): many videos, each a
        # few windows, where the decode of the next video can overlap the model on this one.
        specs = [_spec("240p" if i % 2 else "360p", 4 + i % 3, 25 if i % 4 < 2 else 30, i) for i in range(20)]
        return [replace(spec, name=f"short{i:02d}_{spec.name}") for i, spec in enumerate(specs)]
    if preset == "decode":
        # Decode speed per resolution (benchmarks/decode_speed.py): 10 s of each, 250 frames, one
        # source (testsrc2, drawn at full size) for all, so the sizes differ only in pixels: with
        # a source per size the 720p one (life, drawn at 360p and scaled up) took 8x the bits of
        # the 1080p one and decoded at half its frame rate.
        return [_spec(label, 10, 25, 0) for label in RESOLUTIONS]
    if preset == "tiny":
        return [VideoSpec("tiny_a", 160, 120, 25, 1, "testsrc2", 0), VideoSpec("tiny_b", 128, 96, 25, 2, "life", 1)]
    raise ValueError(f"preset={preset!r} is unknown; allowed: full, cpu-quick, short-set, decode, tiny")


def _source_filter(spec: VideoSpec) -> str:
    """A lavfi graph that draws ``spec`` (deterministic: sources and grain are seeded)."""
    size = f"{spec.width}x{spec.height}"
    render_w, render_h = min(spec.width, RENDER_MAX_WH[0]), min(spec.height, RENDER_MAX_WH[1])
    render = f"{render_w}x{render_h}"
    src = {
        "testsrc2": f"testsrc2=s={size}:r={spec.fps}",
        "mandelbrot": f"mandelbrot=s={render}:r={spec.fps}:maxiter=256:end_scale=0.05",
        "life": f"life=s={render}:r={spec.fps}:seed={spec.seed}:ratio=0.4:mold=8",
        "gradients": f"gradients=s={size}:r={spec.fps}:seed={spec.seed}:speed=0.02:n=5",
    }[spec.source]
    return (
        f"{src},scale={spec.width}:{spec.height}:flags=bicubic,format=yuv420p,"
        f"noise=alls=6:allf=t:all_seed={spec.seed + 1}"
    )


def ffmpeg_command(spec: VideoSpec, out_path: Path) -> list[str]:
    """The ffmpeg argument list that writes ``spec`` to ``out_path`` (H.264 mp4, no audio)."""
    return [
        find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", _source_filter(spec),
        "-frames:v", str(spec.num_frames),
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", str(10 * spec.fps),
        "-pix_fmt", "yuv420p", "-an", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
        os.fspath(out_path),
    ]


def count_frames(path: Path) -> int:
    """Frames OpenCV decodes from ``path`` (what the extractor will see)."""
    cap = cv2.VideoCapture(os.fspath(path), cv2.CAP_FFMPEG)
    frames = 0
    while cap.grab():
        frames += 1
    cap.release()
    return frames


def make_dataset(preset: str, out_dir: Path, specs: list[VideoSpec] | None = None) -> list[Path]:
    """Write the videos of ``preset`` (or the given ``specs``) into ``out_dir`` (kept if already
    there); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    paths = []
    for spec in specs if specs is not None else preset_specs(preset):
        path = out_dir / f"{spec.name}.mp4"
        if not (path.is_file() and manifest.get(spec.name, {}).get("num_frames") == spec.num_frames):
            log.info("writing %s (%d frames)", path, spec.num_frames)
            partial = path.with_name(f".{path.stem}.partial.mp4")
            proc = subprocess.run(ffmpeg_command(spec, partial), capture_output=True, text=True)
            if proc.returncode != 0:
                partial.unlink(missing_ok=True)
                raise RuntimeError(f"ffmpeg failed for {spec.name}: {proc.stderr.strip()[-300:]}")
            decoded = count_frames(partial)
            if decoded != spec.num_frames:
                raise RuntimeError(f"{spec.name}: wrote {decoded} frames, expected {spec.num_frames}")
            os.replace(partial, path)
            manifest[spec.name] = {**asdict(spec), "num_frames": spec.num_frames, "file": path.name}
            manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu-quick", choices=("full", "cpu-quick", "short-set", "decode", "tiny"))
    parser.add_argument("--out", default=None, help="folder for the videos (default: bench_out/videos/<preset>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out_dir = Path(args.out or f"bench_out/videos/{args.preset}")
    for path in make_dataset(args.preset, out_dir):
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

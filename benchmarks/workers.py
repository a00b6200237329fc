"""Benchmark worker processes: one per mode, each measuring itself (time, CPU time, RSS, GPU memory).

A worker builds its network once and then answers requests from
``benchmarks/run_benchmark.py`` over a pipe, so both modes can be run in turns
(interleaved rounds) on a shared machine, each with its own peak-memory account.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.reference_flow import reference_features
from r21d_features.models.r21d.builders import build_network
from r21d_features.models.r21d.extractor import R21DExtractor
from r21d_features.models.r21d.preprocess import blend_taps, crop_taps, gather_planes
from r21d_features.models.r21d.zoo import get_record
from r21d_features.utils.run.runner import run_extraction
from r21d_features.utils.video.decoders import open_video
from r21d_features.utils.video.decoders.yuv import yuv_taps_to_rgb

WEIGHTS_SEED = 0


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker runs: ``mode`` is ``ours`` or ``reference``; ``checkpoint_path`` holds the
    weights both modes load (see :func:`save_random_checkpoint`); the rest are extractor settings."""

    mode: str
    model_name: str
    device: str
    checkpoint_path: str
    precision: str = "fp32"
    batch_size: int | None = None  # None: the product's default for the device
    decode_workers: int | None = None
    channels_last: bool | None = None
    num_threads: int | None = None
    # stand_in: the network is replaced by a near-free stand-in (the pipeline against the decode
    # ceiling, as on a GPU much faster than the decoders).
    stand_in: bool = False


class StandInNetwork(torch.nn.Module):
    """Clips ``B x 3 x T x H x W`` -> ``B x 512``: one value of each clip, nearly free (a
    network on a GPU much faster than the decoders costs the host about nothing)."""

    def forward(self, clips_bcthw: torch.Tensor) -> torch.Tensor:
        return clips_bcthw[:, :1, 0, 0, 0].expand(-1, 512).contiguous()


class NullSink:
    """A sink that keeps nothing: the run loop without any writing."""

    folder = None
    needs_metadata = False

    def claim_path(self, video_path: str) -> None:
        return None

    def output_paths(self, video_path: str) -> list:
        return []

    def is_done(self, video_path: str) -> bool:
        return False

    def stale_differences(self, video_path: str) -> list:
        return []

    def with_provenance(self, entries: Any) -> "NullSink":
        return self

    def write(self, video_path: str, feats: Any) -> list:
        return []

    def pending(self) -> list:
        return []

    def close(self) -> None:
        pass


def _reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_bytes() -> int:
    """Peak resident memory since the last reset (VmHWM), else since the process started."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_gpu_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _gpu_peak_bytes(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def save_random_checkpoint(model_name: str, path: str | os.PathLike) -> str:
    """Random weights (seed 0) for ``model_name`` saved in the upstream format; returns the path."""
    torch.manual_seed(WEIGHTS_SEED)
    torch.save(build_network(get_record(model_name)).state_dict(), path)
    return os.fspath(path)


class Worker:
    """Handles the requests of one mode (see :meth:`handle`)."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        record = get_record(config.model_name)
        self.stack_size, self.step_size = record.stack_size, record.step_size
        if config.mode == "ours":
            self.extractor = R21DExtractor(
                model_name=config.model_name, device=config.device, precision=config.precision,
                batch_size=config.batch_size, decode_workers=config.decode_workers,
                channels_last=config.channels_last, checkpoint_path=config.checkpoint_path,
            )
            self.device = self.extractor.device
            if config.stand_in:
                self.extractor.network = StandInNetwork()
        elif config.mode == "reference":
            self.device = torch.device(config.device if torch.cuda.is_available() else "cpu")
            network = build_network(record)
            network.load_state_dict(torch.load(config.checkpoint_path, map_location="cpu", weights_only=True))
            network.fc = torch.nn.Identity()
            self.network = network.eval().to(self.device)
        else:
            raise ValueError(f"mode={config.mode!r} is unknown; allowed: ours, reference")

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        kind = request["kind"]
        if kind == "run":
            return self.run_ours(request["paths"]) if self.config.mode == "ours" else self.run_reference(request["paths"])
        if kind == "model_ceiling":
            return self.model_ceiling(request["seconds"])
        if kind == "decode_ceiling":
            return decode_ceiling(request["paths"], request["streams"])
        if kind == "stages":
            return self.stage_times(request["paths"])
        raise ValueError(f"request kind={kind!r} is unknown")

    # -------------------------------------------------------------- end to end
    def run_ours(self, paths: list[str]) -> dict[str, Any]:
        """Our real run loop (``run_extraction`` with a sink that writes nothing) over ``paths``."""
        features: dict[str, np.ndarray] = {}
        _reset_peak_rss()
        _reset_gpu_peak(self.device)
        cpu0, t0 = _cpu_s(), time.perf_counter()
        summary = run_extraction(self.extractor, paths, NullSink(),
                                 on_result=lambda r: features.__setitem__(r.path, r.features), progress=False)
        _sync(self.device)
        seconds, cpu_s = time.perf_counter() - t0, _cpu_s() - cpu0
        failed = [f"{o.path}: {o.reason}" for o in summary.failed]
        if failed:
            raise RuntimeError(f"our pipeline failed on {failed}")
        return {
            "seconds": seconds, "cpu_s": cpu_s, "peak_rss": _peak_rss_bytes(),
            "peak_gpu": _gpu_peak_bytes(self.device),
            "videos": {o.path: {"seconds": o.seconds, "frames": o.frames, "windows": o.windows} for o in summary.outcomes},
            "features": features,
        }

    def run_reference(self, paths: list[str]) -> dict[str, Any]:
        """The reference flow, video after video; peak RSS per video."""
        videos, features = {}, {}
        cpu0, t0 = _cpu_s(), time.perf_counter()
        _reset_gpu_peak(self.device)
        for path in paths:
            _reset_peak_rss()
            v0 = time.perf_counter()
            feats = reference_features(self.network, path, self.stack_size, self.step_size)
            _sync(self.device)
            videos[path] = {"seconds": time.perf_counter() - v0, "windows": len(feats), "peak_rss": _peak_rss_bytes()}
            features[path] = feats
        return {
            "seconds": time.perf_counter() - t0, "cpu_s": _cpu_s() - cpu0,
            "peak_rss": max(v["peak_rss"] for v in videos.values()) if videos else 0,
            "peak_gpu": _gpu_peak_bytes(self.device), "videos": videos, "features": features,
        }

    # -------------------------------------------------------------- ceilings and stages
    def model_ceiling(self, seconds: float) -> dict[str, Any]:
        """Model-only frames/s: random clips already on the device, our batch size and precision."""
        batch = self.extractor.batch_size
        clips = torch.randn(batch, 3, self.stack_size, 112, 112, device=self.device)
        self.extractor.forward_clips(clips)  # warm-up (cuDNN autotune, oneDNN primitive cache)
        _sync(self.device)
        passes, t0 = 0, time.perf_counter()
        while passes < 2 or time.perf_counter() - t0 < seconds:
            self.extractor.forward_clips(clips)
            passes += 1
        _sync(self.device)
        elapsed = time.perf_counter() - t0
        return {"frames_per_s": passes * batch * self.stack_size / elapsed, "batch": batch}

    def stage_times(self, paths: list[str]) -> dict[str, Any]:
        """Seconds per frame of each stage run alone on one thread of work: decode (the extractor's
        decoder), tap gathering (decode thread) and colour conversion + blend + normalise (model thread)."""
        spec = self.extractor.record.preprocessing
        decode_s = gather_s = blend_s = 0.0
        frames = 0
        for path in paths:
            reader = open_video(path, self.extractor.settings.decoder)
            taps, gathered, yuv = None, [], None
            t = time.perf_counter()
            for _, planes in reader.frames():
                t1 = time.perf_counter()
                decode_s += t1 - t
                if taps is None:
                    taps = crop_taps(planes.height, planes.width, spec)
                yuv = planes.yuv
                gathered.append(gather_planes(planes, taps))
                t = time.perf_counter()
                gather_s += t - t1
                frames += 1
            if taps is None:
                continue
            device_taps = taps.to(self.device)
            for start in range(0, len(gathered), 32):
                chunk = torch.from_numpy(np.stack(gathered[start : start + 32])).to(self.device)
                t1 = time.perf_counter()
                if yuv is not None:
                    chunk = yuv_taps_to_rgb(chunk, yuv)
                blend_taps(chunk, device_taps)
                _sync(self.device)
                blend_s += time.perf_counter() - t1
        per = 1.0 / max(frames, 1)
        return {"decode_s_per_frame": decode_s * per, "gather_s_per_frame": gather_s * per,
                "blend_s_per_frame": blend_s * per, "frames": frames}


def count_in_threads(paths: list[str], threads: int, count: Callable[[str], int]) -> tuple[int, float, float]:
    """Run ``count(path)`` over ``paths`` on ``threads`` threads sharing one work list;
    ``(total count, wall seconds, process CPU seconds)``."""
    todo = list(paths)
    lock = threading.Lock()
    counts: list[int] = []

    def work() -> None:
        n = 0
        while True:
            with lock:
                if not todo:
                    break
                path = todo.pop(0)
            n += count(path)
        counts.append(n)

    pool = [threading.Thread(target=work) for _ in range(max(1, threads))]
    t0, c0 = time.perf_counter(), time.process_time()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts), time.perf_counter() - t0, time.process_time() - c0


def decode_ceiling(paths: list[str], streams: int, decoder: str = "pyav") -> dict[str, Any]:
    """Frames/s of decoding alone (frames as the pipeline reads them, FFmpeg threads per video
    bounded to the cores as the pipeline bounds them), ``streams`` videos at once."""
    threads = max(1, (os.cpu_count() or 1) // max(1, streams))
    frames, wall_s, _ = count_in_threads(
        paths, streams, lambda p: sum(1 for _ in open_video(p, decoder, threads=threads).frames()))
    return {"frames_per_s": frames / wall_s, "streams": streams}


def worker_main(conn: Connection, config: WorkerConfig) -> None:
    """Process entry point: build, say ready, then answer requests until told to stop."""
    logging.basicConfig(level=logging.ERROR)
    try:
        worker = Worker(config)
        conn.send({"ok": True, "pid": os.getpid()})
    except Exception:  # the coordinator reports it and stops
        conn.send({"ok": False, "error": traceback.format_exc()})
        return
    while True:
        request = conn.recv()
        if request.get("kind") == "stop":
            return
        try:
            conn.send({"ok": True, **worker.handle(request)})
        except Exception:
            conn.send({"ok": False, "error": traceback.format_exc()})

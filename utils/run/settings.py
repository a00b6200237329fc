"""The run's own keys: what to extract, where results go, how the run behaves
(:class:`RunSettings`), and the ``ray_*`` keys of ``runner=ray`` (:class:`RaySettings`).

Plain frozen dataclasses checked in ``__post_init__``, importable without torch, so the
command line can refuse a bad value before anything heavy loads.
"""

import math
from dataclasses import dataclass
from typing import Any, Optional

from r21d_features.utils.core.errors import SettingsError
from r21d_features.utils.core.object_store import is_object_url, key_problem
from r21d_features.utils.core.settings import setting
from r21d_features.utils.outputs.sinks import ON_EXTRACTION_CHOICES
from r21d_features.utils.outputs.storage import writable_problem

RUNNERS = ("local", "ray")


@dataclass(frozen=True)
class RunSettings:
    """What to extract, where the results go, and how the run behaves."""

    video_paths: Any = setting(
        None, "one path or a list [a.mp4, b.mp4]; a .tar is a shard of videos, 'train-{000..009}.tar' ten shards")
    file_with_video_paths: Optional[str] = setting(None, "text file, one path (or shard, or brace range) per line")
    on_extraction: str = setting("print", " | ".join(ON_EXTRACTION_CHOICES))
    output_path: str = setting("./output", "folder for saved features")
    video_root: Optional[str] = setting(
        None, "outputs mirror the folders under it: <root>/cat/000.mp4 -> cat/000_r21d.npy (null: file names only)")
    num_shards: int = setting(1, "take every num_shards-th video from shard_index (SLURM arrays)")
    shard_index: int = setting(0, "which shard this run takes, 0..num_shards-1")
    debug: bool = setting(False, "print tracebacks of failed videos")
    progress: bool = setting(True, "show progress bars")
    save_plots: bool = setting(
        False, "also write <stem>_top1_timeline.png and <stem>_similarity.png (needs matplotlib)")
    save_metadata: bool = setting(
        False, "also write <stem>_fps, <stem>_window_frames, <stem>_window_times_s with the same sink")
    lock_stale_s: float = setting(
        300.0, "workers sharing output_path take over a claim not refreshed for this many seconds")
    overwrite: bool = setting(
        False, "redo videos whose saved output was made with other settings (default: stop and say which)")
    runner: str = setting(
        "local", 'local (one process) | ray (actors on a Ray cluster; pip install ".[ray]"; save_* only)')
    storage_options: Any = setting(
        None, "fsspec options of the object stores read (s3://, gs://, az://) beyond their credential chains, "
              "e.g. {client_kwargs: {region_name: eu-west-1}}; never printed")

    def __post_init__(self) -> None:
        if self.runner not in RUNNERS:
            raise SettingsError(f"runner={self.runner!r} is unknown; allowed: {', '.join(RUNNERS)}")
        if self.on_extraction not in ON_EXTRACTION_CHOICES:
            raise SettingsError(
                f"on_extraction={self.on_extraction!r} is unknown; allowed: {', '.join(ON_EXTRACTION_CHOICES)}")
        if self.num_shards < 1:
            raise SettingsError(f"num_shards={self.num_shards} is invalid: it must be >= 1")
        if not 0 <= self.shard_index < self.num_shards:
            raise SettingsError(f"shard_index={self.shard_index} is invalid: it must be in 0..{self.num_shards - 1}")
        if not self.lock_stale_s > 0:
            raise SettingsError(f"lock_stale_s={self.lock_stale_s} is invalid: it must be > 0 seconds")
        if self.storage_options is not None and not isinstance(self.storage_options, dict):
            raise SettingsError("storage_options must be a mapping, e.g. storage_options={anon: true}, or null")
        for key in ("output_path", "video_root", "file_with_video_paths"):
            problem = object_url_problem(key, getattr(self, key))
            if problem:
                raise SettingsError(problem)
        problem = object_output_problem(self)
        if problem:
            raise SettingsError(problem)


def object_url_problem(key: str, value: Any) -> str | None:
    """Why the URL given as ``key`` cannot be used (one line), or None (also for local paths)."""
    if not isinstance(value, str) or "://" not in value:
        return None
    if not is_object_url(value):
        return (f"{key}={value!r}: only s3://, gs:// and az:// URLs are read (http(s) and other URLs are not); "
                "give a local path or an object-store URL")
    if key == "output_path":
        return writable_problem(value) or key_problem(value)
    return key_problem(value)


def object_output_problem(run: "RunSettings") -> str | None:
    """Why ``run``'s other settings cannot write to its object-store ``output_path`` (one line), or None."""
    if not is_object_url(run.output_path) or run.on_extraction == "print":
        return None
    if run.on_extraction == "save_hdf5":
        return (f"on_extraction=save_hdf5 writes one HDF5 file in a folder, not to {run.output_path}; use "
                "save_numpy or save_pickle (one object per video), save_parquet (parts of one table), or a local "
                "output_path and copy the file up")
    if run.save_plots:
        return (f"save_plots=true draws pictures into a folder, not into {run.output_path}; set save_plots=false, "
                "or use a local output_path")
    return None


class RaySetupError(SettingsError):
    """Ray cannot run this extraction as configured; the message says what to change."""


# ---------------------------------------------------------------------- ray_* keys
@dataclass(frozen=True)
class RaySettings:
    """The ``ray_*`` keys (``runner=local`` ignores them); null means "choose from the cluster"
    (see :func:`plan_workers`)."""

    ray_address: Optional[str] = setting(
        None, "null: start a local Ray cluster | auto: join the one `ray start` runs | host:port")
    ray_num_workers: Optional[int] = setting(None, "model replicas (Ray actors); null: one per GPU, 1 on CPU only")
    ray_gpus_per_worker: Optional[float] = setting(
        None, "GPUs per worker; null: 1 when the cluster has GPUs and device is cuda, else 0")
    ray_cpus_per_worker: Optional[float] = setting(
        None, "CPUs per worker (decoding; torch threads on CPU); null: a fair share of a node")

    def __post_init__(self) -> None:
        num, gpus, cpus = self.ray_num_workers, self.ray_gpus_per_worker, self.ray_cpus_per_worker
        if num is not None and num < 1:
            raise RaySetupError(f"ray_num_workers={num} is invalid: it must be >= 1 (or null: one per GPU)")
        if gpus is not None and not (gpus >= 0 and math.isfinite(gpus)):
            raise RaySetupError(
                f"ray_gpus_per_worker={gpus} is invalid: it must be >= 0 (0: CPU workers; null: 1 if GPUs)"
            )
        if cpus is not None and not (cpus > 0 and math.isfinite(cpus)):
            raise RaySetupError(f"ray_cpus_per_worker={cpus} is invalid: it must be > 0 (or null: automatic)")

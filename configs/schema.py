"""Typed schema of the command line: a wrong key or type fails before any work.

Registered in Hydra's ConfigStore as ``schema/<feature_type>``; the YAML file
``configs/feature_type/<feature_type>.yaml`` puts its defaults on top. Value
checks (ranges, choices) live with the code that uses the values, so the
Python API refuses the same things.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class R21DConfig:
    feature_type: str = "r21d"
    model_name: str = "r2plus1d_18_16_kinetics"
    stack_size: Optional[int] = None
    step_size: Optional[int] = None
    extraction_fps: Optional[float] = None
    device: str = "cuda:0"
    video_paths: Any = None  # one path or a list of paths
    file_with_video_paths: Optional[str] = None
    on_extraction: str = "print"
    output_path: str = "./output"
    tmp_path: str = "./tmp"
    keep_tmp_files: bool = False
    show_pred: bool = False
    # Additions over the reference; their defaults keep its behaviour.
    batch_size: int = 16
    precision: str = "fp32"
    checkpoint_path: Optional[str] = None
    random_weights: bool = False
    decode_workers: Optional[int] = None
    apply_rotation: bool = False
    decoder: str = "pyav"  # pyav | opencv
    num_shards: int = 1
    shard_index: int = 0
    debug: bool = False
    progress: bool = True
    save_plots: bool = False
    save_metadata: bool = False
    # Scale-out on Ray (pip install ".[ray]"); runner=local ignores the ray_* keys.
    runner: str = "local"
    ray_address: Optional[str] = None
    ray_num_workers: Optional[int] = None
    ray_gpus_per_worker: Optional[float] = None
    ray_cpus_per_worker: Optional[float] = None
    video_timeout_s: Optional[float] = None
    max_frame_pixels: Optional[int] = 67108864  # 8192 x 8192
    lock_stale_s: float = 300.0


def register_configs() -> None:
    ConfigStore.instance().store(group="schema", name="r21d", node=R21DConfig, package="_global_")


def unknown_key_error(overrides: list[str]) -> str | None:
    """One line naming the first ``key=value`` override whose key the schema lacks, or None.

    Hydra refuses such keys too, but in a multi-line message without the allowed keys;
    this check runs first so the user gets one line with the closest key.
    """
    known = {f.name for f in fields(R21DConfig)}
    for arg in overrides:
        if arg.startswith("-") or "=" not in arg:
            continue  # Hydra's own flags (--help, --cfg job, -m, ...)
        key = arg.split("=", 1)[0].lstrip("+~")  # +key=v would add a key the extractor does not take
        if key.split(".")[0].split("/")[0] == "hydra":
            continue
        top = key.split(".")[0]
        if top not in known:
            close = difflib.get_close_matches(top, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            return f"unknown key {top!r} in {arg!r}: {hint}`python main.py --help` lists the keys"
    return None

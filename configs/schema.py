"""Typed schema of the command line: a wrong key or type fails before any work.

Registered in Hydra's ConfigStore as ``schema/<feature_type>``; the YAML file
``configs/feature_type/<feature_type>.yaml`` puts its defaults on top. Value
checks (ranges, choices) live with the code that uses the values, so the
Python API refuses the same things.
"""

from __future__ import annotations

from dataclasses import dataclass
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

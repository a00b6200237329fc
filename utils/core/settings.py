"""Typed settings: the helper every part uses to declare its keys, and the run loop's own.

Each part of the program owns one frozen dataclass of the settings it reads
(the extractor's lives with the extractor, the Ray runner's in
:mod:`utils.run.ray_runner`, the run loop's here), checked in ``__post_init__``.
A field is a command-line key of the same name: its default and help text are
written once, in :func:`setting`, and the command line's schema and ``--help``
are generated from the fields.
"""

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol, Sequence

from r21d_features.utils.core.errors import SettingsError
from r21d_features.utils.outputs.sinks import ON_EXTRACTION_CHOICES

RUNNERS = ("local", "ray")


def setting(default: Any, help: str) -> Any:  # noqa: A002 (the word users read in --help)
    """A dataclass field that is also a command-line key, with its ``--help`` text."""
    return field(default=default, metadata={"help": help})


def help_of(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def setting_fields(parts: Sequence[type]) -> list[tuple[dataclasses.Field, Any]]:
    """``(field, resolved type)`` of every key of ``parts``; a key declared twice is a bug."""
    out, owner = [], {}
    for part in parts:
        hints = typing.get_type_hints(part)
        for f in dataclasses.fields(part):
            if f.name in owner:
                raise TypeError(f"setting {f.name!r} is declared by both {owner[f.name]} and {part.__name__}")
            owner[f.name] = part.__name__
            out.append((f, hints[f.name]))
    return out


def split_settings(values: Mapping[str, Any], parts: Sequence[type]) -> list[Any]:
    """One instance of each of ``parts`` from the flat ``values`` (checked by each ``__post_init__``).

    A key that no part declares is refused with one line naming it.
    """
    names = [{f.name for f in dataclasses.fields(part)} for part in parts]
    unknown = sorted(set(values) - set().union(*names))
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]!r}: `python main.py --help` lists the keys")
    return [part(**{k: v for k, v in values.items() if k in keys}) for part, keys in zip(parts, names)]


@dataclass(frozen=True)
class RunSettings:
    """What to extract, where the results go, and how the run behaves."""

    video_paths: Any = setting(None, "one path or a list [a.mp4, b.mp4]")
    file_with_video_paths: Optional[str] = setting(None, "text file, one path per line")
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


class ExtractorSettings(Protocol):
    """What the runners read of an extractor's settings (a frozen dataclass of its own)."""

    model_name: str
    device: str
    decode_workers: Optional[int]
    show_pred: bool
    tmp_path: str
    checkpoint_path: Optional[str]

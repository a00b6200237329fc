"""Turning the user's ``video_paths`` / ``file_with_video_paths`` into one checked list."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from .errors import SettingsError


class PathListError(SettingsError):
    """The list of inputs cannot be used as given; the message says what to change."""


def collect_video_paths(
    video_paths: str | Sequence[str] | None,
    file_with_video_paths: str | None,
) -> list[str]:
    """Paths from both sources, in order, duplicates (same file) dropped.

    ``video_paths`` is one path or a list; ``file_with_video_paths`` names a
    text file with one path per line (blank lines ignored, surrounding spaces
    stripped). Relative paths stay relative to the current directory.
    """
    paths: list[str] = []
    if video_paths is not None:
        if isinstance(video_paths, (str, os.PathLike)):
            paths.append(os.fspath(video_paths))
        else:
            paths.extend(os.fspath(p) for p in video_paths)
    if file_with_video_paths is not None:
        list_file = Path(file_with_video_paths)
        if not list_file.is_file():
            raise PathListError(
                f"file_with_video_paths={os.fspath(file_with_video_paths)!r} is not a readable file; "
                "give a text file with one video path per line"
            )
        lines = list_file.read_text(encoding="utf-8").splitlines()
        paths.extend(line.strip() for line in lines if line.strip())
    if video_paths is None and file_with_video_paths is None:
        raise PathListError("no input: set video_paths=<path or [list]> or file_with_video_paths=<text file>")
    if not paths:
        raise PathListError("the list of videos is empty: nothing to extract")
    return _drop_repeats(paths)


def _drop_repeats(paths: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    unique = []
    for p in paths:
        key = os.path.normpath(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def shard(paths: Sequence[str], num_shards: int, shard_index: int) -> list[str]:
    """Every ``num_shards``-th path starting at ``shard_index``: disjoint shards that cover the list
    (both checked by :class:`utils.settings.RunSettings`)."""
    return list(paths[shard_index::num_shards])

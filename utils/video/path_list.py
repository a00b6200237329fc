"""Turning the user's ``video_paths`` / ``file_with_video_paths`` into one checked list."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

from r21d_features.utils.core.errors import SettingsError
from r21d_features.utils.core.object_store import (ObjectPath, ObjectStoreError, is_object_url, name_problem,
                                                  refused_scheme, require_extra, store_of, url_scheme)

log = logging.getLogger(__name__)


class PathListError(SettingsError):
    """The list of inputs cannot be used as given; the message says what to change."""


def collect_video_paths(
    video_paths: str | Sequence[str] | None,
    file_with_video_paths: str | None,
) -> list[str]:
    """Paths from both sources, in order, duplicates (same file) dropped.

    ``video_paths`` is one path or a list; ``file_with_video_paths`` names a
    text file read by :func:`read_path_list`. Relative paths stay relative to the
    current directory. Object-store URLs (``s3://...``) are inputs as they are; ``http(s)://``
    names are refused here, and an object URL whose store's package is missing too.
    """
    paths: list[str] = []
    if video_paths is not None:
        if isinstance(video_paths, (str, os.PathLike)):
            paths.append(os.fspath(video_paths))
        else:
            paths.extend(os.fspath(p) for p in video_paths)
    if file_with_video_paths is not None:
        paths.extend(read_path_list(file_with_video_paths))
    if video_paths is None and file_with_video_paths is None:
        raise PathListError("no input: set video_paths=<path or [list]> or file_with_video_paths=<text file>")
    if not paths:
        raise PathListError("the list of videos is empty: nothing to extract")
    check_url_inputs(paths)
    return _drop_repeats(paths)


def check_url_inputs(paths: Sequence[str]) -> None:
    """Refuse ``http(s)://`` inputs, and object URLs whose store's package is not installed."""
    web = [p for p in paths if refused_scheme(p)]
    if web:
        more = f" (and {len(web) - 1} more)" if len(web) > 1 else ""
        raise PathListError(f"{web[0]!r}{more}: http(s):// inputs are not read; download the videos first, "
                            "or put them in an object store (s3://, gs://, az://)")
    for scheme in sorted({url_scheme(p) for p in paths} - {None}):
        require_extra(scheme)


BINARY_CONTROL_BYTES = set(range(0, 9)) | {11, 12} | set(range(14, 32))


def read_path_list(list_path: str | os.PathLike) -> list[str]:
    """The paths in a list file: one per line, in order.

    Blank lines and lines starting with ``#`` are ignored, spaces around a path are
    stripped; a UTF-8 byte-order mark and Windows line ends (CRLF) are fine. A line
    that is not UTF-8 is kept as the bytes it holds (Linux file names are bytes:
    ``os.fsdecode``), so such names still work. A file that is not text at all
    (mostly control bytes, e.g. a video given by mistake) is refused, naming the line.
    A line holding a NUL byte fails as that one video (no file can have that name).
    """
    key = "file_with_video_paths"
    if is_object_url(list_path):
        data = _read_list_object(os.fspath(list_path))
    else:
        data = _read_list_file(list_path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise PathListError(f"{key}={os.fspath(list_path)!r} is UTF-16 text; save it as UTF-8 (one path per line)")
    control = sum(b in BINARY_CONTROL_BYTES for b in data[:4096])
    if control > max(8, len(data[:4096]) // 20):
        first = next(i for i, line in enumerate(data.splitlines(), 1) if BINARY_CONTROL_BYTES.intersection(line))
        raise PathListError(
            f"{key}={os.fspath(list_path)!r} is not a text file (line {first} holds binary bytes); "
            "give a text file with one video path per line"
        )
    paths = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.rstrip(b"\r").strip(b" \t")
        if not raw or raw.startswith(b"#"):
            continue
        try:
            paths.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            path = os.fsdecode(raw)
            log.warning("%s line %d is not UTF-8: taken as the raw bytes of a file name", os.fspath(list_path), number)
            paths.append(path)
    return paths


def _read_list_file(list_path: str | os.PathLike) -> bytes:
    key = "file_with_video_paths"
    try:
        data = Path(list_path).read_bytes() if Path(list_path).is_file() else None
    except OSError as exc:
        raise PathListError(f"{key}={os.fspath(list_path)!r} cannot be read ({exc.strerror}); "
                            "give a text file with one video path per line") from None
    if data is None:
        raise PathListError(
            f"{key}={os.fspath(list_path)!r} is not a readable file; give a text file with one video path per line"
        )
    return data


def _read_list_object(url: str) -> bytes:
    key = "file_with_video_paths"
    require_extra(url_scheme(url))
    path = ObjectPath.from_url(url)
    try:
        return store_of(path).read_bytes(path)
    except FileNotFoundError:
        raise PathListError(f"{key}={url!r}: no such object; give the URL of a text file with one video "
                            "path per line") from None
    except ObjectStoreError as exc:
        raise PathListError(f"{key}={url!r} cannot be read: {exc}") from None


def _drop_repeats(paths: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    unique = []
    for p in paths:
        key = _same_input_key(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _same_input_key(path: str) -> str:
    """What two names of one input share: the normalised URL of an object, the absolute local path."""
    if not is_object_url(path):
        return os.path.normpath(os.path.abspath(path))
    return path if name_problem(path) else str(ObjectPath.from_url(path))


def shard(paths: Sequence[str], num_shards: int, shard_index: int) -> list[str]:
    """Every ``num_shards``-th path starting at ``shard_index``: disjoint shards that cover the list
    (both checked by :class:`utils.run.settings.RunSettings`)."""
    return list(paths[shard_index::num_shards])

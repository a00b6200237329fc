"""Turning the user's ``video_paths`` / ``file_with_video_paths`` into one checked list."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

from r21d_features.utils.core.errors import SettingsError
from r21d_features.utils.core.path_table import PathTable, first_of_each
from r21d_features.utils.core.shard_names import MemberName
from r21d_features.utils.video.shards import expand_inputs, is_shard_name
from r21d_features.utils.core.object_store import (ObjectPath, ObjectStoreError, is_object_url, name_problem,
                                                  refused_scheme, require_extra, store_of, url_scheme)

log = logging.getLogger(__name__)


class PathListError(SettingsError):
    """The list of inputs cannot be used as given; the message says what to change."""


def collect_video_paths(
    video_paths: str | Sequence[str] | None,
    file_with_video_paths: str | None,
) -> PathTable:
    """Paths from both sources, in order, duplicates (same file) dropped.

    ``video_paths`` is one path or a list; ``file_with_video_paths`` names a
    text file read by :func:`read_path_list`. Relative paths stay relative to the
    current directory. Object-store URLs (``s3://...``) are inputs as they are; ``http(s)://``
    names are refused here, and an object URL whose store's package is missing too. A name
    ending in ``.tar`` is a tar shard, and brace ranges name several (``train-{000..002}.tar``):
    each is replaced by the videos it holds (:mod:`utils.video.shards`).
    The paths are held compactly (:class:`~utils.core.path_table.PathTable`, about 70 bytes
    per path), and repeats are found in O(n) without a set of every path.
    """
    paths = PathTable()
    if video_paths is not None:
        if isinstance(video_paths, (str, os.PathLike)):
            paths.append(os.fspath(video_paths))
        else:
            for p in video_paths:
                paths.append(os.fspath(p))
    if file_with_video_paths is not None:
        for p in read_path_list(file_with_video_paths):
            paths.append(p)
    if video_paths is None and file_with_video_paths is None:
        raise PathListError("no input: set video_paths=<path or [list]> or file_with_video_paths=<text file>")
    if not paths:
        raise PathListError("the list of videos is empty: nothing to extract")
    check_url_inputs(paths)
    if any(is_shard_name(p) for p in paths):
        paths = PathTable(expand_inputs(paths))  # each tar shard (or brace range of shards) -> its videos
        if not paths:
            raise PathListError("the shards hold no videos: nothing to extract")
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


def read_path_list(list_path: str | os.PathLike) -> Iterator[str]:
    """The paths in a list file: one per line, in order, read as a stream (memory does not grow
    with the file; a list of a million lines starts at once).

    Blank lines and lines starting with ``#`` are ignored, spaces around a path are
    stripped; a UTF-8 byte-order mark and Windows line ends (CRLF) are fine. A line
    that is not UTF-8 is kept as the bytes it holds (Linux file names are bytes:
    ``os.fsdecode``), so such names still work. A file that is not text at all
    (mostly control bytes, e.g. a video given by mistake) is refused, naming the line;
    that is decided from its first 4 KiB, before any path is given out.
    A line holding a NUL byte fails as that one video (no file can have that name).
    """
    key = "file_with_video_paths"
    with _open_list(list_path) as f:
        head = f.read(HEAD_BYTES)
        if head.startswith(b"\xef\xbb\xbf"):
            head = head[3:]
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise PathListError(f"{key}={os.fspath(list_path)!r} is UTF-16 text; save it as UTF-8 (one path per line)")
        control = sum(b in BINARY_CONTROL_BYTES for b in head)
        if control > max(8, len(head) // 20):
            first = next(i for i, line in enumerate(head.splitlines(), 1) if BINARY_CONTROL_BYTES.intersection(line))
            raise PathListError(
                f"{key}={os.fspath(list_path)!r} is not a text file (line {first} holds binary bytes); "
                "give a text file with one video path per line"
            )
        first_lines = head.split(b"\n")
        rest = first_lines.pop()  # the start of the line the head cut, or b""
        number = 0
        for raw in first_lines:
            number += 1
            path = _path_of_line(raw, list_path, number)
            if path is not None:
                yield path
        for raw in f:
            if not raw.endswith(b"\n"):
                rest += raw
                continue
            number += 1
            path = _path_of_line(rest + raw[:-1], list_path, number)
            rest = b""
            if path is not None:
                yield path
        if rest:
            path = _path_of_line(rest, list_path, number + 1)
            if path is not None:
                yield path


HEAD_BYTES = 4096  # looked at before any line is used: BOM, UTF-16, binary data


def _path_of_line(raw: bytes, list_path: str | os.PathLike, number: int) -> str | None:
    """The path on line ``number`` of a list (None for a blank or comment line)."""
    raw = raw.rstrip(b"\r").strip(b" \t")
    if not raw or raw.startswith(b"#"):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        log.warning("%s line %d is not UTF-8: taken as the raw bytes of a file name", os.fspath(list_path), number)
        return os.fsdecode(raw)


def _open_list(list_path: str | os.PathLike) -> BinaryIO:
    """The list file (local, or an object), opened for reading bytes."""
    if is_object_url(list_path):
        return _open_list_object(os.fspath(list_path))
    key = "file_with_video_paths"
    try:
        f = open(list_path, "rb") if Path(list_path).is_file() else None
    except OSError as exc:
        raise PathListError(f"{key}={os.fspath(list_path)!r} cannot be read ({exc.strerror}); "
                            "give a text file with one video path per line") from None
    if f is None:
        raise PathListError(
            f"{key}={os.fspath(list_path)!r} is not a readable file; give a text file with one video path per line"
        )
    return f


def _open_list_object(url: str) -> BinaryIO:
    key = "file_with_video_paths"
    require_extra(url_scheme(url))
    path = ObjectPath.from_url(url)
    try:
        store = store_of(path)
        info = store.info(path)
        if info is None or info.is_dir:
            raise FileNotFoundError(url)
        return store.open_read(path)
    except FileNotFoundError:
        raise PathListError(f"{key}={url!r}: no such object; give the URL of a text file with one video "
                            "path per line") from None
    except ObjectStoreError as exc:
        raise PathListError(f"{key}={url!r} cannot be read: {exc}") from None


def _drop_repeats(paths: PathTable) -> PathTable:
    cwd = os.getcwd()
    keep = first_of_each(paths, lambda p: _same_input_key(p, cwd))
    if not keep.all():
        paths.keep_only(keep.tolist())
    return paths


def _same_input_key(path: str, cwd: str | None = None) -> str:
    """What two names of one input share: the normalised URL of an object, the absolute local path
    (``cwd``: the current folder, when the caller looked it up once for many paths); for a video in a
    tar shard, its shard's key and the member."""
    member = MemberName.parse(path)
    if member is not None:
        return f"{_same_input_key(member.shard, cwd)}\x00{member.member}\x00{member.offset}"
    if not is_object_url(path):
        if path[:1] == "/" and "//" not in path and "/." not in path and path[-1:] != "/":
            return path  # already absolute and normal: what abspath would give
        return os.path.normpath(os.path.join(cwd or os.getcwd(), path))  # abspath, one getcwd() per list
    return path if name_problem(path) else str(ObjectPath.from_url(path))


def shard(paths: Sequence[str], num_shards: int, shard_index: int) -> PathTable:
    """Every ``num_shards``-th path starting at ``shard_index``: disjoint shards that cover the list
    (both checked by :class:`utils.run.settings.RunSettings`)."""
    if num_shards == 1 and isinstance(paths, PathTable):
        return paths
    return PathTable(paths[i] for i in range(shard_index, len(paths), num_shards))

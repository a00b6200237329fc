"""Where a video's bytes come from: the source seam.

The pipeline carries each video by its *name* (the string the user gave: a line of the list,
an item of ``video_paths``); outputs, the run report and the console use that name.
:func:`open_source` is the one place that turns a name into a :class:`Source`, the object the
decoders read: an object-store URL (``s3://``, ``gs://``, ``az://``; see
:mod:`utils.core.object_store`) is an :class:`ObjectFile`, read by ranged requests and never
copied whole; a video inside a tar shard (utils/video/shards.py) is a window of the shard's
bytes; every other name is a local file (``odd:name.mp4`` and ``concat:a|b`` included:
only the object-store schemes are URLs). Another kind of source is one class with the five
members of :class:`Source`, and one branch in :func:`open_source`.

A new kind of source, for example videos held in memory::

    @dataclass(frozen=True)
    class InMemory:
        name: str
        data: bytes

        def problem(self) -> str | None:
            return None

        def check(self) -> None:
            if not self.data:
                raise VideoDecodeError("empty file (0 bytes)")

        def open(self) -> BinaryIO:
            return io.BytesIO(self.data)

        def local_path(self) -> str | None:
            return None  # no file on disk: decoder=opencv refuses it

        def ffmpeg_url(self) -> str | None:
            return None  # nothing ffmpeg can open: extraction_fps refuses it

    open_video(InMemory("clip.mp4", data)).frames()  # the same frames as the file's
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from r21d_features.utils.core.errors import VideoDecodeError
from r21d_features.utils.core.object_store import SIGNED_URL_S, ObjectPath, ObjectStoreError, is_object_url, name_problem, store_of
from r21d_features.utils.core.safe_fs import input_problem
from r21d_features.utils.core.shard_names import MemberName
from r21d_features.utils.video.shards import ShardMember



@runtime_checkable
class Source(Protocol):
    """One video's bytes and its name.

    ``name``: the video's name as the user gave it. ``problem()``: why it cannot be read, in
    one line, decided without opening it and without a request to a store (None: nothing known
    against it; a missing local file is named here, from one ``stat``, so that it fails before
    any claim or failure marker is written for it; a missing object is reported by :meth:`check`).
    ``check()``: raise :class:`VideoDecodeError` naming why it cannot
    be read now (missing, a folder, empty, no permission). ``open()``: the bytes as a binary file
    object that can seek (the default decoder streams from it; the caller closes it).
    ``local_path()``: a local file holding the bytes, for the tools that open files by name
    (``decoder=opencv``, the ffmpeg re-encode of ``extraction_fps``), or None when there is none.
    ``ffmpeg_url()``: for a source without a local file, a URL ffmpeg can read the bytes from
    (the ``extraction_fps`` re-encode), or None when there is none.
    """

    name: str

    def problem(self) -> str | None: ...

    def check(self) -> None: ...

    def open(self) -> BinaryIO: ...

    def local_path(self) -> str | None: ...

    def ffmpeg_url(self) -> str | None: ...


@dataclass(frozen=True)
class LocalFile:
    """A video file on a local (or mounted) file system; ``name`` is its path."""

    name: str

    def problem(self) -> str | None:
        problem = name_problem(self.name) or input_problem(self.name)
        if problem is None and not os.path.exists(self.name):
            return "file not found"  # the words of check(), so the reason reads the same either way
        return problem

    def check(self) -> None:
        check_readable_file(self.name)

    def open(self) -> BinaryIO:
        return open(self.name, "rb")

    def local_path(self) -> str | None:
        return self.name

    def ffmpeg_url(self) -> str | None:
        return None  # ffmpeg opens the local file


@dataclass(frozen=True)
class ObjectFile:
    """A video object in an object store; ``name`` is its URL (``s3://bucket/key``)."""

    name: str

    @property
    def path(self) -> ObjectPath:
        return ObjectPath.from_url(self.name)

    def problem(self) -> str | None:
        return name_problem(self.name)

    def check(self) -> None:
        try:
            info = store_of(self.path).info(self.path)
        except ObjectStoreError as exc:
            raise VideoDecodeError(str(exc)) from None
        if info is None:
            raise VideoDecodeError(f"object not found: {self.name}")
        if info.is_dir:
            raise VideoDecodeError("is a folder (a prefix of keys), not a video object")
        if info.size == 0:
            raise VideoDecodeError("empty object (0 bytes)")

    def open(self) -> BinaryIO:
        try:
            return store_of(self.path).open_read(self.path)
        except ObjectStoreError as exc:
            raise VideoDecodeError(str(exc)) from None

    def local_path(self) -> str | None:
        return None

    def ffmpeg_url(self) -> str | None:
        try:
            return store_of(self.path).sign(self.path, SIGNED_URL_S)
        except ObjectStoreError as exc:
            raise VideoDecodeError(str(exc)) from None


def open_source(name: str | os.PathLike) -> Source:
    """The :class:`Source` a video name stands for: a :class:`~utils.video.shards.ShardMember` for
    a video inside a tar shard, an :class:`ObjectFile` for an object-store URL, else the
    :class:`LocalFile` of that path."""
    member = MemberName.parse(name)
    if member is not None:
        return ShardMember(name, member)
    if is_object_url(name):
        return ObjectFile(str(name))
    return LocalFile(os.fspath(name))


def as_source(video: str | os.PathLike | Source) -> Source:
    """``video`` itself when it is a :class:`Source`, else the source its name stands for."""
    if isinstance(video, (str, os.PathLike, ObjectPath)):
        return open_source(video)
    return video


def read_head(source: Source, size: int) -> bytes:
    """The first ``size`` bytes of ``source`` (fewer for a shorter file)."""
    with source.open() as f:
        return f.read(size)


def check_readable_file(path: str | os.PathLike) -> None:
    """Raise :class:`VideoDecodeError` naming why ``path`` cannot be a video file."""
    p = Path(path)
    if not p.exists():
        raise VideoDecodeError("file not found")
    if p.is_dir():
        raise VideoDecodeError("is a directory, not a video file")
    if p.stat().st_size == 0:
        raise VideoDecodeError("empty file (0 bytes)")
    if not os.access(p, os.R_OK):
        raise VideoDecodeError("file is not readable (permission denied)")

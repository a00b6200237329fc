"""Where a video's bytes come from: the source seam.

The pipeline carries each video by its *name* (the string the user gave: a line of the list,
an item of ``video_paths``); outputs, the run report and the console use that name.
:func:`open_source` is the one place that turns a name into a :class:`Source`, the object the
decoders read. Today every name is a local file (``odd:name.mp4`` and ``concat:a|b`` included:
a name is never parsed as a URL). Another kind of source is one class with the four members
of :class:`Source`, and one branch in :func:`open_source`.

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
            return None  # no file on disk: decoder=opencv and extraction_fps refuse it

    open_video(InMemory("clip.mp4", data)).frames()  # the same frames as the file's
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from r21d_features.utils.core.errors import VideoDecodeError
from r21d_features.utils.core.safe_fs import input_problem


@runtime_checkable
class Source(Protocol):
    """One video's bytes and its name.

    ``name``: the video's name as the user gave it. ``problem()``: why it can never be read, in
    one line, decided without opening it (None: nothing known against it; a missing file is
    reported by :meth:`check`). ``check()``: raise :class:`VideoDecodeError` naming why it cannot
    be read now (missing, a folder, empty, no permission). ``open()``: the bytes as a binary file
    object that can seek (the default decoder streams from it; the caller closes it).
    ``local_path()``: a local file holding the bytes, for the tools that open files by name
    (``decoder=opencv``, the ffmpeg re-encode of ``extraction_fps``), or None when there is none.
    """

    name: str

    def problem(self) -> str | None: ...

    def check(self) -> None: ...

    def open(self) -> BinaryIO: ...

    def local_path(self) -> str | None: ...


@dataclass(frozen=True)
class LocalFile:
    """A video file on a local (or mounted) file system; ``name`` is its path."""

    name: str

    def problem(self) -> str | None:
        return input_problem(self.name)

    def check(self) -> None:
        check_readable_file(self.name)

    def open(self) -> BinaryIO:
        return open(self.name, "rb")

    def local_path(self) -> str | None:
        return self.name


def open_source(name: str | os.PathLike) -> Source:
    """The :class:`Source` a video name stands for (today: the local file of that path)."""
    return LocalFile(os.fspath(name))


def as_source(video: str | os.PathLike | Source) -> Source:
    """``video`` itself when it is a :class:`Source`, else the source its name stands for."""
    if isinstance(video, (str, os.PathLike)):
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

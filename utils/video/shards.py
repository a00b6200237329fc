"""Tar shards as inputs: webdataset-style archives of videos, read in place.

An input whose name ends in ``.tar`` (a local file or an object) is a *shard*; brace ranges
name several (``train-{000..002}.tar``, ``clips-{a,b}.tar``). :func:`expand_inputs` turns each
shard into its videos: one :class:`~utils.core.shard_names.MemberName` per member whose
extension is a video's (``.mp4``, ``.avi``, ...). Side files (``clip001.json``,
``clip001.txt``) and folders are skipped. Listing a shard reads its 512-byte member headers
and seeks over the data, so it costs one read per member, never the videos' bytes.

A member is read in place (:class:`ShardMember` opens a window of the shard's bytes); it is
never extracted to disk. A member that cannot be a video fails as that one video, with a
line naming the shard and the member:

- a name that is absolute, or has an empty, ``.`` or ``..`` part (it could name an output
  outside ``output_path``), or a part longer than file names may be;
- a symbolic or hard link, a device, a FIFO or a sparse member (not plain bytes in the shard);
- a key already used by an earlier member of the shard (their outputs would overwrite each other);
- bytes past the end of the shard (a truncated shard: the members before it are read).

A shard that is missing, is not a tar file, or is damaged partway fails as one entry named
after the shard; the members listed before the damage are extracted.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import PurePosixPath
from typing import BinaryIO, Iterable, Iterator

from r21d_features.utils.core.errors import SettingsError, VideoDecodeError
from r21d_features.utils.core.object_store import SIGNED_URL_S, ObjectPath, ObjectStoreError, is_object_url, store_of
from r21d_features.utils.core.safe_fs import NAME_MAX_BYTES, name_bytes
from r21d_features.utils.core.shard_names import MemberName

SHARD_SUFFIX = ".tar"
# The extensions of members taken as videos (compared in lower case); every other member is a side file.
VIDEO_EXTENSIONS = frozenset({
    "mp4", "m4v", "mov", "avi", "mkv", "webm", "mpg", "mpeg", "flv", "wmv", "3gp", "ts", "ogv", "gif",
})
MAX_RANGE_ITEMS = 1_000_000  # a brace range larger than this is a typo, not a dataset


class ShardError(SettingsError):
    """A brace range that cannot be expanded; the message says what to change."""


def is_shard_name(name: str) -> bool:
    """True for an input taken as a tar shard: its name ends in ``.tar`` (any case)."""
    return isinstance(name, str) and name.lower().endswith(SHARD_SUFFIX) and MemberName.parse(name) is None


# ---------------------------------------------------------------------------------- brace ranges
_GROUP = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)")


def expand_braces(pattern: str) -> list[str]:
    """The names a brace pattern stands for, in order (webdataset / braceexpand syntax):
    ``{000..002}`` counts (the width of the bounds is kept: ``000 001 002``), ``{a,b}`` lists;
    several groups multiply (``{a,b}-{0..1}`` gives four names). A name without braces is itself.
    A group that is neither (``{}``, ``{x}``) is kept as it is written."""
    for match in _GROUP.finditer(pattern):
        items = _items(match.group(1))
        if items is not None:
            break
    else:
        return [pattern]
    head, tail = pattern[:match.start()], pattern[match.end():]
    rests = expand_braces(tail)
    if len(items) * len(rests) > MAX_RANGE_ITEMS:
        raise ShardError(f"{pattern!r} stands for more than {MAX_RANGE_ITEMS:,} names; check the brace range")
    return [head + item + rest for item in items for rest in rests]


def _items(body: str) -> list[str] | None:
    numbers = _RANGE.fullmatch(body)
    if numbers is not None:
        first, last = numbers.group(1), numbers.group(2)
        lo, hi = int(first), int(last)
        if abs(hi - lo) >= MAX_RANGE_ITEMS:
            raise ShardError(f"{{{body}}} stands for more than {MAX_RANGE_ITEMS:,} names; check the brace range")
        width = len(first) if first.startswith("0") or last.startswith("0") else 0
        if width and len(last) > width:
            width = len(last)
        step = 1 if hi >= lo else -1
        return [str(n).zfill(width) for n in range(lo, hi + step, step)]
    if "," in body:
        return body.split(",")
    return None


# ---------------------------------------------------------------------------------- listing
def expand_inputs(names: Iterable[str]) -> Iterator[str]:
    """``names`` with every shard (or brace range of shards) replaced by its members' names."""
    for name in names:
        if not is_shard_name(name):
            yield name
            continue
        for shard in expand_braces(name):
            yield from (str(m) for m in list_shard(shard))


def list_shard(shard: str) -> Iterator[MemberName]:
    """The videos of one shard, in archive order; a shard that cannot be listed (or the part of
    it after damage) as one :class:`MemberName` with an empty member and the problem."""
    try:
        f = _open_shard(shard)
    except (OSError, ObjectStoreError) as exc:
        reason = "shard not found" if isinstance(exc, FileNotFoundError) else f"cannot read the shard: {exc}"
        yield MemberName(shard, "", problem=reason)
        return
    with f:
        size = _size_of(f)
        first_of_key: dict[str, str] = {}
        listed = 0
        try:
            archive = tarfile.open(fileobj=f, mode="r:")
        except tarfile.TarError as exc:
            yield MemberName(shard, "", problem=f"not a tar file ({' '.join(str(exc).split())})")
            return
        with archive:
            while True:
                try:
                    info = archive.next()
                except tarfile.TarError as exc:
                    where = f"after {listed} members" if listed else "at its start"
                    yield MemberName(shard, "", problem=f"the shard is damaged {where} ({' '.join(str(exc).split())}); "
                                                        "the members before it are read")
                    return
                if info is None:
                    break
                archive.members.clear()  # the index is not kept: memory stays flat in the shard's length
                member = _member_of(shard, info, size, first_of_key)
                if member is not None:
                    listed += 1
                    yield member
                if info.offset_data + info.size > size:
                    return  # cut inside this member (its line says so): nothing follows
            end = archive.offset  # where tar's end marker (two blocks of zeros) should start
        f.seek(end)
        marker = f.read(2 * tarfile.BLOCKSIZE)
        if len(marker) < 2 * tarfile.BLOCKSIZE or marker.strip(b"\0"):
            where = f"after {listed} members" if listed else "at its start"
            yield MemberName(shard, "", problem=f"the shard is cut short {where} (no end-of-archive marker at byte "
                                                f"{end}): truncated shard; the members before it are read")


def _member_of(shard: str, info: tarfile.TarInfo, shard_size: int, first_of_key: dict[str, str]) -> MemberName | None:
    name = info.name
    if info.isdir() or not _is_video_name(name):
        return None  # a side file (.json, .txt, ...) or a folder
    member = MemberName(shard, name, info.offset_data, info.size)
    problem = _name_problem(name) or _kind_problem(info)
    if problem is None and info.offset_data + info.size > shard_size:
        present = max(0, shard_size - info.offset_data)
        problem = f"the shard ends inside this member ({present} of its {info.size} bytes are there): truncated shard"
    if problem is None:
        first = first_of_key.get(member.key)
        if first is None:
            first_of_key[member.key] = name
        else:
            problem = (f"its key {member.key!r} is used by an earlier member ({first!r}) of the shard; their "
                       "outputs would overwrite each other: give each video its own key")
    return member if problem is None else MemberName(shard, name, problem=problem)


def _is_video_name(name: str) -> bool:
    base = PurePosixPath(name).name
    if "." not in base or base.startswith("."):
        return False  # no extension, or a hidden file (._clip.mp4 of macOS archives)
    return base.rsplit(".", 1)[1].lower() in VIDEO_EXTENSIONS


def _name_problem(name: str) -> str | None:
    if name.startswith("/"):
        return "the member's name is absolute; it could name an output outside output_path: rename it in the shard"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return ("the member's name has an empty, '.' or '..' part; it could name an output outside output_path: "
                "rename it in the shard")
    long = next((p for p in parts if name_bytes(p) > NAME_MAX_BYTES - 16), None)
    if long is not None:
        return (f"a part of the member's name is {name_bytes(long)} bytes long, too long for its output's file "
                "name: rename it in the shard")
    return None


def _kind_problem(info: tarfile.TarInfo) -> str | None:
    if info.issym():
        return "the member is a symbolic link, not a video's bytes; only plain members are read"
    if info.islnk():
        return "the member is a hard link, not a video's bytes; only plain members are read"
    if info.isdev() or info.isfifo():
        return "the member is a device or a FIFO, not a video's bytes; only plain members are read"
    if info.issparse():
        return "the member is a sparse file; only plain members are read"
    if not info.isreg():
        return "the member is not a plain file; only plain members are read"
    return None


# ---------------------------------------------------------------------------------- reading
def _open_shard(shard: str) -> BinaryIO:
    if is_object_url(shard):
        path = ObjectPath.from_url(shard)
        store = store_of(path)
        info = store.info(path)
        if info is None or info.is_dir:
            raise FileNotFoundError(shard)
        return store.open_read(path)
    if os.path.isdir(shard):
        raise IsADirectoryError(f"{shard} is a folder")
    return open(shard, "rb")


def _size_of(f: BinaryIO) -> int:
    end = f.seek(0, io.SEEK_END)
    f.seek(0)
    return end


class MemberFile(io.RawIOBase):
    """The bytes ``[offset, offset + size)`` of an open file, as a file of their own (seekable, read-only)."""

    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        super().__init__()
        self._f, self._offset, self._size, self._pos = f, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._offset + self._pos)
        data = self._f.read(n)
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


class ShardMember:
    """A :class:`~utils.video.sources.Source`: one video inside a tar shard, read in place."""

    def __init__(self, name: str, member: MemberName) -> None:
        self.name = name
        self.member = member

    def problem(self) -> str | None:
        return self.member.problem or None

    def check(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise VideoDecodeError(problem)
        if self.member.size == 0:
            raise VideoDecodeError("empty member (0 bytes)")
        with self._shard() as f:
            size = _size_of(f)
        if self.member.offset + self.member.size > size:
            raise VideoDecodeError("the shard is shorter than when it was listed (changed or truncated meanwhile)")

    def _shard(self) -> BinaryIO:
        """The shard, open; a shard that cannot be opened fails this member."""
        try:
            return _open_shard(self.member.shard)
        except FileNotFoundError:
            raise VideoDecodeError("shard not found") from None
        except (OSError, ObjectStoreError) as exc:
            raise VideoDecodeError(f"cannot read the shard: {exc}") from None

    def open(self) -> BinaryIO:
        raw = MemberFile(self._shard(), self.member.offset, self.member.size)
        return raw if is_object_url(self.member.shard) else io.BufferedReader(raw, buffer_size=1 << 20)

    def local_path(self) -> str | None:
        return None  # no file of its own: decoder=opencv refuses it

    def ffmpeg_url(self) -> str | None:
        """The member's bytes for ffmpeg (extraction_fps): its ``subfile`` protocol over the shard."""
        start, end = self.member.offset, self.member.offset + self.member.size
        if is_object_url(self.member.shard):
            path = ObjectPath.from_url(self.member.shard)
            try:
                inner = store_of(path).sign(path, SIGNED_URL_S)
            except ObjectStoreError as exc:
                raise VideoDecodeError(str(exc)) from None
        else:
            inner = "file:" + os.path.abspath(self.member.shard)
        return f"subfile,,start,{start},end,{end},,:{inner}"

"""File-system rules for names we do not choose and folders we share with other workers.

- **Bounded hidden names.** Next to an output ``<name>`` we keep hidden files
  (``.<name>.lock``, ``.<name>.<random>.tmp``, ...). A name near the 255-byte limit
  of one path component would make them too long, so :func:`hidden_base` shortens
  the name part (keeping a hash of the whole) whenever the suffix would not fit.
- **Inputs checked before opening.** :func:`input_problem` names why a path can
  never be read as a video file: a NUL byte, a component over 255 bytes, or a FIFO,
  device or socket (opening a FIFO blocks forever; a device may never end).
  A missing file is not judged here: the decoder reports it.
- **No planted symlinks.** :func:`open_append_nofollow` and :func:`read_small`
  refuse a symbolic link as the last path component (``O_NOFOLLOW``), so a link
  planted in a shared folder cannot redirect what we write or make us read a device.

Paths are ``str``; on Linux a name that is not UTF-8 arrives with surrogate escapes
(``os.fsdecode``) and :func:`os.fsencode` gives its bytes back.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from pathlib import Path, PurePath
from typing import Iterator

from r21d_features.utils.core.shard_names import shown_name

NAME_MAX_BYTES = 255
# Room kept for the longest hidden suffix (".<12 hex>.tmp", ".lock.break", ".provenance.json").
HIDDEN_SUFFIX_BYTES = 32
READ_SMALL_MAX_BYTES = 1 << 16


def name_bytes(name: str) -> int:
    """Length of a path component as the file system counts it (bytes)."""
    return len(os.fsencode(name))


def _cut_to_bytes(name: str, max_bytes: int) -> str:
    """The longest prefix of ``name`` whose encoding fits in ``max_bytes`` (never splits a character)."""
    out, used = [], 0
    for ch in name:
        n = name_bytes(ch)
        if used + n > max_bytes:
            break
        out.append(ch)
        used += n
    return "".join(out)


def hidden_base(name: str) -> str:
    """``"." + name``, shortened so that any suffix of up to 32 bytes still makes a valid name.

    Short names are unchanged (``clip_r21d.npy`` -> ``.clip_r21d.npy``); a long one becomes
    ``.<first bytes>~<16 hex of its SHA-256>``, the same for every worker and every run.
    """
    if 1 + name_bytes(name) + HIDDEN_SUFFIX_BYTES <= NAME_MAX_BYTES:
        return f".{name}"
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    room = NAME_MAX_BYTES - HIDDEN_SUFFIX_BYTES - 1 - 1 - len(digest)
    return f".{_cut_to_bytes(name, room)}~{digest}"


def hidden_path(path: str | os.PathLike, suffix: str) -> Path:
    """``<folder>/<hidden_base(name)><suffix>`` for the file ``path`` (of the same kind: a local
    path, or an object-store key)."""
    path = path if isinstance(path, PurePath) else Path(path)
    return path.with_name(hidden_base(path.name) + suffix)


def bounded_name(name: str, max_bytes: int = NAME_MAX_BYTES) -> str:
    """``name`` if it fits in ``max_bytes``, else its start + ``~<hash>`` + its extension."""
    if name_bytes(name) <= max_bytes:
        return name
    root, ext = os.path.splitext(name)
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    return f"{_cut_to_bytes(root, max_bytes - name_bytes(ext) - 1 - len(digest))}~{digest}{ext}"


_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def input_problem(path: str) -> str | None:
    """Why ``path`` can never be read as a video file (one line), or None.

    Looks at the name and, with ``stat`` (which never opens), at the file type. A
    missing file gives None: the decoder reports it in its own words.
    """
    if "\x00" in path:
        return "the path holds a NUL byte (no file can have this name); fix this line of the list"
    for part in Path(path).parts:
        if name_bytes(part) > NAME_MAX_BYTES:
            return (f"a part of the path is {name_bytes(part)} bytes long, over the {NAME_MAX_BYTES}-byte "
                    "limit of file names; no such file can exist")
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        return f"cannot look at the file: {exc.strerror or type(exc).__name__}"
    for is_kind, what in _SPECIAL:
        if is_kind(mode):
            return f"is {what}, not a regular file; only video files are read"
    return None


def output_name_problem(output: Path) -> str | None:
    """Why the output file ``output`` cannot be created because of its name, or None."""
    n = name_bytes(output.name)
    if n > NAME_MAX_BYTES:
        return (f"its output name {output.name[:40]}... would be {n} bytes, over the {NAME_MAX_BYTES}-byte "
                "limit of file names; rename the video to a shorter name")
    return None


def open_append_nofollow(path: str | os.PathLike) -> int:
    """A descriptor for appending to ``path`` (created 0644); refuses a symlink (OSError ELOOP)."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def read_small(path: str | os.PathLike, max_bytes: int = READ_SMALL_MAX_BYTES) -> bytes:
    """The first ``max_bytes`` of the regular file ``path``, never through a symlink or from a FIFO/device.

    Raises FileNotFoundError when it is missing, OSError when it is a link or not a regular file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        chunks, left = [], max_bytes
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def remove_empty_dirs(leaf: str | os.PathLike, top: str | os.PathLike) -> None:
    """Remove ``leaf`` and its parents up to and including ``top`` while they are empty."""
    leaf, top = Path(leaf), Path(top)
    folder = leaf
    while True:
        try:
            folder.rmdir()
        except OSError:  # not empty (another worker's files), missing, or not ours
            if folder.exists():
                return
        if folder == top or folder.parent == folder or top not in folder.parents:
            return
        folder = folder.parent


@contextlib.contextmanager
def utf8_openable(path: str) -> Iterator[str]:
    """A name for ``path`` that libraries wanting UTF-8 text (OpenCV) can open.

    ``path`` itself when it is valid UTF-8; else (a Linux name of raw bytes) the file is
    opened here and ``/proc/self/fd/<n>`` is given, valid inside the block. (OpenCV
    crashes the process on a name with surrogate escapes.)
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        yield path
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def display_path(path: str) -> str:
    """``path`` printable on any console: NUL and other control characters escaped, bytes that are
    not UTF-8 (surrogate escapes) shown as ``\\xNN``; a video inside a tar shard as ``<shard>#<member>``."""
    path = shown_name(path)
    try:
        text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name gave
        text = path.encode("utf-8", "backslashreplace").decode("ascii")
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)

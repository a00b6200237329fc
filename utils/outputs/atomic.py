"""Write a file so that it is either complete or absent, never half-written."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import BinaryIO, Callable

from r21d_features.utils.core.safe_fs import hidden_path

TMP_SUFFIX = ".tmp"


def temp_path(path: str | os.PathLike) -> Path:
    """``.<name>.tmp`` beside ``path``: where a write of ``path`` puts its bytes before the rename.

    One fixed name per output, so that a killed writer's leftover is found by name (one
    ``unlink``), never by scanning a folder that may hold a million outputs.
    """
    return hidden_path(path, TMP_SUFFIX)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary file in ``path``'s folder, fsync it, rename it to ``path``.

    A crash at any point leaves either the old file or the new one, plus at most a
    ``.<name>.tmp`` leftover that readers never look at (``<name>`` shortened when it is near
    the 255-byte limit, see :func:`utils.core.safe_fs.hidden_base`). When that name is taken
    (another writer of the same output at this moment, or a leftover nobody swept) the write
    uses ``.<name>.<random>.tmp`` instead. The file gets the usual permissions (0666 less the
    umask), as ``open(path, "wb")`` would. ``O_EXCL`` and ``rename`` never follow a planted symlink.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    tmp_name = temp_path(path)
    try:
        fd = os.open(tmp_name, flags, 0o666)
    except FileExistsError:
        tmp_name = hidden_path(path, f".{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")
        fd = os.open(tmp_name, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return path


def remove_temp_files(path: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.tmp`` leftover of a write to ``path`` that was killed midway.

    One ``unlink`` by name, whatever the folder holds. Call it only while no one else can be
    writing ``path`` (e.g. holding its claim).
    """
    leftover = temp_path(path)
    try:
        leftover.unlink()
    except FileNotFoundError:
        return []
    return [leftover]

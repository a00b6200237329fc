"""Write a file so that it is either complete or absent, never half-written."""

from __future__ import annotations

import glob
import os
import uuid
from pathlib import Path
from typing import BinaryIO, Callable

from r21d_features.utils.core.safe_fs import hidden_base, hidden_path


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary file in ``path``'s folder, fsync it, rename it to ``path``.

    A crash at any point leaves either the old file or the new one, plus at
    most a ``.<name>.*.tmp`` leftover that readers never look at (``<name>`` shortened
    when it is near the 255-byte limit, see :func:`utils.core.safe_fs.hidden_base`). The
    file gets the usual permissions (0666 less the umask), as ``open(path, "wb")`` would.
    ``O_EXCL`` on a fresh random name and ``rename`` never follow a planted symlink.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = hidden_path(path, f".{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
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
    """Delete the ``.<name>.*.tmp`` leftovers of writes to ``path`` that were killed midway.

    Call it only while no one else can be writing ``path`` (e.g. holding its claim).
    """
    path = Path(path)
    removed = []
    for leftover in path.parent.glob(f"{glob.escape(hidden_base(path.name))}.*.tmp"):
        try:
            leftover.unlink()
            removed.append(leftover)
        except FileNotFoundError:
            pass
    return removed


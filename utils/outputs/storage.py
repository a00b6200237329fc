"""Where outputs are kept: a local (or mounted) folder, or a prefix in an object store.

Sinks, provenance records, claims and the run report name their files as paths under
``<output_path>/<feature_type>/<model_name>``: a :class:`~pathlib.Path` for a folder, an
:class:`~utils.core.object_store.ObjectPath` for ``s3://bucket/prefix``. They touch those
files only through the :class:`Storage` of the path (:func:`storage_of`), so every rule holds
in both places:

- a file is written whole or not at all: locally a temporary file renamed into place
  (:func:`utils.outputs.atomic.atomic_write`), in a store one PUT (an object only appears
  when its upload is complete, so a killed upload leaves nothing under the final key);
- a reader never takes more than a small file's worth from a record or a claim;
- a pass over many outputs before any work (resume, the provenance check) can look at one
  listing of the folder instead of one request per output (:meth:`Storage.listed`).
"""

from __future__ import annotations

import contextlib
import io
from glob import escape as glob_escape
import os
import threading
from pathlib import Path, PurePath
from typing import BinaryIO, Callable, Iterator, Protocol

from r21d_features.utils.core.errors import SettingsError
from r21d_features.utils.core.object_store import (
    WRITABLE_SCHEMES, ObjectInfo, ObjectPath, is_object_url, store_of, url_scheme,
)
from r21d_features.utils.core.safe_fs import read_small
from r21d_features.utils.outputs.atomic import atomic_write, remove_temp_files

OutputPath = Path | ObjectPath


def output_location(output_path: str | os.PathLike) -> OutputPath:
    """``output_path`` as a path: an :class:`ObjectPath` for an object-store URL, else a local Path."""
    if isinstance(output_path, PurePath):
        return output_path  # already a Path or an ObjectPath (never turned into a local "s3:" folder)
    text = os.fspath(output_path)
    return ObjectPath.from_url(text) if is_object_url(text) else Path(text)


def writable_problem(output_path: str) -> str | None:
    """Why features cannot be written to the URL ``output_path`` (one line), or None."""
    scheme = url_scheme(output_path)
    if scheme is None or scheme in WRITABLE_SCHEMES:
        return None
    return (f"output_path={output_path!r}: features are written to s3:// (and S3-compatible stores) or to a "
            f"folder; {scheme}:// is read only, because workers sharing a prefix need conditional writes the "
            "product does not make there yet; write to a mounted folder (gcsfuse, blobfuse2) instead")


class Storage(Protocol):
    """The few file operations outputs need, the same for folders and object stores."""

    def exists(self, path: OutputPath) -> bool:
        """True when the file (object) ``path`` exists."""

    def read(self, path: OutputPath, max_bytes: int | None = None) -> bytes:
        """Its bytes (the first ``max_bytes``); FileNotFoundError when it is missing."""

    def write(self, path: OutputPath, write: Callable[[BinaryIO], None]) -> OutputPath:
        """Call ``write(f)`` and commit what it wrote as ``path``, whole or not at all."""

    def remove(self, path: OutputPath) -> None:
        """Delete ``path``; nothing happens when it is missing."""

    def remove_leftovers(self, path: OutputPath) -> list[OutputPath]:
        """Delete what killed writes of ``path`` left (only while holding its claim)."""

    def listed(self, folder: OutputPath) -> contextlib.AbstractContextManager[None]:
        """Within the block, :meth:`exists` under ``folder`` may answer from one listing taken at its start."""

    def files_named(self, folder: OutputPath, prefix: str) -> dict[OutputPath, tuple[int, float]]:
        """The files directly in ``folder`` whose names start with ``prefix``: ``{path: (size, mtime)}``
        (a change stamp; inside :meth:`listed`, from its listing)."""

    def check_writable(self, folder: OutputPath, key: str) -> None:
        """Raise :class:`SettingsError` naming ``key`` when outputs cannot be written under ``folder``."""


class LocalStorage:
    """A local or mounted folder."""

    def exists(self, path: Path) -> bool:
        return path.is_file()

    def read(self, path: Path, max_bytes: int | None = None) -> bytes:
        return path.read_bytes() if max_bytes is None else read_small(path, max_bytes)

    def write(self, path: Path, write: Callable[[BinaryIO], None]) -> Path:
        return atomic_write(path, write)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def remove_leftovers(self, path: Path) -> list[Path]:
        return remove_temp_files(path)

    def listed(self, folder: Path) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # a stat is as cheap as a listing entry

    def files_named(self, folder: Path, prefix: str) -> dict[Path, tuple[int, float]]:
        found: dict[Path, tuple[int, float]] = {}
        for path in folder.glob(f"{glob_escape(prefix)}*"):
            try:
                st = path.stat()
            except OSError:
                continue  # renamed or removed meanwhile
            if not path.is_dir():
                found[path] = (st.st_size, st.st_mtime_ns / 1e9)
        return found

    def check_writable(self, folder: Path, key: str) -> None:
        import tempfile  # noqa: PLC0415

        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write_test.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise SettingsError(
                f"{key}: cannot write to {os.fspath(folder)!r} ({reason}); choose a folder you can write to"
            ) from None


class ObjectStorage:
    """A prefix in an object store: every file one object, written in one request."""

    def __init__(self) -> None:
        self._listings: dict[str, dict[str, ObjectInfo]] = {}  # folder URL -> its objects, inside listed()
        self._lock = threading.Lock()

    def _listed_info(self, path: ObjectPath) -> tuple[bool, ObjectInfo | None]:
        url = str(path)
        with self._lock:
            for folder, objects in self._listings.items():
                if url.startswith(folder + "/"):
                    return True, objects.get(url)
        return False, None

    def exists(self, path: ObjectPath) -> bool:
        known, info = self._listed_info(path)
        if not known:
            info = store_of(path).info(path, check_bucket=False)
        return info is not None and not info.is_dir

    def read(self, path: ObjectPath, max_bytes: int | None = None) -> bytes:
        return store_of(path).read_bytes(path, max_bytes)

    def write(self, path: ObjectPath, write: Callable[[BinaryIO], None]) -> ObjectPath:
        buffer = io.BytesIO()
        write(buffer)
        store_of(path).put(path, buffer.getvalue())
        return path

    def remove(self, path: ObjectPath) -> None:
        store_of(path).remove(path)

    def remove_leftovers(self, path: ObjectPath) -> list[ObjectPath]:
        return []  # an upload that did not complete leaves no object

    @contextlib.contextmanager
    def listed(self, folder: ObjectPath) -> Iterator[None]:
        objects = store_of(folder).listing(folder)
        with self._lock:
            self._listings[str(folder)] = objects
        try:
            yield
        finally:
            with self._lock:
                self._listings.pop(str(folder), None)

    def files_named(self, folder: ObjectPath, prefix: str) -> dict[ObjectPath, tuple[int, float]]:
        with self._lock:
            objects = self._listings.get(str(folder))
        if objects is None:
            objects = store_of(folder).listing(folder)
        start = f"{folder}/{prefix}"
        return {ObjectPath.from_url(url): (info.size, info.mtime) for url, info in objects.items()
                if url.startswith(start) and "/" not in url[len(str(folder)) + 1:]}

    def check_writable(self, folder: ObjectPath, key: str) -> None:
        import uuid  # noqa: PLC0415

        store = store_of(folder)
        probe = folder / f".write_test.{uuid.uuid4().hex[:12]}"
        try:
            store.put(probe, b"")
            store.remove(probe)
        except SettingsError:
            raise
        except Exception as exc:  # noqa: BLE001 (an ObjectStoreError already says which bucket and why)
            raise SettingsError(f"{key}: cannot write to {folder}: {exc}") from None


_LOCAL = LocalStorage()
_OBJECTS = ObjectStorage()


def storage_of(path: OutputPath) -> Storage:
    """The storage ``path`` lives in."""
    return _OBJECTS if isinstance(path, ObjectPath) else _LOCAL


def listed(folder: OutputPath | None) -> contextlib.AbstractContextManager[None]:
    """:meth:`Storage.listed` of ``folder`` (nothing when outputs are not saved: ``folder`` None)."""
    return contextlib.nullcontext() if folder is None else storage_of(folder).listed(folder)

"""``on_extraction=save_hdf5``: every video's features as one dataset of an HDF5 file (docs/guides/outputs.md, "HDF5").

One writer per file: each process (worker, shard, Ray actor) appends to its own *part*,
``<folder>/features.part-<host>-<pid>-<n>.h5``, created on its first video and never
reopened for writing by anyone else. ``python -m r21d_features.utils.hdf5_merge <folder>`` joins the parts
into ``<folder>/features.h5`` and checks every dataset against them. Layout of a part::

    /<video id>            float32 (num_windows, 512) or (num_windows, num_crops, 512)
        attrs: fps, stack_size, step_size, model, crops, feature_type, video_path, written_at,
               [window_frames, window_times_s]  (save_metadata=true)
               complete = 1                     (set last, then the file is flushed)

``<video id>`` is :func:`utils.outputs.output_paths.video_id` (``cat/000`` with ``video_root``: HDF5
makes ``cat`` a group, and ``f["cat/000"]`` reads it back).

Crash safety: a video is written whole, its ``complete`` attribute set last and the file
flushed, so the videos before a ``kill -9`` stay readable (HDF5 writes its metadata at
flush time). A dataset without ``complete`` is ignored everywhere. Parts are opened
read-only and without HDF5's file locks (other writers' parts, network file systems); a
part that cannot be read is skipped, and set aside as ``<name>.damaged`` once its writer
is known to be gone (same host, process exited), never crashing the run.

Claims and failure marks of workers sharing the folder sit in ``<folder>/.claims/``, so the
folder itself holds only the parts, the merged file and the run report: finding other workers'
parts (a listing of the folder, for every video not yet known done) costs the same at the
millionth video as at the first.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from r21d_features.utils.core.processes import pid_alive
from r21d_features.utils.core.errors import SettingsError
from r21d_features.utils.core.shard_names import shown_name
from r21d_features.utils.outputs.output_paths import output_file, video_id
from r21d_features.utils.outputs.provenance import differences

log = logging.getLogger(__name__)

PART_PREFIX = "features.part-"
PART_SUFFIX = ".h5"
MERGED_NAME = "features.h5"
DAMAGED_SUFFIX = ".damaged"
COMPLETE_ATTR = "complete"
PROVENANCE_ATTR = "provenance"  # JSON of what made the dataset (utils/outputs/provenance.py)
# Object headers of HDF5 1.8 keep attributes of any size (window spans of long videos pass
# the 64 KB of the oldest format); files stay readable by HDF5 >= 1.8.
LIBVER = "v108"
CLAIMS_FOLDER = ".claims"  # under the output folder: claims and failure marks, out of the parts' listing
INSTALL_HINT = 'pip install h5py (or pip install ".[hdf5]")'


def import_h5py() -> Any:
    try:
        import h5py  # noqa: PLC0415
    except ImportError:
        raise SettingsError(f"on_extraction=save_hdf5 needs h5py: {INSTALL_HINT}") from None
    return h5py


def open_readonly(path: str | os.PathLike) -> Any:
    """``h5py.File(path, "r")`` without HDF5's file lock (the writer holds the file open)."""
    return import_h5py().File(path, "r", locking=False)


def part_paths(folder: str | os.PathLike) -> list[Path]:
    """The part files in ``folder``, sorted by name."""
    return sorted(Path(folder).glob(f"{PART_PREFIX}*{PART_SUFFIX}"))


def part_writer(path: Path) -> tuple[str, int] | None:
    """``(host, pid)`` of the process that wrote the part ``path`` (None for another name)."""
    match = re.fullmatch(re.escape(PART_PREFIX) + r"(.+)-(\d+)-(\d+)" + re.escape(PART_SUFFIX), path.name)
    return (match.group(1), int(match.group(2))) if match else None


def safe_host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def complete_datasets(h5file: Any) -> Iterator[tuple[str, Any]]:
    """``(video id, dataset)`` of every dataset of an open file marked complete."""
    found: list[tuple[str, Any]] = []

    def visit(name: str, obj: Any) -> None:
        if hasattr(obj, "shape") and int(obj.attrs.get(COMPLETE_ATTR, 0)) == 1:
            found.append((name, obj))

    h5file.visititems(visit)
    return iter(found)


def set_aside_if_orphaned(path: Path, exc: BaseException, writer: tuple[str, int] | None = None) -> bool:
    """Rename an unreadable part to ``<name>.damaged`` when its writer (``(host, pid)``, by default read
    from an HDF5 part's name) is gone; True if it was."""
    writer = part_writer(path) if writer is None else writer
    if writer is None or writer[0] != safe_host() or pid_alive(writer[1]):
        log.debug("cannot read %s yet (%s); its writer may still be running", path, exc)
        return False
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    try:
        os.replace(path, target)
    except OSError:
        return False
    log.warning("%s cannot be read (%s) and its writer is gone: set aside as %s; its videos are extracted again",
                path, " ".join(str(exc).split()), target.name)
    return True


class Hdf5Sink:
    """Writes each video as a dataset of this process's part file; ``is_done`` looks in every part.

    ``feature_dim``: 512, or one window's feature shape (``(10, 512)`` for ten crops);
    ``with_metadata``: also the window spans as attributes; ``attrs``: run-level attributes
    (``model``, ``crops``) stored on every dataset.
    """

    needs_metadata = True  # fps, stack_size and step_size are attributes of every dataset

    def __init__(self, folder: str | os.PathLike, feature_type: str, feature_dim: int | Sequence[int],
                 with_metadata: bool = False, video_root: str | None = None,
                 attrs: Mapping[str, str] | None = None) -> None:
        self._h5py = import_h5py()
        self.folder = Path(folder)
        self.feature_type = feature_type
        self.feature_shape = (int(feature_dim),) if isinstance(feature_dim, int) else tuple(feature_dim)
        self.with_metadata = with_metadata
        self.video_root = video_root
        self.attrs = dict(attrs or {})
        self.part_path: Path | None = None
        self._file: Any = None
        self._done: set[str] = set()  # video ids complete in some part, made with the current provenance
        self._other: dict[str, str] = {}  # video id -> provenance JSON of a complete copy made otherwise
        self.provenance: str | None = None  # JSON of the current entries (set_provenance)
        self._seen: dict[Path, tuple[int, int]] = {}  # part -> (size, mtime_ns) when last read

    def with_provenance(self, entries: Mapping[str, Any]) -> "Hdf5Sink":
        """Record ``entries`` on every dataset written, and count a video done only when a
        complete copy carries the same entries (see :mod:`utils.outputs.provenance`; HDF5 keeps them
        as an attribute instead of one record file per video). Returns this sink."""
        self.set_provenance(entries)
        return self

    def set_provenance(self, entries: Mapping[str, Any]) -> None:
        """See :meth:`with_provenance`."""
        self.provenance = json.dumps(dict(entries), sort_keys=True)
        self._done, self._other, self._seen = set(), {}, {}

    def stale_differences(self, video_path: str) -> list[str]:
        """What differs in a complete copy made with other settings, when no copy matches ([] otherwise)."""
        if self.is_done(video_path) or self.provenance is None:
            return []
        recorded = self._other.get(video_id(video_path, self.video_root))
        if recorded is None:
            return []
        return differences(None if recorded == "" else json.loads(recorded), json.loads(self.provenance))

    # ------------------------------------------------------------------ names
    def path_for(self, video_path: str, key: str | None = None) -> Path:
        """Where a video's claim files sit (``<folder>/<video id>_r21d.h5``; no such file is written)."""
        return output_file(self.folder, video_path, self.video_root, f"_{key or self.feature_type}{PART_SUFFIX}")

    def claim_path(self, video_path: str) -> Path:
        """Where the video's claim and failure mark sit: ``<folder>/.claims/<video id>_r21d.h5``."""
        return output_file(self.folder / CLAIMS_FOLDER, video_path, self.video_root,
                           f"_{self.feature_type}{PART_SUFFIX}")

    def output_paths(self, video_path: str) -> list[Path]:
        """The video's claim name: its dataset goes into this process's part file, so no file of
        its own is committed, and a killed writer's leftovers sit by this name."""
        return [self.path_for(video_path)]

    # ------------------------------------------------------------------ resume
    def is_done(self, video_path: str) -> bool:
        vid = video_id(video_path, self.video_root)
        if vid not in self._done:
            self._refresh()
        return vid in self._done

    def _refresh(self) -> None:
        """Read the parts (and a merged file) that changed since last time."""
        sources = part_paths(self.folder) + [self.folder / MERGED_NAME]
        for path in sources:
            if path == self.part_path:
                continue  # ours: _done already has what we wrote
            try:
                st = path.stat()
            except OSError:
                continue
            stamp = (st.st_size, st.st_mtime_ns)
            if self._seen.get(path) == stamp:
                continue
            self._seen[path] = stamp
            try:
                with open_readonly(path) as f:
                    for vid, ds in complete_datasets(f):
                        made = str(ds.attrs.get(PROVENANCE_ATTR, ""))
                        if ds.shape[1:] == self.feature_shape and self.provenance in (None, made):
                            self._done.add(vid)
                        else:
                            self._other[vid] = made
            except Exception as exc:  # noqa: BLE001 (damaged, half-flushed, foreign file: never crash the run)
                if path.name != MERGED_NAME and set_aside_if_orphaned(path, exc):
                    self._seen.pop(path, None)

    # ------------------------------------------------------------------ writing
    def _open_part(self) -> Any:
        if self._file is not None:
            return self._file
        self.folder.mkdir(parents=True, exist_ok=True)
        prefix = f"{PART_PREFIX}{safe_host()}-{os.getpid()}-"
        for n in range(10_000):
            path = self.folder / f"{prefix}{n}{PART_SUFFIX}"
            if path.exists() or path.with_name(path.name + DAMAGED_SUFFIX).exists():
                continue
            try:  # "w-": create, fail if it exists; no one else ever writes this file
                self._file = self._h5py.File(path, "w-", libver=LIBVER, locking=False)
            except FileExistsError:
                continue
            self.part_path = path
            log.info("HDF5 features go to %s", path)
            return self._file
        raise OSError(f"no free part file name {prefix}<n>{PART_SUFFIX} in {self.folder}")

    def write(self, video_path: str, feats: Mapping[str, np.ndarray]) -> list[Path]:
        vid = video_id(video_path, self.video_root)
        features = np.asarray(feats[self.feature_type], dtype=np.float32)
        f = self._open_part()
        if vid in f:  # extracted again by this process (e.g. after a crop change): replace it
            del f[vid]
        ds = f.create_dataset(vid, data=features)
        attrs = {
            "fps": np.float64(feats["fps"]),
            "stack_size": np.int64(feats["stack_size"]),
            "step_size": np.int64(feats["step_size"]),
            "feature_type": self.feature_type,
            **self.attrs,
            "video_path": shown_name(os.fspath(video_path)),  # a shard member as <shard>#<member>
            "written_at": np.float64(time.time()),
        }
        if self.with_metadata:
            attrs["window_frames"] = np.asarray(feats["window_frames"], dtype=np.int64)
            attrs["window_times_s"] = np.asarray(feats["window_times_s"], dtype=np.float64)
        if self.provenance is not None:
            attrs[PROVENANCE_ATTR] = self.provenance
        for key, value in attrs.items():
            ds.attrs[key] = value
        ds.attrs[COMPLETE_ATTR] = np.int8(1)  # last: a dataset without it is ignored
        f.flush()
        self._done.add(vid)
        return [self.part_path]

    def pending(self) -> list[str]:
        return []  # each dataset is complete and flushed in write()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __del__(self) -> None:  # noqa: D105
        try:
            self.close()
        except Exception:  # noqa: BLE001 (interpreter shutdown)
            pass

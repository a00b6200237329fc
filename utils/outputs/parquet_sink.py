"""``on_extraction=save_parquet``: one row per video in Parquet tables (docs/guides/outputs.md, "Parquet").

Each process (worker, shard, Ray actor) holds its rows in memory and writes them as a *part*,
``<folder>/features.part-<host>-<pid>-<n>.parquet``, in one atomic write (a temporary file
renamed into place, or one PUT in an object store) once the rows held are due
(:data:`PART_VIDEOS`, :data:`PART_BYTES`, :data:`PART_SECONDS`) and at :meth:`ParquetSink.close`.
A Parquet file is only readable once its footer is written, so a part is written whole or not
at all: readers never see half a table, and a part is never rewritten (each write is a new
``n``). The folder reads as one table (``pyarrow.dataset.dataset(folder)``, DuckDB's
``read_parquet('<folder>/*.parquet')``). One row::

    video_id            string                  utils.outputs.output_paths.video_id (cat/000 with video_root)
    video_path          string                  the input as given
    features            list<list<float32>>     (num_windows, 512); with crops=five|ten
                        list<list<list<float32>>>   (num_windows, num_crops, 512)
    window_start_frame  list<int64>             [start, end) frame of each window
    window_end_frame    list<int64>
    window_start_s      list<float64>           the same spans in seconds (frame / fps; NaN without fps)
    window_end_s        list<float64>
    fps                 float64
    num_windows         int32
    stack_size          int64
    step_size           int64

The schema metadata of every part holds the provenance of its rows (``r21d.provenance``, JSON of
utils/outputs/provenance.py's entries), the run's attributes (``r21d.attrs``: model, crops,
feature_type) and one window's feature shape (``r21d.feature_shape``).

Resume: a video is done when some part in the folder (any worker's) has its row with the same
provenance, or this process holds or wrote it. Finding that reads only each part's footer and
its ``video_id`` column, once per part (parts never change). A part that cannot be read is
skipped, and set aside as ``<name>.damaged`` once its writer is known to be gone (same host,
process exited). Rows held in memory are lost to a ``kill -9``: those videos are extracted again
on the next run; meanwhile their claims stay held (:meth:`ParquetSink.pending`), so a worker
sharing the folder does not extract them a second time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from r21d_features.utils.core.shard_names import shown_name
from r21d_features.utils.core.errors import SettingsError
from r21d_features.utils.core.object_store import ObjectPath, store_of
from r21d_features.utils.outputs.hdf5_sink import CLAIMS_FOLDER, DAMAGED_SUFFIX, safe_host, set_aside_if_orphaned
from r21d_features.utils.outputs.output_paths import output_file, video_id
from r21d_features.utils.outputs.provenance import differences
from r21d_features.utils.outputs.storage import OutputPath, output_location, storage_of

log = logging.getLogger(__name__)

PART_PREFIX = "features.part-"
PART_SUFFIX = ".parquet"
# A part is written when the rows held reach any of these, and at close. They bound what a
# kill -9 loses (the rows held: extracted again on the next run) and the memory held, while
# keeping parts few and large enough for fast scans (DuckDB, Arrow datasets read many rows per file).
PART_VIDEOS = 1000  # videos per part
PART_BYTES = 64 * 1024 * 1024  # bytes of features per part
PART_SECONDS = 60.0  # seconds since the first row held (checked when the next video is written)
FORMAT_KEY, FORMAT = b"r21d.format", b"1"
PROVENANCE_KEY = b"r21d.provenance"  # JSON of what made the rows (utils/outputs/provenance.py)
ATTRS_KEY = b"r21d.attrs"  # JSON: model, crops, feature_type
SHAPE_KEY = b"r21d.feature_shape"  # JSON: one window's features, [512] or [num_crops, 512]
INSTALL_HINT = 'pip install pyarrow (or pip install ".[parquet]")'

_NAMING = threading.Lock()  # sinks of one process share its host-pid names: one picks a name at a time


def import_pyarrow() -> Any:
    """``pyarrow.parquet`` (pyarrow imported), or :class:`SettingsError` saying how to install it."""
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415
    except ImportError:
        raise SettingsError(f"on_extraction=save_parquet needs pyarrow: {INSTALL_HINT}") from None
    return pq


def part_writer(path: OutputPath) -> tuple[str, int, int] | None:
    """``(host, pid, n)`` of the part named ``path`` (None for another name)."""
    match = re.fullmatch(re.escape(PART_PREFIX) + r"(.+)-(\d+)-(\d+)" + re.escape(PART_SUFFIX), path.name)
    return (match.group(1), int(match.group(2)), int(match.group(3))) if match else None


def part_paths(folder: str | os.PathLike | OutputPath) -> list[OutputPath]:
    """The part files in ``folder`` (a folder or an object-store prefix), sorted by name."""
    location = output_location(folder)
    return sorted((p for p in storage_of(location).files_named(location, PART_PREFIX) if p.name.endswith(PART_SUFFIX)),
                  key=lambda p: p.name)


def _text(name: str | os.PathLike) -> str:
    """``name`` as text Parquet can hold (a name that is not UTF-8 keeps ``\\udcXX`` escapes)."""
    return os.fspath(name).encode("utf-8", "backslashreplace").decode("utf-8")


def read_part_index(path: OutputPath) -> tuple[Mapping[bytes, bytes], list[str]]:
    """A part's schema metadata and its ``video_id`` column, without reading the features.

    Raises ValueError for a Parquet file that is not a part of this product, and pyarrow's
    errors (OSError, ArrowInvalid) for one that cannot be read.
    """
    pq = import_pyarrow()
    if isinstance(path, ObjectPath):
        with store_of(path).open_read(path) as f:  # ranged reads: the footer and one column
            return _index_of(pq.ParquetFile(f))
    with open(path, "rb") as f:
        return _index_of(pq.ParquetFile(f))


def _index_of(part: Any) -> tuple[Mapping[bytes, bytes], list[str]]:
    meta = part.schema_arrow.metadata or {}
    if meta.get(FORMAT_KEY) != FORMAT or "video_id" not in part.schema_arrow.names:
        raise ValueError("not a features part of this product (no r21d.format in its schema metadata)")
    return meta, [str(v) for v in part.read(columns=["video_id"]).column(0).to_pylist()]


@dataclass
class _Row:
    video_path: str  # as the runner names it (pending() gives it back); shown as text in the table
    video_id: str
    features: np.ndarray  # float32 (num_windows, *feature_shape)
    window_frames: np.ndarray  # int64 (num_windows, 2)
    window_times_s: np.ndarray  # float64 (num_windows, 2)
    fps: float
    stack_size: int
    step_size: int


class ParquetSink:
    """Holds each video's row and writes them as parts of one Parquet table; ``is_done`` looks in every part.

    ``feature_dim``: 512, or one window's feature shape (``(10, 512)`` for ten crops);
    ``attrs``: run-level facts (``model``, ``crops``) kept in every part's schema metadata;
    ``part_videos``, ``part_bytes``, ``part_seconds``: when held rows are written (the module's
    ``PART_*`` constants by default).
    """

    needs_metadata = True  # the window spans, fps, stack_size and step_size are columns of every row

    def __init__(self, folder: str | os.PathLike | OutputPath, feature_type: str, feature_dim: int | Sequence[int],
                 video_root: str | None = None, attrs: Mapping[str, str] | None = None, *,
                 part_videos: int = PART_VIDEOS, part_bytes: int = PART_BYTES,
                 part_seconds: float = PART_SECONDS) -> None:
        self._pq = import_pyarrow()
        import pyarrow as pa  # noqa: PLC0415 (imported by import_pyarrow)

        self._pa = pa
        self.folder = output_location(folder)
        self.feature_type = feature_type
        self.feature_shape = (int(feature_dim),) if isinstance(feature_dim, int) else tuple(int(d) for d in feature_dim)
        self.video_root = video_root
        self.attrs = {"feature_type": feature_type, **dict(attrs or {})}
        self.part_videos, self.part_bytes, self.part_seconds = part_videos, part_bytes, part_seconds
        self.provenance: str | None = None  # JSON of the current entries (set_provenance)
        self.written: list[OutputPath] = []  # the parts this sink wrote, in order
        self._rows: dict[str, _Row] = {}  # video id -> row held, not yet in a part
        self._held_bytes = 0
        self._first_held_t = 0.0
        self._done: set[str] = set()  # video ids in some part with the current provenance (or held)
        self._other: dict[str, str] = {}  # video id -> provenance JSON of a row made otherwise
        self._seen: dict[OutputPath, tuple[int, float]] = {}  # part -> (size, mtime) when last read
        self._lock = threading.RLock()  # write() runs on the writer thread, is_done() where paths are claimed

    # ------------------------------------------------------------------ provenance
    def with_provenance(self, entries: Mapping[str, Any]) -> "ParquetSink":
        """Record ``entries`` in every part written, and count a video done only when a row of
        the same entries exists (see :mod:`utils.outputs.provenance`; a part keeps them in its
        schema metadata instead of one record file per video). Returns this sink."""
        self.set_provenance(entries)
        return self

    def set_provenance(self, entries: Mapping[str, Any]) -> None:
        """See :meth:`with_provenance` (rows held so far are written first, with their own entries)."""
        with self._lock:
            self._flush()
            self.provenance = json.dumps(dict(entries), sort_keys=True)
            self._done, self._other, self._seen = set(), {}, {}

    def stale_differences(self, video_path: str) -> list[str]:
        """What differs in a row made with other settings, when no row matches ([] otherwise)."""
        if self.is_done(video_path) or self.provenance is None:
            return []
        recorded = self._other.get(_text(video_id(video_path, self.video_root)))
        if recorded is None:
            return []
        return differences(None if recorded == "" else json.loads(recorded), json.loads(self.provenance))

    # ------------------------------------------------------------------ names
    def claim_path(self, video_path: str) -> OutputPath:
        """Where the video's claim and failure mark sit: ``<folder>/.claims/<video id>_r21d.parquet``."""
        return output_file(self.folder / CLAIMS_FOLDER, video_path, self.video_root, f"_{self.feature_type}{PART_SUFFIX}")

    def output_paths(self, video_path: str) -> list[OutputPath]:
        """The video's claim name: its row goes into a part shared with other videos, so no file of
        its own is committed (a part is written whole: no leftover is ever swept by this name)."""
        return [output_file(self.folder, video_path, self.video_root, f"_{self.feature_type}{PART_SUFFIX}")]

    # ------------------------------------------------------------------ resume
    def is_done(self, video_path: str) -> bool:
        vid = _text(video_id(video_path, self.video_root))
        with self._lock:
            if vid not in self._done:
                self._refresh()
            return vid in self._done

    def _refresh(self) -> None:
        """Read the parts that appeared (or changed) since the last look."""
        for path, stamp in storage_of(self.folder).files_named(self.folder, PART_PREFIX).items():
            if not path.name.endswith(PART_SUFFIX) or path in self.written or self._seen.get(path) == stamp:
                continue
            self._seen[path] = stamp
            try:
                meta, ids = read_part_index(path)
                shape = tuple(json.loads(meta.get(SHAPE_KEY, b"null")) or ())
                made = meta.get(PROVENANCE_KEY, b"").decode("utf-8")
            except Exception as exc:  # noqa: BLE001 (damaged, truncated, foreign file: never crash the run)
                if self._set_aside_if_orphaned(path, exc):
                    self._seen.pop(path, None)
                continue
            if shape == self.feature_shape and self.provenance in (None, made):
                self._done.update(ids)
            else:
                self._other.update(dict.fromkeys(ids, made))

    def _set_aside_if_orphaned(self, path: OutputPath, exc: BaseException) -> bool:
        """Rename an unreadable local part to ``<name>.damaged`` when its writer is gone; True if it was."""
        writer = part_writer(path)
        if isinstance(path, Path) and writer is not None and set_aside_if_orphaned(path, exc, writer):
            return True
        log.warning("%s cannot be read as a features part (%s): skipped", path,
                    " ".join(str(exc).split()) or type(exc).__name__)
        return False

    # ------------------------------------------------------------------ writing
    def write(self, video_path: str, feats: Mapping[str, np.ndarray]) -> list[OutputPath]:
        """Hold the video's row; write the rows held as a new part when they are due. Returns the
        part written now ([] while the row is held: :meth:`pending` names it)."""
        vid = _text(video_id(video_path, self.video_root))
        features = np.ascontiguousarray(feats[self.feature_type], dtype=np.float32)
        if features.shape[1:] != self.feature_shape:
            raise ValueError(f"features of shape {features.shape}, expected (num_windows, "
                             f"{', '.join(map(str, self.feature_shape))})")
        row = _Row(video_path=os.fspath(video_path), video_id=vid, features=features,
                   window_frames=np.asarray(feats["window_frames"], dtype=np.int64).reshape(-1, 2),
                   window_times_s=np.asarray(feats["window_times_s"], dtype=np.float64).reshape(-1, 2),
                   fps=float(feats["fps"]), stack_size=int(feats["stack_size"]), step_size=int(feats["step_size"]))
        with self._lock:
            if not self._rows:
                self._first_held_t = time.monotonic()
            previous = self._rows.pop(vid, None)  # extracted again by this process: the newer row counts
            self._held_bytes += features.nbytes - (0 if previous is None else previous.features.nbytes)
            self._rows[vid] = row
            if not self._due():
                self._done.add(vid)
                return []
            try:
                part = self._flush()
            except BaseException:
                # This video fails (its outcome says so); the rows held before it stay for the next part.
                del self._rows[vid]
                self._held_bytes -= features.nbytes
                raise
            return [part] if part is not None else []

    def _due(self) -> bool:
        return (len(self._rows) >= self.part_videos or self._held_bytes >= self.part_bytes
                or time.monotonic() - self._first_held_t >= self.part_seconds)

    def pending(self) -> list[str]:
        """The videos given to :meth:`write` whose rows are held, not yet in a part on disk."""
        with self._lock:
            return [row.video_path for row in self._rows.values()]

    def close(self) -> None:
        """Write the rows held as a last part (nothing when none are held). Raises when that write
        fails; the rows are then dropped (their videos are extracted again on the next run)."""
        with self._lock:
            try:
                self._flush()
            except BaseException:
                self._drop_held()
                raise

    def _drop_held(self) -> None:
        for vid in self._rows:
            self._done.discard(vid)
        self._rows, self._held_bytes = {}, 0

    def _flush(self) -> OutputPath | None:
        """Write the rows held as one new part, whole; the part (None when nothing is held)."""
        if not self._rows:
            return None
        rows = list(self._rows.values())
        table = self._table(rows)
        storage = storage_of(self.folder)
        with _NAMING:
            path = self._free_part_name()
            storage.write(path, lambda f: self._pq.write_table(table, f))
        self.written.append(path)
        self._done.update(row.video_id for row in rows)
        self._rows, self._held_bytes = {}, 0
        log.info("%d video(s) written to %s", len(rows), path)
        return path

    def _free_part_name(self) -> OutputPath:
        """``<folder>/features.part-<host>-<pid>-<n>.parquet`` with the first ``n`` no part (or
        set-aside part) of this process has."""
        prefix = f"{PART_PREFIX}{safe_host()}-{os.getpid()}-"
        taken = set()
        for path in storage_of(self.folder).files_named(self.folder, prefix):
            match = re.fullmatch(r"(\d+)" + re.escape(PART_SUFFIX) + f"(?:{re.escape(DAMAGED_SUFFIX)})?",
                                 path.name[len(prefix):])
            if match:
                taken.add(int(match.group(1)))
        taken.update(part_writer(p)[2] for p in self.written if part_writer(p) and p.name.startswith(prefix))
        n = next(i for i in range(len(taken) + 1) if i not in taken)
        return self.folder / f"{prefix}{n}{PART_SUFFIX}"

    def _table(self, rows: list[_Row]) -> Any:
        """The rows as one Arrow table, with the schema metadata of the part."""
        pa = self._pa
        windows = np.array([len(r.features) for r in rows], dtype=np.int64)
        per_video = pa.array(np.concatenate([[0], np.cumsum(windows)]).astype(np.int32))

        def per_window(values: np.ndarray, arrow_type: Any) -> Any:
            return pa.ListArray.from_arrays(per_video, pa.array(values, type=arrow_type))

        flat = np.concatenate([r.features.reshape(-1) for r in rows])
        features = pa.array(flat, type=pa.float32())
        count = flat.size
        for dim in reversed(self.feature_shape):  # 512 floats a list, then num_crops lists a list
            count //= dim
            features = pa.ListArray.from_arrays(pa.array(np.arange(count + 1, dtype=np.int32) * dim), features)
        frames = np.concatenate([r.window_frames for r in rows])
        times = np.concatenate([r.window_times_s for r in rows])
        meta = {FORMAT_KEY: FORMAT, ATTRS_KEY: json.dumps(self.attrs, sort_keys=True).encode("utf-8"),
                SHAPE_KEY: json.dumps(list(self.feature_shape)).encode("utf-8")}
        if self.provenance is not None:
            meta[PROVENANCE_KEY] = self.provenance.encode("utf-8")
        columns = {
            "video_id": pa.array([r.video_id for r in rows], type=pa.string()),
            "video_path": pa.array([_text(shown_name(r.video_path)) for r in rows], type=pa.string()),
            "features": pa.ListArray.from_arrays(per_video, features),
            "window_start_frame": per_window(frames[:, 0], pa.int64()),
            "window_end_frame": per_window(frames[:, 1], pa.int64()),
            "window_start_s": per_window(times[:, 0], pa.float64()),
            "window_end_s": per_window(times[:, 1], pa.float64()),
            "fps": pa.array([r.fps for r in rows], type=pa.float64()),
            "num_windows": pa.array(windows.astype(np.int32), type=pa.int32()),
            "stack_size": pa.array([r.stack_size for r in rows], type=pa.int64()),
            "step_size": pa.array([r.step_size for r in rows], type=pa.int64()),
        }
        return pa.table(columns).replace_schema_metadata(meta)


def read_features(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{video id: float32 (num_windows, *feature_shape)}`` of every row of every part in the local ``folder``
    (a part that cannot be read as one of this product's is skipped, as resume does)."""
    pq = import_pyarrow()
    out: dict[str, np.ndarray] = {}
    for path in part_paths(folder):
        try:
            meta, _ = read_part_index(path)
        except Exception as exc:  # noqa: BLE001 (damaged or foreign file)
            log.warning("%s skipped: %s", path, " ".join(str(exc).split()) or type(exc).__name__)
            continue
        shape = tuple(json.loads(meta[SHAPE_KEY]))
        table = pq.read_table(os.fspath(path), columns=["video_id", "features", "num_windows"])
        for vid, feats, n in zip(*(table.column(c).to_pylist() for c in ("video_id", "features", "num_windows"))):
            out[vid] = np.asarray(feats, dtype=np.float32).reshape(n, *shape)
    return out

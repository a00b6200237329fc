"""Where features go: printed, or saved as .npy / .pkl files (HDF5: utils/outputs/hdf5_sink.py,
Parquet: utils/outputs/parquet_sink.py).

Every sink implements the whole :class:`Sink` protocol; the runners ask it, and nothing
else, where a video's outputs go, whether they exist, how they were made and how to commit
new ones. Sinks do no math. Saved files are written atomically and a file only counts as
done when it loads as a float32 array of the expected shape.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO, Collection, Mapping, Protocol, Sequence, TextIO

import numpy as np

from r21d_features.utils.outputs.storage import OutputPath, output_location, storage_of
from r21d_features.utils.core.console import video_heading, write_block
from r21d_features.utils.outputs.output_paths import output_file

ON_EXTRACTION_CHOICES = ("print", "save_numpy", "save_pickle", "save_hdf5", "save_parquet")


def output_dir(output_root: str | Path, feature_type: str, model_name: str) -> OutputPath:
    """``<output_root>/<feature_type>/<model_name>``: where a model's files of a run go (a prefix
    of keys when ``output_root`` is an object-store URL)."""
    return output_location(output_root) / feature_type / model_name


class Sink(Protocol):
    """Where one run's features go. A new sink implements every member; for example a sink that
    keeps the features in memory (nothing on disk, so no claims, no resume)::

        class MemorySink:
            folder = None
            needs_metadata = False

            def __init__(self):
                self.features = {}

            def claim_path(self, video_path): return None
            def output_paths(self, video_path): return []
            def is_done(self, video_path): return video_path in self.features
            def stale_differences(self, video_path): return []
            def with_provenance(self, entries): return self
            def write(self, video_path, feats):
                self.features[video_path] = dict(feats)
                return []
            def pending(self): return []
            def close(self): pass
    """

    folder: OutputPath | None  # where the outputs are saved (None: nothing is saved, e.g. printed)
    needs_metadata: bool  # write() wants the window spans (fps, windows) besides the features

    def claim_path(self, video_path: str) -> OutputPath | None:
        """The name a video's claim and its failure mark sit next to (workers sharing ``folder``
        split the videos by it); None when nothing is saved."""

    def output_paths(self, video_path: str) -> list[OutputPath]:
        """Every name :meth:`write` commits for a video (a killed writer's leftovers next to them
        are swept); [] when nothing is saved."""

    def is_done(self, video_path: str) -> bool:
        """True when a whole output for ``video_path``, made with the current settings, exists."""

    def stale_differences(self, video_path: str) -> list[str]:
        """``key=old (now new)`` for each setting that differs in an existing whole output made
        with other settings; [] when there is none (resume: stop, or redo with ``overwrite``)."""

    def with_provenance(self, entries: Mapping[str, Any]) -> "Sink":
        """This sink recording ``entries`` (what made the numbers) with every output, and counting
        an output done only when its record matches (see utils/outputs/provenance.py)."""

    def write(self, video_path: str, feats: Mapping[str, np.ndarray]) -> list[OutputPath]:
        """Commit one video's features (and metadata); the files written ([] when nothing is saved,
        or when the sink holds the video back: see :meth:`pending`)."""

    def pending(self) -> Collection[str]:
        """The videos given to :meth:`write` whose outputs are not yet whole on disk (a sink that
        writes many videos at once holds them back); [] for sinks that write each video at once.
        The runner keeps the claims of these videos until they are written, or :meth:`close`."""

    def close(self) -> None:
        """Finish: write what is held back, flush and close what stays open between videos. A sink
        may be written to again after close (it starts new files)."""


def format_feature_stats(key: str, array: np.ndarray) -> str:
    """The reference's print block: key, array, ``max: X; mean: Y; min: Z`` (8 decimals)."""
    lines = [key, str(array)]
    if array.size:
        lines.append(f"max: {array.max():.8f}; mean: {array.mean():.8f}; min: {array.min():.8f}")
    else:
        lines.append(f"(empty: shape {array.shape})")
    return "\n".join(lines) + "\n"


class PrintSink:
    """Prints ``Features for <video>:``, then each key, its array and its max/mean/min to
    ``stream`` (one block, written around the progress bar). Saves nothing: no claims, no
    resume, no provenance."""

    folder = None
    needs_metadata = False

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def claim_path(self, video_path: str) -> None:
        return None

    def output_paths(self, video_path: str) -> list[OutputPath]:
        return []

    def stale_differences(self, video_path: str) -> list[str]:
        return []

    def with_provenance(self, entries: Mapping[str, Any]) -> "PrintSink":
        return self

    def pending(self) -> list[str]:
        return []

    def close(self) -> None:
        pass

    def write(self, video_path: str, feats: Mapping[str, np.ndarray]) -> list[OutputPath]:
        blocks = [format_feature_stats(key, array) for key, array in feats.items()]
        write_block("\n".join([video_heading("Features", video_path), *blocks]), self.stream)
        return []

    def is_done(self, video_path: str) -> bool:
        return False


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else (our own save_pickle format)."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("builtins", "dict"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: not a numpy array")


def load_feature_file(path: str | Path) -> np.ndarray:
    """An array saved by :class:`FileSink` (a file, or an object-store key or URL); .pkl files are
    read with a numpy-only unpickler."""
    path = output_location(path)
    if not isinstance(path, Path):
        data: BinaryIO = io.BytesIO(storage_of(path).read(path))
        return np.load(data, allow_pickle=False) if path.suffix == ".npy" else _RestrictedUnpickler(data).load()
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f).load()


def feature_shape_of(feature_dim: int | Sequence[int]) -> tuple[int, ...]:
    """The shape of one window's features: ``(512,)``, or ``(num_crops, 512)`` with multi-crop."""
    return (int(feature_dim),) if isinstance(feature_dim, int) else tuple(int(d) for d in feature_dim)


class FileSink:
    """Saves ``<output_root>/<feature_type>/<model_name>/<video id>_<key>.<npy|pkl>``
    (video id: :func:`utils.outputs.output_paths.video_id`)."""

    def __init__(self, output_root: str | Path, feature_type: str, model_name: str, fmt: str,
                 feature_dim: int | Sequence[int], extra_keys: Sequence[str] = (),
                 video_root: str | None = None) -> None:
        """``feature_dim``: 512, or the shape of one window's features (``(10, 512)`` for ten crops);
        ``extra_keys``: keys written besides the features (e.g. metadata); a video
        only counts as done when their files exist too."""
        if fmt not in ("npy", "pkl"):
            raise ValueError(f"fmt={fmt!r}: allowed npy, pkl")
        self.folder = output_dir(output_root, feature_type, model_name)
        self.feature_type = feature_type
        self.fmt = fmt
        self.feature_shape = feature_shape_of(feature_dim)
        self.extra_keys = tuple(extra_keys)
        self.video_root = video_root

    needs_metadata = False  # metadata keys are written when the run passes them (extra_keys)

    def path_for(self, video_path: str, key: str | None = None) -> OutputPath:
        return output_file(self.folder, video_path, self.video_root, f"_{key or self.feature_type}.{self.fmt}")

    def claim_path(self, video_path: str) -> OutputPath:
        return self.path_for(video_path)

    def stale_differences(self, video_path: str) -> list[str]:
        return []  # a plain file sink records no settings: with_provenance adds the records

    def with_provenance(self, entries: Mapping[str, Any]) -> Sink:
        from r21d_features.utils.outputs.provenance import ProvenanceSink  # noqa: PLC0415 (provenance wraps sinks)

        return ProvenanceSink(self, entries)

    def pending(self) -> list[str]:
        return []  # each video's files are written whole in write()

    def close(self) -> None:
        pass

    def output_paths(self, video_path: str) -> list[OutputPath]:
        """Every file :meth:`write` makes for a video (features last)."""
        return [*(self.path_for(video_path, k) for k in self.extra_keys), self.path_for(video_path)]

    def write(self, video_path: str, feats: Mapping[str, np.ndarray]) -> list[OutputPath]:
        written = []
        # The features file is what is_done looks at, so it goes last: if it exists, so do the others.
        for key, array in sorted(feats.items(), key=lambda item: item[0] == self.feature_type):
            if self.fmt == "npy":
                writer = lambda f, a=array: np.save(f, a, allow_pickle=False)  # noqa: E731
            else:
                writer = lambda f, a=array: pickle.dump(a, f)  # noqa: E731
            path = self.path_for(video_path, key)
            written.append(storage_of(path).write(path, writer))
        return written

    def is_done(self, video_path: str) -> bool:
        path = self.path_for(video_path)
        storage = storage_of(path)
        if not storage.exists(path) or not all(storage.exists(self.path_for(video_path, k)) for k in self.extra_keys):
            return False
        try:
            array = load_feature_file(path)
        except Exception:  # truncated, foreign or malicious file: extract again
            return False
        return (
            isinstance(array, np.ndarray)
            and array.dtype == np.float32
            and array.shape[1:] == self.feature_shape
        )


def make_sink(on_extraction: str, output_root: str, feature_type: str, model_name: str,
              feature_dim: int | Sequence[int], stream: TextIO, extra_keys: Sequence[str] = (),
              video_root: str | None = None, attrs: Mapping[str, str] | None = None) -> Sink:
    """The sink of ``on_extraction``; ``attrs``: run-level facts an HDF5 or Parquet file records (model, crops)."""
    if on_extraction == "print":
        return PrintSink(stream)
    if on_extraction == "save_numpy":
        return FileSink(output_root, feature_type, model_name, "npy", feature_dim, extra_keys, video_root)
    if on_extraction == "save_pickle":
        return FileSink(output_root, feature_type, model_name, "pkl", feature_dim, extra_keys, video_root)
    if on_extraction == "save_hdf5":
        from r21d_features.utils.outputs.hdf5_sink import Hdf5Sink  # noqa: PLC0415 (h5py only when asked for)

        return Hdf5Sink(output_dir(output_root, feature_type, model_name), feature_type, feature_dim,
                        with_metadata=bool(extra_keys), video_root=video_root, attrs=attrs or {})
    if on_extraction == "save_parquet":
        from r21d_features.utils.outputs.parquet_sink import ParquetSink  # noqa: PLC0415 (pyarrow only when asked for)

        return ParquetSink(output_dir(output_root, feature_type, model_name), feature_type, feature_dim,
                           video_root=video_root, attrs=attrs or {})
    raise ValueError(f"on_extraction={on_extraction!r} is unknown; allowed: {', '.join(ON_EXTRACTION_CHOICES)}")

"""Provenance: every saved output knows what made it, and a re-run skips only what still fits.

Next to each features file ``<stem>_r21d.npy`` lies a small hidden JSON record,
``.<stem>_r21d.npy.provenance.json``: the extractor's ``provenance()`` entries (the
settings that change the numbers: model, weights identity, window, fps, precision,
...) plus, for people, when/where it was made. The features file's name and bytes
are untouched.

Rules (docs/guides/reliability.md, "Provenance"):

- a video counts as done only when its output is valid *and* its record's entries
  equal the current ones;
- an output whose record differs, or that has no record (written by a version
  before records existed, or by hand), stops the run before any work, naming the
  differing entries and the two ways out: another ``output_path``, or
  ``overwrite=true``, which redoes those videos (outputs that match are kept);
- writes are ordered so that a record never describes features it did not make:
  an output made with other settings is removed first, then the record is written
  (atomically), then the features (atomically, last). A crash in between leaves a
  record without features, which is simply extracted again.

Workers sharing the folder each write only the records of videos they have
claimed, so records need no merging. A new entry (crops, decoder, ...) is one key
in the extractor's ``provenance()``; older records lacking it then differ, as they must.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from r21d_features.utils.core.errors import SettingsError
from r21d_features.utils.core.safe_fs import READ_SMALL_MAX_BYTES, display_path, hidden_path
from r21d_features.utils.outputs.storage import listed, storage_of

log = logging.getLogger(__name__)

RECORD_SUFFIX = ".provenance.json"
RECORD_FORMAT = 1
NO_RECORD = "no provenance record (written by an older version, or not by this tool)"


def record_path(output: Path) -> Path:
    """The record of the output file ``output``."""
    return hidden_path(output, RECORD_SUFFIX)


def read_entries(output: Path) -> dict[str, Any] | None:
    """The entries recorded for ``output``, or None when there is no readable record."""
    try:
        record = record_path(output)
        data = json.loads(storage_of(record).read(record, READ_SMALL_MAX_BYTES).decode("utf-8"))
        entries = data["entries"]
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    return entries if isinstance(entries, dict) else None


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def differences(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """``["stack_size=4 (now 8)", ...]``: entries of ``recorded`` that differ from ``current``."""
    if recorded is None:
        return [NO_RECORD]
    # Compare as JSON would store them (a tuple and a list of the same values are equal).
    now = json.loads(json.dumps(dict(current)))
    return [f"{key}={_show(recorded.get(key, 'unset'))} (now {_show(value)})"
            for key, value in now.items() if recorded.get(key, "unset") != value]


class ProvenanceSink:
    """Wraps a file sink: writes each output's record, and counts an output done only when it matches.

    ``entries``: what the current settings would record (JSON values).
    """

    def __init__(self, sink: Any, entries: Mapping[str, Any]) -> None:
        self.sink = sink
        self.entries = dict(entries)
        self.folder = sink.folder
        self.needs_metadata = sink.needs_metadata
        self._made = {"host": socket.gethostname(), "pid": os.getpid()}

    def path_for(self, video_path: str) -> Path:
        """The wrapped sink's features file of a video (its record sits beside it)."""
        return self.sink.claim_path(video_path)

    def claim_path(self, video_path: str) -> Path:
        return self.sink.claim_path(video_path)

    def with_provenance(self, entries: Mapping[str, Any]) -> "ProvenanceSink":
        return ProvenanceSink(self.sink, entries)

    def pending(self) -> Collection[str]:
        return self.sink.pending()

    def close(self) -> None:
        self.sink.close()

    def differences(self, video_path: str) -> list[str]:
        """What differs between the existing output's record and now ([] when it matches)."""
        return differences(read_entries(self.path_for(video_path)), self.entries)

    def is_done(self, video_path: str) -> bool:
        return self.sink.is_done(video_path) and not self.differences(video_path)

    def output_paths(self, video_path: str) -> list[Path]:
        """Every file :meth:`write` makes for a video: the record first, then the sink's."""
        return [record_path(self.path_for(video_path)), *self.sink.output_paths(video_path)]

    def stale_differences(self, video_path: str) -> list[str]:
        """What differs when a valid output made with other settings exists ([] otherwise)."""
        output = self.path_for(video_path)
        if not storage_of(output).exists(output):
            return []
        diff = self.differences(video_path)
        # Features are written atomically after their record: a record beside a features file means
        # a whole output made with those settings, even one the current settings would shape
        # differently (crops); without a record, only an output that loads counts.
        return diff if diff and (read_entries(output) is not None or self.sink.is_done(video_path)) else []

    def write(self, video_path: str, feats: Mapping[str, np.ndarray]) -> list[Path]:
        output = self.path_for(video_path)
        storage = storage_of(output)
        if _lexists(output) and self.differences(video_path):
            storage.remove(output)  # made with other settings (overwrite=true): never paired with our record
        record = {"format": RECORD_FORMAT, "entries": self.entries,
                  "made": {**self._made, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}}
        storage.write(record_path(output), lambda f: f.write(json.dumps(record, indent=1).encode("utf-8")))
        return self.sink.write(video_path, feats)


def _lexists(output: Any) -> bool:
    """True when ``output`` exists (locally even as a dangling symlink, which is removed too)."""
    return os.path.lexists(output) if isinstance(output, Path) else storage_of(output).exists(output)


def with_provenance(sink: Any, entries: Mapping[str, Any]) -> Any:
    """``sink`` made provenance-aware (``sink.with_provenance``): a sink that stores provenance
    itself (HDF5: an attribute of each dataset) records the entries; a sink of one file per
    output is wrapped in a :class:`ProvenanceSink` (record files)."""
    return sink.with_provenance(entries)


def _stale_outputs(sink: Any, video_paths: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``(video, differences)`` of each video whose valid output was made with other settings."""
    stale: list[tuple[str, list[str]]] = []
    for path in video_paths:
        try:
            # A differing record counts only if its output is valid.
            diff = sink.stale_differences(path)
            if diff:
                stale.append((path, diff))
        except (OSError, ValueError):  # a name no file can have: that video fails on its own later
            continue
    return stale


def check_existing_outputs(sink: Any, video_paths: Sequence[str], overwrite: bool) -> int:
    """Before any work: refuse existing outputs of ``video_paths`` made with other settings.

    Returns how many will be redone (``overwrite=true``); raises :class:`SettingsError`
    (one line: how many, which entries differ, an example, the two ways out) otherwise.
    Outputs that are missing or do not load are not judged: they are extracted anyway.
    """
    # One listing of the output folder answers "is there an output?" for every video at once.
    with listed(sink.folder):
        stale = _stale_outputs(sink, video_paths)
    if not stale or overwrite:
        if stale:
            log.info("overwrite=true: redoing %d existing output(s) made with other settings", len(stale))
        return len(stale)
    kinds: list[str] = []
    for _, diff in stale:
        kinds += [d for d in diff if d not in kinds]
    example = sink.output_paths(stale[0][0])[-1]  # the features file (a virtual name for HDF5)
    raise SettingsError(
        f"{len(stale)} existing output(s) in {display_path(str(example.parent))} were made with other settings ({'; '.join(kinds)}), "
        f"e.g. {display_path(example.name)}; choose another output_path, "
        "or set overwrite=true to redo them"
    )

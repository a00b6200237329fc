"""Join the HDF5 part files of an output folder into one file, and verify it.

    python -m r21d_features.utils.hdf5_merge <output_path>/r21d/<model_name> [--output FILE] [--remove-parts]

Reads every ``features.part-*.h5`` (and an earlier ``features.h5``, so merging again after
more runs adds to it), keeps each video's complete dataset (the newest one when a video was
written twice, e.g. after a claim was taken over), writes them to a temporary file, checks
every dataset and attribute of it against its source, and only then renames it to
``features.h5`` (default). ``--remove-parts`` deletes the parts merged, after the check.
Run it when no worker is writing to the folder.

Exit status: 0 merged and verified; 1 some part could not be read (the others are merged)
or the check failed (nothing replaced); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from r21d_features.utils.outputs.hdf5_sink import LIBVER, MERGED_NAME, complete_datasets, import_h5py, open_readonly, part_paths


@dataclass
class MergeResult:
    output: Path | None
    videos: int
    sources: list[Path]
    unreadable: list[tuple[Path, str]]
    incomplete: int
    duplicates: int

    def format(self) -> str:
        lines = [f"merged {self.videos} videos from {len(self.sources)} file(s) into {self.output} (verified)"]
        if self.duplicates:
            lines.append(f"  {self.duplicates} video(s) were in several parts: kept the newest of each")
        if self.incomplete:
            lines.append(f"  {self.incomplete} incomplete dataset(s) (a killed writer) left out")
        lines += [f"  UNREADABLE {p}: {why}" for p, why in self.unreadable]
        return "\n".join(lines)


class MergeError(Exception):
    """The merged file did not match its sources; nothing was replaced."""


def _attrs_equal(a: Any, b: Any) -> bool:
    if set(a.keys()) != set(b.keys()):
        return False
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a.keys())


def merge_parts(folder: str | os.PathLike, output: str | os.PathLike | None = None,
                remove_parts: bool = False) -> MergeResult:
    """Merge the parts of ``folder`` into ``output`` (default ``<folder>/features.h5``); see the module doc."""
    h5py = import_h5py()
    folder = Path(folder)
    output = Path(output) if output is not None else folder / MERGED_NAME
    sources = [p for p in part_paths(folder) if p != output]
    if output.exists():
        sources.append(output)
    if not sources:
        raise FileNotFoundError(f"no HDF5 part files (features.part-*.h5) in {folder}")

    # video id -> (written_at, source); the newest complete copy wins.
    chosen: dict[str, tuple[float, Path]] = {}
    unreadable: list[tuple[Path, str]] = []
    read_ok: list[Path] = []
    incomplete = duplicates = 0
    for path in sources:
        try:
            with open_readonly(path) as f:
                datasets = list(complete_datasets(f))
                total: list[int] = [0]
                f.visititems(lambda _n, o: total.__setitem__(0, total[0] + hasattr(o, "shape")))
                incomplete += total[0] - len(datasets)
                for vid, ds in datasets:
                    written_at = float(ds.attrs.get("written_at", 0.0))
                    if vid in chosen:
                        duplicates += 1
                        if written_at <= chosen[vid][0]:
                            continue
                    chosen[vid] = (written_at, path)
            read_ok.append(path)
        except Exception as exc:  # noqa: BLE001 (a damaged part is reported, the rest merged)
            unreadable.append((path, " ".join(str(exc).split()) or type(exc).__name__))

    tmp = output.with_name(f".{output.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        by_source: dict[Path, list[str]] = {}
        for vid, (_, path) in sorted(chosen.items()):
            by_source.setdefault(path, []).append(vid)
        with h5py.File(tmp, "w-", libver=LIBVER, locking=False) as dst:
            for path, vids in by_source.items():
                with open_readonly(path) as src:
                    for vid in vids:
                        parent = vid.rsplit("/", 1)[0] if "/" in vid else ""
                        if parent:
                            dst.require_group(parent)
                        src.copy(src[vid], dst, name=vid)
        # Verify: every dataset and attribute of the new file against its source.
        with open_readonly(tmp) as merged:
            found = {vid for vid, _ in complete_datasets(merged)}
            if found != set(chosen):
                raise MergeError(f"the merged file holds {len(found)} complete videos, expected {len(chosen)}")
            for path, vids in by_source.items():
                with open_readonly(path) as src:
                    for vid in vids:
                        a, b = merged[vid], src[vid]
                        if a.dtype != b.dtype or not np.array_equal(a[()], b[()]) or not _attrs_equal(a.attrs, b.attrs):
                            raise MergeError(f"dataset {vid!r} of the merged file differs from {path.name}")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    if remove_parts:
        for path in read_ok:
            if path != output:
                path.unlink(missing_ok=True)
    return MergeResult(output, len(chosen), sources, unreadable, incomplete, duplicates)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m r21d_features.utils.hdf5_merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the folder of the parts: <output_path>/<feature_type>/<model_name>")
    parser.add_argument("--output", help=f"merged file (default: <folder>/{MERGED_NAME})")
    parser.add_argument("--remove-parts", action="store_true", help="delete the merged parts after the check")
    args = parser.parse_args(argv)
    try:
        result = merge_parts(args.folder, args.output, args.remove_parts)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MergeError as exc:
        print(f"error: {exc}; {args.output or MERGED_NAME} was not replaced", file=sys.stderr)
        return 1
    print(result.format())
    return 1 if result.unreadable else 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a video's outputs go: the one mapping from an input path to its name in the output folder.

Every output of a video (feature files, metadata, plots, claim files, its HDF5 dataset)
is named after its *video id*, computed here and nowhere else::

    video_root unset:       /data/cat/000.mp4  ->  "000"       ->  <folder>/000_r21d.npy
    video_root=/data:       /data/cat/000.mp4  ->  "cat/000"   ->  <folder>/cat/000_r21d.npy
                            /data/dog/000.mp4  ->  "dog/000"   ->  <folder>/dog/000_r21d.npy

``<folder>`` is ``<output_path>/<feature_type>/<model_name>`` (:func:`utils.outputs.sinks.output_dir`).
The id is the path relative to ``video_root`` without the file's extension, with ``/``
between folders on every OS (it is also the HDF5 dataset name). Paths are compared after
``os.path.abspath`` (no symlinks resolved), so relative paths and ``..`` work as the shell means them.
Object URLs work the same way on their keys: ``video_root=s3://bucket/videos`` names
``s3://bucket/videos/cat/000.mp4`` ``"cat/000"``.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Sequence

from r21d_features.utils.core.path_table import groups_of_repeats
from r21d_features.utils.core.shard_names import MemberName, shown_name
from r21d_features.utils.core.object_store import SCHEMES, is_object_url, split_url, url_scheme
from r21d_features.utils.video.path_list import PathListError


def video_id(video_path: str | os.PathLike, video_root: str | os.PathLike | None = None) -> str:
    """The name of ``video_path``'s outputs: its stem, or with ``video_root`` its path relative
    to it without the extension (``"cat/000"``). Raises :class:`PathListError` for a path
    outside ``video_root``. A video inside a tar shard is ``<shard's id>/<key>`` (``train-000/clip001``)."""
    member = MemberName.parse(video_path)
    if member is not None:
        return member.id_under(video_id(member.shard, video_root))
    if is_object_url(video_path) or (video_root is not None and is_object_url(video_root)):
        return _object_video_id(str(video_path), None if video_root is None else str(video_root))
    if video_root is None:
        return Path(video_path).stem
    full, root = os.path.abspath(video_path), os.path.abspath(video_root)
    try:
        rel = os.path.relpath(full, root)
    except ValueError:  # another drive (Windows)
        rel = os.pardir
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        raise PathListError(
            f"{os.fspath(video_path)!r} is not inside video_root={os.fspath(video_root)!r}: outputs mirror the "
            "folders under video_root; set video_root to a folder that holds every input, or null"
        )
    rel_path = PurePath(rel)
    return rel_path.with_name(rel_path.stem).as_posix()


def _object_video_id(url: str, root: str | None) -> str:
    key = PurePath(split_url(url)[1]) if is_object_url(url) else PurePath(url)
    if root is None:
        return key.stem
    same_store = (is_object_url(url) and is_object_url(root)
                  and SCHEMES[url_scheme(url)][0] == SCHEMES[url_scheme(root)][0]
                  and split_url(url)[0] == split_url(root)[0])
    root_key = split_url(root)[1].strip("/") if same_store else ""
    inside = same_store and (not root_key or key.as_posix().startswith(root_key + "/"))
    rel = key.as_posix()[len(root_key):].lstrip("/") if inside else ""
    if not rel:
        raise PathListError(
            f"{url!r} is not inside video_root={root!r}: outputs mirror the folders under video_root; set "
            "video_root to a folder (or prefix) that holds every input, or null"
        )
    rel_path = PurePath(rel)
    return rel_path.with_name(rel_path.stem).as_posix()


def output_file(folder: str | os.PathLike, video_path: str | os.PathLike, video_root: str | os.PathLike | None,
                suffix: str) -> Path:
    """``<folder>/<video id><suffix>``, e.g. ``suffix="_r21d.npy"`` (a key under ``folder`` when it
    is an object-store prefix)."""
    base = folder if isinstance(folder, PurePath) else Path(folder)
    return base / f"{video_id(video_path, video_root)}{suffix}"


def _id_or_failing(path: str, video_root: str | os.PathLike | None) -> str:
    """``path``'s video id; for a shard member that fails on its own (its problem found while the shard
    was listed, e.g. a repeated key), its whole name: it writes nothing, so it clashes with nothing."""
    member = MemberName.parse(path)
    if member is not None and member.problem:
        return "\x00" + path
    return video_id(path, video_root)


def check_unique_outputs(paths: Sequence[str], video_root: str | os.PathLike | None = None) -> None:
    """Refuse, before any work, an input outside ``video_root`` and two different inputs with
    the same video id (their outputs would overwrite each other)."""
    if video_root is not None and not is_object_url(video_root) and not Path(video_root).is_dir():
        raise PathListError(f"video_root={os.fspath(video_root)!r} is not a folder; give the folder that holds the "
                            "input tree, or null to name outputs by file name only")
    # O(n) without a dict of every id: only ids whose hash repeats are compared exactly.
    clashes = groups_of_repeats(paths, lambda p: _id_or_failing(p, video_root))
    if clashes:
        vid, ps = next(iter(clashes.items()))
        more = f" (and {len(clashes) - 1} more clashing names)" if len(clashes) > 1 else ""
        fix = ("rename them, or extract them in separate runs with different output_path" if video_root is not None
               else "set video_root=<a folder above them> to mirror their folders in the output, rename them, "
                    "or extract them in separate runs with different output_path")
        kind = "path" if video_root is not None else "stem"
        raise PathListError(
            f"inputs {', '.join(repr(shown_name(p)) for p in ps)} share the {kind} {vid!r} and would overwrite each other's "
            f"output{more}; {fix}"
        )

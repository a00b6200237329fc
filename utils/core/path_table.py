"""Lists of millions of video names in little memory, and repeats found in them in O(n).

A Python ``list`` of ``str`` costs about 110 bytes per name of 60 characters (the string object
and its slot); :class:`PathTable` keeps the names' bytes back to back with one 8-byte end offset
each, about 70 bytes per name, and gives them back as ``str`` one at a time. Names round-trip
exactly, a Linux file name that is not UTF-8 (``\\udcXX`` escapes) included.

:func:`first_of_each` finds which entries repeat an earlier key without a set of every key:
one 8-byte hash per entry, sorted, and exact keys only for the few entries whose hash repeats.
"""

from __future__ import annotations

from array import array
from typing import Callable, Hashable, Iterable, Iterator, Sequence, overload

import numpy as np

_CODEC = ("utf-8", "surrogatepass")  # every str, lone surrogates included, encodes and decodes back


class PathTable(Sequence[str]):
    """A sequence of names held as UTF-8 bytes back to back; appends in O(1), index in O(1)."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._data = bytearray()
        self._ends = array("Q")
        for name in names:
            self.append(name)

    def append(self, name: str) -> None:
        self._data += name.encode(*_CODEC)
        self._ends.append(len(self._data))

    def __len__(self) -> int:
        return len(self._ends)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> "PathTable": ...

    def __getitem__(self, index: int | slice) -> "str | PathTable":
        if isinstance(index, slice):
            return PathTable(self[i] for i in range(*index.indices(len(self))))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"PathTable index {index} out of range (length {len(self)})")
        start = self._ends[index - 1] if index else 0
        return self._data[start:self._ends[index]].decode(*_CODEC)

    def __iter__(self) -> Iterator[str]:
        data, start = self._data, 0
        for end in self._ends:
            yield data[start:end].decode(*_CODEC)
            start = end

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (PathTable, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        head = ", ".join(map(repr, self[:3])) if len(self) <= 3 else ", ".join(map(repr, self[:3])) + ", ..."
        return f"PathTable([{head}], {len(self)} names)"

    def keep_only(self, keep: Sequence[bool]) -> None:
        """Drop, in place, the names whose ``keep`` is false (no second copy of the table is made)."""
        data, ends = self._data, self._ends
        write = start = 0
        kept = array("Q")
        for end, wanted in zip(ends, keep):
            if wanted:
                size = end - start
                if write != start:
                    data[write:write + size] = data[start:end]
                write += size
                kept.append(write)
            start = end
        del data[write:]
        self._ends = kept


def _suspects(items: Sequence[str], key: Callable[[str], Hashable]) -> list[int]:
    """Indices (ascending) of the items whose ``key`` hash equals another item's: the only ones
    that can share a key. O(n) calls of ``key`` plus a sort of n 8-byte hashes."""
    hashes = np.fromiter((hash(key(item)) for item in items), dtype=np.int64, count=len(items))
    order = np.argsort(hashes, kind="stable")
    in_order = hashes[order]
    repeated = np.flatnonzero(in_order[1:] == in_order[:-1])
    return np.unique(np.concatenate([order[repeated], order[repeated + 1]])).tolist()


def first_of_each(items: Sequence[str], key: Callable[[str], Hashable]) -> np.ndarray:
    """``keep[i]`` (bool, one per item): ``items[i]`` is the first with its ``key``.

    Exact keys are compared (and kept in memory) only for the items whose hash repeats
    (:func:`_suspects`), so a hash collision never drops an item.
    """
    keep = np.ones(len(items), dtype=bool)
    seen: set[Hashable] = set()
    for i in _suspects(items, key):
        k = key(items[i])
        if k in seen:
            keep[i] = False
        else:
            seen.add(k)
    return keep


def groups_of_repeats(items: Sequence[str], key: Callable[[str], Hashable]) -> dict[Hashable, list[str]]:
    """The items that share a ``key`` with another, grouped by key (first occurrence order);
    exact keys only for the items whose hash repeats, as :func:`first_of_each`."""
    by_key: dict[Hashable, list[str]] = {}
    for i in _suspects(items, key):
        by_key.setdefault(key(items[i]), []).append(items[i])
    return {k: group for k, group in by_key.items() if len(group) > 1}

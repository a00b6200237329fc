"""The name a video inside a tar shard travels under: one string, like every other input.

The pipeline carries each video by a string (utils/video/sources.py). A member of a shard is
named by the shard, the member's name in the archive and where its bytes sit::

    "/data/train-000.tar" NUL "clip001.mp4" NUL "1536" NUL "48213" NUL ""
     shard                    member            data offset  size      problem

NUL separates the fields because no path and no line of a list can hold one (a list line
with a NUL fails as that one video), so a member name can never be mistaken for a file the
user named. The offset makes opening a member one seek, in any process (a Ray actor, a
worker of a shared folder) without reading the shard's index again. ``problem`` is why the
member cannot be a video (a hostile name, a link, a repeated key), found while the shard was
listed; it fails as that one video. A shard that cannot be listed at all (missing, not a tar
file) travels with an empty member and its problem.

People see a member as ``<shard>#<member>`` (:meth:`MemberName.shown`): consoles, summaries and
run reports. Its outputs are named ``<shard stem>/<key>`` (:meth:`MemberName.id_under`), where
the key is the member's name up to the first dot of its base name (``clip001.mp4`` and
``clip001.json`` share the key ``clip001``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

SEP = "\x00"
FIELDS = 5


@dataclass(frozen=True)
class MemberName:
    """A video inside a tar shard (see the module docstring); ``str()`` is its travelling name."""

    shard: str
    member: str
    offset: int = 0  # where the member's bytes start in the shard
    size: int = 0  # bytes
    problem: str = ""  # why it fails ("" for a good member)

    def __str__(self) -> str:
        return SEP.join((self.shard, self.member, str(self.offset), str(self.size), self.problem))

    @classmethod
    def parse(cls, name: object) -> "MemberName | None":
        """The member ``name`` stands for, or None for any other name."""
        if not isinstance(name, str) or SEP not in name:
            return None
        fields = name.split(SEP, FIELDS - 1)
        if len(fields) != FIELDS or not fields[2].isdigit() or not fields[3].isdigit():
            return None
        return cls(fields[0], fields[1], int(fields[2]), int(fields[3]), fields[4])

    @property
    def key(self) -> str:
        """The member's name up to the first dot of its base name (``a/clip001.mp4`` -> ``a/clip001``)."""
        path = PurePosixPath(self.member)
        return str(path.with_name(path.name.split(".", 1)[0])) if self.member else ""

    def shown(self) -> str:
        """How people see it: ``<shard>#<member>``, or the shard alone when it could not be listed."""
        return f"{self.shard}#{self.member}" if self.member else self.shard

    def id_under(self, shard_id: str) -> str:
        """The member's video id, given its shard's (``train-000`` -> ``train-000/clip001``)."""
        return f"{shard_id}/{self.key}" if self.member else shard_id


def shown_name(name: str) -> str:
    """``name`` as people read it: a shard member as ``<shard>#<member>``, any other name as it is."""
    member = MemberName.parse(name)
    return name if member is None else member.shown()


def name_stem(name: str) -> str:
    """The base name without extension, for naming temporary files: a member's key's, or the path's."""
    member = MemberName.parse(name)
    if member is not None:
        return PurePosixPath(member.key or PurePosixPath(member.shard).stem).name
    return PurePosixPath(name).stem

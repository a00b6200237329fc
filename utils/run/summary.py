"""What a run did, per video, in little memory: the summary printed at the end and returned by the API.

A run over a million videos keeps a million outcomes. :class:`Outcomes` holds them as columns
(the paths back to back, small integers for status, counts and times, each distinct reason and
host once): 27 bytes per video plus its path's bytes and an 8-byte offset, instead of the few
hundred bytes of a :class:`~utils.run.driver.VideoOutcome` object; iterating gives :class:`VideoOutcome` objects
back, equal to those added. Counts per status are kept as they come, so the summary line costs
nothing at the end.
"""

from __future__ import annotations

import itertools
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence, overload

from r21d_features.utils.core.console import plural
from r21d_features.utils.core.path_table import PathTable
from r21d_features.utils.core.safe_fs import display_path
from r21d_features.utils.run.driver import VideoOutcome

STATUSES = ("done", "skipped", "failed")
NONE = -1  # stands for None in the integer columns
SHOWN_IN_SUMMARY = 50  # failures (and warnings) listed at the end; the run report has every one


class _Interned:
    """Each distinct string once; an index per use."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._index: dict[str, int] = {}

    def index(self, value: str) -> int:
        i = self._index.get(value)
        if i is None:
            i = self._index[value] = len(self.values)
            self.values.append(value)
        return i


class Outcomes(Sequence[VideoOutcome]):
    """The outcome of every video of a run, in the order they were added, held as columns."""

    def __init__(self, outcomes: Iterable[VideoOutcome] = ()) -> None:
        self._paths = PathTable()
        self._status = bytearray()
        self._reasons, self._hosts = _Interned(), _Interned()
        self._reason = array("I")
        self._host = array("H")  # a run has fewer than 65,536 hosts
        self._windows, self._frames, self._pid = array("i"), array("i"), array("i")
        self._seconds = array("d")
        self._warnings: dict[int, tuple[str, ...]] = {}  # few videos have any
        self.counts: Counter[str] = Counter()
        self.num_warnings = 0
        for outcome in outcomes:
            self.append(outcome)

    def append(self, outcome: VideoOutcome) -> None:
        i = len(self._status)
        self._paths.append(outcome.path)
        self._status.append(STATUSES.index(outcome.status))
        self._reason.append(self._reasons.index(outcome.reason))
        self._host.append(self._hosts.index(outcome.host))
        for column, value in ((self._windows, outcome.windows), (self._frames, outcome.frames),
                              (self._pid, outcome.pid)):
            column.append(NONE if value is None else value)
        self._seconds.append(outcome.seconds)
        if outcome.warnings:
            self._warnings[i] = tuple(outcome.warnings)
            self.num_warnings += len(outcome.warnings)
        self.counts[outcome.status] += 1

    def __len__(self) -> int:
        return len(self._status)

    @overload
    def __getitem__(self, index: int) -> VideoOutcome: ...

    @overload
    def __getitem__(self, index: slice) -> list[VideoOutcome]: ...

    def __getitem__(self, index: int | slice) -> VideoOutcome | list[VideoOutcome]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"outcome {index} out of range ({len(self)} videos)")

        def opt(column: array, i: int) -> int | None:
            return None if column[i] == NONE else column[i]

        return VideoOutcome(
            path=self._paths[index], status=STATUSES[self._status[index]],
            reason=self._reasons.values[self._reason[index]], windows=opt(self._windows, index),
            frames=opt(self._frames, index), seconds=self._seconds[index],
            warnings=list(self._warnings.get(index, ())), host=self._hosts.values[self._host[index]],
            pid=opt(self._pid, index))

    def __iter__(self) -> Iterator[VideoOutcome]:
        return (self[i] for i in range(len(self)))

    def with_status(self, status: str) -> Iterator[VideoOutcome]:
        code = STATUSES.index(status)
        return (self[i] for i, s in enumerate(self._status) if s == code)

    def with_warnings(self) -> Iterator[VideoOutcome]:
        return (self[i] for i in sorted(self._warnings))


@dataclass
class RunSummary:
    """Every video's outcome, and the summary printed at the end of a run."""

    outcomes: Outcomes = field(default_factory=Outcomes)

    def __post_init__(self) -> None:
        if not isinstance(self.outcomes, Outcomes):
            self.outcomes = Outcomes(self.outcomes)

    def count(self, status: str) -> int:
        return self.outcomes.counts[status]

    @property
    def failed(self) -> list[VideoOutcome]:
        return list(self.outcomes.with_status("failed"))

    @property
    def exit_code(self) -> int:
        return 1 if self.count("failed") else 0

    def format(self) -> str:
        """The summary: counts, then the failures and warnings (the first :data:`SHOWN_IN_SUMMARY`
        of each; the run report lists them all)."""
        lines = [
            f"Summary: {self.count('done')} done, {self.count('skipped')} skipped, "
            f"{self.count('failed')} failed, of {plural(len(self.outcomes), 'video')}"
        ]
        failures = (f"  FAILED {display_path(o.path)}: {o.reason}" for o in self.outcomes.with_status("failed"))
        lines += _first(failures, self.count("failed"), "failures")
        warnings = (f"  warning {display_path(o.path)}: {w}" for o in self.outcomes.with_warnings() for w in o.warnings)
        lines += _first(warnings, self.outcomes.num_warnings, "warnings")
        return "\n".join(lines)


def _first(lines: Iterator[str], total: int, what: str) -> list[str]:
    """The first :data:`SHOWN_IN_SUMMARY` of ``lines`` (``total`` in all), then how many more there are."""
    shown = list(itertools.islice(lines, SHOWN_IN_SUMMARY))
    if total > len(shown):
        shown.append(f"  ... and {total - len(shown)} more {what} (the run report lists every video)")
    return shown

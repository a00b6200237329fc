"""Clean stops: SIGINT and SIGTERM end the run through its ``finally`` blocks.

:class:`stop_on_signals` turns SIGINT (Ctrl-C) and SIGTERM (``kill``, SLURM's
time limit, ``docker stop``) into :class:`RunInterrupted`, raised in the main
thread: child processes are killed at once, and the run unwinds through its
``finally`` blocks (claims released, temporary files removed); the command line
then prints the summary and exits with 128 + the signal number (130 / 143). A
second signal while unwinding exits at once (children killed first).

Child processes (ffmpeg) are started by :func:`r21d_features.utils.core.processes.spawn`
and killed here on a signal.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from r21d_features.utils.core.processes import kill_children

log = logging.getLogger(__name__)


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by ``signum``; ``exit_code`` is 128 + ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum


class stop_on_signals:  # noqa: N801 (used like a function: ``with stop_on_signals():``)
    """Inside the block, SIGINT and SIGTERM raise :class:`RunInterrupted` in the main thread.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._stopping = False

    def _handle(self, signum: int, frame: object) -> None:
        kill_children()
        if self._stopping:  # a second signal while unwinding: the user insists
            os._exit(128 + signum)
        self._stopping = True
        raise RunInterrupted(signum)

    def __enter__(self) -> "stop_on_signals":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

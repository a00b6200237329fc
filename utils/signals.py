"""Clean stops, and child processes that never outlive the run.

:class:`stop_on_signals` turns SIGINT (Ctrl-C) and SIGTERM (``kill``, SLURM's
time limit, ``docker stop``) into :class:`RunInterrupted`, raised in the main
thread: child processes are killed at once, and the run unwinds through its
``finally`` blocks (claims released, temporary files removed); the command line
then prints the summary and exits with 128 + the signal number (130 / 143). A
second signal while unwinding exits at once (children killed first).

Every external process (ffmpeg) is started by :func:`spawn`: on Linux the kernel
kills it when the thread that started it dies (``PR_SET_PDEATHSIG``, so even
after ``kill -9`` of the run), and :func:`kill_children` kills the live ones on a
signal and at interpreter exit.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any, Sequence

log = logging.getLogger(__name__)

_children: set[subprocess.Popen] = set()
_children_lock = threading.RLock()  # the signal handler may run while the main thread holds it
PR_SET_PDEATHSIG = 1

try:  # resolved once here: the child must not load anything between fork and exec
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by ``signum``; ``exit_code`` is 128 + ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum


def _die_with_parent(parent_pid: int) -> None:  # runs in the child, between fork and exec
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def spawn(cmd: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen(cmd)`` for a child that dies with us; call :func:`forget` once it has ended."""
    parent_pid = os.getpid()
    preexec = (lambda: _die_with_parent(parent_pid)) if _prctl is not None else None
    proc = subprocess.Popen(list(cmd), preexec_fn=preexec, close_fds=True, **popen_kwargs)  # noqa: PLW1509
    with _children_lock:
        _children.add(proc)
    return proc


def forget(proc: subprocess.Popen) -> None:
    with _children_lock:
        _children.discard(proc)


def kill_children() -> None:
    """Kill every live child started by :func:`spawn` (they are reaped by whoever waits for them)."""
    with _children_lock:
        procs = list(_children)
    for proc in procs:
        try:
            if proc.poll() is None:
                proc.kill()
        except OSError:
            pass


atexit.register(kill_children)


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

"""This process and its children: child processes that never outlive the run, and whether a pid lives.

Every external process (ffmpeg) is started by :func:`spawn`: on Linux the kernel
kills it when the thread that started it dies (``PR_SET_PDEATHSIG``, so even
after ``kill -9`` of the run), and :func:`kill_children` kills the live ones on a
signal (:mod:`r21d_features.utils.run.signals`) and at interpreter exit.

:func:`host_id`, :func:`process_start_time` and :func:`pid_alive` tell workers sharing
a folder whether the process that left a file there is still running.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Sequence

_children: set[subprocess.Popen] = set()
_children_lock = threading.RLock()  # the signal handler may run while the main thread holds it
PR_SET_PDEATHSIG = 1

try:  # resolved once here: the child must not load anything between fork and exec
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


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


def host_id() -> str:
    """Where this process's pid means something: host name, boot id (machines that share a
    name) and pid namespace (containers on one machine)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        boot, namespace = "?", 0
    return f"{socket.gethostname()}/{boot}/{namespace}"


def process_start_time() -> float:
    """Unix time at which this process started (Linux ``/proc``); now where unknown."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5), counted after the ")" of the name
        with open("/proc/stat", encoding="ascii") as f:
            boot_s = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot_s + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def pid_alive(pid: int) -> bool:
    """True unless process ``pid`` of this host is gone (zombies count as gone)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate it on Windows: trust the heartbeat only
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True

"""Claim files: several workers sharing one output folder split the videos between them.

Before extracting a video, a worker creates ``.<output name>.lock`` next to the
output file with ``O_CREAT | O_EXCL`` (atomic on local disks and NFS), holding
its host, pid and a random token as JSON. Only one worker can create it; the
others skip that video and come back to it at the end. While the video is
processed, a heartbeat thread refreshes the file's mtime.

A claim is *stale*, and may be taken over, when its mtime is older than
``stale_s`` seconds, or at once when its owner ran on this host (same host name
and pid namespace) and that process no longer exists (``kill -9``, OOM kill).

When a video fails, the worker leaves ``.<output name>.failed`` (JSON with the
reason) before dropping its claim, so that workers of the same run do not try
the same broken file again; it is honoured only by workers that started before
it was written, so running the command again retries every failure.

Claims only avoid duplicate work: outputs are written atomically, so even two
workers extracting the same video at once (a claim taken over from a worker
that was paused longer than ``stale_s``) cannot corrupt a file.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from r21d_features.utils.outputs.atomic import atomic_write
from r21d_features.utils.core.processes import host_id, pid_alive, process_start_time
from r21d_features.utils.core.safe_fs import hidden_path, read_small

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
FAILED_SUFFIX = ".failed"
BREAK_SUFFIX = ".break"  # held by the one worker removing a stale claim
BREAK_GUARD_STALE_S = 30.0
# Heartbeats at least this often (seconds), and 4 per stale_s: even with NFS attribute
# caching (up to 60 s by default) a live claim never looks stale to another host.
MAX_HEARTBEAT_S = 30.0
MAX_POLL_S = 5.0


@dataclass(frozen=True)
class ClaimOwner:
    """Who holds (or held) a claim, as written in its file."""

    host: str
    pid: int
    token: str = ""
    reason: str = ""

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host.split('/')[0]}"


def _parse_owner(raw: bytes) -> ClaimOwner | None:
    """The owner recorded in the content of a claim or failure file (None if half-written or foreign)."""
    try:
        data = json.loads(raw.decode("utf-8"))
        return ClaimOwner(str(data["host"]), int(data["pid"]), str(data.get("token", "")),
                          str(data.get("reason", "")))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def _read_owner(path: Path) -> tuple[ClaimOwner | None, bytes]:
    """The owner recorded in a claim or failure file, and its content."""
    raw = read_small(path)  # a planted symlink to a device or a huge file is never read
    return _parse_owner(raw), raw


class ClaimBook:
    """Claims of one worker over the videos of one output folder.

    ``output_for(video_path)`` gives the output file a video's claim sits next
    to. Use as a context manager (or call :meth:`close`): leaving releases every
    claim still held and stops the heartbeat.
    """

    def __init__(
        self,
        output_for: Callable[[str], Path],
        stale_s: float = 300.0,
        started_at: float | None = None,
    ) -> None:
        if not stale_s > 0:
            raise ValueError(f"lock_stale_s={stale_s} is invalid: it must be > 0 seconds")
        self.output_for = output_for
        self.stale_s = float(stale_s)
        self.heartbeat_s = min(MAX_HEARTBEAT_S, self.stale_s / 4)
        self.poll_s = min(MAX_POLL_S, self.stale_s / 4)  # longest pause between looks at others' claims
        self.started_at = process_start_time() if started_at is None else started_at
        self.host = host_id()
        self.pid = os.getpid()
        self._held: dict[str, tuple[Path, bytes]] = {}  # video path -> (lock file, its content)
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # ------------------------------------------------------------------ file names
    def lock_path(self, video_path: str) -> Path:
        return hidden_path(self.output_for(video_path), LOCK_SUFFIX)

    def failed_path(self, video_path: str) -> Path:
        return hidden_path(self.output_for(video_path), FAILED_SUFFIX)

    # ------------------------------------------------------------------ claiming
    def try_claim(self, video_path: str) -> ClaimOwner | None:
        """Claim ``video_path``: None when this worker now holds it, else the current holder.

        A stale claim is taken over. Raises OSError when the folder cannot hold
        claim files at all (read-only, full disk).
        """
        lock = self.lock_path(video_path)
        for _ in range(3):  # a claim that vanishes or is broken between our steps: look again
            content = self._new_content()
            try:
                self._create(lock, content)
            except FileExistsError:
                pass
            except FileNotFoundError:  # no output folder yet
                lock.parent.mkdir(parents=True, exist_ok=True)
                continue
            else:
                with self._mutex:
                    self._held[video_path] = (lock, content)
                self._start_heartbeat()
                return None
            try:
                owner, raw, age_s = self._look(lock)
            except FileNotFoundError:
                continue  # released meanwhile: try to create it again
            if not self._is_stale(owner, age_s):
                return owner or ClaimOwner(host="?", pid=-1)
            why = "its owner has exited" if age_s <= self.stale_s else f"not refreshed for {age_s:.0f} s"
            if self._take_over(lock, raw, content):
                log.info("taking over the stale claim on %s (%s)", video_path, why)
                with self._mutex:
                    self._held[video_path] = (lock, content)
                self._start_heartbeat()
                return None
        return ClaimOwner(host="?", pid=-1)

    # The file operations below are all a claim needs; ObjectClaimBook makes them on an object store.
    def _look(self, lock: Path) -> tuple[ClaimOwner | None, bytes, float]:
        """The owner and content of the claim ``lock`` and its age (seconds since its last
        refresh); FileNotFoundError when there is none."""
        owner, raw = _read_owner(lock)
        return owner, raw, time.time() - lock.stat().st_mtime

    def _take_over(self, lock: Path, seen: bytes, content: bytes) -> bool:
        """Replace the stale claim ``lock`` whose content was ``seen`` by ours (``content``);
        False when another worker got there first."""
        if not self._break(lock, seen):
            return False
        try:
            self._create(lock, content)
        except (FileExistsError, FileNotFoundError):
            return False
        return True

    def _new_content(self) -> bytes:
        record = {"host": self.host, "pid": self.pid, "token": uuid.uuid4().hex,
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        return json.dumps(record).encode("utf-8")

    @staticmethod
    def _create(lock: Path, content: bytes) -> None:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, content)
        except BaseException:
            os.close(fd)
            lock.unlink(missing_ok=True)
            raise
        os.close(fd)

    def _is_stale(self, owner: ClaimOwner | None, age_s: float) -> bool:
        if age_s > self.stale_s:
            return True
        if owner is None:  # being written right now, or not ours: trust its age only
            return False
        return owner.host == self.host and owner.pid != self.pid and not pid_alive(owner.pid)

    def _break(self, lock: Path, seen: bytes) -> bool:
        """Remove the stale claim ``lock`` whose content was ``seen``; False if that is not safe now.

        Breakers first take ``<lock>.break`` (O_EXCL), so at most one removes a claim at a
        time, and it removes the claim only after re-reading the very content it judged
        stale. Nobody else can replace a claim file that exists (creators use O_EXCL), so
        a fresh claim is never removed and no two workers end up holding one video.
        """
        guard = lock.with_name(f"{lock.name}{BREAK_SUFFIX}")
        try:
            self._create(guard, self._new_content())
        except FileExistsError:
            try:  # a breaker killed inside this window of microseconds would block the video forever
                if time.time() - guard.stat().st_mtime > BREAK_GUARD_STALE_S:
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return False
        try:
            if read_small(lock) != seen:
                return False
            lock.unlink()
            return True
        except FileNotFoundError:
            return False
        finally:
            guard.unlink(missing_ok=True)

    def drop_stale(self, video_path: str) -> None:
        """Remove a stale claim on a video this worker will not extract (already done): what a
        worker killed between saving and releasing left. A live claim is left alone."""
        try:
            if self._exists(self.lock_path(video_path)) and self.try_claim(video_path) is None:
                self.release(video_path)
        except OSError:
            pass

    # ------------------------------------------------------------------ failures of the same run
    def failed_elsewhere(self, video_path: str) -> ClaimOwner | None:
        """The worker that recorded a failure of ``video_path`` since this worker started, if any."""
        marker = self.failed_path(video_path)
        try:
            owner, _, age_s = self._look(marker)
        except FileNotFoundError:
            return None
        if time.time() - age_s < self.started_at:
            return None
        if owner is None or (owner.host == self.host and owner.pid == self.pid):
            return None
        return owner

    def record_failure(self, video_path: str, reason: str) -> None:
        """Tell the other workers of this run that ``video_path`` failed (call before :meth:`release`)."""
        record = {"host": self.host, "pid": self.pid, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            self._write_marker(self.failed_path(video_path), json.dumps(record).encode("utf-8"))
        except OSError as exc:  # full disk or read-only folder: the others will just try it too
            log.debug("cannot record the failure of %s: %s", video_path, exc)

    def clear_failure(self, video_path: str) -> None:
        """Forget an earlier failure of ``video_path`` (it has just succeeded)."""
        try:
            self._remove(self.failed_path(video_path))
        except OSError as exc:
            log.debug("cannot remove the failure record of %s: %s", video_path, exc)

    # ------------------------------------------------------------------ releasing
    def release(self, video_path: str) -> None:
        """Drop the claim on ``video_path`` (nothing happens if this worker does not hold it)."""
        with self._mutex:
            held = self._held.pop(video_path, None)
        if held is not None:
            self._unlink_if_ours(*held)

    def release_all(self) -> None:
        with self._mutex:
            held, self._held = list(self._held.values()), {}
        for lock, content in held:
            self._unlink_if_ours(lock, content)

    @staticmethod
    def _exists(path: Path) -> bool:
        return os.path.lexists(path)

    @staticmethod
    def _write_marker(path: Path, content: bytes) -> None:
        atomic_write(path, lambda f: f.write(content))

    @staticmethod
    def _remove(path: Path) -> None:
        path.unlink(missing_ok=True)

    def _refresh(self, lock: Path, content: bytes) -> None:
        """Tell the others the claim ``lock`` is alive; FileNotFoundError when it is no longer ours."""
        if read_small(lock) != content:
            raise FileNotFoundError(errno.ENOENT, "replaced")
        os.utime(lock)

    @staticmethod
    def _unlink_if_ours(lock: Path, content: bytes) -> None:
        try:
            if read_small(lock) == content:
                lock.unlink()
        except OSError:
            pass  # already gone, or taken over by another worker

    def close(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        self.release_all()

    def __enter__(self) -> "ClaimBook":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ heartbeat
    def _start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)
            self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._mutex:
                held = list(self._held.items())
            for video_path, (lock, content) in held:
                try:
                    self._refresh(lock, content)
                except FileNotFoundError:
                    log.warning("the claim on %s was taken over by another worker (was this one paused "
                                "longer than lock_stale_s?); both may extract it, the output stays valid",
                                video_path)
                    with self._mutex:
                        self._held.pop(video_path, None)
                except OSError as exc:
                    log.debug("cannot refresh %s: %s", lock, exc)

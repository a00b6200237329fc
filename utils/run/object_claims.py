"""Claims on an object store: workers sharing one ``s3://`` output prefix split the videos.

The same rules as claim files in a folder (:mod:`utils.run.claims`), made with the store's
conditional writes instead of ``O_EXCL`` and ``mtime``:

- **claim**: PUT ``.<output name>.lock`` with ``If-None-Match: *``; the store accepts
  exactly one of several concurrent PUTs of the key, the others get 412 (taken);
- **heartbeat**: PUT the same content with ``If-Match: <our ETag>``, which renews its
  ``LastModified``; a 412 means another worker took it over;
- **stale**: ``LastModified`` older than ``lock_stale_s`` plus one second (it is given to
  the second; the store's clock against ours: keep hosts on NTP, well within
  ``lock_stale_s``), or at once when its owner was a process of this host that no longer exists;
- **take-over**: PUT our claim with ``If-Match: <the ETag judged stale>``: of several workers
  taking over one stale claim, one wins, and a claim refreshed meanwhile is never replaced;
- **release**: DELETE after reading our own content back (a claim taken over meanwhile,
  only possible after a pause longer than ``lock_stale_s``, is left alone; outputs are
  whole objects, so even a duplicate extraction cannot corrupt one).

Failure marks (``.<output name>.failed``) are plain objects, honoured by workers that
started before their ``LastModified``.
"""

from __future__ import annotations

import errno
import threading
import time
from typing import Callable

from r21d_features.utils.core.object_store import ChangedMeanwhile, ObjectPath, ObjectStoreError, store_of
from r21d_features.utils.core.safe_fs import READ_SMALL_MAX_BYTES
from r21d_features.utils.outputs.storage import storage_of
from r21d_features.utils.run.claims import ClaimBook, ClaimOwner, _parse_owner


MTIME_RESOLUTION_S = 1.0  # S3 gives LastModified to the second


class ObjectClaimBook(ClaimBook):
    """Claims of one worker over the videos of one object-store output prefix."""

    def __init__(self, output_for: Callable[[str], ObjectPath], stale_s: float = 300.0,
                 started_at: float | None = None) -> None:
        super().__init__(output_for, stale_s=stale_s, started_at=started_at)
        self._etags: dict[str, str] = {}  # claim URL -> the ETag of our last write, or of what we judged stale
        self._etag_lock = threading.Lock()

    def _remember(self, lock: ObjectPath, etag: str) -> None:
        with self._etag_lock:
            self._etags[str(lock)] = etag

    def _etag(self, lock: ObjectPath) -> str:
        with self._etag_lock:
            return self._etags.get(str(lock), "")

    def _create(self, lock: ObjectPath, content: bytes) -> None:
        self._remember(lock, store_of(lock).put(lock, content, if_absent=True))

    def _look(self, lock: ObjectPath) -> tuple[ClaimOwner | None, bytes, float]:
        store = store_of(lock)
        info = store.info(lock, check_bucket=False)
        if info is None:
            raise FileNotFoundError(errno.ENOENT, "no claim", str(lock))
        raw = store.read_bytes(lock, READ_SMALL_MAX_BYTES)
        self._remember(lock, info.etag)
        # LastModified may be given in whole seconds: a claim is judged by its youngest possible age.
        return _parse_owner(raw), raw, time.time() - info.mtime - MTIME_RESOLUTION_S

    def _take_over(self, lock: ObjectPath, seen: bytes, content: bytes) -> bool:
        try:
            self._remember(lock, store_of(lock).put(lock, content, if_match=self._etag(lock)))
        except (ChangedMeanwhile, FileExistsError, FileNotFoundError):
            return False
        return True

    def _refresh(self, lock: ObjectPath, content: bytes) -> None:
        try:
            self._remember(lock, store_of(lock).put(lock, content, if_match=self._etag(lock)))
        except (ChangedMeanwhile, FileNotFoundError):
            raise FileNotFoundError(errno.ENOENT, "taken over", str(lock)) from None
        except ObjectStoreError as exc:  # unreachable for a moment: the next beat tries again
            raise OSError(errno.EIO, str(exc)) from None

    @staticmethod
    def _exists(path: ObjectPath) -> bool:
        return storage_of(path).exists(path)  # from the folder's listing while one is taken

    @staticmethod
    def _write_marker(path: ObjectPath, content: bytes) -> None:
        try:
            store_of(path).put(path, content)
        except ObjectStoreError as exc:
            raise OSError(errno.EIO, str(exc)) from None

    @staticmethod
    def _remove(path: ObjectPath) -> None:
        try:
            store_of(path).remove(path)
        except ObjectStoreError as exc:
            raise OSError(errno.EIO, str(exc)) from None

    @staticmethod
    def _unlink_if_ours(lock: ObjectPath, content: bytes) -> None:
        store = store_of(lock)
        try:
            if store.read_bytes(lock, READ_SMALL_MAX_BYTES) == content:
                store.remove(lock)
        except Exception:  # noqa: BLE001 (already gone, taken over, or the store is unreachable)
            pass


def claim_book_for(folder: object, output_for: Callable[[str], object], stale_s: float) -> ClaimBook:
    """The claims of a run writing under ``folder``: claim objects in a store, claim files in a folder."""
    if isinstance(folder, ObjectPath):
        return ObjectClaimBook(output_for, stale_s=stale_s)
    return ClaimBook(output_for, stale_s=stale_s)

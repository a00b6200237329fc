"""Object stores (``s3://``, ``gs://``, ``az://``): names, paths and the few calls we make, through fsspec.

Only these schemes are URLs: ``s3://bucket/key`` (s3fs), ``gs://`` or ``gcs://`` (gcsfs), and
``az://``, ``abfs://`` or ``abfss://`` (adlfs). Any other name is a local path, ``odd:name.mp4``
and ``concat:a|b`` included; ``http(s)://`` is refused with one line (:func:`name_problem`).

An object's path is an :class:`ObjectPath`: a pure path whose first part is the scheme, so keys
join and split as local paths do, while any attempt to open one as a local file fails at once
(``os.fspath`` raises): nothing like a local folder ``s3:`` can be made by mistake. :class:`ObjectStore` holds the store's fsspec filesystem and makes every call
(looking at an object, ranged reads, a signed URL for ffmpeg), each error turned into one line
naming the bucket or key and the fix. Videos and lists are read from every store; outputs are
written to S3 (and S3-compatible stores), whose conditional writes (``If-None-Match``,
``If-Match``) let workers share one prefix (:data:`WRITABLE_SCHEMES`).

Credentials come from each store's own chain (environment, config files, instance roles;
``AWS_ENDPOINT_URL`` and ``AWS_PROFILE`` for S3-compatible stores). :func:`set_storage_options`
adds what the chain cannot express; those options are handed to fsspec and never printed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import threading
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath
from typing import Any, BinaryIO, Mapping

from r21d_features.utils.core.errors import SettingsError, UserError
from r21d_features.utils.core.shard_names import MemberName

# scheme -> (fsspec protocol, the package that implements it, the extra that installs it)
SCHEMES: dict[str, tuple[str, str, str]] = {
    "s3": ("s3", "s3fs", "s3"),
    "gs": ("gcs", "gcsfs", "gcs"),
    "gcs": ("gcs", "gcsfs", "gcs"),
    "az": ("abfs", "adlfs", "azure"),
    "abfs": ("abfs", "adlfs", "azure"),
    "abfss": ("abfs", "adlfs", "azure"),
}
REFUSED_SCHEMES = ("http", "https")
# Stores outputs can be written to: every object in one request, and the conditional writes that
# claims and the run report rely on (create only if absent, replace only if unchanged).
WRITABLE_SCHEMES = ("s3",)
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
READ_BLOCK_BYTES = 8 << 20  # one ranged GET per 8 MiB read: few requests, memory flat in video length


class ObjectStoreError(UserError):
    """An object store call failed; the message names the bucket or key and what to do."""


class ChangedMeanwhile(Exception):
    """A conditional write found the object changed (or created) since it was last looked at."""


def url_scheme(name: str | PurePath) -> str | None:
    """The object-store scheme of ``name`` (``"s3"``, ``"gs"``, ...), or None for a local path."""
    if isinstance(name, ObjectPath):
        return name.scheme
    if not isinstance(name, str) or "://" not in name:  # most names: a local path, no regex needed
        return None
    m = _URL.match(name)
    scheme = m.group(1).lower() if m else None
    return scheme if scheme in SCHEMES else None


def is_object_url(name: Any) -> bool:
    """True when ``name`` is an object-store URL (or an :class:`ObjectPath`)."""
    return url_scheme(name) is not None


def refused_scheme(name: Any) -> str | None:
    """``"http"`` or ``"https"`` when ``name`` is such a URL (never read), else None."""
    m = _URL.match(name) if isinstance(name, str) and "://" in name else None
    return m.group(1).lower() if m and m.group(1).lower() in REFUSED_SCHEMES else None


def name_problem(name: str) -> str | None:
    """Why ``name`` can never be an input, decided from the name alone (one line), or None."""
    scheme = refused_scheme(name)
    if scheme is not None:
        return (f"{scheme}:// inputs are not read; download the video first, or put it in an object "
                "store (s3://, gs://, az://)")
    if is_object_url(name):
        bucket, key = split_url(name)
        if not bucket or not key or name.endswith("/"):
            return "the URL names a bucket or a folder, not an object; give the key of one video file"
        return key_problem(name)
    return None


def key_problem(url: str) -> str | None:
    """Why ``url``'s key cannot be used as a path (an empty, ``.`` or ``..`` part), or None."""
    _, key = split_url(url)
    if any(part in ("", ".", "..") for part in key.rstrip("/").split("/")) and key.rstrip("/"):
        return (f"the key of {url!r} has an empty, '.' or '..' part, which object paths cannot name "
                "faithfully; rename the object")
    if "\x00" in url:
        return "the URL holds a NUL byte; fix this line of the list"
    return None


def split_url(url: str) -> tuple[str, str]:
    """``("bucket", "a/b.mp4")`` of ``"s3://bucket/a/b.mp4"``."""
    rest = url.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    return bucket, key


class ObjectPath(PurePosixPath):
    """A key in an object store as a path: ``ObjectPath.from_url("s3://b/out") / "r21d" / "x.npy"``.

    ``str()`` gives the URL back; ``os.fspath()`` raises, so no local file call can take it.
    """

    @classmethod
    def from_url(cls, url: str) -> "ObjectPath":
        scheme = url_scheme(url)
        if scheme is None:
            raise ValueError(f"{url!r} is not an object-store URL")
        bucket, key = split_url(url)
        return cls(f"{scheme}:", bucket, *[part for part in key.split("/") if part])

    @property
    def scheme(self) -> str:
        return self.parts[0][:-1]

    @property
    def bucket(self) -> str:
        return self.parts[1] if len(self.parts) > 1 else ""

    @property
    def key(self) -> str:
        """``bucket/key``, the path fsspec takes."""
        return "/".join(self.parts[1:])

    def __str__(self) -> str:
        return f"{self.scheme}://{self.key}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __fspath__(self) -> str:
        raise TypeError(f"{self} is an object-store key, not a local file")


def absolute_name(name: str) -> str:
    """``name`` as workers in another directory can use it: an object URL as it is, a local path
    made absolute (a shard member's shard)."""
    member = MemberName.parse(name)
    if member is not None:
        return str(dataclasses.replace(member, shard=absolute_name(member.shard)))
    return name if is_object_url(name) else os.path.abspath(name)


# How long a signed URL handed to ffmpeg (extraction_fps of an object) stays valid.
SIGNED_URL_S = 6 * 3600

# ---------------------------------------------------------------------- options and filesystems
_options: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()
_stores: dict[str, "ObjectStore"] = {}


def set_storage_options(options: Mapping[str, Any] | None) -> None:
    """Extra fsspec options for every store: ``{"s3": {...}, "gs": {...}}``, or one flat mapping
    used for every scheme (None: only each store's own credential chain)."""
    options = dict(options or {})
    per_scheme = {k: dict(v) for k, v in options.items() if k in SCHEMES and isinstance(v, Mapping)}
    flat = {k: v for k, v in options.items() if k not in per_scheme}
    with _lock:
        _options.clear()
        for scheme in SCHEMES:
            _options[scheme] = {**flat, **per_scheme.get(scheme, {})}
        _stores.clear()


def storage_options() -> dict[str, dict[str, Any]]:
    """The options :func:`set_storage_options` gave, per scheme (for workers in other processes)."""
    with _lock:
        return {k: dict(v) for k, v in _options.items() if v}


def require_extra(scheme: str) -> None:
    """Raise :class:`SettingsError` (one line naming the extra) when ``scheme``'s package is missing."""
    _, package, extra = SCHEMES[scheme]
    for module in ("fsspec", package):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # blocked, or a module without a spec
            found = False
        if not found:
            raise SettingsError(f"{scheme}:// needs {package}: pip install \".[{extra}]\" (or pip install {package})")


def store_for(scheme: str) -> "ObjectStore":
    """The (shared, thread-safe) store of ``scheme``."""
    with _lock:
        store = _stores.get(scheme)
        if store is None:
            require_extra(scheme)
            import fsspec  # noqa: PLC0415 (only when an object store is used)

            protocol = SCHEMES[scheme][0]
            options = dict(_options.get(scheme, {}))
            if protocol == "s3":
                options.setdefault("use_listings_cache", False)  # objects change under a long run
            # Our own cache, not fsspec's: its instances keep the endpoint and credentials of the
            # environment they were first made in.
            options["skip_instance_cache"] = True
            store = _stores[scheme] = ObjectStore(scheme, fsspec.filesystem(protocol, **options))
        return store


def store_of(path: ObjectPath) -> "ObjectStore":
    return store_for(path.scheme)


# ---------------------------------------------------------------------- errors
def _bucket_fix(scheme: str) -> str:
    if scheme == "s3":
        return ("check the bucket name, AWS_PROFILE / AWS_ACCESS_KEY_ID, and AWS_ENDPOINT_URL for an "
                "S3-compatible store")
    if scheme in ("gs", "gcs"):
        return "check the bucket name and GOOGLE_APPLICATION_CREDENTIALS (or gcloud auth application-default login)"
    return "check the container name and AZURE_STORAGE_ACCOUNT_NAME with its key, SAS token or az login"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    is_dir: bool
    etag: str = ""  # changes with every write (the token of a conditional write)
    mtime: float = 0.0  # the store's time of the last write (seconds since the epoch)


def _info_of(data: Mapping[str, Any]) -> ObjectInfo:
    modified = data.get("LastModified") or data.get("mtime") or data.get("last_modified")
    mtime = modified.timestamp() if hasattr(modified, "timestamp") else float(modified or 0.0)
    return ObjectInfo(size=int(data.get("size") or 0), is_dir=data.get("type") == "directory",
                      etag=str(data.get("ETag") or data.get("etag") or ""), mtime=mtime)


def _precondition_failed(exc: BaseException) -> bool:
    """True when a conditional write was refused (412, or S3's 409 for a concurrent conditional write)."""
    response = getattr(exc.__cause__, "response", None) or getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", "")) if isinstance(response, Mapping) else ""
    return (code in ("PreconditionFailed", "ConditionalRequestConflict")
            or "pre-condition" in str(exc) or "PreconditionFailed" in str(exc))


class ObjectStore:
    """One scheme's fsspec filesystem and the calls the product makes on it."""

    def __init__(self, scheme: str, fs: Any) -> None:
        self.scheme = scheme
        self.fs = fs

    # ------------------------------------------------------------------ errors
    def error(self, exc: BaseException, path: ObjectPath, doing: str) -> ObjectStoreError:
        """``exc`` of a call on ``path`` as one line: missing key, missing bucket, denied, unreachable."""
        where = f"{self.scheme}://{path.bucket}"
        if isinstance(exc, PermissionError):
            return ObjectStoreError(f"access denied to {where} while {doing} {path} ({_one_line(exc)}); "
                                    f"{_bucket_fix(self.scheme)}")
        if isinstance(exc, FileNotFoundError):
            return self._no_bucket(path) if not self.bucket_exists(path) else ObjectStoreError(f"object not found: {path}")
        return ObjectStoreError(f"cannot reach {where} while {doing} {path} ({type(exc).__name__}: "
                                f"{_one_line(exc)}); check the network and the store's endpoint")

    def _no_bucket(self, path: ObjectPath) -> ObjectStoreError:
        return ObjectStoreError(f"bucket {self.scheme}://{path.bucket} does not exist or cannot be listed; "
                                f"{_bucket_fix(self.scheme)}")

    def bucket_exists(self, path: ObjectPath) -> bool:
        try:
            return bool(self.fs.exists(path.bucket))
        except Exception:  # noqa: BLE001 (denied or unreachable: not known to exist)
            return False

    # ------------------------------------------------------------------ reads
    def info(self, path: ObjectPath, check_bucket: bool = True) -> ObjectInfo | None:
        """Size and kind of ``path``; None when there is no such object (``check_bucket``: and
        :class:`ObjectStoreError` when its bucket is missing; a run writing outputs checked it once)."""
        try:
            self.fs.invalidate_cache(path.key)
            data = self.fs.info(path.key)
        except FileNotFoundError:
            if check_bucket and not self.bucket_exists(path):
                raise self._no_bucket(path) from None
            return None
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, path, "looking at") from None
        return _info_of(data)

    def listing(self, folder: ObjectPath) -> dict[str, ObjectInfo]:
        """Every object under ``folder``, by URL (one paged listing; {} when there is none)."""
        try:
            found = self.fs.find(folder.key, detail=True)
        except FileNotFoundError:
            return {}
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, folder, "listing") from None
        return {f"{self.scheme}://{key}": _info_of(data) for key, data in found.items()
                if data.get("type") != "directory"}

    def open_read(self, path: ObjectPath) -> BinaryIO:
        """A seekable file object reading ``path`` by ranged requests (8 MiB at a time)."""
        try:
            return self.fs.open(path.key, "rb", block_size=READ_BLOCK_BYTES, cache_type="readahead")
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, path, "opening") from None

    def read_bytes(self, path: ObjectPath, max_bytes: int | None = None) -> bytes:
        """The object (its first ``max_bytes``); FileNotFoundError when it does not exist."""
        try:
            if max_bytes is None:
                return self.fs.cat_file(path.key)
            return self.fs.cat_file(path.key, start=0, end=max_bytes)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, path, "reading") from None

    # ------------------------------------------------------------------ writes (WRITABLE_SCHEMES)
    def put(self, path: ObjectPath, data: bytes, if_absent: bool = False, if_match: str | None = None) -> str:
        """Write ``data`` as the whole object ``path`` in one request; its new ETag.

        ``if_absent``: only when no object has that key (else FileExistsError); ``if_match``: only
        when the object's ETag is still that one (else :class:`ChangedMeanwhile`).
        """
        extra: dict[str, Any] = {} if if_match is None else {"IfMatch": if_match}
        try:
            out = self.fs.pipe_file(path.key, data, mode="create" if if_absent else "overwrite", **extra)
        except FileExistsError:
            raise
        except Exception as exc:  # noqa: BLE001
            if _precondition_failed(exc):
                if if_absent:
                    raise FileExistsError(str(path)) from None
                raise ChangedMeanwhile(str(path)) from None
            raise self.error(exc, path, "writing") from None
        return str((out or {}).get("ETag", "")) if isinstance(out, Mapping) else ""

    def remove(self, path: ObjectPath) -> None:
        """Delete the object ``path`` (nothing happens when it does not exist)."""
        try:
            self.fs.rm_file(path.key)
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, path, "deleting") from None

    def sign(self, path: ObjectPath, expiration_s: int) -> str:
        """A URL any HTTP client (ffmpeg) can read ``path`` from, valid for ``expiration_s``."""
        try:
            return self.fs.sign(path.key, expiration=expiration_s)
        except NotImplementedError:
            raise ObjectStoreError(f"{self.scheme}:// cannot give ffmpeg a signed URL; set extraction_fps=null") from None
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, path, "signing") from None

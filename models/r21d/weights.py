"""Where a flavour's weights come from: a local file, the torch hub cache, or a download.

Resolution order:

1. ``checkpoint_path`` given: that file, nothing else.
2. ``$TORCH_HOME/hub/checkpoints/<upstream file name>`` when present and its
   SHA-256 starts with the record's prefix.
3. Download from the upstream URL into that cache with torch.hub's hash check.

Checkpoints are always loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

from r21d_features.utils.core.errors import SettingsError

from .zoo import ModelRecord

log = logging.getLogger(__name__)


class WeightsUnavailableError(SettingsError):
    """The weights cannot be found or fetched; the message says where to put them."""


def hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch.hub's cache, honouring TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_checkpoint(record: ModelRecord, checkpoint_path: str | os.PathLike | None = None) -> Path:
    """Local path of the weights for ``record``, downloading them if needed."""
    if checkpoint_path is not None:
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"checkpoint_path={os.fspath(checkpoint_path)!r} is not a file; give the path of a "
                f"{record.file_name} state dict, or leave checkpoint_path unset to use the torch hub cache"
            )
        return path

    cached = hub_checkpoint_dir() / record.file_name
    if cached.is_file():
        digest = sha256_of(cached)
        if digest.startswith(record.sha256_prefix):
            return cached
        raise WeightsUnavailableError(
            f"cached weights {cached} are corrupt or not the upstream file (sha256 {digest[:8]}..., "
            f"expected {record.sha256_prefix}...); delete it to download again from {record.url}"
        )

    cached.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", record.url, cached)
    try:
        # Writes to a temporary file, checks the SHA-256 prefix, then moves it into place.
        torch.hub.download_url_to_file(record.url, os.fspath(cached), hash_prefix=record.sha256_prefix, progress=True)
    except RuntimeError as exc:  # torch.hub's hash mismatch
        raise WeightsUnavailableError(
            f"downloaded {record.file_name} from {record.url} failed the hash check ({exc}); "
            "nothing was saved, try again or fetch the file by hand"
        ) from None
    except OSError as exc:  # URLError, HTTPError, socket errors: offline, proxy, 404
        raise WeightsUnavailableError(
            f"weights {record.file_name} are not cached and could not be downloaded from {record.url} "
            f"({exc}); on an offline machine copy that file to {cached} "
            "(or set TORCH_HOME, or pass checkpoint_path=/path/to/the/file)"
        ) from None
    return cached


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file; never unpickles arbitrary objects."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, wrong format
        raise WeightsUnavailableError(f"cannot load weights file {path}: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state

"""ffmpeg calls: finding the binary and re-encoding a video to another frame rate.

Every call is an argument list, never a shell string, so paths with spaces,
quotes or leading dashes are passed through untouched. Every ffmpeg is a child
that dies with the run (:func:`utils.run.signals.spawn`) and has a time limit
(``video_timeout_s``, else :data:`DEFAULT_TIMEOUT_S`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
import tempfile
import time
import zlib
from pathlib import Path

from r21d_features.utils.core.processes import pid_alive
from r21d_features.utils.core.errors import SettingsError, VideoError
from r21d_features.utils.core.safe_fs import bounded_name, input_problem
from r21d_features.utils.core.shard_names import name_stem
from r21d_features.utils.core.processes import forget, spawn

# A re-encode still running after this long is stuck (e.g. on a file that never ends);
# video_timeout_s replaces it when set.
DEFAULT_TIMEOUT_S = 3600.0
PARTIAL_SUFFIX = ".partial"
# Partial folders of another host cannot be checked by pid: removed once this old.
FOREIGN_PARTIAL_STALE_S = 24 * 3600.0


class FFmpegError(VideoError):
    """ffmpeg failed on one video; the message is one line for the user."""


class FFmpegNotFoundError(SettingsError):
    """No ffmpeg binary: re-encoding (``extraction_fps``) is impossible."""


def find_ffmpeg() -> str:
    """Path of an ffmpeg binary: ``$PATH`` first, else the one ``imageio-ffmpeg`` ships."""
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg
    except ImportError:
        imageio_ffmpeg = None
    if imageio_ffmpeg is not None:
        try:
            return imageio_ffmpeg.get_ffmpeg_exe()
        except RuntimeError:
            pass
    raise FFmpegNotFoundError(
        "ffmpeg not found: install it (apt install ffmpeg / conda install ffmpeg) "
        "or `pip install imageio-ffmpeg`, which ships a binary"
    )


def reencoded_path(tmp_dir: str | os.PathLike, video_path: str | os.PathLike) -> Path:
    """``<tmp_dir>/<stem>_new_fps.mp4``, the file name the reference uses (shortened with a hash
    when it would pass the 255-byte limit of a name)."""
    return Path(tmp_dir) / bounded_name(f"{name_stem(os.fspath(video_path))}_new_fps.mp4")


def _host_tag() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


def sweep_partials(tmp_dir: str | os.PathLike) -> list[Path]:
    """Remove the partial re-encodes of runs that were killed (their process is gone).

    Each re-encode writes into its own folder ``.<host>-<pid>.<random>.partial``; one of
    this host whose process no longer exists, or one of another host a day old, is removed.
    """
    removed = []
    try:
        entries = list(Path(tmp_dir).glob(f".*{PARTIAL_SUFFIX}"))
    except OSError:
        return removed
    for folder in entries:
        try:
            host, pid = folder.name[1:].split(".", 1)[0].split("-", 1)
            if host == _host_tag():
                if pid_alive(int(pid)):
                    continue
            elif time.time() - folder.stat().st_mtime < FOREIGN_PARTIAL_STALE_S:
                continue
            shutil.rmtree(folder)
            removed.append(folder)
        except (ValueError, OSError):
            continue
    return removed


def private_reencoded_path(tmp_dir: str | os.PathLike, video_path: str | os.PathLike) -> Path:
    """A hidden name in ``tmp_dir`` that no other re-encode uses (this process, a random part)."""
    return Path(tmp_dir) / bounded_name(f".{name_stem(os.fspath(video_path))}_new_fps.{os.getpid()}.{uuid.uuid4().hex[:8]}.mp4")


def reencode_fps(
    video_path: str | os.PathLike,
    out_path: str | os.PathLike,
    fps: float,
    timeout_s: float | None = None,
    url: str | None = None,
) -> Path:
    """Re-encode ``video_path`` with ffmpeg's fps filter into ``out_path`` (mp4).

    Same filter as the reference (``-filter:v fps=fps=<fps>``) and ffmpeg's
    default auto-rotation. ffmpeg writes into a private folder of its own
    (``.<host>-<pid>.<random>.partial``, mode 0700, so no link planted in a shared
    ``tmp_path`` can redirect it), then the file is renamed into place: a killed
    run never leaves a half-written file under the final name, and the next run
    removes the partial folder (:func:`sweep_partials`). FIFOs, devices and
    sockets are refused before ffmpeg opens them. ``timeout_s`` (default
    :data:`DEFAULT_TIMEOUT_S`) bounds the re-encode.

    ``url``: ffmpeg reads the video from this URL instead (a signed URL of an object, read by
    ranged requests); ``video_path`` is then only its name, and the URL never appears in a message.
    """
    if url is None:
        problem = input_problem(os.fspath(video_path))
        if problem is not None:
            raise FFmpegError(problem)
    timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{_host_tag()}-{os.getpid()}.", suffix=PARTIAL_SUFFIX,
                                 dir=out_path.parent))
    partial = work / "video.mp4"
    # "file:" keeps a name that starts with "-" or holds ":" from being read as an option/protocol.
    cmd = [
        find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-i", url if url is not None else f"file:{os.fspath(video_path)}",
        "-filter:v", f"fps=fps={fps}",
        f"file:{os.fspath(partial)}",
    ]
    try:
        proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise FFmpegError(
                f"ffmpeg re-encode took longer than {timeout_s:g} s; raise video_timeout_s if the video is that long"
            ) from None
        finally:
            forget(proc)
        if proc.returncode != 0:
            text = stderr.decode("utf-8", "replace")
            if url is not None:  # a signed URL is a credential for a while: show the object's name
                text = text.replace(url, os.fspath(video_path)).replace(url.split("?", 1)[0], os.fspath(video_path))
            last = text.strip().splitlines()
            reason = last[-1] if last else f"exit status {proc.returncode}"
            raise FFmpegError(f"ffmpeg could not re-encode to {fps} fps: {reason}")
        os.replace(partial, out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_path

"""What the user reads on the console while a progress bar runs.

tqdm draws its bar on stderr by rewriting the current line. Anything else written to the
terminal meanwhile (log records, printed features, predictions) would land on that line, glued
to the bar. Here every such write first clears the bars, then writes and flushes, and tqdm
redraws the bars below (``tqdm.external_write_mode``, the mechanism behind ``tqdm.write`` and
``tqdm.contrib.logging``). Without a bar these are plain writes.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, TextIO

from tqdm import tqdm

from r21d_features.utils.core.shard_names import shown_name

LOG_FORMAT = "%(levelname)s: %(message)s"
# The object-store clients log request headers (signatures, key ids) and signed URLs at DEBUG
# and INFO: they stay at WARNING, debug=true included, so no credential reaches the console.
QUIET_LOGGERS = ("botocore", "aiobotocore", "boto3", "s3transfer", "s3fs", "fsspec", "urllib3", "aiohttp",
                 "gcsfs", "google", "adlfs", "azure")


class TqdmAwareHandler(logging.StreamHandler):
    """A ``StreamHandler`` (stderr by default) that clears tqdm bars around each record."""

    def emit(self, record: logging.LogRecord) -> None:
        with tqdm.external_write_mode(file=self.stream):
            super().emit(record)


def configure_logging(debug: bool = False, stream: TextIO | None = None) -> None:
    """Root logging for the command line: ``LEVEL: message`` on ``stream`` (stderr), INFO
    (DEBUG with ``debug``), written around the progress bar. Replaces handlers set up before."""
    handler = TqdmAwareHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler], force=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def command_logging(debug: bool = False, stream: TextIO | None = None) -> Iterator[None]:
    """:func:`configure_logging` for the length of one command, then the root logger as it was
    (a command run inside a Python process leaves that process's logging alone)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    configure_logging(debug, stream)
    try:
        yield
    finally:
        for name, old in quiet.items():
            logging.getLogger(name).setLevel(old)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def write_block(text: str, stream: TextIO, end: str = "\n") -> None:
    """Write ``text + end`` to ``stream`` in one piece, with the progress bars cleared, and flush."""
    with tqdm.external_write_mode(file=stream):
        stream.write(text + end)
        stream.flush()


def video_heading(what: str, video_path: str) -> str:
    """The first line of a printed block: which video it belongs to (``Features for a.mp4:``)."""
    return f"{what} for {shown_name(video_path)}:"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``"1 video"``, ``"2 videos"``, ``"0 videos"``; ``plural_form`` for irregular words."""
    return f"{count} {singular if count == 1 else plural_form or singular + 's'}"

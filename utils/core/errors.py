"""The one base class for problems the user can fix, and its two kinds.

Every error of ours that a user may see derives from :class:`UserError`: its
message is one line that names the bad value and what to do. The command line
decides what happens by type, never by message or module:

- :class:`SettingsError` (bad settings, missing weights or tools, an unusable
  list of inputs): reported before any video is touched, exit status 2;
- any other :class:`UserError` raised while a video is processed: that video's
  ``FAILED`` line, with the message as the reason, and the run goes on.

Anything else is a bug or an unexpected library error; per video it is
reported with its type name in front, so it stands out.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; ``str(error)`` is one line for them."""


class SettingsError(UserError, ValueError):
    """A setting (or what it points to) cannot be used; nothing has been done yet.

    Also a ``ValueError``, so code that checks values the Python way keeps working.
    """


class VideoError(UserError):
    """One video cannot be extracted (decode, re-encode, limits); the others go on."""


class VideoDecodeError(VideoError):
    """The file cannot be read as a video; the message is one line for the user."""


class DeviceFailure(UserError):
    """The device cannot go on (a CUDA error that poisons the context, such as an illegal memory
    access, or no kernel image for this GPU): the run stops at once, with this one line, and no
    video is marked failed, since none of them is at fault. Running the same command again
    resumes (in a fresh process, on a working device)."""

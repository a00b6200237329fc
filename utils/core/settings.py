"""Typed settings: the helpers every part uses to declare its keys and to split the flat ones.

Each part of the program owns one frozen dataclass of the settings it reads
(the extractor's lives with the extractor, the run loop's and the Ray runner's in
:mod:`utils.run.settings`), checked in ``__post_init__``.
A field is a command-line key of the same name: its default and help text are
written once, in :func:`setting`, and the command line's schema and ``--help``
are generated from the fields.
"""

import dataclasses
import typing
from dataclasses import field
from typing import Any, Mapping, Optional, Protocol, Sequence

from r21d_features.utils.core.errors import SettingsError



def setting(default: Any, help: str) -> Any:  # noqa: A002 (the word users read in --help)
    """A dataclass field that is also a command-line key, with its ``--help`` text."""
    return field(default=default, metadata={"help": help})


def help_of(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def setting_fields(parts: Sequence[type]) -> list[tuple[dataclasses.Field, Any]]:
    """``(field, resolved type)`` of every key of ``parts``; a key declared twice is a bug."""
    out, owner = [], {}
    for part in parts:
        hints = typing.get_type_hints(part)
        for f in dataclasses.fields(part):
            if f.name in owner:
                raise TypeError(f"setting {f.name!r} is declared by both {owner[f.name]} and {part.__name__}")
            owner[f.name] = part.__name__
            out.append((f, hints[f.name]))
    return out


def split_settings(values: Mapping[str, Any], parts: Sequence[type]) -> list[Any]:
    """One instance of each of ``parts`` from the flat ``values`` (checked by each ``__post_init__``).

    A key that no part declares is refused with one line naming it.
    """
    names = [{f.name for f in dataclasses.fields(part)} for part in parts]
    unknown = sorted(set(values) - set().union(*names))
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]!r}: `python main.py --help` lists the keys")
    return [part(**{k: v for k, v in values.items() if k in keys}) for part, keys in zip(parts, names)]


class ExtractorSettings(Protocol):
    """What the runners read of an extractor's settings (a frozen dataclass of its own)."""

    model_name: str
    device: str
    decode_workers: Optional[int]
    show_pred: bool
    tmp_path: str
    checkpoint_path: Optional[str]

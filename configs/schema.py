"""The command line's typed schema: the settings dataclasses of every part, combined flat.

Each part owns its keys (defaults, types, checks and help text):
:class:`models.r21d.settings.R21DSettings` (the extractor),
:class:`utils.settings.RunSettings` (the run loop) and
:class:`utils.ray_runner.RaySettings` (``runner=ray``). This module only combines
them into one dataclass for Hydra's ConfigStore (``schema/<feature_type>``), so a
wrong key or type fails before any work, and generates ``--help`` from their
help texts. A new key is one field in the part that uses it.
"""

from __future__ import annotations

import dataclasses
import difflib
from hydra.core.config_store import ConfigStore

from models.r21d.settings import R21DSettings
from utils.ray_runner import RaySettings
from utils.settings import RunSettings, help_of, setting, setting_fields


@dataclasses.dataclass(frozen=True)
class _FeatureType:
    feature_type: str = setting("r21d", "r21d (the only type today)")


# feature_type -> the settings parts of its command line, in --help order.
PARTS: dict[str, tuple[type, ...]] = {
    "r21d": (_FeatureType, R21DSettings, RunSettings, RaySettings),
}


def schema_class(feature_type: str = "r21d") -> type:
    """One (mutable) dataclass with every key of ``feature_type``'s command line."""
    specs = []
    for f, hint in setting_fields(PARTS[feature_type]):
        specs.append((f.name, hint, dataclasses.field(default=f.default, metadata=f.metadata)))
    return dataclasses.make_dataclass(f"{feature_type.upper()}Config", specs)


R21DConfig = schema_class("r21d")
ALL_KEYS = tuple(f.name for f in dataclasses.fields(R21DConfig))

HELP_HEADER = """\
R(2+1)D video features: 512-d clip features from videos, like video_features' r21d.

Usage: python main.py feature_type=r21d video_paths="[a.mp4, b.mp4]" [key=value ...]
   or, after pip install: r21d-extract feature_type=r21d video_paths="[a.mp4, b.mp4]" [key=value ...]
"""


def help_footer(feature_type: str = "r21d") -> str:
    """``Keys`` section of ``--help``: every key with its default and help text."""
    lines = ['Keys (key=value; null means "unset"):']
    width = max(len(f.name) for f, _ in setting_fields(PARTS[feature_type]))
    for f, _ in setting_fields(PARTS[feature_type]):
        default = "null" if f.default is None else str(f.default).lower() if isinstance(f.default, bool) else f.default
        lines.append(f"  {f.name:<{width}}  {help_of(f)} [default: {default}]")
    lines += ["", "Print the resolved config: python main.py feature_type=r21d --cfg job"]
    return "\n".join(lines) + "\n"


def register_configs() -> None:
    store = ConfigStore.instance()
    store.store(group="schema", name="r21d", node=R21DConfig, package="_global_")
    store.store(group="hydra/help", name="r21d", node={
        "app_name": "r21d",
        "header": HELP_HEADER,
        "footer": help_footer("r21d"),
        "template": "${hydra.help.header}\n== Current config ==\n$CONFIG\n${hydra.help.footer}",
    })


def unknown_key_error(overrides: list[str]) -> str | None:
    """One line naming the first ``key=value`` override whose key the schema lacks, or None.

    Hydra refuses such keys too, but in a multi-line message without the allowed keys;
    this check runs first so the user gets one line with the closest key.
    """
    known = set(ALL_KEYS)
    for arg in overrides:
        if arg.startswith("-") or "=" not in arg:
            continue  # Hydra's own flags (--help, --cfg job, -m, ...)
        key = arg.split("=", 1)[0].lstrip("+~")  # +key=v would add a key the extractor does not take
        if key.split(".")[0].split("/")[0] == "hydra":
            continue
        top = key.split(".")[0]
        if top not in known:
            close = difflib.get_close_matches(top, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            return f"unknown key {top!r} in {arg!r}: {hint}`python main.py --help` lists the keys"
    return None


__all__ = ["ALL_KEYS", "R21DConfig", "help_footer", "register_configs", "schema_class", "unknown_key_error"]

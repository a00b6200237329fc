"""The command line's typed schema: the settings dataclasses of every part, combined flat.

Each part owns its keys (defaults, types, checks and help text):
:class:`models.r21d.settings.R21DSettings` (the extractor),
:class:`utils.run.settings.RunSettings` (the run loop) and
:class:`utils.run.settings.RaySettings` (``runner=ray``). This module only combines
them into one dataclass for Hydra's ConfigStore (``schema/<feature_type>``), so a
wrong key or type fails before any work, and generates ``--help`` from their
help texts. A new key is one field in the part that uses it.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from r21d_features.models.r21d.settings import R21DSettings
from r21d_features.utils.run.settings import RaySettings, RunSettings
from r21d_features.utils.core.settings import help_of, setting, setting_fields


@dataclasses.dataclass(frozen=True)
class _FeatureType:
    """Which extractor the command line builds."""

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


def _default_text(f: dataclasses.Field) -> str:
    """A key's default as a user writes it on the command line: ``null``, ``true``, ``16``."""
    return "null" if f.default is None else str(f.default).lower() if isinstance(f.default, bool) else str(f.default)


def help_footer(feature_type: str = "r21d") -> str:
    """``Keys`` section of ``--help``: every key with its default and help text."""
    lines = ['Keys (key=value; null means "unset"):']
    width = max(len(f.name) for f, _ in setting_fields(PARTS[feature_type]))
    for f, _ in setting_fields(PARTS[feature_type]):
        lines.append(f"  {f.name:<{width}}  {help_of(f)} [default: {_default_text(f)}]")
    lines += ["", "Print the resolved config: python main.py feature_type=r21d --cfg job"]
    return "\n".join(lines) + "\n"


_PART_TITLES = {"_FeatureType": "Feature type", "R21DSettings": "Extractor", "RunSettings": "Run",
                "RaySettings": "Ray runner"}


def keys_markdown(feature_type: str = "r21d") -> str:
    """The keys reference page (Markdown): one table per settings part, each key with its type,
    default and help text, in ``--help`` order. The docs build writes it from this function,
    so the page lists exactly the keys the command line takes."""
    lines = [f"# Keys of `feature_type={feature_type}`", "",
             "Every key of the command line (`python main.py key=value ...`), generated from the settings",
             "dataclasses that define them, as `python main.py --help` is. `null` means unset. How values",
             "are checked and what each exit status means: [Checks and exit status](command-line.md).", ""]
    for part in PARTS[feature_type]:
        doc = (part.__doc__ or "").strip().split("\n\n")[0]
        title = _PART_TITLES.get(part.__name__, part.__name__)
        owner = "" if part is _FeatureType else f"`{part.__module__.removeprefix('r21d_features.')}.{part.__name__}`: "
        lines += [f"## {title}", "", owner + " ".join(doc.split()), "",
                  "| key | type | default | meaning |", "|---|---|---|---|"]
        for f, hint in setting_fields([part]):
            meaning = help_of(f).replace("|", "\\|")
            lines.append(f"| `{f.name}` | {_type_words(hint)} | `{_default_text(f)}` | {meaning} |")
        lines.append("")
    return "\n".join(lines)


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


CONFIG_DIR = Path(__file__).resolve().parent
MULTIRUN_FLAGS = ("-m", "--multirun")
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _type_words(hint: Any) -> str:
    """``Optional[int]`` -> "an integer, or null"."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return (_type_words(inner[0]) if len(inner) == 1 else "a value") + ", or null"
    return _TYPE_WORDS.get(hint, "a value")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _describe(exc: Exception, args: list[str], feature_type: str) -> str:
    """Hydra's (multi-line) refusal of ``args`` as one line naming key, value and what is allowed."""
    values = {a.split("=", 1)[0].lstrip("+~"): a.split("=", 1)[1] for a in args}
    fields = {f.name: (f, hint) for f, hint in setting_fields(PARTS.get(feature_type, PARTS["r21d"]))}
    for link in _chain(exc):
        key = getattr(link, "full_key", None)
        if key and key in fields:
            f, hint = fields[key]
            value = values.get(key, "?")
            what = f"it must be {_type_words(hint)} ({help_of(f)})"
            if "is not Optional" in str(link):
                return f"{key}=null is not allowed: {what}"
            return f"{key}={value} is invalid: {what}"
    text = " ".join(str(exc).split())
    if "feature_type/" in text and "Could not find" in text:
        return f"feature_type={values.get('feature_type', '?')} is unknown; allowed: {', '.join(PARTS)}"
    parser = OverridesParser.create()
    for arg in args:
        try:
            parser.parse_override(arg)
        except Exception as parse_exc:  # noqa: BLE001 (Hydra's grammar errors have several types)
            first = str(parse_exc).strip().splitlines()[0] if str(parse_exc).strip() else type(parse_exc).__name__
            return (f"cannot read the argument {arg!r} ({first}); write key=value, and quote a list item holding "
                    "spaces, commas or braces: key=\"[a.mp4, 'b c.mp4', 'train-{000..009}.tar']\"")
    return f"the arguments cannot be used: {text[:300]}"


def _for_hydra_app(argv: list[str]) -> bool:
    """Whether ``argv`` asks Hydra's application itself: a flag (``--help``, ``--cfg job``, ``-m``, ...)
    or a ``hydra.*`` override."""
    return any(a.startswith("-") or a.split("=", 1)[0].lstrip("+~").split(".")[0] == "hydra" for a in argv)


def compose_values(argv: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    """``(values, None)``: the plain values of a run's arguments, composed once; ``(None, error)``:
    one line for the first argument the schema refuses; ``(None, None)``: Hydra's own flags, for
    Hydra's application to answer.

    Hydra's refusals (a wrong type such as ``stack_size=1.5``, ``null`` for a key that needs a
    value, an unknown ``feature_type``, broken list syntax) come back as one line naming the key,
    the value and what is allowed. Value checks (ranges, choices) are the settings dataclasses'
    job and follow in ``run_cli``.
    """
    error = unknown_key_error(argv)
    if error:
        return None, error
    hydra_app = _for_hydra_app(argv)
    if any(a in MULTIRUN_FLAGS for a in argv):
        return None, None  # one composition per combination, by Hydra
    args = [a for a in argv if not a.startswith("-") and "=" in a] if hydra_app else list(argv)
    register_configs()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("config", overrides=args)
    except Exception as exc:  # noqa: BLE001 (Hydra and OmegaConf raise many types; all become one line)
        feature_type = next((a.split("=", 1)[1] for a in args if a.split("=", 1)[0] == "feature_type"), "r21d")
        return None, _describe(exc, args, feature_type)
    if hydra_app:
        return None, None
    return OmegaConf.to_container(cfg, resolve=True), None


def override_error(argv: list[str]) -> str | None:
    """One line for the first command-line argument the schema refuses, or None (see :func:`compose_values`)."""
    return compose_values(argv)[1]


__all__ = ["ALL_KEYS", "R21DConfig", "compose_values", "help_footer", "keys_markdown", "override_error", "register_configs", "schema_class",
           "unknown_key_error"]

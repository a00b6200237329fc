"""Feature extractors by ``feature_type``. A new type is one module here plus one config.

Each type names two classes, both imported on first use so that one type's dependencies never
load another's: its settings dataclass (light: the command line checks a bad value with it
before torch loads) and its extractor.
"""

from __future__ import annotations

import importlib

from r21d_features.utils.core.errors import SettingsError

# feature_type -> ("module:settings class", "module:extractor class")
FEATURE_TYPES = {
    "r21d": ("r21d_features.models.r21d.settings:R21DSettings", "r21d_features.models.r21d.extractor:R21DExtractor"),
}


def _load(target: str) -> type:
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def _targets(feature_type: str) -> tuple[str, str]:
    try:
        return FEATURE_TYPES[feature_type]
    except KeyError:
        raise SettingsError(
            f"feature_type={feature_type!r} is unknown; allowed: {', '.join(FEATURE_TYPES)}") from None


def get_settings_class(feature_type: str) -> type:
    """The settings dataclass of ``feature_type``'s extractor (imports no model code)."""
    return _load(_targets(feature_type)[0])


def get_extractor_class(feature_type: str) -> type:
    """The extractor class of ``feature_type`` (this imports torch)."""
    return _load(_targets(feature_type)[1])

"""Feature extractors by ``feature_type``. A new type is one module here plus one config."""

from __future__ import annotations

import importlib

from r21d_features.utils.core.errors import SettingsError

# feature_type -> "module:class"; imported lazily so one type's dependencies never load another's.
EXTRACTORS = {
    "r21d": "r21d_features.models.r21d.extractor:R21DExtractor",
}


def get_extractor_class(feature_type: str) -> type:
    try:
        target = EXTRACTORS[feature_type]
    except KeyError:
        raise SettingsError(f"feature_type={feature_type!r} is unknown; allowed: {', '.join(EXTRACTORS)}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)

"""R(2+1)D video features: model zoo, settings, builders, weights and the extractor.

The settings and the zoo import without torch (the command line checks a setting before
anything heavy loads); the extractor and its results load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .settings import R21DSettings
from .zoo import MODEL_ZOO, ModelRecord, get_record

_LAZY = {"R21DExtractor": ".extractor", "ConfigError": ".extractor", "VideoFeatures": ".extractor",
         "VideoTimeoutError": ".extractor"}

__all__ = ["ConfigError", "MODEL_ZOO", "ModelRecord", "R21DExtractor", "R21DSettings", "VideoFeatures",
           "VideoTimeoutError", "get_record"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

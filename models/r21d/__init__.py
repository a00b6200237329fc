"""R(2+1)D video features: model zoo, settings, builders, weights and the extractor."""

from .extractor import ConfigError, R21DExtractor, VideoFeatures
from .settings import R21DSettings
from .zoo import MODEL_ZOO, ModelRecord, get_record

__all__ = ["ConfigError", "MODEL_ZOO", "ModelRecord", "R21DExtractor", "R21DSettings", "VideoFeatures", "get_record"]

"""R(2+1)D video features: model zoo, builders, weights and the extractor."""

from .extractor import ConfigError, R21DExtractor, VideoFeatures
from .zoo import MODEL_ZOO, ModelRecord, get_record

__all__ = ["ConfigError", "MODEL_ZOO", "ModelRecord", "R21DExtractor", "VideoFeatures", "get_record"]

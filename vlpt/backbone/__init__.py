"""The frozen CLIP backbone and its deep-prompt mechanism."""
from vlpt.backbone.clip import ClipBackbone

__all__ = ["ClipBackbone"]

"""Segmentation prompt methods, one module each, registered by name in ``vlpt.registry.SEG_METHODS``."""

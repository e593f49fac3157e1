"""Shared fixtures: a tiny random backbone, and the real-data folder when present."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def feature_cache_folder(tmp_path_factory):
    """Suites run by tests keep their frozen-feature cache in a temporary folder, never in ~/.cache."""
    folder = tmp_path_factory.mktemp("feature_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLPT_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def tiny_backbone():
    """The starter architecture with random weights (fast, no files needed)."""
    from vlpt.backbone import ClipBackbone

    torch.manual_seed(0)
    return ClipBackbone("vlpt-starter-vit", pretrained=None)


@pytest.fixture(scope="session")
def deep_backbone():
    """A 12-layer, width-32 random backbone: deep enough for every method's paper defaults."""
    from vlpt.backbone import ClipBackbone

    torch.manual_seed(0)
    return ClipBackbone("vlpt-tiny12-vit", pretrained=None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA

"""Where the project's shipped files live (vlpt is installed editable from its checkout)."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "configs"
LEADERBOARD_DIR = PROJECT_ROOT / "leaderboard"
STARTER_WEIGHTS = Path(__file__).resolve().parent / "backbone" / "weights" / "vlpt-starter-vit.safetensors"


def default_data_root() -> Path:
    """Root of dataset folders: ``$VLPT_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("VLPT_DATA", "data")).expanduser()

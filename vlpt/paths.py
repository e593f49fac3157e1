"""Where the project's shipped files live (vlpt is installed editable from its checkout)."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "configs"
LEADERBOARD_DIR = PROJECT_ROOT / "leaderboard"
STARTER_WEIGHTS = Path(__file__).resolve().parent / "backbone" / "weights" / "vlpt-starter-vit.safetensors"


def writer_temp_path(path: Path) -> Path:
    """A name beside ``path`` that no other writer uses (process id and a random part): write there, then
    rename over ``path``, so readers and concurrent writers never see a partial file or folder."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def default_data_root() -> Path:
    """Root of dataset folders: ``$VLPT_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("VLPT_DATA", "data")).expanduser()

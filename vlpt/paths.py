"""Where vlpt's shipped files live, and where its user data goes by default.

Configs (methods, dataset catalogs, suites) and the starter weights ship inside the package, so a
wheel install has them. User data never goes into the package: records go to the checkout's
``leaderboard/`` when vlpt runs from its checkout (an editable install), else to ``./leaderboard``
of the current folder (``vlpt bench --output`` picks another).
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "configs"
METHOD_CONFIG_DIR = CONFIG_DIR / "methods"
STARTER_WEIGHTS = PACKAGE_DIR / "backbone" / "weights" / "vlpt-starter-vit.safetensors"
#: the folder holding the package: the checkout, or site-packages for an installed wheel
PROJECT_ROOT = PACKAGE_DIR.parent
#: whether vlpt runs from its checkout (an editable install) rather than from an installed wheel
IN_CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file()
#: the default records folder: the checkout's published leaderboard, or ./leaderboard for an installed wheel
LEADERBOARD_DIR = PROJECT_ROOT / "leaderboard" if IN_CHECKOUT else Path("leaderboard")


def default_data_root() -> Path:
    """Root of dataset folders: ``$VLPT_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("VLPT_DATA", "data")).expanduser()

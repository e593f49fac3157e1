"""The checkout these tests belong to, found from this file (not from the vlpt under test, which may be an
installed wheel): its committed leaderboard, docs and pyproject.toml."""
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
#: the committed leaderboard: records/, LEADERBOARD.md, leaderboard.csv, index.html
LEADERBOARD = CHECKOUT / "leaderboard"

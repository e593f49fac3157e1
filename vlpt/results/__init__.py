"""Run records (one JSON file per run), the record store, and the leaderboard built from them."""
from vlpt.results.leaderboard import aggregate, write_leaderboard
from vlpt.results.record import ACCURACY, SCHEMA_VERSION, RunIdentity, RunRecord, git_state, library_versions
from vlpt.results.store import RecordStore, RecordWarning, atomic_write_text

__all__ = [
    "ACCURACY",
    "SCHEMA_VERSION",
    "RecordStore",
    "RecordWarning",
    "RunIdentity",
    "RunRecord",
    "aggregate",
    "atomic_write_text",
    "git_state",
    "library_versions",
    "write_leaderboard",
]

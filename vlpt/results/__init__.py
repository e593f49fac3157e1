"""Run records (one JSON file per run), the record store, and the leaderboard built from them;
validating and merging record files, and comparing two methods over their shared runs."""
from vlpt.results.compare import compare_records
from vlpt.results.leaderboard import aggregate
from vlpt.results.merge import merge_records
from vlpt.results.publish import write_leaderboard
from vlpt.results.record import ACCURACY, SCHEMA_VERSION, RunIdentity, RunRecord, git_state, library_versions
from vlpt.results.store import RecordStore, RecordWarning, atomic_write_text
from vlpt.results.validate import validate_records

__all__ = [
    "ACCURACY",
    "SCHEMA_VERSION",
    "RecordStore",
    "RecordWarning",
    "RunIdentity",
    "RunRecord",
    "aggregate",
    "atomic_write_text",
    "compare_records",
    "git_state",
    "library_versions",
    "merge_records",
    "validate_records",
    "write_leaderboard",
]

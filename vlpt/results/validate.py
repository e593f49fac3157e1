"""Checking run record files, with one message per problem that names the file and the field.

The checks cover the versioned layout described by ``record.schema.json`` (missing, unknown
and wrongly typed fields, ``schema_version``, metric ranges) and what a JSON Schema cannot
express: ``run_id`` must be the hash of the identity and the file's name, the protocol must be
a known one (:mod:`vlpt.results.protocols`) and the method one of the names the caller passes (``vlpt leaderboard
validate`` passes the registered methods; without names that check is skipped), every evaluation
set the protocol reports must be there, no number may be NaN or infinite, and no two files may
hold the same run. Records that pass can be merged into a leaderboard (:mod:`vlpt.results.merge`).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from vlpt.errors import ConfigError
from vlpt.results.protocols import known_protocol, protocol_facts, protocol_names
from vlpt.results.record import (ACCURACY, ADAPT_MS, DICE, ECE, IOU, NLL, SAMPLE_COUNT, SCHEMA_VERSION, RunIdentity,
                                 RunRecord)

SCHEMA_PATH = Path(__file__).with_name("record.schema.json")
#: how a run chose its hyperparameters (``config.selection``; PromptMethod.hyperparameter_selection)
SELECTIONS = ("fixed", "validation")
FIELDS = ("schema_version", "run_id", "identity", "config", "metrics", "timings", "peak_memory_mb",
          "library_versions", "git_commit", "git_dirty")
IDENTITY_FIELDS = ("method", "variant", "backbone", "dataset", "protocol", "shots", "seed", "targets")
PERCENT_METRICS = (ACCURACY, DICE, IOU, ECE)
_RUN_ID = re.compile(r"[0-9a-f]{16}")
_COMMIT = re.compile(r"[0-9a-f]{7,64}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one record file; ``field`` is a dotted path, "" for the whole file."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class ValidRecord:
    """A record file that passed every check: its path, text, parsed JSON and record."""

    path: Path
    text: str
    data: dict
    record: RunRecord


@dataclass
class ValidationReport:
    """The outcome of checking record files: the valid ones and every problem found."""

    valid: list[ValidRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def invalid_files(self) -> list[str]:
        return sorted({p.file for p in self.problems})


def expected_eval_sets(protocol: str, dataset: str, targets: Iterable[str]) -> list[str] | None:
    """The evaluation sets a run of ``protocol`` reports (its facts file), or None for an unknown protocol."""
    facts = known_protocol(protocol)
    return None if facts is None else facts.expected_eval_sets(dataset, targets)


def headline_metrics(protocol: str) -> tuple[str, ...]:
    """The metrics every evaluation set of ``protocol`` reports."""
    return protocol_facts(protocol).metrics


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: int | float) -> bool:
    """Whether ``v`` is a finite number that a float can hold (records store metrics as floats)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


class _Checker:
    """Collects the problems of one parsed record file."""

    def __init__(self, file: str, methods: Iterable[str] | None):
        self.file = file
        self.methods = None if methods is None else set(methods)
        self.problems: list[Problem] = []

    def add(self, field_path: str, message: str) -> None:
        self.problems.append(Problem(self.file, field_path, message))

    def wrong(self, field_path: str, value: Any, expected: str) -> None:
        self.add(field_path, f"{field_path} = {_describe(value)} ({_type(value)}) is not {expected}")

    def fields(self, d: dict, allowed: tuple[str, ...], prefix: str, what: str) -> list[str]:
        """Report missing and unknown keys of ``d``; returns the keys present and allowed."""
        for key in allowed:
            if key not in d:
                self.add(prefix + key, f"{prefix + key} is missing")
        for key in d:
            if key not in allowed:
                self.add(prefix + key, f"{prefix + key} is not a field of {what} (fields: {', '.join(allowed)})")
        return [k for k in allowed if k in d]

    def number(self, field_path: str, value: Any, low: float | None = None, high: float | None = None,
               integer: bool = False) -> bool:
        """Check a finite number in [low, high] (an integral value when ``integer``)."""
        if not _is_number(value):
            self.wrong(field_path, value, "an integer" if integer else "a number")
            return False
        if not _finite(value):
            self.add(field_path, f"{field_path} = {_describe(value)} is not a finite number")
            return False
        if integer and value != int(value):
            self.wrong(field_path, value, "an integer")
            return False
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"[{_bound(low, '-inf')}, {_bound(high, 'inf')}]"
            self.add(field_path, f"{field_path} = {value!r} is out of range {bounds}")
            return False
        return True

    # ------------------------------------------------------------ the record

    def record(self, d: Any) -> RunIdentity | None:
        """Check a parsed record; returns its identity when the identity itself is valid."""
        if not isinstance(d, dict):
            self.add("", f"expected a JSON object (a run record), found {_type(d)}")
            return None
        version = d.get("schema_version")
        if "schema_version" not in d:
            self.add("schema_version", f"schema_version is missing (this vlpt reads {SCHEMA_VERSION})")
            return None
        if version != SCHEMA_VERSION or not _is_int(version):
            self.add("schema_version", f"schema_version = {_describe(version)} is unknown "
                                       f"(this vlpt reads schema_version {SCHEMA_VERSION})")
            return None
        present = self.fields(d, FIELDS, "", "a run record")
        identity = self.identity(d["identity"]) if "identity" in present else None
        if "run_id" in present:
            self.run_id(d["run_id"], identity)
        if "config" in present and not isinstance(d["config"], dict):
            self.wrong("config", d["config"], "an object (the resolved config)")
        elif "config" in present:
            if "determinism" in d["config"]:
                self.determinism(d["config"]["determinism"])
            if "feature_cache" in d["config"]:
                self.feature_cache(d["config"]["feature_cache"])
            if "backbone" in d["config"]:
                self.backbone(d["config"]["backbone"])
            if "test_time" in d["config"]:
                self.test_time(d["config"]["test_time"], identity)
            if "selection" in d["config"] and d["config"]["selection"] not in SELECTIONS:
                self.wrong("config.selection", d["config"]["selection"], " or ".join(f'"{s}"' for s in SELECTIONS))
        if "metrics" in present:
            self.metrics(d["metrics"], identity)
        if "timings" in present:
            self.timings(d["timings"])
        if "peak_memory_mb" in present and d["peak_memory_mb"] is not None:
            self.number("peak_memory_mb", d["peak_memory_mb"], low=0)
        if "library_versions" in present:
            self.library_versions(d["library_versions"])
        commit = d.get("git_commit")
        if "git_commit" in present and commit is not None and not (
                isinstance(commit, str) and _COMMIT.fullmatch(commit)):
            self.wrong("git_commit", commit, "a commit hash (7-64 lowercase hex digits) or null")
        dirty = d.get("git_dirty")
        if "git_dirty" in present and dirty is not None and not isinstance(dirty, bool):
            self.wrong("git_dirty", dirty, "true, false or null")
        return identity

    def identity(self, d: Any) -> RunIdentity | None:
        if not isinstance(d, dict):
            self.wrong("identity", d, "an object")
            return None
        before = len(self.problems)
        present = self.fields(d, IDENTITY_FIELDS, "identity.", "an identity")
        for key in ("method", "variant", "backbone", "dataset", "protocol"):
            if key in present and not (isinstance(d[key], str) and d[key]):
                self.wrong(f"identity.{key}", d[key], "a non-empty string")
        if "shots" in present and not (_is_int(d["shots"]) and d["shots"] >= 0):
            self.wrong("identity.shots", d["shots"], "an integer >= 0")
        if "seed" in present and not _is_int(d["seed"]):
            self.wrong("identity.seed", d["seed"], "an integer")
        targets = d.get("targets")
        if "targets" in present:
            if not (isinstance(targets, list) and all(isinstance(t, str) and t for t in targets)):
                self.wrong("identity.targets", targets, "a list of non-empty strings")
                targets = None
            elif len(set(targets)) != len(targets):
                self.add("identity.targets", f"identity.targets = {_describe(targets)} names a target twice")
        protocol = d.get("protocol")
        facts = known_protocol(protocol) if isinstance(protocol, str) else None
        if isinstance(protocol, str) and protocol and facts is None:
            self.add("identity.protocol", f"identity.protocol = {protocol!r} is not a known protocol "
                                          f"(valid: {', '.join(protocol_names())})")
        elif facts is not None and targets is not None:
            if targets and facts.targets == "none":
                self.add("identity.targets", f"identity.targets = {_describe(targets)} must be empty: protocol "
                                             f"{protocol} has no targets")
            elif not targets and facts.targets == "required":
                self.add("identity.targets", f"identity.targets is empty: protocol {protocol} needs at least "
                                             "one target")
        method = d.get("method")
        if self.methods is not None and isinstance(method, str) and method and method not in self.methods:
            self.add("identity.method", f"identity.method = {method!r} is not a registered method "
                                        f"(valid: {', '.join(sorted(self.methods))})")
        if len(self.problems) != before:
            return None
        return RunIdentity(**{key: d[key] for key in IDENTITY_FIELDS})

    def run_id(self, run_id: Any, identity: RunIdentity | None) -> None:
        if not (isinstance(run_id, str) and _RUN_ID.fullmatch(run_id)):
            self.wrong("run_id", run_id, "16 lowercase hex digits")
        elif identity is not None and run_id != identity.run_id:
            self.add("run_id", f"run_id = {run_id!r} does not match the identity, which hashes to "
                               f"{identity.run_id!r} (was the identity edited by hand?)")
        if isinstance(run_id, str) and _RUN_ID.fullmatch(run_id) and Path(self.file).name != f"{run_id}.json":
            self.add("run_id", f"run_id = {run_id!r} but the file is named {Path(self.file).name} "
                               f"(a record is stored as {run_id}.json)")

    def metrics(self, metrics: Any, identity: RunIdentity | None) -> None:
        if not isinstance(metrics, dict):
            self.wrong("metrics", metrics, "an object {evaluation set: {metric: number}}")
            return
        for eval_set, values in metrics.items():
            where = f"metrics.{eval_set}"
            if not eval_set:
                self.add(where, "metrics has an evaluation set with an empty name")
            if not isinstance(values, dict):
                self.wrong(where, values, "an object {metric: number}")
                continue
            for metric, value in values.items():
                self.metric(f"{where}.{metric}", metric, value)
        if identity is None:
            return
        expected = expected_eval_sets(identity.protocol, identity.dataset, identity.targets)
        if expected is None:
            return
        for eval_set in expected:
            if eval_set not in metrics:
                self.add(f"metrics.{eval_set}", f"metrics.{eval_set} is missing (protocol {identity.protocol} "
                                                f"reports {', '.join(expected)})")
            elif isinstance(metrics[eval_set], dict):
                for metric in headline_metrics(identity.protocol):
                    if metric not in metrics[eval_set]:
                        self.add(f"metrics.{eval_set}.{metric}", f"metrics.{eval_set}.{metric} is missing "
                                 f"(protocol {identity.protocol} reports {metric} on every evaluation set)")
        for eval_set in metrics:
            if eval_set not in expected:
                self.add(f"metrics.{eval_set}", f"metrics.{eval_set} is not an evaluation set of protocol "
                                                f"{identity.protocol} (expected: {', '.join(expected)})")

    def metric(self, where: str, metric: str, value: Any) -> None:
        if not metric:
            self.add(where, f"{where} has an empty metric name")
        if metric in PERCENT_METRICS:
            self.number(where, value, 0, 100)
        elif metric == SAMPLE_COUNT:
            self.number(where, value, low=1, integer=True)
        elif metric in (ADAPT_MS, NLL):
            self.number(where, value, low=0)
        else:
            self.number(where, value)

    def determinism(self, flag: Any) -> None:
        where = "config.determinism"
        if not isinstance(flag, dict):
            self.wrong(where, flag, "an object {deterministic, nondeterministic}")
            return
        present = self.fields(flag, ("deterministic", "nondeterministic"), f"{where}.", where)
        deterministic, reasons = flag.get("deterministic"), flag.get("nondeterministic")
        if "deterministic" in present and not isinstance(deterministic, bool):
            self.wrong(f"{where}.deterministic", deterministic, "true or false")
        if "nondeterministic" in present and not (isinstance(reasons, list) and all(
                isinstance(r, str) and r for r in reasons)):
            self.wrong(f"{where}.nondeterministic", reasons, "a list of non-empty strings (reasons)")
        elif isinstance(deterministic, bool) and isinstance(reasons, list) and deterministic == bool(reasons):
            self.add(f"{where}.deterministic", f"{where}.deterministic = {str(deterministic).lower()} but "
                                               f"{where}.nondeterministic lists {len(reasons)} reason(s)")

    def feature_cache(self, cache: Any) -> None:
        where = "config.feature_cache"
        if not isinstance(cache, dict):
            self.wrong(where, cache, "an object {train_views}")
            return
        if "train_views" in self.fields(cache, ("train_views",), f"{where}.", where):
            views = cache["train_views"]
            if not (views is None or views == "per_epoch" or (_is_int(views) and views >= 0)):
                self.wrong(f"{where}.train_views", views, '"per_epoch", a number of views (0 or more) or null')

    def backbone(self, backbone: Any) -> None:
        if not isinstance(backbone, dict):
            self.wrong("config.backbone", backbone, "an object (the backbone spec and its activation)")
        elif "activation" in backbone and backbone["activation"] not in ("quick_gelu", "gelu"):
            self.wrong("config.backbone.activation", backbone["activation"], '"quick_gelu" or "gelu"')

    def test_time(self, test_time: Any, identity: RunIdentity | None) -> None:
        where = "config.test_time"
        if not isinstance(test_time, dict) or not set(test_time) <= {"stream", "views"}:
            self.wrong(where, test_time, "an object {stream, views: {evaluation set: view augmentation}}")
            return
        facts = known_protocol(identity.protocol) if identity is not None else None
        if "stream" in test_time and test_time["stream"] not in ("episodic", "online"):
            self.wrong(f"{where}.stream", test_time["stream"], '"episodic" or "online"')
        elif "stream" in test_time and facts is not None and facts.stream and test_time["stream"] != facts.stream:
            self.add(f"{where}.stream", f"{where}.stream = {test_time['stream']!r}, but protocol {identity.protocol} "
                                        f"is {facts.stream}")
        views = test_time.get("views", {})
        if not (isinstance(views, dict) and all(isinstance(k, str) and k and isinstance(v, str) and v
                                                for k, v in views.items())):
            self.wrong(f"{where}.views", views, "an object {evaluation set: view augmentation}")

    def timings(self, timings: Any) -> None:
        if not isinstance(timings, dict):
            self.wrong("timings", timings, "an object {name: seconds}")
            return
        for name, seconds in timings.items():
            self.number(f"timings.{name}", seconds, low=0)

    def library_versions(self, versions: Any) -> None:
        if not isinstance(versions, dict):
            self.wrong("library_versions", versions, "an object {library: version string}")
            return
        for name, version in versions.items():
            if not isinstance(version, str):
                self.wrong(f"library_versions.{name}", version, "a version string")


def _bound(value: float | None, default: str) -> str:
    if value is None:
        return default
    return str(int(value)) if float(value).is_integer() else str(value)


def check_record(data: Any, file: str | Path, methods: Iterable[str] | None = None) -> list[Problem]:
    """Every problem of one parsed record (``file`` names it in the messages); ``identity.method`` must be
    one of ``methods`` when given."""
    checker = _Checker(str(file), methods)
    checker.record(data)
    return checker.problems


def records_folder(path: str | Path) -> Path:
    """The records folder of ``path``: ``path/records`` when ``path`` is an output folder, else ``path``."""
    path = Path(path)
    if (path / "records").is_dir():
        return path / "records"
    if not path.is_dir():
        raise ConfigError(f"records folder {path} does not exist")
    return path


def validate_files(paths: Iterable[str | Path], methods: Iterable[str] | None = None) -> ValidationReport:
    """Check record files one by one, then across files for duplicated runs (``methods``: as in
    :func:`check_record`)."""
    methods = None if methods is None else list(methods)
    report = ValidationReport()
    runs: dict[str, str] = {}  # run id -> first file holding it
    for path in map(Path, paths):
        report.checked += 1
        checker = _Checker(str(path), methods)
        text, data = _read(path, checker)
        identity = checker.record(data) if checker.problems == [] else None
        if identity is not None:
            first = runs.setdefault(identity.run_id, str(path))
            if first != str(path):
                checker.add("identity", f"identity duplicates the run in {first} (run_id {identity.run_id}); "
                                        "a run has one record")
        if checker.problems:
            report.problems += checker.problems
            continue
        try:
            record = RunRecord.from_dict(data, source=path)
        except ConfigError as exc:  # the checks above are meant to catch everything from_dict refuses
            report.problems.append(Problem(str(path), "", str(exc)))
            continue
        report.valid.append(ValidRecord(path, text, data, record))
    return report


def validate_records(source: str | Path, methods: Iterable[str] | None = None) -> ValidationReport:
    """Check every ``*.json`` record in a records folder (or an output folder holding ``records/``).

    A single ``.json`` file is checked on its own.
    """
    source = Path(source)
    if source.is_file():
        return validate_files([source], methods)
    return validate_files(sorted(records_folder(source).glob("*.json")), methods)


def _read(path: Path, checker: _Checker) -> tuple[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        return text, json.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        checker.add("", f"cannot be read: {exc}")
    except json.JSONDecodeError as exc:
        checker.add("", f"is not valid JSON: {exc}")
    except RecursionError:
        checker.add("", "is not valid JSON: nested too deeply")
    return "", None


def schema() -> dict:
    """The JSON Schema (draft 2020-12) of a record file, as shipped with vlpt."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


__all__ = [
    "Problem",
    "SCHEMA_PATH",
    "ValidRecord",
    "ValidationReport",
    "check_record",
    "expected_eval_sets",
    "headline_metrics",
    "records_folder",
    "schema",
    "validate_files",
    "validate_records",
]

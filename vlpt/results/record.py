"""The run record: one JSON file per run, the only input of the leaderboard.

A record holds who ran (the :class:`RunIdentity`), what was run (the fully
resolved config), what came out (metrics per evaluation set), what it cost
(timings, peak memory) and in which environment (library versions, git commit
and dirty flag). Layout of a record file (``schema_version`` 1)::

    {
      "schema_version": 1,
      "run_id": "<16 hex>",                 # RunIdentity.run_id, checked on load
      "identity": {"method": "coop", "variant": "default", "backbone": "ViT-B-16",
                   "dataset": "imagenet", "protocol": "cross_dataset", "shots": 16,
                   "seed": 1, "targets": ["caltech101", "dtd"]},
      "config": {...,                       # fully resolved config (JSON values), with
                 "backbone": {..., "activation": "quick_gelu"},  # the MLP activation that ran
                 "trainer": {..., "resumed_at_epoch": 2},     # only when resumed mid-training
                 "test_time": {"stream": "episodic",                 # test-time runs: episodic or online,
                               "views": {"imagenet_a": "crop_flip"}},  # and the views per set
                 "feature_cache": {"train_views": "per_epoch"},  # only when trained on stored features
                 "determinism": {"deterministic": true, "nondeterministic": []}},
      "metrics": {"test": {"accuracy": 71.5}, "caltech101": {"accuracy": 93.7}},
      "timings": {"fit_s": 812.4, "test_s": 35.1},
      "peak_memory_mb": 5120.0,             # or null
      "library_versions": {"python": "3.11.7", "torch": "2.15.0", ...},
      "git_commit": "<40 hex>" or null,
      "git_dirty": false or null
    }

The layout is published as a JSON Schema (draft 2020-12) in ``record.schema.json`` next to this
module; ``vlpt leaderboard validate`` (:mod:`vlpt.results.validate`) checks record files against it
and against what a schema cannot express (the run_id hash, known protocols, the methods the caller
names, each protocol's evaluation sets). A change of the layout bumps ``SCHEMA_VERSION``.

``config.determinism`` (optional: older records lack it) says whether the same seed on the same machine
gives bitwise the same metrics (timings aside): ``nondeterministic`` lists each setting used that breaks
it, with why (a GPU without ``trainer.deterministic: true``, mixed precision, torch.compile other than the
eager backend, several DDP processes, a resume with data loader workers; see ``vlpt.eval.determinism``),
and ``deterministic`` is true when the list is empty. ``config.trainer.resumed_at_epoch`` is present when
the run resumed from a mid-training checkpoint after that many epochs (``vlpt.eval.resume``).
``config.feature_cache`` (only in runs that trained on stored frozen image features) says which training
views they used: ``train_views`` is ``"per_epoch"`` (the default: a new crop of every image each epoch, as
the reference computes), a number N of stored views of which each epoch drew one (faster; 0: the centre
view), 1 for a deterministic training transform, or null when the run drew no training views (zero-shot,
the linear probe); the leaderboard's ``settings`` column names a number. ``config.backbone.activation``
(``quick_gelu`` or ``gelu``; older records lack it) is the MLP activation the run computed with, and
``config.test_time.stream`` how a test-time run's state met the test stream (``episodic``: reset after every
image; ``online``: carried over the stream), ``config.test_time.views`` the view augmentation of each evaluation
set of a test-time run.

Metric conventions read by the leaderboard: accuracies are percentages under
the metric name ``"accuracy"``; the evaluation sets are ``"test"`` (few_shot and
the source set of cross_dataset / domain_generalization), ``"base"`` and
``"novel"`` (base_to_novel), and one set per name in ``identity.targets``.
Segmentation records report ``"dice"`` (per-image Dice averaged over images) and
``"iou"`` (dataset-level IoU: of the foreground, or averaged over classes), both percentages, with the
image count ``"n"``, on ``"test"`` (the source dataset) and on each target; their
``identity.backbone`` names the segmentation model and ``identity.shots`` the
number of training images (0 for a method that trains nothing).
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from vlpt.errors import ConfigError

SCHEMA_VERSION = 1
ACCURACY = "accuracy"
#: per-image adaptation time of test-time methods, in milliseconds
ADAPT_MS = "adapt_ms_per_image"
#: evaluated images of a set
SAMPLE_COUNT = "n"
#: calibration of classification scores (vlpt.metrics): expected calibration error in percent, NLL in nats
ECE = "ece"
NLL = "nll"
#: segmentation metrics, see vlpt.seg.metrics
DICE = "dice"
IOU = "iou"

# name shown in a record -> (module name, distribution name)
_LIBRARIES = {
    "torch": ("torch", "torch"),
    "torchvision": ("torchvision", "torchvision"),
    "open_clip": ("open_clip", "open_clip_torch"),
    "lightning": ("lightning", "lightning"),
    "timm": ("timm", "timm"),
    "sklearn": ("sklearn", "scikit-learn"),
    "numpy": ("numpy", "numpy"),
    "vlpt": ("vlpt", "vlpt"),
}


@dataclass(frozen=True, kw_only=True)
class RunIdentity:
    """What makes a run unique; two runs with the same identity are the same run.

    Keyword-only. ``shots`` is 0 for runs without training images (zero-shot,
    test-time); ``targets`` names the extra evaluation sets (cross_dataset,
    domain_generalization), in the order they are reported.
    """

    method: str
    variant: str = "default"
    backbone: str
    dataset: str
    protocol: str
    shots: int
    seed: int
    targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        _check_identity(self.to_dict(), "RunIdentity")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "variant": self.variant,
            "backbone": self.backbone,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "shots": self.shots,
            "seed": self.seed,
            "targets": list(self.targets),
        }

    @property
    def run_id(self) -> str:
        """First 16 hex digits of the sha256 of the identity's canonical JSON."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    def describe(self) -> str:
        """The run in words, for messages: ``coop/mine, few_shot, dtd, 16 shots, seed 1``."""
        variant = "" if self.variant == "default" else f"/{self.variant}"
        return f"{self.method}{variant}, {self.protocol}, {self.dataset}, {self.shots} shots, seed {self.seed}"


@dataclass
class RunRecord:
    """The result of one run, as written to ``records/<run_id>.json``."""

    identity: RunIdentity
    metrics: dict[str, dict[str, float]]
    config: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    peak_memory_mb: float | None = None
    library_versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    git_dirty: bool | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def run_id(self) -> str:
        return self.identity.run_id

    @classmethod
    def capture(
        cls,
        identity: RunIdentity,
        metrics: dict[str, dict[str, float]],
        config: dict[str, Any],
        timings: dict[str, float],
        peak_memory_mb: float | None = None,
        repo: str | Path | None = None,
    ) -> "RunRecord":
        """A record with library versions and the git state of ``repo`` (default: vlpt's checkout) filled in."""
        git = git_state(repo if repo is not None else Path(__file__).resolve().parent)
        return cls(
            identity=identity,
            metrics=metrics,
            config=config,
            timings=timings,
            peak_memory_mb=peak_memory_mb,
            library_versions=library_versions(),
            git_commit=git["commit"] if git else None,
            git_dirty=git["dirty"] if git else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "run_id": self.run_id,
            "identity": self.identity.to_dict(),
            "config": self.config,
            "metrics": self.metrics,
            "timings": self.timings,
            "peak_memory_mb": self.peak_memory_mb,
            "library_versions": self.library_versions,
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
        }

    def to_json(self) -> str:
        """Deterministic JSON text (sorted keys, 2-space indent, trailing newline)."""
        data = self.to_dict()
        _check_record(data, f"run record {self.run_id}")
        try:
            return json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"run record {self.run_id} cannot be written as JSON: {exc}") from exc

    @classmethod
    def from_dict(cls, d: Any, source: str | Path) -> "RunRecord":
        """Build a record from parsed JSON; a missing or mistyped field raises ConfigError naming ``source``."""
        where = f"run record {source}"
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a JSON object, found {type(d).__name__}")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ConfigError(f"{where}: unsupported schema_version {version!r} (this vlpt reads {SCHEMA_VERSION})")
        _check_record(d, where)
        ident = d["identity"]
        identity = RunIdentity(
            method=ident["method"],
            variant=ident["variant"],
            backbone=ident["backbone"],
            dataset=ident["dataset"],
            protocol=ident["protocol"],
            shots=ident["shots"],
            seed=ident["seed"],
            targets=tuple(ident["targets"]),
        )
        if d["run_id"] != identity.run_id:
            raise ConfigError(
                f"{where}: field 'run_id' is {d['run_id']!r} but the identity hashes to {identity.run_id!r} "
                "(was the identity edited by hand?)"
            )
        return cls(
            identity=identity,
            metrics={k: {m: float(v) for m, v in sets.items()} for k, sets in d["metrics"].items()},
            config=d["config"],
            timings={k: float(v) for k, v in d["timings"].items()},
            peak_memory_mb=None if d["peak_memory_mb"] is None else float(d["peak_memory_mb"]),
            library_versions=dict(d["library_versions"]),
            git_commit=d["git_commit"],
            git_dirty=d["git_dirty"],
            schema_version=version,
        )


# ---------------------------------------------------------------- validation


def _is_str(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer beyond the float range
        return False


def _require(d: dict, key: str, ok, expected: str, where: str, prefix: str = "") -> None:
    if key not in d:
        raise ConfigError(f"{where}: missing field {prefix + key!r} ({expected})")
    if not ok(d[key]):
        value = d[key]
        raise ConfigError(
            f"{where}: field {prefix + key!r} has value {value!r} of type {type(value).__name__}, expected {expected}"
        )


def _check_identity(d: dict, where: str, prefix: str = "") -> None:
    for key in ("method", "variant", "backbone", "dataset", "protocol"):
        _require(d, key, _is_str, "a non-empty string", where, prefix)
    _require(d, "shots", lambda v: _is_int(v) and v >= 0, "an integer >= 0", where, prefix)
    _require(d, "seed", _is_int, "an integer", where, prefix)
    _require(
        d, "targets", lambda v: isinstance(v, (list, tuple)) and all(_is_str(t) for t in v),
        "a list of non-empty strings", where, prefix,
    )


def _check_record(d: dict, where: str) -> None:
    _require(d, "run_id", _is_str, "a string", where)
    _require(d, "identity", lambda v: isinstance(v, dict), "an object", where)
    _check_identity(d["identity"], where, prefix="identity.")
    _require(d, "config", lambda v: isinstance(v, dict), "an object", where)
    _require(
        d, "metrics",
        lambda v: isinstance(v, dict) and all(
            isinstance(s, dict) and all(isinstance(m, str) and _is_number(x) for m, x in s.items())
            for s in v.values()
        ),
        "an object {eval_set: {metric: finite number}}", where,
    )
    _require(
        d, "timings", lambda v: isinstance(v, dict) and all(_is_number(x) for x in v.values()),
        "an object {name: seconds}", where,
    )
    _require(d, "peak_memory_mb", lambda v: v is None or _is_number(v), "a number or null", where)
    _require(
        d, "library_versions", lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
        "an object {library: version string}", where,
    )
    _require(d, "git_commit", lambda v: v is None or _is_str(v), "a string or null", where)
    _require(d, "git_dirty", lambda v: v is None or isinstance(v, bool), "true, false or null", where)


# ---------------------------------------------------------------- environment


def library_versions() -> dict[str, str]:
    """Versions of python and the libraries a result depends on; ``"missing"`` for absent ones.

    A library already imported reports its ``__version__``; otherwise the installed
    distribution's metadata is read, so nothing heavy is imported here.
    """
    versions = {"python": platform.python_version()}
    for name, (module, dist) in _LIBRARIES.items():
        version = getattr(sys.modules.get(module), "__version__", None)
        if version is None:
            try:
                version = metadata.version(dist)
            except metadata.PackageNotFoundError:
                version = "missing"
        versions[name] = str(version)
    return versions


def git_state(path: str | Path) -> dict[str, Any] | None:
    """``{"commit": <hash>, "dirty": <bool>}`` of the git repository containing ``path``.

    ``dirty`` means tracked files differ from the commit (untracked files are ignored,
    so that freshly written records do not mark every later run dirty). Returns None
    when ``path`` is not inside a repository with a commit, or git is not installed.
    """
    path = Path(path)
    cwd = path if path.is_dir() else path.parent
    if not cwd.is_dir():
        return None

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout if result.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    if status is None:
        return None
    return {"commit": commit.strip(), "dirty": bool(status.strip())}


__all__ = [
    "ACCURACY",
    "ECE",
    "NLL",
    "SAMPLE_COUNT",
    "DICE",
    "IOU",
    "SCHEMA_VERSION",
    "RunIdentity",
    "RunRecord",
    "git_state",
    "library_versions",
]

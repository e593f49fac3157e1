"""The resolved run spec: what a run's result depends on beyond its identity, assembled in one place.

``RunSpec.of`` resolves it for a suite's run: the method and its parameters, where its prompt starts
(``init``), the protocol's data settings (``train_augment``, ``eval_limit``, multitask ``sampling`` and
``scoring``), the backbone with the activation it runs, and the training views (a new crop per epoch, or
N stored views for a method on stored features). The record's ``config`` is written from it
(``record_sections``), a mid-training checkpoint resumes only the run whose fingerprint holds the same
``settings``, and a stored record is stale when the spec read back from it (``RunSpec.from_record``) differs
(``staleness``).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from vlpt.data.datamodule import PER_EPOCH
from vlpt.protocols import get_protocol

#: config fields that name files resolved at run time, not settings of the run
LOCATION_FIELDS = ("init_from", "regulator_from")


def run_settings(params: dict, train_augment: str, sampling: str | None, init: str | None,
                 eval_limit: int | None = None, scoring: str | None = None,
                 result_neutral: tuple[str, ...] = (), definitions: dict | None = None) -> dict:
    """What a run's identity does not show but its result depends on, in JSON form (for comparisons).
    ``sampling`` and ``scoring`` are None except for multitask runs; ``result_neutral`` are the method
    config's fields that change no result (``MethodConfig.result_neutral``); ``definitions`` are the catalog
    entries of the datasets a suite defined itself (``user_definitions``)."""
    ignored = LOCATION_FIELDS + tuple(result_neutral)
    settings = {"params": {k: v for k, v in params.items() if k not in ignored},
                "train_augment": train_augment, "sampling": sampling, "init": init, "eval_limit": eval_limit,
                **({"scoring": scoring} if scoring is not None else {}),
                **({"definitions": definitions} if definitions else {})}
    return json.loads(json.dumps(settings, sort_keys=True))


#: the fields of a suite's own dataset definition that change results (where the folder is, its title and
#: descriptions do not: moving the data keeps its records)
DEFINITION_FIELDS = ("loader", "image_dir", "split_file", "fallback", "classnames", "label_folders", "class_subset",
                     "domains", "templates", "layout", "classes", "binary", "mask_dir", "mask_suffix", "mask_ext",
                     "ignore_values", "split", "image_pattern", "mask_pattern")


def user_definitions(names: list[str]) -> dict[str, dict]:
    """What changes results in the definitions of the datasets among ``names`` (``a+b`` for multitask) that a
    suite defined itself (a folder of the user's, ``datasets:``), by dataset name: a record made from another
    definition is not this run's."""
    from vlpt.data.catalog import user_dataset
    from vlpt.data.corruptions import split_corrupted_name
    from vlpt.seg.datasets import user_seg_dataset

    found = {}
    for name in (part for text in names for part in text.split("+")):
        base = split_corrupted_name(name)[0].partition("@")[0]
        entry = user_dataset(base) or user_seg_dataset(base)
        if entry is not None:
            values = dataclasses.asdict(entry)
            found[base] = json.loads(json.dumps({k: values[k] for k in DEFINITION_FIELDS if k in values}))
    return found


def init_reference(run) -> str | None:
    """Where the run's prompt starts: ``init:NAME`` (a meta-learned initialisation), ``run:RUN_ID`` (another
    run's prompt), a checkpoint path, or None."""
    init = run.init_name and f"init:{run.init_name}"
    return init or (run.init_source and f"run:{run.init_source.run_id}") or run.method.config.init_from


def settings_of(run) -> dict:
    """``run_settings`` of a suite's run (its ``RunSpec``'s settings, which do not depend on the backbone)."""
    return RunSpec.of(run, {}, None, None).settings


@dataclass(frozen=True)
class RunSpec:
    """A run resolved: its method's parameters, data settings, backbone (with ``activation``) and training views.

    ``activation`` is None when the backbone's checkpoint does not say (refused when it loads);
    ``train_views`` is None when the run draws no training views (it trains nothing, or not on images)."""

    method: str
    variant: str
    params: dict[str, Any]
    init: str | None
    data: dict[str, Any]
    backbone: dict[str, Any]
    train_views: int | str | None
    result_neutral: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def of(cls, run, backbone: dict, activation: str | None, train_views: int | str | None,
           params: dict | None = None) -> RunSpec:
        """The spec of a suite's run on ``backbone`` (``BackboneSpec`` fields) running ``activation``; ``params``
        are the method config it executes (default: the suite's, before initialisation files are named)."""
        experiment = run.experiment
        data = {"train_augment": experiment.train_augment, **get_protocol(experiment.protocol).settings(experiment)}
        if experiment.eval_limit:
            data["eval_limit"] = experiment.eval_limit
        definitions = user_definitions([run.identity.dataset, *run.identity.targets])
        if definitions:
            data["definitions"] = definitions
        return cls(run.method.cls.name, run.method.variant,
                   dataclasses.asdict(run.method.config) if params is None else params, init_reference(run), data,
                   {**backbone, "activation": activation}, train_views, type(run.method.config).result_neutral)

    @classmethod
    def from_record(cls, config: dict, unrecorded_activation: str, result_neutral: tuple[str, ...] = ()) -> RunSpec:
        """The spec a record's ``config`` was made with (a record made before records held the activation ran
        ``unrecorded_activation``, its architecture's; one that drew no views or one view agrees with any)."""
        data = config.get("data", {})
        settings = {k: data[k] for k in ("train_augment", "sampling", "scoring", "eval_limit", "definitions")
                    if k in data}
        backbone = dict(config.get("backbone", {}))
        backbone["activation"] = backbone.get("activation") or unrecorded_activation
        method = config["method"]
        return cls(method["name"], method["variant"], method["params"], None, settings, backbone,
                   (config.get("feature_cache") or {}).get("train_views"), result_neutral)

    @property
    def settings(self) -> dict:
        """``run_settings`` of this spec: what the staleness check and a resume's fingerprint compare."""
        return run_settings(self.params, self.data.get("train_augment"), self.data.get("sampling"), self.init,
                            self.data.get("eval_limit"), self.data.get("scoring"), self.result_neutral,
                            self.data.get("definitions"))

    def record_sections(self) -> dict[str, Any]:
        """The record ``config`` sections this spec writes: ``method``, ``backbone`` and ``data``'s settings."""
        return {"method": {"name": self.method, "variant": self.variant, "params": self.params},
                "backbone": self.backbone, "data": dict(self.data)}

    def staleness(self, stored: RunSpec) -> tuple[list[str], list[str]]:
        """How ``stored`` (read from a record) differs from this spec: computation changes (activation, training
        views) in words, and the names of changed settings (method parameters; "data settings" when only the
        data settings differ: train_augment, sampling, scoring, a suite's own dataset definitions). Both empty:
        the record is this run's."""
        computed = []
        if self.backbone.get("activation") is not None and stored.backbone["activation"] != self.backbone["activation"]:
            computed.append(f"activation {stored.backbone['activation']}, not {self.backbone['activation']}")
        wanted = PER_EPOCH if self.train_views is None else self.train_views
        if stored.train_views not in (None, 1) and stored.train_views != wanted:
            computed.append(f"train_views {stored.train_views}, not {wanted}")
        mine, theirs = self.settings, {**stored.settings, "init": self.settings["init"]}
        if "definitions" not in theirs:  # made before records kept them: the dataset's name is all there is
            mine.pop("definitions", None)
        if mine == theirs:
            return computed, []
        changed = sorted(k for k in set(mine["params"]) | set(theirs["params"])
                         if mine["params"].get(k) != theirs["params"].get(k))
        changed += _changed_definitions(mine.get("definitions", {}), theirs.get("definitions", {}))
        return computed, changed or ["data settings (train_augment/sampling/scoring)"]


def _changed_definitions(mine: dict, theirs: dict) -> list[str]:
    """``definition of dataset NAME (KEYS)`` for each dataset whose definition differs between two specs."""
    changed = []
    for name in sorted(set(mine) | set(theirs)):
        a, b = mine.get(name, {}), theirs.get(name, {})
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if keys:
            changed.append(f"definition of dataset {name} ({', '.join(keys)})")
    return changed

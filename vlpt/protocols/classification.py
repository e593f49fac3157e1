"""What the classification protocols share: loading datasets, a method on the backbone, a datamodule of
images or stored features, and evaluation by accuracy (adapting per test image for test-time methods).

A classification protocol subclasses ``ClassificationProtocol`` and says which samples train a run and
which sets evaluate it (``split``); ``few_shot`` is the simplest example.
"""
from __future__ import annotations

import abc
import dataclasses
from functools import partial
from typing import Sequence

from vlpt.data.consistency import repeated_class_names
from vlpt.data.corruptions import split_corrupted_name
from vlpt.data.datamodule import CachedFeatureDataModule, PromptDataModule
from vlpt.data.fewshot import sample_few_shot, split_rng, subsample
from vlpt.data.run_data import MAX_VAL_SHOTS, EvalSet, ProtocolData
from vlpt.data.samples import DatasetSplits, Sample
from vlpt.errors import ConfigError, DatasetError
from vlpt.metrics import evaluate_classifier
from vlpt.protocols.base import Evaluation, PreparedRun, Protocol
from vlpt.tta.evaluate import evaluate_test_time
from vlpt.tta.view_features import StoredViewFeatures


def few_shot_split(splits: DatasetSplits, shots: int | None, seed: int) -> tuple[list[Sample], list[Sample]]:
    """K-shot train (``split_rng(seed, "train")``) and min(K, 4)-shot val (``split_rng(seed, "val")``); a class
    left without training images is an error. ``shots`` None keeps every image, 0 none."""
    train = sample_few_shot(splits.train, shots, split_rng(seed, "train"))
    val_shots = None if shots is None else min(shots, MAX_VAL_SHOTS)
    val = sample_few_shot(splits.val, val_shots, split_rng(seed, "val"))
    if shots != 0:
        present = {s.label for s in train}
        empty = [name for label, name in enumerate(splits.classnames) if label not in present]
        if empty:
            raise DatasetError(f"{splits.name}: {len(empty)} class(es) have no training image: "
                               f"{', '.join(map(repr, empty[:10]))}")
    return train, val


def test_set(name: str, splits: DatasetSplits) -> EvalSet:
    """The test split of ``splits`` as evaluation set ``name``, with the dataset's own classes and templates."""
    return EvalSet(name, list(splits.test), list(splits.classnames), list(splits.templates), dataset=splits.name)


def limit_eval_set(eval_set: EvalSet, dataset: str, limit: int | None) -> EvalSet:
    """The evaluation set of ``dataset`` cut to a fixed subset of ``limit`` images: the same for every
    method and seed, and the same images for a dataset and its corrupted copies (paired comparisons)."""
    if limit is None or limit >= len(eval_set.samples):
        return eval_set
    clean = split_corrupted_name(dataset)[0]
    chosen = subsample(eval_set.samples, limit, split_rng(0, f"eval_limit:{clean}:{eval_set.name == 'novel'}"))
    return dataclasses.replace(eval_set, samples=chosen)


class ClassificationProtocol(Protocol):
    """A protocol over one classification dataset (and its targets)."""

    def check_dataset_name(self, name: str, where: str) -> None:
        from vlpt.registry import DATASETS
        from vlpt.seg.datasets import is_seg_dataset

        if is_seg_dataset(name):
            raise ConfigError(f"{where}: {name!r} is a segmentation dataset; use it with protocol segmentation")
        try:
            DATASETS.get(split_corrupted_name(name)[0].split("@")[0])
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    @abc.abstractmethod
    def split(self, source: DatasetSplits, shots: int | None, seed: int, targets: Sequence[DatasetSplits]
              ) -> tuple[list[Sample], list[Sample], DatasetSplits, list[EvalSet]]:
        """(train, val, the splits whose classes the method trains on, evaluation sets) of one run; every
        target is appended as an evaluation set named after it by ``data``."""

    def data(self, source: DatasetSplits, shots: int | None, seed: int,
             targets: Sequence[DatasetSplits] = ()) -> ProtocolData:
        """The train/val samples and evaluation sets of one run (``shots``: K, None for every training image,
        0 for none; ``seed`` selects the few-shot subsets)."""
        if self.facts.targets == "required" and not targets:
            raise ConfigError(f"protocol {self.name} needs at least one target dataset")
        if targets and self.facts.targets == "none":
            raise ConfigError(f"protocol {self.name} takes no target datasets (got {', '.join(t.name for t in targets)})")
        if shots != 0 and not source.train:
            raise DatasetError(f"protocol {self.name}: dataset {source.name} has no training images (a test-only "
                               f"copy, e.g. ImageNet without images/train): use it as an evaluation set, under "
                               f"test_time, or with a method that trains nothing")
        names = [source.name] + [t.name for t in targets]
        if len(set(names)) != len(names):
            raise ConfigError(f"protocol {self.name}: datasets must be distinct, got {', '.join(names)}")
        train, val, trained_on, eval_sets = self.split(source, shots, seed, targets)
        eval_sets += [test_set(target.name, target) for target in targets]
        return ProtocolData(train, val, list(trained_on.classnames), list(trained_on.templates), eval_sets,
                            protocol=self.name, dataset=source.name, shots=shots, seed=seed,
                            targets=[t.name for t in targets])

    def build(self, harness, run, shots: int) -> ProtocolData:
        """The run's data, each evaluation set cut to the experiment's ``eval_limit``."""
        identity = run.identity
        data = self.data(harness.dataset(identity.dataset), shots, identity.seed,
                         [harness.dataset(t) for t in identity.targets])
        own = {es.name for es in data.eval_sets} - set(identity.targets)
        data.eval_sets = [limit_eval_set(es, identity.dataset if es.name in own else es.name, run.experiment.eval_limit)
                          for es in data.eval_sets]
        return data

    def images(self, data: ProtocolData) -> tuple[list[str], list[str]]:
        return [s.path for s in data.train + data.val], [s.path for es in data.eval_sets for s in es.samples]

    def prepare(self, harness, run, config, data: ProtocolData, model) -> PreparedRun:
        identity, experiment, cls = run.identity, run.experiment, run.method.cls
        method = cls(model, data.classnames, data.templates, config)
        image_args = (model.image_size, model.preprocess_cfg["mean"], model.preprocess_cfg["std"])
        common = dict(batch_size=config.batch_size, train_augment=experiment.train_augment,
                      num_workers=harness.suite.trainer.num_workers, seed=identity.seed)
        if harness.uses_feature_cache(cls):
            datamodule = CachedFeatureDataModule(data, *image_args, cache=harness.feature_cache,
                                                 dataset=identity.dataset,
                                                 train_views=harness.suite.feature_cache.train_views, **common)
        else:
            datamodule = PromptDataModule(data, *image_args, **common)
        evaluate = partial(self.evaluate, harness, run, image_args, datamodule)
        evaluations = [Evaluation(es.name, partial(evaluate, es)) for es in data.eval_sets]
        repeated = {es.name: found for es in data.eval_sets if (found := repeated_class_names(es.classnames))}
        if found := repeated_class_names(data.classnames):
            repeated[identity.dataset] = found
        return PreparedRun(method, datamodule, evaluations, len(data.train), len(data.val), len(data.classnames),
                           record_config={"repeated_class_names": repeated} if repeated else {})

    def test_stream(self, samples: list[Sample], seed: int, dataset: str) -> list[Sample]:
        """The order a test-time method meets an evaluation set's images in (online_test_time: drawn from the seed)."""
        return samples

    def evaluate(self, harness, run, image_args, datamodule, eval_set: EvalSet, method) -> tuple[dict, str | None]:
        """Accuracy on ``eval_set`` with its own classes; a test-time method adapts on each image's views."""
        method.set_classnames(eval_set.classnames, eval_set.templates)
        if not run.method.cls.adapts_at_test_time:
            return evaluate_classifier(method, datamodule.eval_dataloader(eval_set), harness.device), None
        samples = self.test_stream(eval_set.samples, run.identity.seed, eval_set.dataset)
        views = method.test_time_dataset(samples, *image_args, seed=run.identity.seed,
                                         dataset=eval_set.dataset, data_root=harness.data_root,
                                         device=harness.device, progress=harness.progress)
        if harness.uses_view_features(run.method.cls):
            views = StoredViewFeatures(views, harness.feature_cache, eval_set.dataset, eval_set.name)
        metrics = evaluate_test_time(method, views, harness.device, harness.suite.trainer.num_workers)
        return metrics, getattr(views, "augment", None) or None

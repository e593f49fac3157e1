"""``segmentation``: prompt tuning of a segmentation model (VLSM).

* in-domain: train on the source's train split, evaluate on its test split ("test");
* cross-domain: also evaluate on the test split of every target (named by the target), with the target's own
  class names (train on Kvasir-SEG, test on CVC-ClinicDB; TuneVLSeg's domain shift);
* few-shot: ``shots`` K draws K training images (``split_rng(seed, "train")``; all of them when the split has
  fewer); a method that trains nothing (zero-shot) gets none.

Targets must be of the same kind as the source (binary or multi-class) so one model serves both. The model
is the experiment's ``vlsm`` (``vlpt.seg.vlsm.VLSMSpec``); training flips image and mask together or not at
all. Facts: ``configs/protocols/segmentation.yaml``.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Sequence

from vlpt.data.fewshot import split_rng, subsample
from vlpt.errors import ConfigError, DatasetError
from vlpt.protocols.base import Evaluation, PreparedRun, Protocol, register_protocol
from vlpt.seg.data import SegEvalSet, SegProtocolData, SegSplits
from vlpt.seg.datamodule import SegmentationDataModule
from vlpt.seg.datasets import is_seg_dataset, seg_dataset_names
from vlpt.seg.evaluate import evaluate_segmenter
from vlpt.seg.vlsm import VLSMSpec


def seg_data(source: SegSplits, shots: int, seed: int, targets: Sequence[SegSplits] = ()) -> SegProtocolData:
    """Training images (K of them, seeded) and evaluation sets of one segmentation run."""
    for target in targets:
        if target.binary != source.binary:
            kinds = {True: "binary", False: "multi-class"}
            raise DatasetError(f"segmentation target {target.name} is {kinds[target.binary]} but the source "
                               f"{source.name} is {kinds[source.binary]}; a model cannot serve both")
    if target_names := [t.name for t in targets if t.name == source.name]:
        raise DatasetError(f"segmentation target {target_names[0]} is the source itself")
    train = subsample(source.train, shots, split_rng(seed, "train")) if shots else []
    if shots and not train:
        raise DatasetError(f"{source.name}: the train split is empty")
    eval_sets = [SegEvalSet("test", list(source.test), source)]
    eval_sets += [SegEvalSet(target.name, list(target.test), target) for target in targets]
    return SegProtocolData(train, source, eval_sets, shots=shots, seed=seed, targets=[t.name for t in targets])


@register_protocol
class Segmentation(Protocol):
    name = "segmentation"
    #: crops would cut masks; flips keep image and mask aligned
    default_train_augment = "flip"

    own_keys = ("vlsm",)

    def check_experiment(self, experiment, where: str) -> None:
        super().check_experiment(experiment, where)
        if experiment.train_augment not in ("flip", "none"):
            raise ConfigError(f"{where}: protocol {self.name} trains with train_augment flip or none (image and "
                              f"mask flipped together), got {experiment.train_augment!r}")

    def check_dataset_name(self, name: str, where: str) -> None:
        if not is_seg_dataset(name):
            raise ConfigError(f"{where}: {name!r} is not a segmentation dataset; valid names: "
                              f"{', '.join(seg_dataset_names())}")

    def vlsm_spec(self, experiment, where: str = "vlsm") -> VLSMSpec:
        from vlpt.config import build_dataclass

        return build_dataclass(VLSMSpec, experiment.vlsm or {}, where)

    def check_method(self, resolved, experiment, where: str, method_config: str) -> None:
        """Also: a method that keeps the decoder frozen needs a VLSM with a trained one."""
        super().check_method(resolved, experiment, where, method_config)
        vlsm = self.vlsm_spec(experiment, f"{where}: vlsm")
        if not resolved.config.train_decoder and not vlsm.has_trained_decoder:
            raise ConfigError(f"{where}: method {resolved.cls.name} ({resolved.variant}) keeps the decoder frozen, but "
                              f"the VLSM {vlsm.describe('<backbone>')} has a random one; set train_decoder: true "
                              f"or give the vlsm decoder_from")

    def model_name(self, experiment, backbone: str, where: str = "") -> str:
        return self.vlsm_spec(experiment, f"{where}: vlsm" if where else "vlsm").describe(backbone)

    def model(self, harness, experiment):
        return harness.vlsm(experiment)

    def build(self, harness, run, shots: int) -> SegProtocolData:
        """The run's training images and evaluation sets (cut to the experiment's ``eval_limit``)."""
        identity = run.identity
        data = seg_data(harness.seg_dataset(identity.dataset), shots, identity.seed,
                        [harness.seg_dataset(t) for t in identity.targets])
        data.eval_sets = [dataclasses.replace(es, samples=subsample(es.samples, run.experiment.eval_limit,
                                                                    split_rng(0, f"eval_limit:{es.splits.name}")))
                          for es in data.eval_sets]
        return data

    def images(self, data: SegProtocolData) -> tuple[list[str], list[str]]:
        evaluated = [s for es in data.eval_sets for s in es.samples]
        return ([s.image for s in data.train],
                [s.mask for s in data.train] + [p for s in evaluated for p in (s.image, s.mask)])

    def prepare(self, harness, run, config, data: SegProtocolData, model) -> PreparedRun:
        method = run.method.cls(model, data.source.classnames, data.source.templates, config)
        datamodule = SegmentationDataModule(data, model.image_size, model.mean, model.std,
                                            batch_size=config.batch_size, train_augment=run.experiment.train_augment,
                                            num_workers=harness.suite.trainer.num_workers, seed=run.identity.seed)

        def evaluate(eval_set: SegEvalSet, method) -> tuple[dict, None]:
            method.set_classnames(eval_set.splits.classnames, eval_set.splits.templates)
            return evaluate_segmenter(method, datamodule.eval_dataloader(eval_set), eval_set, harness.device), None

        evaluations = [Evaluation(es.name, partial(evaluate, es)) for es in data.eval_sets]
        return PreparedRun(method, datamodule, evaluations, len(data.train), 0, data.source.num_classes,
                           record_config={"vlsm": run.experiment.vlsm or {}})

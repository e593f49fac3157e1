"""The segmentation protocol: which images train a prompt and which sets evaluate it.

* in-domain: train on the source's train split, evaluate on its test split ("test");
* cross-domain: also evaluate on the test split of every target (named by the target), with the
  target's own class names (train on Kvasir-SEG, test on CVC-ClinicDB; TuneVLSeg's domain shift);
* few-shot: ``shots`` K draws K training images (``split_rng(seed, "train")``; all of them when the
  split has fewer); a method that trains nothing (zero-shot) gets none.

Targets must be of the same kind as the source (binary or multi-class) so one model serves both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from vlpt.data.fewshot import split_rng, subsample
from vlpt.errors import DatasetError
from vlpt.seg.data import SegSample, SegSplits

SEGMENTATION = "segmentation"


@dataclass
class SegEvalSet:
    """Images to evaluate on and the dataset (classes, templates, mask rules) they come from."""

    name: str
    samples: list[SegSample]
    splits: SegSplits


@dataclass
class SegProtocolData:
    train: list[SegSample]
    source: SegSplits
    eval_sets: list[SegEvalSet]
    shots: int = 0
    seed: int = 0
    targets: list[str] = field(default_factory=list)


def build_seg_protocol(source: SegSplits, shots: int, seed: int, targets: Sequence[SegSplits] = ()) -> SegProtocolData:
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

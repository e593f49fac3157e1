"""Zero-shot segmentation: a VLSM with the dataset's hand-written prompt and nothing tuned
(TuneVLSeg's zero-shot baseline; CLIPSeg, Lüddecke & Ecker, CVPR 2022)."""
from __future__ import annotations

from dataclasses import dataclass

from vlpt.registry import register_seg_method
from vlpt.seg.method import SegMethodConfig, SegPromptMethod


@dataclass
class SegZeroShotConfig(SegMethodConfig):
    def __post_init__(self):
        super().__post_init__()
        if self.train_decoder:
            raise ValueError("seg_zeroshot trains nothing; train_decoder: true is seg_decoder")


@register_seg_method("seg_zeroshot")
class SegZeroShot(SegPromptMethod):
    """The VLSM as it is: one hand-written prompt per class, frozen decoder."""

    Config = SegZeroShotConfig
    trains = False

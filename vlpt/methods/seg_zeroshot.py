"""Zero-shot segmentation: a VLSM with the dataset's hand-written prompt and nothing tuned
(TuneVLSeg's zero-shot baseline; CLIPSeg, Lüddecke & Ecker, CVPR 2022)."""
from __future__ import annotations

from vlpt.registry import register_method
from vlpt.seg.method import SegPromptMethod


@register_method("seg_zeroshot")
class SegZeroShot(SegPromptMethod):
    """The VLSM as it is: one hand-written prompt per class, frozen decoder."""

    trains = False

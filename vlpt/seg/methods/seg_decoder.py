"""Decoder-only tuning: the VLSM's decoder trained with the dataset's hand-written prompts and no
prompt parameters; the baseline that shows what the prompts add (TuneVLSeg, Adhikari et al., ACCV 2024,
compares prompt tuning with tuning the VLSM's own weights)."""
from __future__ import annotations

from dataclasses import dataclass

from vlpt.registry import register_seg_method
from vlpt.seg.method import SegMethodConfig, SegPromptMethod


@dataclass
class SegDecoderConfig(SegMethodConfig):
    train_decoder: bool = True

    def __post_init__(self):
        super().__post_init__()
        if not self.train_decoder:
            raise ValueError("seg_decoder trains the decoder only; train_decoder: false would leave nothing to train")


@register_seg_method("seg_decoder")
class SegDecoder(SegPromptMethod):
    """Hand-written prompts, trained decoder."""

    Config = SegDecoderConfig

"""C-TPT: Calibrated Test-time Prompt Tuning (Yoon et al., "C-TPT: Calibrated Test-Time Prompt Tuning for
Vision-Language Models via Text Feature Dispersion", ICLR 2024).

TPT (``vlpt.methods.tpt``: its views, confidence selection, one AdamW step, episodic reset) with the average
text feature dispersion added to the step's objective: ATFD = mean over classes of the L2 distance of the
class's normalised text feature to their mean (not renormalised), and the step minimises
``entropy - dispersion_weight * ATFD``, so prompts whose class features spread apart, which the paper finds
better calibrated, are preferred. As the reference code (hee-suk-yoon/C-TPT ``tpt_classification.py``):
weight 50 for ImageNet and the fine-grained datasets (``c_tpt``) and 20 for the natural distribution shifts,
where AugMix also applies to the ImageNet variants (``c_tpt_natural_shift``: its ``--I_augmix``). With
``dispersion_weight: 0`` it is TPT exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vlpt.methods.tpt import TPT, TPTConfig
from vlpt.registry import register_method


@dataclass
class CTPTConfig(TPTConfig):
    #: weight of the text feature dispersion (50: ImageNet and fine-grained sets; 20: natural shifts)
    dispersion_weight: float = 50.0

    def __post_init__(self):
        super().__post_init__()
        if self.dispersion_weight < 0:
            raise ValueError(f"dispersion_weight must be at least 0, got {self.dispersion_weight}")


def text_feature_dispersion(text: torch.Tensor) -> torch.Tensor:
    """ATFD of normalised class text features ``[C, D]``: their mean L2 distance to their centroid."""
    return (text - text.mean(dim=0, keepdim=True)).norm(dim=-1).mean()


@register_method("c_tpt")
class CTPT(TPT):
    """TPT whose step also spreads the class text features apart."""

    Config = CTPTConfig

    def test_time_loss(self, logits, text):
        return super().test_time_loss(logits, text) - self.config.dispersion_weight * text_feature_dispersion(text)

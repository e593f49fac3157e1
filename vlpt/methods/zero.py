"""Zero (Farina et al., "Frustratingly Easy Test-Time Adaptation of Vision-Language Models", NeurIPS 2024):
TPT's views and confidence filter, then a vote instead of a backward pass.

Each test image gets 64 views (the original and 63 random resized crops with flips, for every dataset: the
reference code, FarinaMatteo/zero ``MultiViewCropAndFlip``, uses no AugMix); the fraction ``selection`` of views
with the lowest prediction entropy is kept, and each kept view votes for its top class (the zero-temperature
softmax of the paper). Ties are broken as the reference does: the discarded views, most confident first, are
walked until one predicts a tied class; failing that, the tied class the first discarded view scores highest
wins (the reference means this; its mask of the other classes has a bitwise-not slip). The winner of a tie gets
one more vote, as in the reference. Episodic: nothing carries from one image to the next, and there are no parameters.

``selection: 0.3`` is the reference code's (its comment: changed from the paper's first version, 0.1, which is
the other reading). Prompts: "a photo of a {}." (the reference's ``--ctx_init a_photo_of_a``); ``templates:
imagenet7`` is its "+Ensemble". Scores are the log of the vote shares (a class without votes: ``VOTE_FLOOR``), so
accuracy is the vote's and calibration is that of the vote shares.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vlpt.methods.training_free_tta import TrainingFreeConfig, TrainingFreeTestTime
from vlpt.registry import register_method
from vlpt.tta.selection import kept_count, prediction_entropy

#: the share a class without votes gets in the scores (its log is finite, so the NLL is too)
VOTE_FLOOR = 1e-6


@dataclass
class ZeroConfig(TrainingFreeConfig):
    selection: float = 0.3
    templates: str = "a photo of a {}."


def vote(logits: torch.Tensor, selection: float) -> torch.Tensor:
    """Votes ``[C]`` of the views' scores ``[N, C]``: one per kept view for its top class; a tie goes to the tied
    class the discarded views, most confident first, name first, which gets one more vote."""
    order = torch.argsort(prediction_entropy(logits), stable=True)
    kept, discarded = order[:kept_count(len(order), selection)], order[kept_count(len(order), selection):]
    votes = torch.bincount(logits[kept].argmax(dim=-1), minlength=logits.shape[-1]).to(logits.dtype)
    tied = torch.nonzero(votes == votes.max()).flatten()
    if len(tied) > 1:
        is_tied = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        is_tied[tied] = True
        breakers = [int(v) for v in discarded if is_tied[logits[v].argmax()]]
        if breakers:
            winner = int(logits[breakers[0]].argmax())
        else:  # no discarded view predicts a tied class: the first discarded one's (else the original's) best tied
            view = int(discarded[0]) if len(discarded) else 0
            winner = int(tied[logits[view, tied].argmax()])
        votes[winner] += 1
    return votes


@register_method("zero")
class Zero(TrainingFreeTestTime):
    """A vote of the most confident views' predictions."""

    Config = ZeroConfig

    def classify_views(self, features):
        votes = vote(self.zero_shot(features), self.config.selection)
        return torch.log((votes / votes.sum()).clamp(min=VOTE_FLOOR))


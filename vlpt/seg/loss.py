"""The segmentation training loss of TuneVLSeg: soft Dice plus weighted cross-entropy.

It matches MONAI's ``DiceCELoss`` with its defaults (background included, Dice per
image and channel, smoothing 1e-5), which TuneVLSeg trains with, and in addition
leaves out the pixels whose target is ``ignore_index``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: smoothing added to the numerator and denominator of the soft Dice
EPS = 1e-5


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    binary: bool,
    ignore_index: int = 255,
    dice_weight: float = 1.0,
    ce_weight: float = 0.2,
) -> torch.Tensor:
    """``dice_weight`` * soft Dice loss + ``ce_weight`` * (BCE-with-logits | cross-entropy).

    ``logits`` [B, C, H, W] (binary: C == 1, sigmoid; multi-class: C classes, softmax);
    ``target`` int64 [B, H, W] (binary: 0/1; multi-class: 0..C-1). Pixels whose target
    is ``ignore_index`` are excluded from both terms. The Dice loss is
    1 - (2·Σ p·g + eps) / (Σ p + Σ g + eps) per image and channel (binary: the foreground
    channel; multi-class: every class, one-hot target), averaged over images and channels;
    the cross-entropy is the mean over the non-ignored pixels (0 when there are none).
    """
    if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"expected logits [B, C, H, W] and target [B, H, W], got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if target.dtype != torch.int64:
        raise ValueError(f"target must be an int64 label map, got {target.dtype}")
    if binary and logits.shape[1] != 1:
        raise ValueError(f"binary segmentation expects one logit channel, got {logits.shape[1]}")

    logits = logits.float()  # Dice sums over every pixel: half precision would lose them or overflow
    valid = target != ignore_index
    labels = torch.where(valid, target, 0)
    if binary:
        truth = labels[:, None].to(logits.dtype)
        prob = logits.sigmoid()
        ce = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")[:, 0]
    else:
        truth = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
        prob = logits.softmax(1)
        ce = F.cross_entropy(logits, labels, reduction="none")

    prob = torch.where(valid[:, None], prob, 0.0)
    truth = torch.where(valid[:, None], truth, 0.0)
    overlap = (prob * truth).sum((2, 3))
    dice = 1 - (2 * overlap + EPS) / (prob.sum((2, 3)) + truth.sum((2, 3)) + EPS)
    ce = torch.where(valid, ce, 0.0).sum() / valid.sum().clamp(min=1)
    return dice_weight * dice.mean() + ce_weight * ce


__all__ = ["segmentation_loss"]

"""CoCoOp's meta-net and the instance-conditional prompts it makes.

Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022: a two-layer
bottleneck MLP (Linear-ReLU-Linear, hidden = input/16) maps an image feature to a bias added to
every context token, so each image gets its own class prompts.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from vlpt.backbone.text import TextTower
from vlpt.prompts.context import TextContext


class MetaNet(nn.Sequential):
    """Linear(d_in, d_in // 16) - ReLU - Linear(d_in // 16, d_out)."""

    def __init__(self, d_in: int, d_out: int, reduction: int = 16):
        hidden = max(1, d_in // reduction)
        super().__init__(nn.Linear(d_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, d_out))


def conditional_context(tower: TextTower, classnames: Sequence[str], n_ctx: int, ctx_init: str | None,
                        init_std: float) -> tuple[TextContext, MetaNet]:
    """CoCoOp's context and its meta-net (image feature ``embed_dim`` -> text width), in that order."""
    context = TextContext(tower, classnames, n_ctx=n_ctx, ctx_init=ctx_init, init_std=init_std)
    return context, MetaNet(tower.embed_dim, tower.text_width).to(tower.dtype)


def encode_conditional(tower: TextTower, context: TextContext, ctx_shift: torch.Tensor,
                       normalize: bool = False) -> torch.Tensor:
    """Text features ``[B, C, D]`` of each image's prompts (context shifted by ``ctx_shift`` ``[B, W]``), all
    images and classes in one text-tower pass."""
    prompts = context(ctx_shift)  # [B, C, L, W]
    batch, n_classes = prompts.shape[:2]
    text = tower.encode_text_embeds(prompts.flatten(0, 1), context.eot_positions.repeat(batch), normalize=normalize)
    return text.view(batch, n_classes, -1)

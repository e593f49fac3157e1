"""MaPLe's coupling: visual prompts made from the language prompts of the same layer (Khattak et al.,
"MaPLe: Multi-modal Prompt Learning", CVPR 2023).

The language prompts of layer 0 are the text context, those of deeper layers the deep text prompts;
one coupling function per layer maps each into the image tower's width.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def linear_couplings(text_width: int, vision_width: int, depth: int, dtype: torch.dtype) -> nn.ModuleList:
    """MaPLe's linear couplings of layers ``0 .. depth-1``: layer 0's initialised on its own, the deeper
    layers' as copies of one layer (as the reference code clones it)."""
    def linear() -> nn.Linear:
        return nn.Linear(text_width, vision_width).to(dtype)

    first, deeper = linear(), linear()
    return nn.ModuleList([first, *(copy.deepcopy(deeper) for _ in range(depth - 1))])


def coupled_prompts(couplings: nn.ModuleList, context: torch.Tensor,
                    deep_text: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Visual prompts ``{layer: tokens}``: each layer's coupling applied to its language prompts (the text
    context ``[n_ctx, W]`` at layer 0, ``deep_text`` above)."""
    language = {0: context, **deep_text}
    return {layer: coupling(language[layer]) for layer, coupling in enumerate(couplings)}

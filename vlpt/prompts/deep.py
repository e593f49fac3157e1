"""Stacks of per-layer prompt tokens, fed to the backbone's deep-prompt mechanism.

A ``PromptStack`` holds ``n_tokens`` learnable vectors for each of the chosen layers of one
tower and returns them as the ``{layer: tokens}`` mapping that ``ClipBackbone.encode_image`` and
``TextTower.encode_text_embeds`` accept (see ``vlpt/backbone/deep_prompts.py``).
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from torch import nn

from vlpt.errors import ConfigError

PromptInit = Literal["uniform", "normal"]


def check_prompt_layers(layers: Sequence[int], n_layers: int, what: str) -> list[int]:
    """Validate layer indices against a tower of ``n_layers`` blocks (ConfigError names the problem)."""
    layers = sorted(set(layers))
    if not layers:
        raise ConfigError(f"{what}: at least one prompt layer is needed")
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ConfigError(f"{what}: layer(s) {bad} do not exist; this tower has layers 0..{n_layers - 1}")
    return layers


class PromptStack(nn.Module):
    """Learnable tokens ``[n_tokens, width]`` at each of ``layers``.

    ``uniform`` initialisation follows VPT (Jia et al. 2022): U(-v, v) with
    v = sqrt(6 / (3 * patch_size**2 + width)); ``normal`` draws N(0, std) as MaPLe does.
    """

    def __init__(self, layers: Sequence[int], n_tokens: int, width: int, init: PromptInit = "normal",
                 std: float = 0.02, patch_size: int = 16, dtype: torch.dtype = torch.float32):
        super().__init__()
        if n_tokens < 1:
            raise ConfigError(f"prompt tokens per layer must be at least 1, got {n_tokens}")
        self.layers = list(layers)
        self.tokens = nn.ParameterList()
        for _ in self.layers:
            tokens = torch.empty(n_tokens, width, dtype=dtype)
            if init == "uniform":
                bound = math.sqrt(6.0 / (3 * patch_size**2 + width))
                nn.init.uniform_(tokens, -bound, bound)
            else:
                nn.init.normal_(tokens, std=std)
            self.tokens.append(nn.Parameter(tokens))

    def forward(self) -> dict[int, torch.Tensor]:
        return dict(zip(self.layers, self.tokens))

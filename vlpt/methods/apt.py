"""APT: Approximated Prompt Tuning (Wu et al., "Approximated Prompt Tuning for Vision-Language Pre-trained Models",
arXiv 2306.15706, 2023; code: DoubtedSteam/APT, on ViLT and METER) on CLIP's image tower, beside VPT.

Deep prompt tokens P (VPT-deep) join a block's attention as extra keys and values. For the image tokens' outputs
this is exactly a two-part sum per head: ``(1 - lam) * softmax(q K^T) V + lam * softmax(q K_P^T) V_P``, with
``lam`` the share of the softmax mass the prompts take; the prompts' own outputs are thrown away at the next
layer (VPT-deep replaces them), so their queries and MLP are wasted work. ``form: exact`` computes that
decomposition: the same features as VPT-deep (input prompts after ``ln_pre``) to float rounding, without running
the prompt tokens through the block. ``form: approximated`` (the default) is APT: the prompt term becomes an
independent diffusion step added to the block's attention output, ``out' = (out + w * relu(h K^T) P) *
exp(s)``, where ``h`` is the block's normalised input, the keys are ``K = P + up(down(P))`` (a rank-``rank``
update of the prompts), ``w`` is the largest activation of each token held constant (no gradient), and ``s`` a
learned log-scale standing in for ``1 - lam``.

Defaults follow the reference code (``vision_transformer_apt.py``'s ``approximate_prompt``, in every attention
layer): rank 4, 50 prompt tokens per layer drawn from N(0, 0.02), ``down`` from N(0, 1), ``up`` and ``s`` zero
(so training starts from ``out + w * relu(h P^T) P``), ReLU, no attention dropout at CLIP's rate 0. The
reference prompts ViLT/METER; the paper's CLIP classification runs have no public code, so the training schedule
is vlpt's reading: VPT's CLIP schedule (MaPLe's deep-VPT baseline: SGD lr 0.0025, batch 4, 5 epochs) and
its frozen "a photo of a {}." classifier, so APT and VPT-deep differ only in how the prompts act. The exact form
equals VPT-deep with its input prompts after ``ln_pre`` (``input_prompts_after_ln_pre``, MVLPT's placement; vlpt's
``vpt`` puts them before it, MaPLe's) and its prompted layers running from the first to the last. The edited
blocks run uncompiled under ``trainer.compile``. A searched
ConES classifier can replace that hand-written one (``init_from`` a ``cones`` run: ConES's later stage).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vlpt.backbone.deep_prompts import decomposed_prompt_attention
from vlpt.errors import ConfigError
from vlpt.methods.base import cosine_logits
from vlpt.methods.vpt import VPT, VPTConfig
from vlpt.prompts.deep import check_prompt_layers
from vlpt.registry import register_method


@dataclass
class APTConfig(VPTConfig):
    #: approximated: APT's diffusion step (the reference code); exact: the attention decomposition (= VPT-deep)
    form: Literal["approximated", "exact"] = "approximated"
    #: prompt tokens per prompted layer: the reference's 50 (VPT's CLIP default is 8)
    n_tokens: int = 50
    #: rank of the prompts' key update
    rank: int = 4

    def __post_init__(self):
        super().__post_init__()
        if self.form not in ("approximated", "exact"):
            raise ConfigError(f"apt form must be approximated or exact, got {self.form!r}")
        if self.mode != "deep":
            raise ConfigError(f"apt prompts every layer of `layers` (mode deep), got mode {self.mode!r}")
        if self.rank < 1:
            raise ConfigError(f"apt rank must be at least 1, got {self.rank}")
        if self.init != "normal":
            raise ConfigError(f"apt draws its prompt tokens from N(0, 0.02) as its reference; init {self.init!r} "
                              f"is VPT's setting")


class PromptDiffusion(nn.Module):
    """One layer's approximated prompt: ``(out + w * relu(h K^T) P) * exp(s)``, ``K = P + up(down(P))``."""

    def __init__(self, n_tokens: int, width: int, rank: int):
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(n_tokens, width).normal_(std=0.02))
        self.down = nn.Parameter(torch.empty(rank, width).normal_(std=1.0))
        self.up = nn.Parameter(torch.zeros(width, rank))
        self.log_scale = nn.Parameter(torch.zeros(1))

    def forward(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        tokens, down, up = self.tokens.to(h.dtype), self.down.to(h.dtype), self.up.to(h.dtype)
        activation = F.relu(h @ (tokens + tokens @ down.T @ up.T).T)  # [B, L, M]
        weight = activation.amax(dim=-1, keepdim=True).detach()
        return (out + weight * (activation @ tokens)) * self.log_scale.exp().to(h.dtype)


@register_method("apt")
class APT(VPT):
    """Deep visual prompts acting through an independent diffusion step per layer (or, ``form: exact``, the
    attention decomposition they stand for); frozen hand-written text classifier."""

    Config = APTConfig

    def build(self, classnames, templates):
        cfg = self.config
        n_layers, width = self.backbone.vision_layers, self.backbone.vision_width
        layers = check_prompt_layers(cfg.layers if cfg.layers is not None else range(n_layers), n_layers,
                                     "apt layers")
        if cfg.form == "exact" and layers != list(range(layers[0], n_layers)):
            raise ConfigError(f"apt form exact stands for VPT-deep only when the prompted layers run from the first "
                              f"one to the last ({layers[0]}..{n_layers - 1}); got layers {layers}")
        self.slots = {layer: slot for slot, layer in enumerate(layers)}
        if cfg.form == "approximated":
            self.diffusion = nn.ModuleList(PromptDiffusion(cfg.n_tokens, width, cfg.rank) for _ in layers)
        else:
            self.prompt_tokens = nn.ParameterList(
                nn.Parameter(torch.empty(cfg.n_tokens, width).normal_(std=0.02)) for _ in layers)
        self.init_concepts([], torch.zeros(0, self.backbone.embed_dim))
        self.update_classnames(classnames, templates)

    def edit(self, layer: int, block: nn.Module, h: torch.Tensor, attend) -> torch.Tensor:
        """The block's attention output with this layer's prompt acting on it (``attend()`` where unprompted)."""
        slot = self.slots.get(layer)
        if slot is None:
            return attend()
        if self.config.form == "approximated":
            return self.diffusion[slot](h, attend())
        return decomposed_prompt_attention(block, h, self.prompt_tokens[slot])

    def logits(self, images):
        features = self.backbone.encode_image(images, attention_edit=self.edit)
        return cosine_logits(features, self.class_embeddings, self.backbone.logit_scale)

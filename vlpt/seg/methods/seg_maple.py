"""MaPLe on a segmentation model (TuneVLSeg, Adhikari et al., ACCV 2024; MaPLe: Khattak et al., CVPR 2023).

Text context plus deep text prompts at text layers 1 .. d-1; the visual prompts of image layers
0 .. d-1 are produced from the text prompts of the same layer by a coupling function, one per layer, so
the decoder's loss tunes both towers through one set of language prompts.

TuneVLSeg's defaults (``configs/model/maple_clipseg.yaml``): the context starts as "a photo of a"
(deeper prompts N(0, 0.02)), depth 1, and the coupling is its projector (``coupling: mlp``):
``Linear(text, 64)``, ReLU, ``Linear(64, vision)`` without bias, ``LayerNorm(vision)``
(``vlpt.seg.projection``). ``coupling: linear`` is MaPLe's own linear map (``vlpt.prompts.coupling``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vlpt.errors import ConfigError
from vlpt.prompts.context import TextContext
from vlpt.prompts.coupling import coupled_prompts, linear_couplings
from vlpt.prompts.deep import PromptStack
from vlpt.registry import register_seg_method
from vlpt.seg.method import SegMethodConfig, SegPromptMethod, prompt_layers
from vlpt.seg.projection import mlp_projection

COUPLINGS = ("mlp", "linear")


@dataclass
class SegMaPLeConfig(SegMethodConfig):
    n_ctx: int = 4
    ctx_init: str | None = "a photo of a"
    init_std: float = 0.02
    prompt_depth: int = 1
    #: ``mlp``: TuneVLSeg's projector (hidden ``coupling_dim``, ReLU, LayerNorm); ``linear``: MaPLe's
    coupling: Literal["mlp", "linear"] = "mlp"
    coupling_dim: int = 64


@register_seg_method("seg_maple")
class SegMaPLe(SegPromptMethod):
    """Coupled language and vision prompts in the first ``prompt_depth`` layers of both towers."""

    Config = SegMaPLeConfig

    def build_prompts(self, classnames, templates):
        cfg = self.config
        backbone = self.backbone
        if cfg.coupling not in COUPLINGS:
            raise ConfigError(f"{self.name}: unknown coupling {cfg.coupling!r}; valid: {', '.join(COUPLINGS)}")
        prompt_layers(cfg.prompt_depth, min(backbone.text_layers, backbone.vision_layers), self.name)
        self.context = TextContext(backbone, classnames, n_ctx=cfg.n_ctx, ctx_init=cfg.ctx_init, init_std=cfg.init_std)
        deeper = list(range(1, cfg.prompt_depth))
        self.text_prompts = PromptStack(deeper, self.context.n_ctx, backbone.text_width, std=cfg.init_std,
                                        dtype=backbone.dtype) if deeper else None
        if cfg.coupling == "linear":
            self.couplings = linear_couplings(backbone.text_width, backbone.vision_width, cfg.prompt_depth,
                                              backbone.dtype)
        else:
            self.couplings = nn.ModuleList(
                mlp_projection(backbone.text_width, backbone.vision_width, cfg.coupling_dim).to(backbone.dtype)
                for _ in range(cfg.prompt_depth))

    def update_classnames(self, classnames, templates):
        self.context.set_classnames(classnames)

    def deep_text_prompts(self) -> dict[int, torch.Tensor]:
        return self.text_prompts() if self.text_prompts is not None else {}

    def vision_prompts(self):
        return coupled_prompts(self.couplings, self.context.ctx, self.deep_text_prompts())

    def class_embeddings(self, image_features):
        return self.backbone.encode_text_embeds(self.context(), self.context.eot_positions,
                                                self.deep_text_prompts() or None)


__all__ = ["SegMaPLe", "SegMaPLeConfig"]

"""MaPLe: Multi-modal Prompt Learning (Khattak et al., "MaPLe: Multi-modal Prompt Learning",
CVPR 2023).

Language context of ``n_ctx`` tokens (initialised from "a photo of a") plus new language
prompts at text layers ``1 .. depth-1``; the vision prompts at image layers ``0 .. depth-1``
are *produced* from the language prompts of the same layer by a per-layer linear coupling
function, so both towers are tuned together and gradients from the image side reach the
language prompts. Defaults (the reference code, muzairkhattak/multimodal-prompt-learning, base-to-novel
config): 2 context tokens, depth 9, SGD lr 0.0035, batch 4, 5 epochs; the coupling of layer 0 is its
own linear layer and those of layers 1 .. depth-1 start as copies of one linear layer (the reference
clones it). The reference's cross-dataset config (depth 3, lr 0.0026, 2 epochs) is ``maple_cross_dataset``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vlpt.errors import ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod, cosine_logits
from vlpt.prompts.context import TextContext
from vlpt.prompts.coupling import coupled_prompts, linear_couplings
from vlpt.prompts.deep import PromptStack
from vlpt.registry import register_method


@dataclass
class MaPLeConfig(MethodConfig):
    n_ctx: int = 2
    ctx_init: str | None = "a photo of a"
    prompt_depth: int = 9
    lr: float = 0.0035
    batch_size: int = 4
    epochs: int | dict[int, int] = 5


@register_method("maple")
class MaPLe(PromptMethod):
    """Coupled language and vision prompts in the first ``prompt_depth`` layers of both towers."""

    Config = MaPLeConfig

    def build(self, classnames, templates):
        cfg = self.config
        backbone = self.backbone
        limit = min(backbone.text_layers, backbone.vision_layers)
        if not 1 <= cfg.prompt_depth <= limit:
            raise ConfigError(f"{self.name} prompt_depth {cfg.prompt_depth}: this backbone allows 1..{limit}")
        self.context = TextContext(backbone, classnames, n_ctx=cfg.n_ctx, ctx_init=cfg.ctx_init)
        n_tokens = self.context.n_ctx
        deeper = list(range(1, cfg.prompt_depth))
        self.text_prompts = PromptStack(deeper, n_tokens, backbone.text_width, dtype=backbone.dtype) if deeper else None
        self.build_vision_prompts(n_tokens)

    def build_vision_prompts(self, n_tokens: int) -> None:
        """One linear coupling function per prompted layer (``vlpt.prompts.coupling``)."""
        backbone = self.backbone
        self.couplings = linear_couplings(backbone.text_width, backbone.vision_width, self.config.prompt_depth,
                                          backbone.dtype)

    def deep_text_prompts(self) -> dict[int, torch.Tensor]:
        return self.text_prompts() if self.text_prompts is not None else {}

    def vision_prompts(self) -> dict[int, torch.Tensor]:
        return coupled_prompts(self.couplings, self.context.ctx, self.deep_text_prompts())

    def update_classnames(self, classnames, templates):
        self.context.set_classnames(classnames)

    def text_features(self) -> torch.Tensor:
        return self.backbone.encode_text_embeds(self.context(), self.context.eot_positions,
                                                deep_prompts=self.deep_text_prompts())

    def logits(self, images):
        image_features = self.backbone.encode_image(images, deep_prompts=self.vision_prompts())
        return cosine_logits(image_features, self.text_features(), self.backbone.logit_scale)

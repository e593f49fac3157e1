"""CoCoOp: Conditional Context Optimization (Zhou et al., "Conditional Prompt Learning for
Vision-Language Models", CVPR 2022).

A meta-net maps each image's feature to a bias added to every context token, so each image
gets its own prompts: ``v_m(x) = v_m + pi(x)``. All images of a batch and all classes go through
the text encoder together (``images_per_chunk`` bounds memory); the result equals the
per-image loop of the paper.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vlpt.methods.base import MethodConfig, PromptMethod
from vlpt.prompts.context import TextContext
from vlpt.prompts.meta_net import MetaNet
from vlpt.registry import register_method


@dataclass
class CoCoOpConfig(MethodConfig):
    n_ctx: int = 4
    ctx_init: str | None = "a photo of a"
    init_std: float = 0.02
    batch_size: int = 1
    epochs: int | dict[int, int] = 10
    images_per_chunk: int = 32


@register_method("cocoop")
class CoCoOp(PromptMethod):
    """Instance-conditional context: shared context plus a meta-net bias per image."""

    Config = CoCoOpConfig

    def build(self, classnames, templates):
        cfg = self.config
        self.context = TextContext(self.backbone, classnames, n_ctx=cfg.n_ctx, ctx_init=cfg.ctx_init,
                                   init_std=cfg.init_std)
        self.meta_net = MetaNet(self.backbone.embed_dim, self.backbone.text_width).to(self.backbone.dtype)

    def update_classnames(self, classnames, templates):
        self.context.set_classnames(classnames)

    def logits(self, images):
        image_features = self.backbone.encode_image(images, normalize=True)
        scale = self.backbone.logit_scale
        n_classes = len(self.context.classnames)
        eot = self.context.eot_positions
        chunks = []
        for feats in image_features.split(self.config.images_per_chunk):
            prompts = self.context(self.meta_net(feats))  # [b, C, L, W]
            text = self.backbone.encode_text_embeds(
                prompts.flatten(0, 1), eot.repeat(len(feats)), normalize=True
            ).view(len(feats), n_classes, -1)
            chunks.append(scale * torch.einsum("bd,bcd->bc", feats, text))
        return torch.cat(chunks)

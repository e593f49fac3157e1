"""CoCoOp on a segmentation model (TuneVLSeg, Adhikari et al., ACCV 2024; CoCoOp: Zhou et al., CVPR 2022).

A meta-net maps each image's feature (the VLSM's pooled, projected image embedding) to a bias added to
every context vector, so each image conditions the decoder with its own class prompts. All images and
classes go through the text tower together.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from vlpt.methods.cocoop import CoCoOp
from vlpt.registry import register_method
from vlpt.seg.method import SegMethodConfig, SegPromptMethod


@dataclass
class SegCoCoOpConfig(SegMethodConfig):
    n_ctx: int = 4
    ctx_init: str | None = "a photo of a"
    init_std: float = 0.02


@register_method("seg_cocoop")
class SegCoCoOp(SegPromptMethod):
    """Instance-conditional text context: shared vectors plus a meta-net bias per image."""

    Config = SegCoCoOpConfig
    needs_image_feature = True

    build_prompts = CoCoOp.build  # the same context and meta-net as classification CoCoOp
    update_classnames = CoCoOp.update_classnames

    def class_embeddings(self, image_features):
        prompts = self.context(self.meta_net(F.normalize(image_features, dim=-1)))  # [B, C, L, W]
        batch, n_classes = prompts.shape[:2]
        text = self.backbone.encode_text_embeds(prompts.flatten(0, 1), self.context.eot_positions.repeat(batch))
        return text.view(batch, n_classes, -1)

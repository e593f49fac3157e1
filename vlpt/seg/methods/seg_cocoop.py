"""CoCoOp on a segmentation model (TuneVLSeg, Adhikari et al., ACCV 2024; CoCoOp: Zhou et al., CVPR 2022).

A meta-net maps each image's feature (the VLSM's pooled, projected image embedding) to a bias added to
every context vector, so each image conditions the decoder with its own class prompts. All images and
classes go through the text tower together.

TuneVLSeg's defaults (``configs/model/cocoop/clipseg.yaml``): 4 context vectors from "a photo of a",
depth 1, and its meta-net (``meta_net: tunevlseg``): ``Linear(feature, 64)``, ReLU,
``Linear(64, text width)`` and ``LayerNorm(text width)``, all three without a final bias
(``vlpt.seg.projection``), on the image feature as it is (``norm_image_features: false``).
``meta_net: cocoop`` is CoCoOp's own (``Linear(D, D/16)``, ReLU, ``Linear(D/16, text width)``) on the
L2-normalised feature, as classification CoCoOp (both build on ``vlpt.prompts.meta_net``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F

from vlpt.errors import ConfigError
from vlpt.prompts.meta_net import conditional_context, encode_conditional
from vlpt.registry import register_seg_method
from vlpt.seg.method import SegMethodConfig, SegPromptMethod
from vlpt.seg.projection import mlp_projection

META_NETS = ("tunevlseg", "cocoop")


@dataclass
class SegCoCoOpConfig(SegMethodConfig):
    n_ctx: int = 4
    ctx_init: str | None = "a photo of a"
    init_std: float = 0.02
    #: ``tunevlseg``: TuneVLSeg's projector on the raw image feature; ``cocoop``: CoCoOp's on the normalised one
    meta_net: Literal["tunevlseg", "cocoop"] = "tunevlseg"
    meta_net_dim: int = 64


@register_seg_method("seg_cocoop")
class SegCoCoOp(SegPromptMethod):
    """Instance-conditional text context: shared vectors plus a meta-net bias per image."""

    Config = SegCoCoOpConfig
    needs_image_feature = True

    def build_prompts(self, classnames, templates):
        cfg = self.config
        backbone = self.backbone
        if cfg.meta_net not in META_NETS:
            raise ConfigError(f"{self.name}: unknown meta_net {cfg.meta_net!r}; valid: {', '.join(META_NETS)}")
        # CoCoOp's context and meta-net; the latter is drawn even where TuneVLSeg's projector replaces it,
        # so the projector's initialisation follows the same random draws as ever
        self.context, self.meta_net = conditional_context(backbone, classnames, cfg.n_ctx, cfg.ctx_init, cfg.init_std)
        if cfg.meta_net == "tunevlseg":
            self.meta_net = mlp_projection(backbone.embed_dim, backbone.text_width, cfg.meta_net_dim,
                                           final_bias=False).to(backbone.dtype)

    def update_classnames(self, classnames, templates):
        self.context.set_classnames(classnames)

    def class_embeddings(self, image_features):
        if self.config.meta_net == "cocoop":
            image_features = F.normalize(image_features, dim=-1)
        return encode_conditional(self.backbone, self.context, self.meta_net(image_features))

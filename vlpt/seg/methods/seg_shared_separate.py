"""Shared-separate multimodal prompts (TuneVLSeg, Adhikari et al., "TuneVLSeg: Prompt Tuning Benchmark
for Vision-Language Segmentation Models", ACCV 2024).

Prompt vectors live in one small shared space (``shared_dim``, 64 by default) at each of the layers
0 .. d-1; two separate linear projections map them into the text tower (the context vectors at layer 0,
deep text prompts above) and into the image tower (visual prompts after the class token).

TuneVLSeg's defaults (``configs/model/shared_separate_clipseg.yaml``): 4 vectors from N(0, 0.02), depth 1,
one projection per tower and layer (``use_unified_projection: false``; the layers' projections start as
copies of one another, as its ``copy.deepcopy``), no intermediate layer (so its ``use_proj_norm`` has no
effect). With ``unified_projection`` one projection per tower serves every layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import copy

import torch
from torch import nn

from vlpt.prompts.context import TextContext
from vlpt.registry import register_seg_method
from vlpt.seg.method import SegMethodConfig, SegPromptMethod, prompt_layers


@dataclass
class SegSharedSeparateConfig(SegMethodConfig):
    n_ctx: int = 4
    prompt_depth: int = 1
    shared_dim: int = 64
    init_std: float = 0.02
    unified_projection: bool = False


def projections(n_layers: int, unified: bool, make) -> nn.ModuleList:
    """One module per layer; with ``unified`` the same module at every layer, else copies of one freshly
    made module (TuneVLSeg deep-copies one layer, so every layer starts with the same weights)."""
    first = make()
    if unified:
        return nn.ModuleList([first] * n_layers)
    return nn.ModuleList([first] + [copy.deepcopy(first) for _ in range(n_layers - 1)])


def encode_layer_prompts(method: SegPromptMethod, text: list[torch.Tensor]) -> torch.Tensor:
    """Class embeddings from text prompts per layer: layer 0 is the context, deeper layers deep prompts."""
    deep = {layer: tokens for layer, tokens in enumerate(text) if layer > 0}
    context = method.context
    return method.backbone.encode_text_embeds(context(ctx=text[0]), context.eot_positions, deep or None)


@register_seg_method("seg_shared_separate")
class SegSharedSeparate(SegPromptMethod):
    """Shared low-dimensional prompts, separate linear projections to each tower."""

    Config = SegSharedSeparateConfig

    def build_prompts(self, classnames, templates):
        cfg = self.config
        backbone = self.backbone
        depth = len(prompt_layers(cfg.prompt_depth, min(backbone.text_layers, backbone.vision_layers), self.name))
        self.context = TextContext(backbone, classnames, n_ctx=cfg.n_ctx, learned=False)
        self.shared = nn.Parameter(torch.randn(depth, cfg.n_ctx, cfg.shared_dim, dtype=backbone.dtype) * cfg.init_std)
        dtype = backbone.dtype
        self.to_text = projections(depth, cfg.unified_projection,
                                   lambda: nn.Linear(cfg.shared_dim, backbone.text_width).to(dtype))
        self.to_vision = projections(depth, cfg.unified_projection,
                                     lambda: nn.Linear(cfg.shared_dim, backbone.vision_width).to(dtype))

    def update_classnames(self, classnames, templates):
        self.context.set_classnames(classnames)

    def class_embeddings(self, image_features):
        return encode_layer_prompts(self, [project(vectors) for project, vectors in zip(self.to_text, self.shared)])

    def vision_prompts(self):
        return {layer: project(vectors) for layer, (project, vectors) in enumerate(zip(self.to_vision, self.shared))}

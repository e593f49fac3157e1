"""Shared-attention multimodal prompts (TuneVLSeg, Adhikari et al., "TuneVLSeg: Prompt Tuning Benchmark
for Vision-Language Segmentation Models", ACCV 2024).

At each of the layers 0 .. d-1 a set of prompt vectors as wide as both towers together (text width +
vision width) passes through a transformer encoder layer, so text and visual parts attend to each
other; the output is split into the text prompts (context at layer 0, deep text prompts above) and the
visual prompts of that layer. TuneVLSeg's settings (``configs/model/shared_attn_clipseg.yaml``): 4 vectors
from N(0, 0.02), 16 heads, feed-forward 1536, dropout 0.25, pre-norm, one encoder layer per prompted
layer (starting as copies of one another).

TuneVLSeg builds the layer with PyTorch's default ``batch_first=False`` and gives it the prompt as
``[1, n_ctx, width]``: a sequence of length one for each of the ``n_ctx`` vectors, so each vector attends
only to itself, and text and vision mix within a vector, not across vectors. ``attend_across_tokens:
false`` (the default) reproduces that; ``true`` lets the vectors attend to one another.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vlpt.errors import ConfigError
from vlpt.prompts.context import TextContext
from vlpt.registry import register_seg_method
from vlpt.seg.method import SegMethodConfig, SegPromptMethod, prompt_layers
from vlpt.seg.methods.seg_shared_separate import encode_layer_prompts, projections


@dataclass
class SegSharedAttentionConfig(SegMethodConfig):
    n_ctx: int = 4
    prompt_depth: int = 1
    init_std: float = 0.02
    heads: int = 16
    feedforward: int = 1536
    dropout: float = 0.25
    unified_projection: bool = False
    #: the prompt vectors attend to one another; TuneVLSeg's code lets each attend only to itself
    attend_across_tokens: bool = False


@register_seg_method("seg_shared_attention")
class SegSharedAttention(SegPromptMethod):
    """Joint text-and-vision prompt vectors mixed by self-attention, then split between the towers."""

    Config = SegSharedAttentionConfig

    def build_prompts(self, classnames, templates):
        cfg = self.config
        backbone = self.backbone
        depth = len(prompt_layers(cfg.prompt_depth, min(backbone.text_layers, backbone.vision_layers), self.name))
        width = backbone.text_width + backbone.vision_width
        if width % cfg.heads:
            raise ConfigError(f"{self.name}: heads {cfg.heads} must divide the joint prompt width {width} "
                              f"(text {backbone.text_width} + vision {backbone.vision_width})")
        self.context = TextContext(backbone, classnames, n_ctx=cfg.n_ctx, learned=False)
        self.shared = nn.Parameter(torch.randn(depth, cfg.n_ctx, width, dtype=backbone.dtype) * cfg.init_std)
        self.mixers = projections(depth, cfg.unified_projection, lambda: nn.TransformerEncoderLayer(
            width, cfg.heads, dim_feedforward=cfg.feedforward, dropout=cfg.dropout, batch_first=True,
            norm_first=True).to(backbone.dtype))

    def update_classnames(self, classnames, templates):
        self.context.set_classnames(classnames)

    def split_prompts(self) -> tuple[list[torch.Tensor], dict[int, torch.Tensor]]:
        """Text prompts per layer and visual prompts ``{layer: tokens}``, from one pass of the mixers."""
        if self.config.attend_across_tokens:  # one sequence of n_ctx vectors
            mixed = [mixer(vectors.unsqueeze(0))[0] for mixer, vectors in zip(self.mixers, self.shared)]
        else:  # n_ctx sequences of one vector each, as TuneVLSeg's sequence-first layer sees them
            mixed = [mixer(vectors.unsqueeze(1))[:, 0] for mixer, vectors in zip(self.mixers, self.shared)]
        width = self.backbone.text_width
        return [m[:, :width] for m in mixed], {layer: m[:, width:] for layer, m in enumerate(mixed)}

    def class_embeddings(self, image_features):
        return encode_layer_prompts(self, self.split_prompts()[0])

    def vision_prompts(self):
        return self.split_prompts()[1]

    def logits(self, images):
        """One pass of the mixers per step, so text and visual prompts share one dropout draw."""
        text, vision = self.split_prompts()
        activations, _ = self.backbone.image_activations(images, vision)
        return self.backbone.decode(self.decoder, activations, encode_layer_prompts(self, text))

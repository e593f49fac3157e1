"""VPT on a segmentation model (TuneVLSeg, Adhikari et al., ACCV 2024; VPT: Jia et al., ECCV 2022).

Learnable tokens follow the class token of the VLSM's image tower at layers 0 .. d-1 (``prompt_depth``
1 is shallow VPT, more is deep VPT); they are taken out again before the decoder reads the tapped
layers. The text side is the dataset's hand-written prompt. TuneVLSeg's defaults: 4 tokens from
N(0, 0.02), depth 1.
"""
from __future__ import annotations

from dataclasses import dataclass

from vlpt.prompts.deep import PromptInit, PromptStack
from vlpt.registry import register_seg_method
from vlpt.seg.method import SegMethodConfig, SegPromptMethod, prompt_layers


@dataclass
class SegVPTConfig(SegMethodConfig):
    n_tokens: int = 4
    prompt_depth: int = 1
    init: PromptInit = "normal"
    init_std: float = 0.02


@register_seg_method("seg_vpt")
class SegVPT(SegPromptMethod):
    """Visual prompts in the image tower; hand-written text prompts."""

    Config = SegVPTConfig

    def build_prompts(self, classnames, templates):
        cfg = self.config
        layers = prompt_layers(cfg.prompt_depth, self.backbone.vision_layers, self.name)
        self.visual_prompts = PromptStack(layers, cfg.n_tokens, self.backbone.vision_width, init=cfg.init,
                                          std=cfg.init_std, dtype=self.backbone.dtype)

    def vision_prompts(self):
        return self.visual_prompts()

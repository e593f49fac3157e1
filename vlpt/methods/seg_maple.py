"""MaPLe on a segmentation model (TuneVLSeg, Adhikari et al., ACCV 2024; MaPLe: Khattak et al., CVPR 2023).

Text context plus deep text prompts at text layers 1 .. d-1; the visual prompts of image layers
0 .. d-1 are produced from the text prompts of the same layer by a linear coupling function, so the
decoder's loss tunes both towers through one set of language prompts. The coupling is MaPLe's own
(``vlpt.methods.maple``), reused here.
"""
from __future__ import annotations

from dataclasses import dataclass

from vlpt.methods.maple import MaPLe
from vlpt.prompts.context import TextContext
from vlpt.prompts.deep import PromptStack
from vlpt.registry import register_method
from vlpt.seg.method import SegMethodConfig, SegPromptMethod, prompt_layers


@dataclass
class SegMaPLeConfig(SegMethodConfig):
    n_ctx: int = 4
    ctx_init: str | None = None
    init_std: float = 0.02
    prompt_depth: int = 1


@register_method("seg_maple")
class SegMaPLe(SegPromptMethod):
    """Coupled language and vision prompts in the first ``prompt_depth`` layers of both towers."""

    Config = SegMaPLeConfig
    build_vision_prompts = MaPLe.build_vision_prompts
    deep_text_prompts = MaPLe.deep_text_prompts
    vision_prompts = MaPLe.vision_prompts

    def build_prompts(self, classnames, templates):
        cfg = self.config
        backbone = self.backbone
        prompt_layers(cfg.prompt_depth, min(backbone.text_layers, backbone.vision_layers), self.name)
        self.context = TextContext(backbone, classnames, n_ctx=cfg.n_ctx, ctx_init=cfg.ctx_init, init_std=cfg.init_std)
        deeper = list(range(1, cfg.prompt_depth))
        self.text_prompts = PromptStack(deeper, self.context.n_ctx, backbone.text_width, std=cfg.init_std,
                                        dtype=backbone.dtype) if deeper else None
        self.build_vision_prompts(self.context.n_ctx)

    def update_classnames(self, classnames, templates):
        self.context.set_classnames(classnames)

    def class_embeddings(self, image_features):
        return self.backbone.encode_text_embeds(self.context(), self.context.eot_positions,
                                                self.deep_text_prompts() or None)

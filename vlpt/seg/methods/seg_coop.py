"""CoOp on a segmentation model (TuneVLSeg, Adhikari et al., ACCV 2024; CoOp: Zhou et al., IJCV 2022).

Learned context vectors before each class name condition the decoder; with ``prompt_depth`` d > 1,
fresh text prompts replace the context positions at text layers 1 .. d-1 (deep textual prompts).
TuneVLSeg's defaults (``configs/model/coop/clipseg.yaml``): the context starts as the embedding of
"a photo of a" (4 vectors; ``ctx_init: null`` draws ``n_ctx`` vectors from N(0, 0.02) instead), deeper
prompts from N(0, 0.02), depth 1. TuneVLSeg puts the context before the dataset's whole text prompt;
here it goes before the class name, as CoOp.
"""
from __future__ import annotations

from dataclasses import dataclass

from vlpt.prompts.context import TextContext
from vlpt.prompts.deep import PromptStack
from vlpt.registry import register_seg_method
from vlpt.seg.method import SegMethodConfig, SegPromptMethod, prompt_layers


@dataclass
class SegCoOpConfig(SegMethodConfig):
    n_ctx: int = 4
    ctx_init: str | None = "a photo of a"
    init_std: float = 0.02
    prompt_depth: int = 1


@register_seg_method("seg_coop")
class SegCoOp(SegPromptMethod):
    """Learned text context (and deep text prompts) for every class prompt."""

    Config = SegCoOpConfig

    def build_prompts(self, classnames, templates):
        cfg = self.config
        self.context = TextContext(self.backbone, classnames, n_ctx=cfg.n_ctx, ctx_init=cfg.ctx_init,
                                   init_std=cfg.init_std)
        deeper = prompt_layers(cfg.prompt_depth, self.backbone.text_layers, self.name)[1:]
        self.text_prompts = PromptStack(deeper, self.context.n_ctx, self.backbone.text_width, std=cfg.init_std,
                                        dtype=self.backbone.dtype) if deeper else None

    def update_classnames(self, classnames, templates):
        self.context.set_classnames(classnames)

    def class_embeddings(self, image_features):
        deep = self.text_prompts() if self.text_prompts is not None else None
        return self.backbone.encode_text_embeds(self.context(), self.context.eot_positions, deep)

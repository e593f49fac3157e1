"""UPT: Unified Prompt Tuning (Zang, Li, Zhou, Huang, Loy, "Unified Vision and Language Prompt
Learning", arXiv 2210.07225, 2022); the prompt that MVLPT learns across tasks as "MUPT" (Shen et al.,
"Multitask Vision-Language Prompt Tuning", arXiv 2211.11720, 2022).

One shared prompt ``U`` of ``n_ctx`` tokens is learned for both towers. A tiny network maps it to the
two modalities: a linear map into the network's width, ``n_layers`` (1, as in UPT) pre-norm
transformer blocks (self-attention across the prompt tokens, then an MLP), and one linear head per
tower. The text head gives the ``n_ctx`` context tokens of CoOp-style prompts
``[SOS] [ctx] [CLASS] [.] [EOT]``; the visual head gives ``n_ctx`` tokens inserted after the class
token at the image tower's input (shallow visual prompts, ``deep_prompts={0: tokens}``). Both towers
stay frozen; only ``U`` and the network are trained, so the text and visual prompts are learned
jointly and stay coupled.

``dim`` is the width of ``U`` (default: the text width); ``proj_dim`` the width of the transformer
(default ``dim // 8``: 64 for CLIP ViT-B/16, whose text width is 512; MVLPT's code maps both prompts
into a 128-wide one-layer, one-head transformer). A small ``proj_dim`` keeps the prompt network, and
so its checkpoint, small.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from vlpt.errors import ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod, cosine_logits
from vlpt.prompts.context import TextContext
from vlpt.registry import register_method


@dataclass
class UPTConfig(MethodConfig):
    n_ctx: int = 4
    #: width of the shared prompt; None: the backbone's text width
    dim: int | None = None
    #: width of the transformer that maps the prompt to both towers; None: dim // 8 (at least 8)
    proj_dim: int | None = None
    n_layers: int = 1
    n_heads: int = 1
    mlp_ratio: float = 4.0
    init_std: float = 0.02
    class_token_position: Literal["end", "middle", "front"] = "end"
    epochs: int | dict[int, int] = field(default_factory=lambda: {1: 50, 2: 100, 4: 100, 8: 200, 16: 200})


class PromptBlock(nn.Module):
    """A pre-norm transformer block over the prompt tokens ``[M, W]`` (self-attention, then an MLP)."""

    def __init__(self, width: int, n_heads: int, mlp_ratio: float):
        super().__init__()
        if width % n_heads:
            raise ConfigError(f"UPT: proj_dim {width} is not divisible by n_heads {n_heads}")
        hidden = max(1, int(round(width * mlp_ratio)))
        self.ln_attn = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, n_heads, batch_first=True)
        self.ln_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_attn(x).unsqueeze(0)
        x = x + self.attn(h, h, h, need_weights=False)[0].squeeze(0)
        return x + self.mlp(self.ln_mlp(x))


class UnifiedPromptGenerator(nn.Module):
    """The shared prompt and the network that turns it into text and visual prompt tokens."""

    def __init__(self, n_ctx: int, dim: int, proj_dim: int, text_width: int, vision_width: int,
                 n_layers: int = 1, n_heads: int = 1, mlp_ratio: float = 4.0, init_std: float = 0.02):
        super().__init__()
        if n_ctx < 1 or dim < 1 or proj_dim < 1 or n_layers < 0:
            raise ConfigError(f"UPT: n_ctx, dim and proj_dim must be positive and n_layers >= 0, got "
                              f"n_ctx={n_ctx}, dim={dim}, proj_dim={proj_dim}, n_layers={n_layers}")
        self.prompt = nn.Parameter(torch.randn(n_ctx, dim) * init_std)
        self.to_hidden = nn.Linear(dim, proj_dim) if proj_dim != dim else nn.Identity()
        self.blocks = nn.ModuleList(PromptBlock(proj_dim, n_heads, mlp_ratio) for _ in range(n_layers))
        self.to_text = nn.Linear(proj_dim, text_width)
        self.to_visual = nn.Linear(proj_dim, vision_width)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Text context ``[M, text_width]`` and visual prompt tokens ``[M, vision_width]``."""
        x = self.to_hidden(self.prompt)
        for block in self.blocks:
            x = block(x)
        return self.to_text(x), self.to_visual(x)


class PromptSlots(TextContext):
    """TextContext's frozen [SOS] / class-name / [EOT] embeddings around a context given at call time."""

    def __init__(self, backbone, classnames, n_ctx: int, class_token_position: str = "end"):
        super().__init__(backbone, classnames, n_ctx=n_ctx, class_token_position=class_token_position)
        del self.ctx  # the context is generated from the shared prompt, not learned here

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Prompt embeddings ``[C, L, W]`` with ``ctx`` ``[M, W]`` as every class's context."""
        n_classes = self.prefix.shape[0]
        ctx = ctx.to(self.prefix.dtype).unsqueeze(0).expand(n_classes, -1, -1)
        return self._assemble(ctx, self.prefix, self.suffix)


@register_method("upt")
class UPT(PromptMethod):
    """One shared prompt mapped by a one-layer transformer to text context and visual prompts."""

    Config = UPTConfig

    def build(self, classnames, templates):
        cfg, backbone = self.config, self.backbone
        dim = cfg.dim or backbone.text_width
        proj_dim = cfg.proj_dim or max(8, dim // 8)
        self.generator = UnifiedPromptGenerator(
            cfg.n_ctx, dim, proj_dim, backbone.text_width, backbone.vision_width, n_layers=cfg.n_layers,
            n_heads=cfg.n_heads, mlp_ratio=cfg.mlp_ratio, init_std=cfg.init_std,
        ).to(backbone.dtype)
        self.context = PromptSlots(backbone, classnames, cfg.n_ctx, cfg.class_token_position)

    def update_classnames(self, classnames, templates):
        self.context.set_classnames(classnames)

    def prompts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The generated text context ``[M, text_width]`` and visual prompts ``[M, vision_width]``."""
        return self.generator()

    def text_features(self, text_ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Class embeddings ``[C, D]`` from the generated text context."""
        if text_ctx is None:
            text_ctx = self.prompts()[0]
        return self.backbone.encode_text_embeds(self.context(text_ctx), self.context.eot_positions)

    def image_features(self, images: torch.Tensor, visual: torch.Tensor | None = None) -> torch.Tensor:
        """Image embeddings ``[B, D]`` with the visual prompts inserted at the image tower's input."""
        if visual is None:
            visual = self.prompts()[1]
        return self.backbone.encode_image(images, deep_prompts={0: visual})

    def logits(self, images):
        text_ctx, visual = self.prompts()
        return cosine_logits(self.image_features(images, visual), self.text_features(text_ctx),
                             self.backbone.logit_scale)

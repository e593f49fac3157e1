"""UPT: Unified Prompt Tuning (Zang, Li, Zhou, Huang, Loy, "Unified Vision and Language Prompt
Learning", arXiv 2210.07225, 2022); the prompt that MVLPT learns across tasks as "MUPT" (Shen et al.,
"Multitask Vision-Language Prompt Tuning", arXiv 2211.11720, 2022).

UPT's own repository (yuhangzang/UPT) holds only a README; the one public implementation is MVLPT's
(sIncerass/MVLPT, ``trainers/mvlpt.py`` with ``TRAINER.MVLPT.COOP.N_CTX = VPT.N_CTX = 4``, run by its
``scripts/mvlpt`` for MUPT and for the single-task UPT baseline). Two designs:

* ``design: mvlpt`` (default, that code): CoOp-style text context ``[n_ctx, text_width]`` (N(0, 0.02))
  and VPT-style visual prompts ``[layers, n_ctx, vision_width]`` (VPT's uniform init), deep by default
  (``deep``: every image layer, ``VPT.DEEP = True``). Both are projected by their own linear map into a
  ``proj_dim`` = 128 wide space, concatenated, passed through ``n_layers`` = 1 CLIP residual attention
  block (1 head, QuickGELU MLP of 4x width), split again and projected back by a second linear map per
  tower. The code feeds the block a ``[1, tokens, 128]`` tensor to a sequence-first attention, so every
  prompt token attends only to itself: ``attend_across_tokens: false`` reproduces that; ``true`` lets the
  text and visual tokens attend to each other (what the papers describe). Visual prompts enter after the
  image tower's ``ln_pre`` (``visual_after_ln_pre``), replacing those of the previous layer at each deeper
  layer; the class token sits in the middle of the context (the scripts' ``CLASS_TOKEN_POSITION middle``).
* ``design: shared`` (the UPT paper's description): one shared prompt ``U`` ``[n_ctx, dim]`` (``dim``:
  the text width), a linear map to ``proj_dim`` (default ``dim // 8``), the blocks (attending across the
  tokens, GELU MLP) and one linear head per tower: ``n_ctx`` text context tokens and ``n_ctx`` visual tokens
  at the image tower's input only. ``vlpt/configs/methods/upt_shared.yaml`` is this reading with vlpt's earlier
  settings (class token at the end, prompts before ``ln_pre``, CoOp's epochs per shot).

Both towers stay frozen; only the prompts and the small network are trained (SGD lr 0.002, batch 32,
cosine, 1 warm-up epoch at 1e-5, 200 epochs: MVLPT's ``configs/trainers/MVLPT/vit_b16.yaml``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vlpt.backbone.clip import QuickGELU  # CLIP's x * sigmoid(1.702 x), as open_clip defines it
from vlpt.errors import ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod, cosine_logits
from vlpt.prompts.context import TextContext
from vlpt.registry import register_method

DESIGNS = ("mvlpt", "shared")


@dataclass
class UPTConfig(MethodConfig):
    #: ``mvlpt``: MVLPT's code (separate text and visual prompts through one small transformer);
    #: ``shared``: the paper's one shared prompt mapped to both towers
    design: Literal["mvlpt", "shared"] = "mvlpt"
    n_ctx: int = 4
    #: mvlpt: visual prompts at every image layer (MVLPT's VPT.DEEP); false: at the input only
    deep: bool = True
    #: shared: width of the shared prompt; None: the backbone's text width
    dim: int | None = None
    #: width of the prompt transformer; None: 128 (mvlpt, MVLPT's PROJECT_DIM) or dim // 8 (shared)
    proj_dim: int | None = None
    n_layers: int = 1
    n_heads: int = 1
    mlp_ratio: float = 4.0
    #: None: false for mvlpt (the code's attention sees one token at a time), true for shared
    attend_across_tokens: bool | None = None
    #: visual prompts join the image tokens after ln_pre (MVLPT's code) instead of before it
    visual_after_ln_pre: bool = True
    init_std: float = 0.02
    class_token_position: Literal["end", "middle", "front"] = "middle"
    epochs: int | dict[int, int] = 200


class PromptBlock(nn.Module):
    """A pre-norm transformer block over prompt tokens ``[M, W]`` (self-attention, then an MLP).

    With ``across_tokens`` false each token is its own sequence of length one, as in MVLPT's code (a
    ``[1, M, W]`` tensor given to a sequence-first attention): the attention then maps every token
    through its value and output projections alone.
    """

    def __init__(self, width: int, n_heads: int, mlp_ratio: float, across_tokens: bool = True,
                 activation: type[nn.Module] = nn.GELU):
        super().__init__()
        if width % n_heads:
            raise ConfigError(f"UPT: proj_dim {width} is not divisible by n_heads {n_heads}")
        hidden = max(1, int(round(width * mlp_ratio)))
        self.across_tokens = across_tokens
        self.ln_attn = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, n_heads, batch_first=True)
        self.ln_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), activation(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_attn(x)
        h = h.unsqueeze(0) if self.across_tokens else h.unsqueeze(1)  # [1, M, W] or M sequences [M, 1, W]
        attended = self.attn(h, h, h, need_weights=False)[0]
        x = x + (attended.squeeze(0) if self.across_tokens else attended.squeeze(1))
        return x + self.mlp(self.ln_mlp(x))


def _check_sizes(n_ctx: int, proj_dim: int, n_layers: int, **widths: int) -> None:
    if n_ctx < 1 or proj_dim < 1 or n_layers < 0 or any(w < 1 for w in widths.values()):
        raise ConfigError(f"UPT: n_ctx, proj_dim and widths must be positive and n_layers >= 0, got n_ctx={n_ctx}, "
                          f"proj_dim={proj_dim}, n_layers={n_layers}, {widths}")


def _to_width(width: int, proj_dim: int) -> nn.Module:
    """MVLPT's pre/post projections: a linear map where the widths differ, else the identity."""
    return nn.Linear(width, proj_dim) if width != proj_dim else nn.Identity()


class UnifiedPromptGenerator(nn.Module):
    """``design: shared``: one prompt ``U`` and the network that turns it into text and visual tokens."""

    def __init__(self, n_ctx: int, dim: int, proj_dim: int, text_width: int, vision_width: int,
                 n_layers: int = 1, n_heads: int = 1, mlp_ratio: float = 4.0, init_std: float = 0.02,
                 across_tokens: bool = True):
        super().__init__()
        _check_sizes(n_ctx, proj_dim, n_layers, dim=dim)
        self.prompt = nn.Parameter(torch.randn(n_ctx, dim) * init_std)
        self.to_hidden = nn.Linear(dim, proj_dim) if proj_dim != dim else nn.Identity()
        self.blocks = nn.ModuleList(PromptBlock(proj_dim, n_heads, mlp_ratio, across_tokens)
                                    for _ in range(n_layers))
        self.to_text = nn.Linear(proj_dim, text_width)
        self.to_visual = nn.Linear(proj_dim, vision_width)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Text context ``[M, text_width]`` and input visual prompts ``[1, M, vision_width]``."""
        x = self.to_hidden(self.prompt)
        for block in self.blocks:
            x = block(x)
        return self.to_text(x), self.to_visual(x).unsqueeze(0)


class MVLPTPromptGenerator(nn.Module):
    """``design: mvlpt``: text context and per-layer visual prompts through one small transformer.

    The text context ``[M, text_width]`` and the visual prompts ``[V, M, vision_width]`` (V image layers)
    are each projected to ``proj_dim``, concatenated (text first, then the visual prompts layer by
    layer), run through the blocks, split and projected back, as MVLPT's ``forward_mvlpt_proj``.
    """

    def __init__(self, n_ctx: int, text_width: int, vision_width: int, n_visual_layers: int, patch_size: int,
                 proj_dim: int = 128, n_layers: int = 1, n_heads: int = 1, mlp_ratio: float = 4.0,
                 init_std: float = 0.02, across_tokens: bool = False):
        super().__init__()
        _check_sizes(n_ctx, proj_dim, n_layers, visual_layers=n_visual_layers)
        self.text = nn.Parameter(torch.randn(n_ctx, text_width) * init_std)
        bound = math.sqrt(6.0 / (3 * patch_size**2 + vision_width))  # VPT's (xavier-style) uniform init
        self.visual = nn.Parameter(torch.empty(n_visual_layers, n_ctx, vision_width).uniform_(-bound, bound))
        self.text_in, self.text_out = _to_width(text_width, proj_dim), _to_width(proj_dim, text_width)
        self.visual_in, self.visual_out = _to_width(vision_width, proj_dim), _to_width(proj_dim, vision_width)
        self.blocks = nn.ModuleList(PromptBlock(proj_dim, n_heads, mlp_ratio, across_tokens, QuickGELU)
                                    for _ in range(n_layers))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Text context ``[M, text_width]`` and visual prompts ``[V, M, vision_width]``."""
        n_ctx = self.text.shape[0]
        x = torch.cat([self.text_in(self.text), self.visual_in(self.visual.flatten(0, 1))])
        for block in self.blocks:
            x = block(x)
        return self.text_out(x[:n_ctx]), self.visual_out(x[n_ctx:]).view_as(self.visual)


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
    """Text context and visual prompts produced together by a small transformer (see the module docstring)."""

    Config = UPTConfig

    def build(self, classnames, templates):
        cfg, backbone = self.config, self.backbone
        if cfg.design not in DESIGNS:
            raise ConfigError(f"UPT: unknown design {cfg.design!r}; valid: {', '.join(DESIGNS)}")
        across = cfg.attend_across_tokens if cfg.attend_across_tokens is not None else cfg.design == "shared"
        if cfg.design == "mvlpt":
            self.generator = MVLPTPromptGenerator(
                cfg.n_ctx, backbone.text_width, backbone.vision_width,
                backbone.vision_layers if cfg.deep else 1, backbone.patch_size,
                proj_dim=cfg.proj_dim or 128, n_layers=cfg.n_layers, n_heads=cfg.n_heads, mlp_ratio=cfg.mlp_ratio,
                init_std=cfg.init_std, across_tokens=across,
            ).to(backbone.dtype)
        else:
            dim = cfg.dim or backbone.text_width
            self.generator = UnifiedPromptGenerator(
                cfg.n_ctx, dim, cfg.proj_dim or max(8, dim // 8), backbone.text_width, backbone.vision_width,
                n_layers=cfg.n_layers, n_heads=cfg.n_heads, mlp_ratio=cfg.mlp_ratio, init_std=cfg.init_std,
                across_tokens=across,
            ).to(backbone.dtype)
        self.context = PromptSlots(backbone, classnames, cfg.n_ctx, cfg.class_token_position)

    def update_classnames(self, classnames, templates):
        self.context.set_classnames(classnames)

    def prompts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The generated text context ``[M, text_width]`` and visual prompts ``[V, M, vision_width]``, one
        row per prompted image layer ``0 .. V-1``."""
        return self.generator()

    def text_features(self, text_ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Class embeddings ``[C, D]`` from the generated text context."""
        if text_ctx is None:
            text_ctx = self.prompts()[0]
        return self.backbone.encode_text_embeds(self.context(text_ctx), self.context.eot_positions)

    def image_features(self, images: torch.Tensor, visual: torch.Tensor | None = None) -> torch.Tensor:
        """Image embeddings ``[B, D]`` with the visual prompts of layers ``0 .. V-1``."""
        if visual is None:
            visual = self.prompts()[1]
        return self.backbone.encode_image(images, deep_prompts=dict(enumerate(visual)),
                                          input_prompts_after_ln_pre=self.config.visual_after_ln_pre)

    def logits(self, images):
        text_ctx, visual = self.prompts()
        return cosine_logits(self.image_features(images, visual), self.text_features(text_ctx),
                             self.backbone.logit_scale)

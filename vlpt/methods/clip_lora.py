"""CLIP-LoRA (Zanella & Ben Ayed, "Low-Rank Few-Shot Adaptation of Vision-Language Models", CVPRW 2024).

Low-rank adapters (peft's LoRA) on the query, key and value projections of every attention layer of both towers;
the backbone stays frozen and only the adapters learn, with cross-entropy on CLIP's cosine logits against one
hand-written prompt per class, the text tower run with its adapters at every step.

open_clip's attention layers are ``nn.MultiheadAttention`` with one fused input projection. As the reference
does, each is computed as separate q, k, v and output projections (``SplitAttention``), here views of the
backbone's own weights (no copy) that peft's LoRA layers wrap; one rank-``r`` adapter per projection (peft's own
``MultiheadAttention`` support would put one joint adapter on the fused projection and on the output
projection, and skip dropout). During the method's forward passes the towers' attention modules are swapped for
these (``adapted``) and put back after, so the shared backbone is never changed.

Defaults follow the reference code (MaxZanella/CLIP-LoRA, ``main.py``, ``lora.py``, ``loralib/``,
``run_utils.py``): r 2, alpha 1, scaling alpha / sqrt(r) (its ``LinearLoRA``; peft's ``use_rslora``), dropout
0.25 on the adapters' input, A Kaiming-uniform and B zero (the adapters start as the identity), q, k and v of
every layer of both towers; AdamW lr 2e-4, weight decay 0.01, batch 32, 500 x shots iterations with a cosine to
1e-6 over them, per iteration, no warm-up; the prompt "a photo of a {}." for every dataset (``template: null``:
the dataset's); logits at the backbone's logit scale (the reference's fixed 100 is OpenAI CLIP's). The reference
trains under fp16 autocast; vlpt runs the suite's precision.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from vlpt.errors import ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod, cosine_logits
from vlpt.prompts.context import readable
from vlpt.registry import register_method

PROJECTIONS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}


@dataclass
class CLIPLoRAConfig(MethodConfig):
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = 2e-4
    weight_decay: float = 0.01
    batch_size: int = 32
    #: iterations per shot: a run takes ``iterations_per_shot x shots`` optimizer steps
    iterations_per_shot: int = 500
    #: the cosine's final learning rate
    min_lr: float = 1e-6
    warmup_epochs: int = 0
    rank: int = 2
    alpha: float = 1.0
    dropout: float = 0.25
    #: which towers get adapters: both, text or vision
    encoder: Literal["both", "text", "vision"] = "both"
    #: which projections of each attention layer (q, k, v, o)
    projections: list[str] = field(default_factory=lambda: ["q", "k", "v"])
    #: the layers adapted (None: all)
    layers: list[int] | None = None
    #: the class prompt of every dataset; None: the dataset's hand-written template
    template: str | None = "a photo of a {}."

    def __post_init__(self):
        super().__post_init__()
        if self.optimizer != "adamw":
            raise ConfigError(f"clip_lora trains with AdamW (its reference's), got optimizer {self.optimizer!r}")
        if self.rank < 1 or self.iterations_per_shot < 1 or not 0 <= self.dropout < 1:
            raise ConfigError(f"clip_lora needs rank >= 1, iterations_per_shot >= 1 and dropout in [0, 1); got "
                              f"rank {self.rank}, iterations_per_shot {self.iterations_per_shot}, dropout {self.dropout}")
        if self.encoder not in ("both", "text", "vision"):
            raise ConfigError(f"clip_lora encoder must be both, text or vision, got {self.encoder!r}")
        unknown = [p for p in self.projections if p not in PROJECTIONS]
        if unknown or not self.projections:
            raise ConfigError(f"clip_lora projections must be some of q, k, v, o; got {self.projections}")

    def training_steps(self, shots: int) -> int:
        return self.iterations_per_shot * max(1, shots)


class ProjectionSlice(nn.Linear):
    """One projection of an ``nn.MultiheadAttention`` (part 0, 1, 2 of its fused input projection: q, k, v; None:
    its output projection) as a Linear layer reading the attention's own weights at each call. The attention is
    referenced, not held as a submodule: no parameter or state-dict entry is added."""

    def __init__(self, attention: nn.MultiheadAttention, part: int | None):
        nn.Module.__init__(self)
        self.in_features = self.out_features = attention.embed_dim
        self.part = part
        object.__setattr__(self, "attention", attention)

    def _rows(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        width = self.out_features
        return None if tensor is None else tensor[self.part * width:(self.part + 1) * width]

    @property
    def weight(self) -> torch.Tensor:
        a = self.attention
        return a.out_proj.weight if self.part is None else self._rows(a.in_proj_weight)

    @property
    def bias(self) -> torch.Tensor | None:
        a = self.attention
        return a.out_proj.bias if self.part is None else self._rows(a.in_proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class SplitAttention(nn.Module):
    """``nn.MultiheadAttention``'s self-attention computed from separate q, k, v and output projections (which
    LoRA layers can wrap one by one); called as open_clip's blocks call their attention."""

    def __init__(self, attention: nn.MultiheadAttention):
        super().__init__()
        if not attention._qkv_same_embed_dim or attention.dropout:
            raise ConfigError("clip_lora adapts attention layers with one fused input projection and no attention "
                              "dropout (CLIP's)")
        self.heads, self.batch_first = attention.num_heads, attention.batch_first
        self.q_proj, self.k_proj, self.v_proj = (ProjectionSlice(attention, i) for i in range(3))
        self.out_proj = ProjectionSlice(attention, None)

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None, **_):
        x = query if self.batch_first else query.transpose(0, 1)  # self-attention: key and value are the query
        batch, length, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)),
                                             attn_mask=attn_mask)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, width))
        return (out if self.batch_first else out.transpose(0, 1)), None


def tower_blocks(backbone, encoder: str) -> list[nn.Module]:
    """The residual blocks of the towers ``encoder`` names, text first."""
    model, blocks = backbone.model, []
    if encoder in ("both", "text"):
        blocks += list(model.transformer.resblocks)
    if encoder in ("both", "vision"):
        if not hasattr(model.visual, "transformer"):
            raise ConfigError("clip_lora adapts a ViT image tower; this backbone's is not one (use encoder: text)")
        blocks += list(model.visual.transformer.resblocks)
    return blocks


@register_method("clip_lora")
class CLIPLoRA(PromptMethod):
    """LoRA adapters on the attention projections of both towers of a frozen CLIP."""

    Config = CLIPLoRAConfig
    multitask_refusal = "its run is counted in iterations of one task's shots"

    def build(self, classnames, templates):
        cfg = self.config
        self._blocks: list[nn.Module] = []
        splits = []
        for tower in (["text", "vision"] if cfg.encoder == "both" else [cfg.encoder]):
            blocks = tower_blocks(self.backbone, tower)
            layers = range(len(blocks)) if cfg.layers is None else cfg.layers
            bad = [i for i in layers if not 0 <= i < len(blocks)]
            if bad:
                raise ConfigError(f"clip_lora layers {bad} do not exist; the {tower} tower has 0..{len(blocks) - 1}")
            for i in layers:
                self._blocks.append(blocks[i])
                splits.append(SplitAttention(blocks[i].attn))
        self.attentions = nn.ModuleList(splits)
        lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, use_rslora=True,
                          init_lora_weights=True, bias="none",
                          target_modules=[PROJECTIONS[p] for p in cfg.projections])
        holder = nn.Module()  # peft places adapters by a model parameter; the split layers hold none of their own
        holder.attentions = self.attentions
        holder.anchor = nn.Parameter(torch.empty(0, device=self.backbone.device), requires_grad=False)
        inject_adapter_in_model(lora, holder)
        self._set_prompts(classnames, templates)

    def update_classnames(self, classnames, templates):
        self._set_prompts(classnames, templates)

    def _set_prompts(self, classnames, templates):
        template = self.config.template or templates[0]
        tokens = self.backbone.tokenize([template.format(readable(c)) for c in classnames])
        self.register_buffer("tokens", tokens, persistent=False)
        self._eval_text: torch.Tensor | None = None

    @contextlib.contextmanager
    def adapted(self):
        """The backbone's attention layers replaced by the adapted ones while the block runs."""
        originals = [block.attn for block in self._blocks]
        try:
            for block, split in zip(self._blocks, self.attentions):
                block.attn = split
            yield
        finally:
            for block, original in zip(self._blocks, originals):
                block.attn = original

    def text_features(self) -> torch.Tensor:
        """The classes' text features through the adapted text tower (kept between evaluation batches)."""
        if not self.training and self._eval_text is not None:
            return self._eval_text
        with self.adapted():
            features = self.backbone.encode_text(self.tokens)
        self._eval_text = None if self.training else features
        return features

    def train(self, mode: bool = True):
        self._eval_text = None  # the adapters are about to change, or were
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._eval_text = None  # other adapters
        return super().load_state_dict(state_dict, strict, assign)

    def logits(self, images):
        with self.adapted():
            image_features = self.backbone.encode_image(images)
        return cosine_logits(image_features, self.text_features(), self.backbone.logit_scale)

    def configure_optimizers(self):
        cfg = self.config
        optimizer = torch.optim.AdamW(self.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = self.trainer.max_steps  # set by the harness from training_steps; -1 when a Trainer has none
        total = max(1, int(steps if steps > 0 else self.trainer.estimated_stepping_batches))
        floor = cfg.min_lr / cfg.lr

        def factor(step: int) -> float:  # torch's CosineAnnealingLR(T_max=total, eta_min=min_lr), per iteration
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

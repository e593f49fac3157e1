"""TCP: textual-based class-aware prompt tuning (Yao et al., "TCP: Textual-based Class-aware Prompt tuning for
Visual-Language Model", CVPR 2024).

KgCoOp (CoOp plus the penalty ``kg_weight (1 - mean_c cos(w_c, w_c^clip))`` towards the hand-written prompts'
class embeddings) whose prompts become class-aware inside the text tower: a small network (``Linear(D, D/4)``,
QuickGELU, ``Linear(D/4, n_ctx x width)``) maps each class's frozen hand-written embedding to ``n_ctx`` tokens,
which replace the context slots of that class's prompt at the input of text layer ``class_token_layer``. The
network reads text embeddings only, so unseen classes get their own tokens (base-to-novel, cross-dataset).

Defaults follow the reference code (htyao89/Textual-based_Class-aware_prompt_tuning, ``trainers/tcp.py``,
``trainers/clip_text/model.py``, ``configs/trainers/TCP/vit_b16_ep100_ctxv1.yaml``, ``scripts/base2new_train.sh``,
``train.py``): 4 context tokens drawn at random (std 0.02; the config's ``CTX_INIT`` is off), the class-aware
tokens at layer 8 (of CLIP's 12), penalty weight 8; Adam (not AdamW) lr 0.002, weight decay 5e-4, eps 1e-3 (its
README patches Dassl's optimizer for it), batch 32, 50 epochs (ImageNet and SUN397: 25), 1 warm-up epoch at
1e-5 and a cosine. Its prompts keep each dataset's words after the class name ("X X X X {}, a type of pet.",
``prompt_templates``, keyed by the dataset's template) and its hand-written embeddings use its own templates
where they differ from the dataset's (``handcrafted_templates``). Departure: the reference's Stanford Cars prompt
ends ", a type of car"; the Cars template, "a photo of a {}.", is SUN's, Caltech's and ImageNet's too, so vlpt
gives it their "X X X X {}.". The reference publishes base-to-novel settings only; vlpt uses them for every
protocol.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from vlpt.errors import ConfigError
from vlpt.methods.kgcoop import KgCoOp, KgCoOpConfig
from vlpt.prompts.context import TextContext
from vlpt.registry import register_method


class QuickGELU(nn.Module):
    """CLIP's GELU approximation, ``x sigmoid(1.702 x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


@dataclass
class TCPConfig(KgCoOpConfig):
    n_ctx: int = 4
    ctx_init: str | None = None
    optimizer: Literal["sgd", "adamw", "adam"] = "adam"
    #: Adam's epsilon (the reference's 1e-3)
    adam_eps: float = 1e-3
    batch_size: int = 32
    epochs: int | dict[int, int] = 50
    dataset_epochs: dict[str, int | dict[int, int]] = field(default_factory=lambda: {"imagenet": 25, "sun397": 25})
    #: the text layer at whose input the class-aware tokens replace the context
    class_token_layer: int = 8
    #: TCP's hand-written prompts where they differ from the dataset's template
    handcrafted_templates: dict[str, str] = field(default_factory=lambda: {
        "{} texture.": "a photo of a {}, a type of texture.",
        "a photo of a {}, a type of aircraft.": "a photo of an aircraft {}.",
        "a photo of {}, a type of food.": "a photo of a {}, a type of food.",
    })
    #: dataset template -> TCP's learned prompt ({ctx}: the context, {}: the class name); others "{ctx} {}."
    prompt_templates: dict[str, str] = field(default_factory=lambda: {
        "a photo of a {}, a type of pet.": "{ctx} {}, a type of pet.",
        "a photo of a {}, a type of flower.": "{ctx} {}, a type of flower.",
        "a photo of a {}, a type of aircraft.": "{ctx} {}, a type of aircraft.",
        "{} texture.": "{ctx} {} texture.",
        "a photo of {}, a type of food.": "{ctx} {}, a type of food.",
        "a photo of a person doing {}.": "{ctx} person doing {}.",
    })

    def __post_init__(self):
        super().__post_init__()
        if self.optimizer not in ("sgd", "adamw", "adam"):
            raise ConfigError(f"tcp optimizer must be adam, adamw or sgd, got {self.optimizer!r}")
        if not self.adam_eps > 0:
            raise ConfigError(f"tcp adam_eps must be positive, got {self.adam_eps}")


@register_method("tcp")
class TCP(KgCoOp):
    """KgCoOp whose context becomes class-aware tokens, made from the classes' text embeddings, deep in the text
    tower."""

    Config = TCPConfig

    def build(self, classnames, templates):
        cfg = self.config
        if not 0 < cfg.class_token_layer < self.backbone.text_layers:
            raise ConfigError(f"tcp class_token_layer {cfg.class_token_layer}: this text tower allows "
                              f"1..{self.backbone.text_layers - 1}")
        self.context = TextContext(self.backbone, classnames, n_ctx=cfg.n_ctx, ctx_init=cfg.ctx_init,
                                   init_std=cfg.init_std, template=self._prompt_template(templates))
        dim, width = self.backbone.embed_dim, self.backbone.text_width
        self.class_net = nn.Sequential(nn.Linear(dim, dim // 4), QuickGELU(),
                                       nn.Linear(dim // 4, self.context.n_ctx * width)).to(self.backbone.dtype)
        self._set_handcrafted(classnames, templates)

    def _prompt_template(self, templates) -> str:
        return self.config.prompt_templates.get(templates[0], "{ctx} {}.")

    def update_classnames(self, classnames, templates):
        self.context.template = self._prompt_template(templates)  # another dataset's words around the name
        self.context.set_classnames(classnames)
        self._set_handcrafted(classnames, templates)

    def class_tokens(self) -> torch.Tensor:
        """The class-aware tokens ``[C, n_ctx, width]`` from the hand-written class embeddings."""
        tokens = self.class_net(self.handcrafted.to(self.backbone.dtype))
        return tokens.view(len(self.handcrafted), self.context.n_ctx, self.backbone.text_width)

    def text_features(self):
        return self.backbone.encode_text_embeds(self.context(), self.context.eot_positions,
                                                deep_prompts={self.config.class_token_layer: self.class_tokens()})

    def build_optimizer(self, params):
        cfg = self.config
        if cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
        return super().build_optimizer(params)

"""DePT: decoupled prompt tuning (Zhang et al., "DePT: Decoupled Prompt Tuning", CVPR 2024), as a head on CoOp
(``dept_coop``), KgCoOp (``dept_kgcoop``, its paper's best text-prompt pairing) and MaPLe (``dept_maple``, whose
head reads MaPLe's prompted image features).

A channel-wise transform (a learned scale and shift per channel, from 1 and 0) of the prompt method's image and
text features feeds a linear classifier over the training classes, trained beside the prompt: the loss is
``(1 - w) CE(prompt logits) + w CE(head logits)`` (plus KgCoOp's penalty), where the head classifies both each
image's transformed feature and its class's transformed text feature. On the training classes the scores are
``(1 - w) prompt logits + w head logits`` (raw logits, the head's unscaled); on a class list holding any class it
never trained on (novel classes, another dataset) the head is left out and the prompt alone scores, as the
reference evaluates novel classes.

Defaults follow the reference code (Koorye/DePT, ``trainers/elp_coop.py``, ``trainers/elp_kgcoop.py``,
``trainers/elp_maple.py`` (``FiLM``), ``trainers/optim.py``, ``train.py``, ``configs/trainers/*``): w 0.7, the
head and transforms at 6.5 times the learning rate, SGD lr 0.0035, batch 4, 10 epochs, Dassl's warm-up and
cosine; CoOp's 16 random context tokens; KgCoOp's 4 tokens from "a photo of a" with penalty weight 2 (DePT's
KgCoOp config); MaPLe's 2 tokens from "a photo of a" at depth 9, for 10 epochs (DePT's
``configs/trainers/ExtrasLinearProbeMaPLe/vit_b16_c2_ep10_batch4_2ctx.yaml``; MaPLe's own config trains 5).
Dassl's warm-up puts both parameter groups at 1e-5 for the first epoch. The reference builds its head in
base-to-novel training (and on ImageNet); vlpt's runs build it in every protocol and fuse wherever all classes
scored were trained on.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlpt.errors import ConfigError
from vlpt.methods.base import TrainedClassesCheckpoint, cosine_logits
from vlpt.methods.coop import CoOp, CoOpConfig
from vlpt.methods.kgcoop import KgCoOp, KgCoOpConfig
from vlpt.methods.maple import MaPLe, MaPLeConfig
from vlpt.registry import register_method


class ChannelTransform(nn.Module):
    """``x * scale + shift`` per channel, starting as the identity (DePT's channel-wise transform)."""

    def __init__(self, width: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width))
        self.shift = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


@dataclass
class DePTSettings:
    """What DePT adds to its prompt method's config."""

    #: the head's weight in the loss and in the fused scores
    head_weight: float = 0.7
    #: the learning rate of the head and the transforms, as a multiple of the prompt's
    head_lr_scale: float = 6.5

    def __post_init__(self):
        super().__post_init__()  # the prompt method's config
        if self.optimizer != "sgd":
            raise ConfigError(f"dept trains with SGD (its reference's), got optimizer {self.optimizer!r}")
        if not 0 <= self.head_weight <= 1 or self.head_lr_scale <= 0:
            raise ConfigError(f"dept head_weight must be in [0, 1] and head_lr_scale positive, got "
                              f"{self.head_weight}, {self.head_lr_scale}")


class DePTHead(TrainedClassesCheckpoint):
    """The decoupled head over a prompt method whose ``text_features()`` and ``image_features(images)`` score by
    cosine similarity (mixed in before CoOp, KgCoOp or MaPLe)."""

    #: the module names that take ``head_lr_scale`` times the learning rate
    head_modules = ("film_image", "film_text", "head")
    multitask_refusal = "its linear head has one row per class of the task it was built for"

    def build(self, classnames, templates):
        super().build(classnames, templates)
        width = self.backbone.embed_dim
        self.film_image, self.film_text = ChannelTransform(width), ChannelTransform(width)
        self.head = nn.Linear(width, len(classnames)).to(self.backbone.dtype)
        self.trained_classnames = list(classnames)
        self.register_buffer("head_rows", torch.arange(len(classnames)), persistent=False)

    def update_classnames(self, classnames, templates):
        super().update_classnames(classnames, templates)
        self._set_head_rows(classnames)

    def _set_head_rows(self, classnames) -> None:
        """The head's rows of ``classnames``, or None when it holds no row of some class (the prompt scores
        alone)."""
        known = all(c in self.trained_classnames for c in classnames)
        rows = torch.tensor([self.trained_classnames.index(c) for c in classnames]) if known else None
        self.head_rows = None if rows is None else rows.to(self.head.weight.device)

    def prompt_penalty(self, text_features: torch.Tensor) -> torch.Tensor | float:
        """The prompt method's own regulariser (KgCoOp's penalty); none for CoOp."""
        return 0.0

    def training_loss(self, images, labels):
        text, image = self.text_features(), self.image_features(images)
        prompt_logits = cosine_logits(image, text, self.backbone.logit_scale)
        head_logits = self.head(torch.cat([self.film_text(text)[labels], self.film_image(image)]))
        w = self.config.head_weight
        return ((1 - w) * F.cross_entropy(prompt_logits, labels)
                + w * F.cross_entropy(head_logits, torch.cat([labels, labels])) + self.prompt_penalty(text))

    def logits(self, images):
        image = self.image_features(images)
        prompt_logits = cosine_logits(image, self.text_features(), self.backbone.logit_scale)
        if self.head_rows is None:
            return prompt_logits
        head_logits = F.linear(self.film_image(image), self.head.weight[self.head_rows], self.head.bias[self.head_rows])
        w = self.config.head_weight
        return (1 - w) * prompt_logits + w * head_logits

    def build_optimizer(self, params):
        """Two groups: the prompt at the config's learning rate, the head and transforms at ``head_lr_scale``
        times it (the reference's staged learning rate)."""
        cfg = self.config
        head = {id(p) for name in self.head_modules for p in getattr(self, name).parameters()}
        groups = [{"params": [p for p in params if id(p) not in head]},
                  {"params": [p for p in params if id(p) in head], "lr": cfg.lr * cfg.head_lr_scale}]
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)



@dataclass
class DePTCoOpConfig(DePTSettings, CoOpConfig):
    lr: float = 0.0035
    batch_size: int = 4
    epochs: int | dict[int, int] = 10


@dataclass
class DePTKgCoOpConfig(DePTSettings, KgCoOpConfig):
    kg_weight: float = 2.0
    lr: float = 0.0035
    batch_size: int = 4
    epochs: int | dict[int, int] = 10


@register_method("dept_coop")
class DePTCoOp(DePTHead, CoOp):
    """CoOp with DePT's decoupled head."""

    Config = DePTCoOpConfig


@register_method("dept_kgcoop")
class DePTKgCoOp(DePTHead, KgCoOp):
    """KgCoOp with DePT's decoupled head."""

    Config = DePTKgCoOpConfig

    def prompt_penalty(self, text_features):
        return self.config.kg_weight * self.knowledge_distance(text_features)


@dataclass
class DePTMaPLeConfig(DePTSettings, MaPLeConfig):
    epochs: int | dict[int, int] = 10


@register_method("dept_maple")
class DePTMaPLe(DePTHead, MaPLe):
    """MaPLe with DePT's decoupled head over its prompted image features."""

    Config = DePTMaPLeConfig

    def image_features(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_image(inputs, deep_prompts=self.vision_prompts())

"""CLAP: a class-adaptive linear probe (Silva-Rodriguez et al., "A Closer Look at the Few-Shot Adaptation of
Large Vision-Language Models", CVPR 2024).

A linear probe whose class prototypes ``W`` start at zero-shot CLIP's class text features ``T`` (unnormalised)
and are kept near them by a penalty weighted per class: ``CE(s cos(f, W)) + mean_c lambda_c ||W_c - T_c||^2``,
where ``lambda_c`` is zero-shot CLIP's mean probability of class c on the training images of class c (its
accuracy in soft form), so classes zero-shot CLIP already knows move least. No validation set is used.

Defaults follow the reference code (jusiro/CLAP, ``trainers/adapters.py``, ``configs/trainers/
SGD_lr1e-1_B256_ep300.yaml``, ``experiments/experiment_CLAP.txt``): prototypes from the dataset's hand-written
template; training on a bank of the training images' features under 20 augmented passes (random resized crop of
8% to all of the image, bicubic, and a flip; ``cache_augment: suite``: the suite's augmentation), all passes
kept; SGD lr 0.1, momentum 0.9, no weight decay, batch 256, 300 epochs, Dassl's schedule (1 warm-up epoch at
1e-5, then a cosine per epoch); each epoch shuffles the bank and takes as many batches of 256 as the training
*images* fill (one when they are fewer than 256, as Dassl's loader counts them), so an epoch sees about 1/20 of
the bank; logits at the backbone's fixed logit scale; the multipliers fixed at their initial values (the
reference's ``l2`` constraint; its augmented-Lagrangian updates are not run by any of its scripts).
``constraint: none`` is its ZS-LP baseline (the same probe without the penalty). The reference's ImageNet
prototypes average 8 templates; vlpt uses the dataset's one. The probe trains on stored features in a few
hundred steps, so it runs here as a plain loop, not through Lightning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vlpt.data.transforms import crop_flip_as
from vlpt.errors import ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod, TrainedClassesCheckpoint
from vlpt.methods.linear_probe import extract_features, training_class_rows
from vlpt.prompts.context import readable
from vlpt.registry import register_method


@dataclass
class CLAPConfig(MethodConfig):
    lr: float = 0.1
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int | dict[int, int] = 300
    #: augmented passes over the training images, every pass kept in the training bank
    augment_passes: int = 20
    #: clap: the reference's crop (scale 0.08-1, bicubic) and flip; suite: the suite's training augmentation
    cache_augment: Literal["clap", "suite"] = "clap"
    #: l2: CLAP's class-adaptive penalty; none: ZS-LP (the zero-shot-initialised probe alone)
    constraint: Literal["l2", "none"] = "l2"

    def __post_init__(self):
        super().__post_init__()
        if self.augment_passes < 1:
            raise ConfigError(f"clap augment_passes must be at least 1, got {self.augment_passes}")
        if self.cache_augment not in ("clap", "suite"):
            raise ConfigError(f"clap cache_augment must be clap or suite, got {self.cache_augment!r}")
        if self.constraint not in ("l2", "none"):
            raise ConfigError(f"clap constraint must be l2 or none, got {self.constraint!r}")


@register_method("clap")
class CLAP(TrainedClassesCheckpoint, PromptMethod):
    """Zero-shot-initialised class prototypes, trained with a penalty towards them that each class weighs by
    zero-shot CLIP's accuracy on it."""

    Config = CLAPConfig
    frozen_image_features = True

    @classmethod
    def unseen_classes(cls, config):
        return "subset"  # prototypes of the training classes only

    def build(self, classnames, templates):
        text = self.text_prototypes(classnames, templates)
        self.prototypes = nn.Parameter(text.clone())
        self.register_buffer("zero_shot", text, persistent=False)
        self.register_buffer("multipliers", torch.zeros(len(classnames)), persistent=False)
        self.register_buffer("rows", torch.arange(len(classnames)), persistent=False)
        self.trained_classnames = list(classnames)

    def update_classnames(self, classnames, templates):
        self.rows = training_class_rows(self.trained_classnames, classnames,
                                        "clap has no prototypes of classes").to(self.prototypes.device)

    @torch.no_grad()
    def text_prototypes(self, classnames, templates) -> torch.Tensor:
        """Zero-shot CLIP's class text features of the dataset's template, unnormalised, float32."""
        tokens = self.backbone.tokenize([templates[0].format(readable(c)) for c in classnames])
        return self.backbone.encode_text(tokens).float()

    # ---- training on the bank of augmented features ----------------------------------------------
    def bank_transform(self, datamodule):
        if self.config.cache_augment == "suite":
            return datamodule.train_tf
        return crop_flip_as(datamodule, self.backbone.image_size, (0.08, 1.0))

    def support_bank(self, datamodule) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Features and labels of every augmented pass over the training images (stored in the feature
        cache), and the number of training images."""
        transform, features, labels = self.bank_transform(datamodule), [], []
        for view in range(self.config.augment_passes):
            x, y = extract_features(self, datamodule.train_view_dataloader(transform, view))
            features.append(torch.from_numpy(x))
            labels.append(torch.from_numpy(y).long())
        device = self.prototypes.device
        return torch.cat(features).float().to(device), torch.cat(labels).to(device), len(labels[0])

    def scores(self, features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return self.backbone.logit_scale * F.normalize(features.float(), dim=-1) @ F.normalize(prototypes, dim=-1).T

    @torch.no_grad()
    def class_multipliers(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """lambda_c: zero-shot CLIP's mean probability of class c over the bank's features of class c."""
        probability = self.scores(features, self.zero_shot).softmax(dim=-1)
        truth = probability.gather(1, labels[:, None])[:, 0]
        total = torch.zeros(len(self.zero_shot), device=truth.device).index_add_(0, labels, truth)
        count = torch.bincount(labels, minlength=len(self.zero_shot)).clamp(min=1)
        return total / count

    def bank_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(self.scores(features, self.prototypes), labels)
        if self.config.constraint == "l2":
            loss = loss + (self.multipliers * (self.prototypes - self.zero_shot).pow(2).sum(dim=-1)).mean()
        return loss

    def fit_without_gradients(self, datamodule) -> bool:
        cfg = self.config
        features, labels, images = self.support_bank(datamodule)
        self.multipliers = self.class_multipliers(features, labels)
        shots = int(torch.bincount(labels[:images]).max())
        self.max_epochs = cfg.epochs_for(shots, getattr(datamodule.data, "dataset", None))
        setup = self.configure_optimizers()
        optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
        batches = max(1, images // cfg.batch_size)  # Dassl's loader over the images: drop_last from one batch on
        with torch.enable_grad(), torch.autocast(features.device.type, enabled=False):
            for _ in range(self.max_epochs):
                order = torch.randperm(len(labels), device=labels.device)
                for b in range(batches):
                    batch = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                    optimizer.zero_grad()
                    self.bank_loss(features[batch], labels[batch]).backward()
                    optimizer.step()
                scheduler.step()
        return True

    def logits(self, images):
        with torch.autocast(self.prototypes.device.type, enabled=False):
            return self.scores(self.image_features(images), self.prototypes[self.rows])


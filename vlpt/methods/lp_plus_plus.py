"""LP++: a linear probe blended with the text classifier (Huang et al., "LP++: A Surprisingly Strong Linear Probe
for Few-Shot CLIP", CVPR 2024).

Scores of a normalised image feature ``f``: ``W f + b + alpha (.) (T f)``, a linear probe plus zero-shot CLIP's
text logits ``T f`` (no logit scale) weighted per class by a learned ``alpha``. Trained full-batch on the training
images' features, with step sizes from the data instead of a searched learning rate.

Defaults follow the reference code (FereshteShakeri/FewShot-CLIP-Strong-Baseline, ``methods/linear_probe_p2.py``,
``methods/utils.py``, ``configs/base.yaml``, ``main.py``): ``W`` starts at each class's *sum* of training features
and ``b`` at ``nn.Linear``'s random initialisation; every alpha starts at 250 times the mean of the class-mean text
logits (over every class pair); 300 full-batch epochs of SGD with momentum 0.9 on ``W`` and ``b`` at step
``4 N / lambda_max(F^T F)``; every 10th epoch ``alpha`` takes a gradient step of ``N / (4 max_c sum_i (t_c f_i)^2)``
along its gradient *summed since the first epoch* (the reference never zeroes it; ``alpha_gradient: epoch`` takes
the 10th epoch's alone); the classifier of the epoch with the best validation accuracy is kept (the latest of ties).
The training features are one pass of a random resized crop (half to all of the image, bicubic) and a flip
(``view_augment: suite``: the suite's augmentation). Departures: the reference runs in fp16 (vlpt in float32)
and its ImageNet text classifier averages 7 templates (vlpt: the dataset's one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlpt.data.transforms import crop_flip_as
from vlpt.errors import ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod, TrainedClassesCheckpoint
from vlpt.methods.linear_probe import extract_features, training_class_rows
from vlpt.methods.zeroshot import zero_shot_weights
from vlpt.registry import register_method


@dataclass
class LPPlusPlusConfig(MethodConfig):
    epochs: int | dict[int, int] = 300
    #: alpha's gradient step comes every this many epochs
    alpha_every: int = 10
    #: accumulated: the gradient summed since the first epoch (the reference); epoch: that epoch's alone
    alpha_gradient: Literal["accumulated", "epoch"] = "accumulated"
    #: lpp: the reference's crop (half to all of the image, bicubic) and flip; suite: the suite's augmentation
    view_augment: Literal["lpp", "suite"] = "lpp"

    def __post_init__(self):
        super().__post_init__()
        if self.alpha_every < 1:
            raise ConfigError(f"lp_plus_plus alpha_every must be at least 1, got {self.alpha_every}")
        if self.alpha_gradient not in ("accumulated", "epoch"):
            raise ConfigError(f"lp_plus_plus alpha_gradient must be accumulated or epoch, got {self.alpha_gradient!r}")
        if self.view_augment not in ("lpp", "suite"):
            raise ConfigError(f"lp_plus_plus view_augment must be lpp or suite, got {self.view_augment!r}")


def step_sizes(features: torch.Tensor, text: torch.Tensor) -> tuple[float, float]:
    """The reference's step sizes of ``W`` and of ``alpha`` from the training features ``[N, D]`` and the text
    classifier ``[C, D]``: ``4 N / lambda_max(F^T F)`` and ``N / (4 max_c sum_i (t_c f_i)^2)``."""
    n = len(features)
    largest = float(np.linalg.eigvalsh((features.T @ features).double().cpu().numpy()).max())
    return 4 * n / largest, n / (4 * float((features @ text.T).pow(2).sum(dim=0).max()))


def initial_alpha(features: torch.Tensor, labels: torch.Tensor, text: torch.Tensor, classes: int) -> float:
    """250 times the mean over class pairs (c, j) of class c's mean text logit of class j."""
    logits = (features @ text.T).double()
    sums = torch.zeros(classes, classes, dtype=torch.float64, device=logits.device).index_add_(0, labels, logits)
    means = sums / torch.bincount(labels, minlength=classes).clamp(min=1)[:, None]
    return 250.0 * float(means.mean())


@register_method("lp_plus_plus")
class LPPlusPlus(TrainedClassesCheckpoint, PromptMethod):
    """A linear probe plus zero-shot CLIP's text logits, blended per class."""

    Config = LPPlusPlusConfig
    frozen_image_features = True

    @classmethod
    def unseen_classes(cls, config):
        return "subset"  # a classifier row per training class

    @classmethod
    def hyperparameter_selection(cls, config):
        return "validation"  # the epoch

    def build(self, classnames, templates):
        n, dim = len(classnames), self.backbone.embed_dim
        self.register_buffer("weight", torch.zeros(n, dim))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("alpha", torch.zeros(n))
        self.register_buffer("rows", torch.arange(n), persistent=False)
        self.trained_classnames = list(classnames)
        self._set_text(classnames, templates)

    def update_classnames(self, classnames, templates):
        self.rows = training_class_rows(self.trained_classnames, classnames,
                                        "lp_plus_plus has no classifier for classes").to(self.weight.device)
        self._set_text(classnames, templates)

    def _set_text(self, classnames, templates):
        with torch.no_grad():
            self.register_buffer("text", zero_shot_weights(self.backbone, classnames, templates[:1]).float(),
                                 persistent=False)

    def view_transform(self, datamodule):
        if self.config.view_augment == "suite":
            return datamodule.train_tf
        return crop_flip_as(datamodule, self.backbone.image_size, (0.5, 1.0))

    def normalised_features(self, loader) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = extract_features(self, loader)
        device = self.weight.device
        return F.normalize(torch.from_numpy(x).float(), dim=-1).to(device), torch.from_numpy(y).long().to(device)

    @staticmethod
    def blend(features, weight, bias, alpha, text) -> torch.Tensor:
        return features @ weight.T + bias + alpha * (features @ text.T)

    def fit_without_gradients(self, datamodule) -> bool:
        cfg = self.config
        if not datamodule.data.val:
            raise ConfigError("lp_plus_plus keeps the epoch of best validation accuracy, and this run has no "
                              "validation images; give the dataset a validation split")
        features, labels = self.normalised_features(datamodule.train_view_dataloader(self.view_transform(datamodule), 0))
        val_features, val_labels = self.normalised_features(datamodule.val_dataloader())
        classes, text = len(self.trained_classnames), self.text
        shots = int(torch.bincount(labels).max())
        epochs = cfg.epochs_for(shots, getattr(datamodule.data, "dataset", None))
        probe = nn.Linear(features.shape[1], classes).to(features.device)  # its bias keeps nn.Linear's initialisation
        with torch.no_grad():
            probe.weight.copy_(torch.zeros(classes, features.shape[1], device=features.device).index_add_(0, labels, features))
        alpha = torch.full((classes,), initial_alpha(features, labels, text, classes), device=features.device,
                           requires_grad=True)
        step_w, step_alpha = step_sizes(features, text)
        optimizer = torch.optim.SGD(probe.parameters(), lr=step_w, momentum=0.9)
        best = -1.0
        with torch.enable_grad(), torch.autocast(features.device.type, enabled=False):
            for epoch in range(epochs):
                loss = F.cross_entropy(self.blend(features, probe.weight, probe.bias, alpha, text), labels)
                optimizer.zero_grad()
                if cfg.alpha_gradient == "epoch" and alpha.grad is not None:
                    alpha.grad.zero_()
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    if (epoch + 1) % cfg.alpha_every == 0:
                        alpha -= step_alpha * alpha.grad
                    scores = self.blend(val_features, probe.weight, probe.bias, alpha, text)
                    accuracy = float((scores.argmax(dim=-1) == val_labels).float().mean())
                    if accuracy >= best:
                        best, self.best_epoch = accuracy, epoch + 1
                        self.weight.copy_(probe.weight)
                        self.bias.copy_(probe.bias)
                        self.alpha.copy_(alpha)
        return True

    def logits(self, images):
        with torch.autocast(self.weight.device.type, enabled=False):
            features = F.normalize(self.image_features(images).float(), dim=-1)
            rows = self.rows
            return self.blend(features, self.weight[rows], self.bias[rows], self.alpha[rows], self.text)


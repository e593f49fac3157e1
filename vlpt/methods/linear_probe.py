"""Linear probe on frozen CLIP image features (Radford et al. 2021; CoOp's linear-probe baseline).

scikit-learn's L2-regularized logistic regression (lbfgs, 1000 iterations) on unnormalized image
features of the training images (evaluation transform); the classifier is kept as the method's own
(kilobyte) tensors. The inverse regularization strength C is chosen on the validation set as CoOp's
reference code does (KaiyangZhou/CoOp, ``lpclip/linear_probe.py``): a sweep over ``c_grid``, then
``refine_steps`` rounds that start from the interval [C*/10, 10 C*] around the best C*, fit both ends,
keep the better one (the left on a tie) and halve the interval in log space towards it; the last
round's winner is the classifier. Departure: the reference samples its own few-shot sets with numpy;
vlpt uses the protocol's split, the same images every other method trains on.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from vlpt.errors import ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod
from vlpt.registry import register_method


@dataclass
class LinearProbeConfig(MethodConfig):
    c_grid: list[float] = field(default_factory=lambda: [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6])
    refine_steps: int = 8
    max_iter: int = 1000


@torch.no_grad()
def extract_features(method: PromptMethod, loader) -> tuple[np.ndarray, np.ndarray]:
    """Image features and labels of every batch of ``loader`` (images or stored features), as numpy arrays."""
    features, labels = [], []
    device = method.backbone.model.token_embedding.weight.device
    for inputs, y in loader:
        features.append(method.image_features(inputs.to(device)).float().cpu())
        labels.append(y)
    return torch.cat(features).numpy(), torch.cat(labels).numpy()


def choose_c(score, grid, refine_steps: int) -> float:
    """CoOp's C search: the best of ``grid`` (first on a tie), then rounds of a left/right duel whose
    winner's half of the log-space interval is searched next; the last winner is returned."""
    scores = [score(c) for c in grid]
    peak = grid[int(np.argmax(scores))]
    low, high = math.log10(peak) - 1, math.log10(peak) + 1
    chosen = peak
    for _ in range(refine_steps):
        middle = (low + high) / 2
        if score(10**low) < score(10**high):
            chosen, low = 10**high, middle
        else:
            chosen, high = 10**low, middle
    return chosen


@register_method("linear_probe")
class LinearProbe(PromptMethod):
    """A logistic-regression head over frozen image features; it cannot name unseen classes."""

    Config = LinearProbeConfig
    frozen_image_features = True

    @classmethod
    def unseen_classes(cls, config):
        return "subset"  # a classifier row per training class: masks, never novel classes

    def build(self, classnames, templates):
        dim = self.backbone.embed_dim
        self.register_buffer("weight", torch.zeros(len(classnames), dim))
        self.register_buffer("bias", torch.zeros(len(classnames)))
        self.trained_classnames = list(classnames)
        self.register_buffer("rows", torch.arange(len(classnames)), persistent=False)

    def update_classnames(self, classnames, templates):
        unknown = [c for c in classnames if c not in self.trained_classnames]
        if unknown:
            raise ConfigError(
                f"linear_probe has no classifier for classes it was not trained on: {unknown[:5]}"
                f"{' ...' if len(unknown) > 5 else ''}; it cannot run base-to-novel or cross-dataset transfer"
            )
        self.rows = torch.tensor([self.trained_classnames.index(c) for c in classnames], device=self.weight.device)

    def _fit(self, c: float, x: np.ndarray, y: np.ndarray) -> LogisticRegression:
        with warnings.catch_warnings():  # the sweep's weakest regularization (C = 1e6) rarely converges
            warnings.simplefilter("ignore", ConvergenceWarning)
            return LogisticRegression(C=c, max_iter=self.config.max_iter, random_state=0).fit(x, y)

    def fit_without_gradients(self, datamodule) -> bool:
        x_train, y_train = extract_features(self, datamodule.train_eval_dataloader())
        x_val, y_val = extract_features(self, datamodule.val_dataloader())
        best_c = choose_c(lambda c: self._fit(c, x_train, y_train).score(x_val, y_val), self.config.c_grid,
                          self.config.refine_steps)
        model = self._fit(best_c, x_train, y_train)
        weight = np.zeros((len(self.trained_classnames), x_train.shape[1]), dtype=np.float32)
        bias = np.full(len(self.trained_classnames), -1e4, dtype=np.float32)
        if len(model.classes_) == 2:  # scikit-learn keeps one row for binary problems
            weight[model.classes_[1]], bias[model.classes_[1]] = model.coef_[0], model.intercept_[0]
            bias[model.classes_[0]] = 0.0
        else:
            weight[model.classes_], bias[model.classes_] = model.coef_, model.intercept_
        self.weight.copy_(torch.from_numpy(weight))
        self.bias.copy_(torch.from_numpy(bias))
        self.chosen_c = best_c
        return True

    def logits(self, images):
        features = self.image_features(images).float()
        return features @ self.weight[self.rows].T + self.bias[self.rows]

"""Linear probe on frozen CLIP image features (Radford et al. 2021; CoOp's linear-probe baseline).

scikit-learn's L2-regularized logistic regression (lbfgs) on unnormalised image features of the
training images; the inverse regularization strength C is chosen on the validation set (min(K, 4)
images per class). The search, ``search: coop`` by default, is the one of CoOp's reference code
(``lpclip/linear_probe.py``): a sweep over ``c_grid`` in its order (the first best value wins ties), then
``refine_steps`` rounds on the log interval [best/10, best*10]: fit both ends, keep the half on the
side of the better one (the left one on ties), and the classifier is the one chosen in the last round.
``search: ternary`` is vlpt's former reading of CLIP's protocol: the sweep's neighbours bound the
interval, which ternary search narrows, and the best C seen anywhere is refitted. The classifier is
kept as the method's own (kilobyte) tensors.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Literal

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
    #: coop: CoOp's lpclip search (the reference); ternary: vlpt's earlier search
    search: Literal["coop", "ternary"] = "coop"

    def __post_init__(self):
        super().__post_init__()
        if self.search not in ("coop", "ternary"):
            raise ConfigError(f"linear_probe search must be coop or ternary, got {self.search!r}")
        if not self.c_grid or min(self.c_grid) <= 0:
            raise ConfigError(f"c_grid must hold positive values, got {self.c_grid}")


def training_class_rows(trained: list[str], classnames, refusal: str) -> torch.Tensor:
    """The rows of ``classnames`` among the ``trained`` classes, for a method that scores those only; a class it
    never saw raises ConfigError starting with ``refusal``."""
    unknown = [c for c in classnames if c not in trained]
    if unknown:
        raise ConfigError(f"{refusal} {unknown[:5]}{' ...' if len(unknown) > 5 else ''}; it cannot run "
                          f"base-to-novel or cross-dataset transfer")
    return torch.tensor([trained.index(c) for c in classnames])


@torch.no_grad()
def extract_features(method: PromptMethod, loader) -> tuple[np.ndarray, np.ndarray]:
    """Image features and labels of every batch of ``loader`` (images or stored features), as numpy arrays."""
    features, labels = [], []
    device = method.backbone.device
    for inputs, y in loader:
        features.append(method.image_features(inputs.to(device)).float().cpu())
        labels.append(y)
    return torch.cat(features).numpy(), torch.cat(labels).numpy()


@register_method("linear_probe")
class LinearProbe(PromptMethod):
    """A logistic-regression head over frozen image features; it cannot name unseen classes."""

    Config = LinearProbeConfig
    frozen_image_features = True

    @classmethod
    def unseen_classes(cls, config):
        return "subset"  # a classifier row per training class: masks, never novel classes

    @classmethod
    def hyperparameter_selection(cls, config):
        return "validation"  # C

    def build(self, classnames, templates):
        dim = self.backbone.embed_dim
        self.register_buffer("weight", torch.zeros(len(classnames), dim))
        self.register_buffer("bias", torch.zeros(len(classnames)))
        self.trained_classnames = list(classnames)
        self.register_buffer("rows", torch.arange(len(classnames)), persistent=False)

    def update_classnames(self, classnames, templates):
        self.rows = training_class_rows(self.trained_classnames, classnames,
                                        "linear_probe has no classifier for classes it was not trained on:").to(
            self.weight.device)

    def _fit(self, c: float, x: np.ndarray, y: np.ndarray) -> LogisticRegression:
        with warnings.catch_warnings():  # the sweep's weakest regularization (C = 1e6) rarely converges
            warnings.simplefilter("ignore", ConvergenceWarning)
            return LogisticRegression(C=c, max_iter=self.config.max_iter, random_state=0).fit(x, y)

    def fit_without_gradients(self, datamodule) -> bool:
        x_train, y_train = extract_features(self, datamodule.train_eval_dataloader())
        x_val, y_val = extract_features(self, datamodule.val_dataloader())
        if self.config.search == "coop":
            model, best_c = self._coop_search(x_train, y_train, x_val, y_val)
        else:
            model, best_c = self._ternary_search(x_train, y_train, x_val, y_val)
        self._keep(model)
        self.chosen_c = best_c
        return True

    def _coop_search(self, x_train, y_train, x_val, y_val) -> tuple[LogisticRegression, float]:
        """CoOp's lpclip search; returns the last round's classifier and its C."""
        def fitted(c: float) -> tuple[LogisticRegression, float]:
            model = self._fit(c, x_train, y_train)
            return model, model.score(x_val, y_val)

        scores = [fitted(c)[1] for c in self.config.c_grid]
        peak = self.config.c_grid[int(np.argmax(scores))]
        low, high = math.log10(peak) - 1, math.log10(peak) + 1
        model, chosen = None, peak
        for _ in range(self.config.refine_steps):
            (left, s_left), (right, s_right) = fitted(10**low), fitted(10**high)
            middle = (low + high) / 2
            if s_left < s_right:
                model, chosen, low = right, 10**high, middle
            else:
                model, chosen, high = left, 10**low, middle
        if model is None:  # no refinement rounds: the sweep's best
            model = self._fit(peak, x_train, y_train)
        return model, chosen

    def _ternary_search(self, x_train, y_train, x_val, y_val) -> tuple[LogisticRegression, float]:
        score = lambda c: self._fit(c, x_train, y_train).score(x_val, y_val)  # noqa: E731
        grid = sorted(self.config.c_grid)
        scores = [score(c) for c in grid]
        best = int(np.argmax(scores))
        low = math.log10(grid[max(best - 1, 0)])
        high = math.log10(grid[min(best + 1, len(grid) - 1)])
        best_c, best_score = grid[best], scores[best]
        for _ in range(self.config.refine_steps):
            left, right = (2 * low + high) / 3, (low + 2 * high) / 3
            s_left, s_right = score(10**left), score(10**right)
            if s_left >= s_right:
                high = right
                candidate, s = 10**left, s_left
            else:
                low = left
                candidate, s = 10**right, s_right
            if s > best_score:
                best_c, best_score = candidate, s
        return self._fit(best_c, x_train, y_train), best_c

    def _keep(self, model: LogisticRegression) -> None:
        x_dim = model.coef_.shape[1]
        weight = np.zeros((len(self.trained_classnames), x_dim), dtype=np.float32)
        bias = np.full(len(self.trained_classnames), -1e4, dtype=np.float32)
        if len(model.classes_) == 2:  # scikit-learn keeps one row for binary problems
            weight[model.classes_[1]], bias[model.classes_[1]] = model.coef_[0], model.intercept_[0]
            bias[model.classes_[0]] = 0.0
        else:
            weight[model.classes_], bias[model.classes_] = model.coef_, model.intercept_
        self.weight.copy_(torch.from_numpy(weight))
        self.bias.copy_(torch.from_numpy(bias))

    def logits(self, images):
        features = self.image_features(images).float()
        return features @ self.weight[self.rows].T + self.bias[self.rows]

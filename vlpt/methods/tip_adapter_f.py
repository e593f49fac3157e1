"""Tip-Adapter-F: Tip-Adapter whose cache keys are fine-tuned (Zhang et al., ECCV 2022).

The cache is built as Tip-Adapter builds it (``vlpt.methods.tip_adapter``); its keys then become a learned
``[N, D]`` matrix (the reference's ``nn.Linear`` initialised with them), trained with cross-entropy on
Tip-Adapter's logits at the dataset's initial beta and alpha, the values and zero-shot CLIP staying fixed. After
training, beta and alpha are searched on the validation images with the learned keys.

Defaults follow the reference code (gaopengcuhk/Tip-Adapter, ``main.py``: ``run_tip_adapter_F``, ``configs/*.yaml``):
AdamW at lr 1e-3 with eps 1e-4 (and torch's default weight decay 0.01), batch 256, 20 epochs (100 on EuroSAT),
a cosine schedule over all iterations without warm-up. Departures: training batches are the suite's training
views (stored crops of its augmentation, a fresh one per epoch) rather than the reference's own crop and flip of
half to all of each image, and the last epoch's keys are kept, where the reference keeps the epoch with the best
*test* accuracy (vlpt never selects on test images).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from vlpt.data.corruptions import catalog_name
from vlpt.methods.tip_adapter import TipAdapter, TipAdapterConfig
from vlpt.registry import register_method


@dataclass
class TipAdapterFConfig(TipAdapterConfig):
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01  # torch's AdamW default, which the reference keeps
    #: AdamW's epsilon (the reference's 1e-4)
    adam_eps: float = 1e-4
    batch_size: int = 256
    epochs: int | dict[int, int] = 20
    #: dataset -> epochs (the reference's configs: EuroSAT 100)
    dataset_epochs: dict[str, int] = field(default_factory=lambda: {"eurosat": 100})
    warmup_epochs: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.optimizer != "adamw":
            raise ValueError(f"tip_adapter_f trains with AdamW (its reference's), got optimizer {self.optimizer!r}")
        if not self.adam_eps > 0:
            raise ValueError(f"adam_eps must be positive, got {self.adam_eps}")

    def epochs_for(self, shots: int, dataset: str | None = None) -> int:
        return self.dataset_epochs.get(catalog_name(dataset), super().epochs_for(shots, dataset))


@register_method("tip_adapter_f")
class TipAdapterF(TipAdapter):
    """Tip-Adapter with learned cache keys."""

    Config = TipAdapterFConfig
    cache_sized = TipAdapter.cache_sized + ("learned_keys",)

    def build(self, classnames, templates):
        super().build(classnames, templates)
        self.learned_keys = nn.Parameter(torch.zeros(0, self.backbone.embed_dim))
        self._validation: tuple[torch.Tensor, torch.Tensor, str | None] | None = None

    def fit_without_gradients(self, datamodule) -> bool:
        """Build the cache and start the learned keys from it; training follows (then the search)."""
        self.build_cache(datamodule)
        self.learned_keys = nn.Parameter(self.keys.clone())
        if self.config.search:
            self._validation = (*self.validation_features(datamodule), datamodule.data.dataset)
        return False

    def affinity(self, features: torch.Tensor) -> torch.Tensor:
        keys = self.learned_keys if len(self.learned_keys) else self.keys
        return features @ keys.T

    def on_train_end(self) -> None:
        """Search beta and alpha with the learned keys, as the reference does after training."""
        if self._validation is not None:
            self.search_on(*self._validation)

    def configure_optimizers(self):
        cfg = self.config
        optimizer = torch.optim.AdamW(self.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                      eps=cfg.adam_eps)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


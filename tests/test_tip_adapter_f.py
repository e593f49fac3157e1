"""Tip-Adapter-F: the learned keys start as Tip-Adapter's cache (so its first scores are Tip-Adapter's), only they
learn, the step follows the reference's schedule, and the search runs after training with the learned keys."""
from __future__ import annotations

import lightning as L
import pytest
import torch

from vlpt.data.datamodule import PromptDataModule
from vlpt.data.run_data import ProtocolData
from vlpt.methods.tip_adapter import TipAdapter
from vlpt.methods.tip_adapter_f import TipAdapterF

from test_feature_cache import make_samples

CLASSES = ["class0", "class1", "class2"]
TEMPLATES = ["a photo of a {}."]


def _datamodule(tmp_path, backbone):
    data = ProtocolData(make_samples(tmp_path / "train", count=9), make_samples(tmp_path / "val", count=6, seed=1),
                        CLASSES, TEMPLATES, [], dataset="toy")
    cfg = backbone.preprocess_cfg
    return PromptDataModule(data, backbone.image_size, cfg["mean"], cfg["std"], batch_size=4, train_augment="none")


def test_fine_tuning_starts_from_the_cache_and_searches_with_the_learned_keys(tmp_path, tiny_backbone, monkeypatch):
    datamodule = _datamodule(tmp_path, tiny_backbone)
    settings = dict(augment_passes=2, search_steps=[10, 5])
    plain = TipAdapter(tiny_backbone, CLASSES, TEMPLATES, TipAdapter.Config(search=False, **settings))
    plain.fit_without_gradients(datamodule)
    method = TipAdapterF(tiny_backbone, CLASSES, TEMPLATES, TipAdapterF.Config(batch_size=4, lr=0.05, **settings))
    assert method.fit_without_gradients(datamodule) is False  # training follows
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(method.learned_keys, plain.keys) and torch.equal(method.logits(images), plain.logits(images))
    searched = []
    search = TipAdapter.search
    monkeypatch.setattr(TipAdapter, "search", lambda self, *a: searched.append(self.learned_keys.detach().clone())
                        or search(self, *a))
    method.max_epochs = 2
    L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0).fit(method, datamodule.train_dataloader())
    assert set(method.prompt_parameters()) == {"learned_keys"}
    assert not torch.equal(method.learned_keys, method.keys)  # the keys learned; the cache stays
    assert len(searched) == 1 and torch.equal(searched[0], method.learned_keys.detach())


def test_the_optimizer_and_schedule_are_the_references(tmp_path, tiny_backbone):
    method = TipAdapterF(tiny_backbone, CLASSES, TEMPLATES, TipAdapterF.Config(batch_size=4, augment_passes=1))
    method.fit_without_gradients(_datamodule(tmp_path, tiny_backbone))
    method.trainer = type("T", (), {"estimated_stepping_batches": 10})()  # stands in for Lightning's count
    setup = method.configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.AdamW) and (group["eps"], group["weight_decay"]) == (1e-4, 0.01)
    assert setup["lr_scheduler"]["interval"] == "step"
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-3) and rates[5] == pytest.approx(5e-4) and rates == sorted(rates, reverse=True)
    assert TipAdapterF.Config().epochs_for(16, "eurosat") == 100 and TipAdapterF.Config().epochs_for(16, "dtd") == 20
    with pytest.raises(ValueError, match="trains with AdamW"):
        TipAdapterF.Config(optimizer="sgd")

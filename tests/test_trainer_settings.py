"""Trainer settings of a suite: torch.compile of the backbone's blocks, and precision on a CPU."""
from __future__ import annotations

import pytest
import torch

from vlpt.backbone import ClipBackbone
from vlpt.eval.harness import Harness
from vlpt.eval.suite import load_suite
from vlpt.errors import ConfigError

from test_harness import write_suite


def test_compiled_blocks_give_the_same_features():
    torch.manual_seed(0)
    plain = ClipBackbone("vlpt-starter-vit", pretrained="vlpt-starter")
    compiled = ClipBackbone("vlpt-starter-vit", pretrained="vlpt-starter")
    compiled.compile_blocks(backend="eager")
    blocks = [*compiled.model.transformer.resblocks, *compiled.model.visual.transformer.resblocks]
    assert all(block._compiled_call_impl is not None for block in blocks)
    images, tokens = torch.randn(2, 3, 32, 32), plain.tokenize(["a photo of a cat.", "a dog."])
    with torch.no_grad():
        torch.testing.assert_close(compiled.encode_image(images), plain.encode_image(images))
        torch.testing.assert_close(compiled.encode_text(tokens), plain.encode_text(tokens))
        embeds, eot = plain.embed_tokens(tokens), plain.eot_positions(tokens)
        torch.testing.assert_close(compiled.encode_text_embeds(embeds, eot), plain.encode_text_embeds(embeds, eot))


def test_suite_compile_switch_and_cpu_precision(tmp_path):
    path = write_suite(tmp_path, trainer={"accelerator": "cpu", "compile": True, "compile_backend": "eager",
                                          "precision": "bf16-mixed"})
    harness = Harness(load_suite(path), progress=False)
    assert harness.precision == "bf16-mixed"  # CPU autocast is bf16's
    assert harness.backbone.model.transformer.resblocks[0]._compiled_call_impl is not None
    record = harness.execute(harness.pending()[0])
    assert record.config["trainer"]["precision"] == "bf16-mixed" and record.config["trainer"]["compile"] is True
    fp16 = Harness(load_suite(write_suite(tmp_path, trainer={"accelerator": "cpu", "precision": "16-mixed"})))
    assert fp16.precision == "32-true"  # fp16 autocast is for GPUs: a CPU runs it in fp32


def test_bad_trainer_settings_are_named(tmp_path):
    with pytest.raises(ConfigError, match="trainer: key 'compile' has value 'yes'"):
        load_suite(write_suite(tmp_path, trainer={"compile": "yes"}))
    with pytest.raises(ConfigError, match="feature_cache: train_views must be per_epoch or 0 or more, got -1"):
        load_suite(write_suite(tmp_path, feature_cache={"train_views": -1}))
    with pytest.raises(ConfigError, match="feature_cache: key 'train_views' has value 'epoch'"):
        load_suite(write_suite(tmp_path, feature_cache={"train_views": "epoch"}))
    assert load_suite(write_suite(tmp_path)).feature_cache.train_views == "per_epoch"
    assert load_suite(write_suite(tmp_path, feature_cache={"train_views": 8})).feature_cache.train_views == 8


@pytest.mark.parametrize("devices, one_process", [(1, True), ("1", True), ("0,", True), ("1,", True),
                                                  ("0,1", False), (2, False), ("2", False)])
def test_runs_are_claimed_only_when_each_trains_in_one_process(devices, one_process):
    from vlpt.eval.training import trains_in_one_process
    from vlpt.eval.suite import TrainerSpec

    assert trains_in_one_process(TrainerSpec(devices=devices)) is one_process


def test_the_schedule_is_dassls_constant_warm_up_then_a_cosine_counted_from_its_end(tiny_backbone):
    """Dassl's ConstantWarmupScheduler around CosineAnnealingLR(T = epochs), run here beside vlpt on its own code,
    gave these learning-rate factors per epoch for 5 epochs at lr 1 with one warm-up epoch at 1e-5: the first
    epoch after the warm-up runs at the full rate, the cosine's count starting there."""
    from vlpt.methods.coop import CoOp

    method = CoOp(tiny_backbone, ["a", "b"], ["a photo of a {}."], CoOp.Config(n_ctx=2, lr=1.0, warmup_lr=1e-5))
    method.max_epochs = 5
    setup = method.configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([1e-5, 1.0, 0.9045, 0.6545, 0.3455], abs=1e-4)

"""CLIP-LoRA: it starts as zero-shot CLIP, its adapters are the reference's (rank, scaling, initialisation, dropout
in training only), the shared backbone is never changed, merging the adapters into the weights gives the same
logits, and a run takes exactly 500 x shots iterations on a cosine to the final rate."""
from __future__ import annotations

import copy
import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vlpt.errors import ConfigError
from vlpt.methods.base import cosine_logits
from vlpt.methods.clip_lora import CLIPLoRA, tower_blocks
from vlpt.methods.zeroshot import ZeroShotCLIP

CLASSES = ["red circle", "green square", "blue star"]
TEMPLATES = ["{} texture."]  # the dataset's template; CLIP-LoRA's default prompt replaces it


def images(n=4, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def perturbed(backbone, **settings):
    """A method whose B matrices are random (as after training)."""
    method = CLIPLoRA(backbone, CLASSES, TEMPLATES, CLIPLoRA.Config(**settings))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in method.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    return method.eval()


def test_it_starts_as_zero_shot_clip_with_its_own_prompt(tiny_backbone):
    method = CLIPLoRA(tiny_backbone, CLASSES, TEMPLATES).eval()
    zero_shot = ZeroShotCLIP(tiny_backbone, CLASSES, ["a photo of a {}."])
    with torch.no_grad():
        torch.testing.assert_close(method.logits(images()), zero_shot.logits(images()), rtol=1e-5, atol=1e-5)


def test_the_adapters_are_the_references(tiny_backbone):
    method = CLIPLoRA(tiny_backbone, CLASSES, TEMPLATES)
    blocks = len(tower_blocks(tiny_backbone, "both"))
    layer = method.attentions[0].q_proj
    assert len(method.attentions) == blocks and layer.scaling["default"] == pytest.approx(1 / math.sqrt(2))
    assert layer.lora_A["default"].weight.shape == (2, tiny_backbone.model.transformer.width)
    assert layer.lora_dropout["default"].p == 0.25
    assert all(torch.equal(p, torch.zeros_like(p)) for n, p in method.named_parameters() if "lora_B" in n)
    names = {n.split(".")[2] for n in method.prompt_parameters()}
    assert names == {"q_proj", "k_proj", "v_proj"}  # no output projection by default
    assert sum(p.numel() for p in method.trainable_parameters()) == blocks * 3 * 2 * 2 * layer.in_features


def test_dropout_acts_in_training_only_and_the_backbone_is_put_back(tiny_backbone):
    method = perturbed(tiny_backbone)
    originals = [block.attn for block in tower_blocks(tiny_backbone, "both")]
    weights = {k: v.clone() for k, v in tiny_backbone.state_dict().items()}
    with torch.no_grad():
        assert torch.equal(method.logits(images()), method.logits(images()))
        method.train()
        assert not torch.equal(method.logits(images()), method.logits(images()))
    assert [block.attn for block in tower_blocks(tiny_backbone, "both")] == originals
    assert all(torch.equal(v, weights[k]) for k, v in tiny_backbone.state_dict().items())


def test_merging_the_adapters_into_the_weights_gives_the_same_logits(tiny_backbone):
    method = perturbed(tiny_backbone)
    merged = copy.deepcopy(tiny_backbone)
    with torch.no_grad():
        for block, split in zip(tower_blocks(merged, "both"), method.attentions):
            width = block.attn.embed_dim
            for part, name in enumerate(("q_proj", "k_proj", "v_proj")):
                delta = getattr(split, name).get_delta_weight("default")
                block.attn.in_proj_weight[part * width:(part + 1) * width] += delta
        expected = cosine_logits(merged.encode_image(images()),
                                 merged.encode_text(merged.tokenize([f"a photo of a {c}." for c in CLASSES])),
                                 merged.logit_scale)
        logits = method.logits(images())
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(logits, ZeroShotCLIP(tiny_backbone, CLASSES, ["a photo of a {}."]).logits(images()),
                              atol=1e-3)


def test_a_run_takes_500_iterations_per_shot_on_a_cosine_to_the_final_rate(tiny_backbone):
    config = CLIPLoRA.Config(iterations_per_shot=3, batch_size=2)
    shots, n_train = 2, 6  # 3 classes x 2 shots: 3 batches an epoch, 6 steps
    assert config.training_steps(shots) == 6 and config.run_epochs(shots, None, n_train) == 2
    assert CLIPLoRA.Config().run_epochs(16, None, 160) == 1600  # the reference: 8000 steps of 5 batches
    method = CLIPLoRA(tiny_backbone, CLASSES, TEMPLATES, config)
    data = DataLoader(TensorDataset(images(n_train), torch.tensor([0, 1, 2] * 2)), batch_size=2)
    rates = []

    class Rates(L.Callback):
        def on_train_batch_start(self, trainer, *_):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(max_epochs=config.run_epochs(shots, None, n_train), max_steps=config.training_steps(shots),
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", callbacks=[Rates()])
    trainer.fit(method, data)
    assert trainer.global_step == 6
    expected = [1e-6 + (2e-4 - 1e-6) * 0.5 * (1 + math.cos(math.pi * t / 6)) for t in range(6)]
    assert rates == pytest.approx(expected)


@pytest.mark.parametrize("settings, message", [
    ({"optimizer": "sgd"}, "trains with AdamW"),
    ({"rank": 0}, "rank >= 1"),
    ({"projections": ["q", "x"]}, "some of q, k, v, o"),
    ({"encoder": "image"}, "encoder must be both, text or vision"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        CLIPLoRA.Config(**settings)


def test_layers_the_tower_lacks_are_named(tiny_backbone):
    with pytest.raises(ConfigError, match=r"clip_lora layers \[9\] do not exist"):
        CLIPLoRA(tiny_backbone, CLASSES, TEMPLATES, CLIPLoRA.Config(layers=[0, 9]))

"""PromptSRC: the prompts evaluated are the Gaussian-weighted mean of the epochs' prompts, the loss is the
cross-entropy plus agreement with the frozen model in the reference's form, and the frozen text features are the
60-template mean."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlpt.errors import ConfigError
from vlpt.methods.promptsrc import DIVERSE_TEMPLATES, PromptSRC, gaussian_weights

CLASSES = ["red circle", "green square", "blue star", "yellow kite"]
TEMPLATES = ["a photo of a {}."]


def small(backbone, **settings):
    depth = min(backbone.text_layers, backbone.vision_layers)
    return PromptSRC(backbone, CLASSES, TEMPLATES, PromptSRC.Config(prompt_depth=depth, **settings))


def test_the_evaluated_prompts_are_the_gaussian_weighted_mean_of_the_epochs(tiny_backbone):
    method = small(tiny_backbone, gpa_mean=2.0, gpa_std=1.0)
    for total in method.aggregate.buffers():  # a sum copied by init_from from another run is not counted
        total.fill_(1.0)
    epochs, generator = 4, torch.Generator().manual_seed(0)
    seen = []
    for epoch in range(epochs):
        with torch.no_grad():
            for parameter in method.trainable_parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
        seen.append([p.detach().clone() for p in method.trainable_parameters()])
        method.epoch_finished(epoch, epochs)
        if epoch < epochs - 1:  # before the last epoch the prompts are the epoch's own
            assert all(torch.equal(p, s) for p, s in zip(method.trainable_parameters(), seen[-1]))
    weights = gaussian_weights(epochs, 2.0, 1.0)
    for i, parameter in enumerate(method.trainable_parameters()):
        expected = sum(w * s[i] for w, s in zip(weights, seen))
        torch.testing.assert_close(parameter.detach(), expected)


def test_the_gaussian_weights_are_the_normalised_density():
    weights = gaussian_weights(20, 15.0, 1.0)
    density = [math.exp(-0.5 * (e - 15) ** 2) for e in range(1, 21)]
    assert weights == pytest.approx([d / sum(density) for d in density])
    assert weights[14] == pytest.approx(0.3989, abs=1e-3) and sum(weights) == pytest.approx(1.0)
    far = gaussian_weights(3, 15.0, 1.0)  # a mean beyond the run: the last epoch carries (almost) all
    assert far[-1] == pytest.approx(1.0, abs=1e-4) and all(math.isfinite(w) for w in far)


def test_the_loss_is_cross_entropy_plus_agreement_with_the_frozen_model(tiny_backbone):
    method = small(tiny_backbone, text_loss_weight=25.0, image_loss_weight=10.0)
    with torch.no_grad():  # prompts away from zero, so prompted and frozen features differ
        for parameter in method.trainable_parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(6, 3, tiny_backbone.image_size, tiny_backbone.image_size, generator=generator)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.no_grad():
        loss = method.training_loss(images, labels)
        text = F.normalize(method.text_features(), dim=-1)
        image = F.normalize(tiny_backbone.encode_image(images, deep_prompts=method.vision_prompts()), dim=-1)
        frozen_image = F.normalize(tiny_backbone.encode_image(images), dim=-1)
        names = [c for c in CLASSES]
        per_template = torch.stack([tiny_backbone.encode_text(tiny_backbone.tokenize([t.format(n) for n in names]))
                                    for t in DIVERSE_TEMPLATES])
        frozen_text = F.normalize(per_template.mean(dim=0), dim=-1)
        scale = tiny_backbone.logit_scale
        p_prompted = F.softmax(scale * image @ text.T, dim=1)
        p_frozen = F.softmax(scale * frozen_image @ frozen_text.T, dim=1)
        kl = (p_frozen * (p_frozen.log() - p_prompted.log())).sum() / p_frozen.numel()
        expected = (F.cross_entropy(scale * image @ text.T, labels) + kl
                    + 25.0 * (text - frozen_text).abs().mean() + 10.0 * (image - frozen_image).abs().mean())
    assert len(DIVERSE_TEMPLATES) == 60 and DIVERSE_TEMPLATES[0] == "a photo of a {}."
    assert float(loss) == pytest.approx(float(expected), rel=1e-4)
    assert float(kl) > 0 and float((image - frozen_image).abs().mean()) > 0


def test_the_aggregate_survives_a_checkpoint(tiny_backbone, tmp_path):
    method = small(tiny_backbone)
    method.epoch_finished(0, 20)
    method.save_checkpoint(tmp_path / "p.pt")
    other = small(tiny_backbone)
    other.load_checkpoint(tmp_path / "p.pt")
    assert all(torch.equal(a, b) for a, b in zip(method.aggregate.buffers(), other.aggregate.buffers()))
    assert any(b.abs().sum() > 0 for b in other.aggregate.buffers())


@pytest.mark.parametrize("settings, message", [
    ({"gpa_std": 0.0}, "gpa_std must be positive"),
    ({"text_loss_weight": -1.0}, "loss weights must be >= 0"),
])
def test_bad_settings_are_named(tiny_backbone, settings, message):
    with pytest.raises(ConfigError, match=message):
        PromptSRC.Config(**settings)

"""LP++: its text term is zero-shot CLIP's logits without the scale, its step sizes and initial alpha are the
reference's closed forms, it keeps the epoch of best validation accuracy, and it learns."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlpt.data.datamodule import PromptDataModule
from vlpt.data.run_data import ProtocolData
from vlpt.errors import ConfigError
from vlpt.methods.lp_plus_plus import LPPlusPlus, initial_alpha, step_sizes
from vlpt.methods.zeroshot import ZeroShotCLIP

from test_feature_cache import make_samples

CLASSES = ["class0", "class1", "class2"]
TEMPLATES = ["a photo of a {}."]


def test_the_text_term_is_zero_shot_clip_without_its_scale(tiny_backbone):
    method = LPPlusPlus(tiny_backbone, CLASSES, TEMPLATES)
    method.alpha.fill_(1.0)  # weight and bias 0
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        zero_shot = ZeroShotCLIP(tiny_backbone, CLASSES, TEMPLATES).logits(images) / tiny_backbone.logit_scale
        torch.testing.assert_close(method.logits(images), zero_shot, rtol=1e-5, atol=1e-5)


def test_step_sizes_and_initial_alpha_have_their_closed_forms():
    generator = torch.Generator().manual_seed(1)
    features = F.normalize(torch.randn(12, 8, generator=generator), dim=-1)
    text = F.normalize(torch.randn(3, 8, generator=generator), dim=-1)
    labels = torch.arange(12) % 3
    step_w, step_alpha = step_sizes(features, text)
    gram = (features.T @ features).double().numpy()
    assert step_w == pytest.approx(4 * 12 / max(np.linalg.eigvals(gram).real))
    assert step_alpha == pytest.approx(12 / (4 * max(((features @ text.T) ** 2).sum(0)).item()), rel=1e-6)
    logits = features @ text.T
    pair_means = [logits[labels == c, j].mean().item() for c in range(3) for j in range(3)]
    assert initial_alpha(features, labels, text, 3) == pytest.approx(250 * sum(pair_means) / 9, rel=1e-6)


@pytest.fixture
def separable(tmp_path, tiny_backbone, monkeypatch):
    """A datamodule with validation images whose features are replaced by separable ones (class directions plus
    noise): 8 training and 6 validation features per class."""
    train, val = make_samples(tmp_path / "train", count=9), make_samples(tmp_path / "val", count=6, seed=1)
    cfg = tiny_backbone.preprocess_cfg
    datamodule = PromptDataModule(ProtocolData(train, val, CLASSES, TEMPLATES, [], dataset="toy"),
                                  tiny_backbone.image_size, cfg["mean"], cfg["std"], train_augment="none")
    generator = torch.Generator().manual_seed(2)
    directions = torch.randn(3, tiny_backbone.embed_dim, generator=generator)

    def draw(n):
        labels = torch.arange(n) % 3
        return F.normalize(directions[labels] + 0.8 * torch.randn(n, tiny_backbone.embed_dim, generator=generator),
                           dim=-1), labels

    sets = iter([draw(24), draw(18)])
    return datamodule, lambda method: monkeypatch.setattr(method, "normalised_features", lambda _: next(sets))


def test_it_learns_and_keeps_the_epoch_of_best_validation_accuracy(tiny_backbone, separable, monkeypatch):
    datamodule, feed = separable
    method = LPPlusPlus(tiny_backbone, CLASSES, TEMPLATES, LPPlusPlus.Config(epochs=40))
    feed(method)
    accuracies, blend = [], method.blend

    def watched(features, weight, bias, alpha, text):
        scores = blend(features, weight, bias, alpha, text)
        if len(features) == 18:  # the validation features: what each epoch's check saw
            accuracies.append(float((scores.argmax(-1) == torch.arange(18) % 3).float().mean()))
        return scores

    monkeypatch.setattr(method, "blend", watched)
    assert method.fit_without_gradients(datamodule)
    assert len(accuracies) == 40 and method.best_epoch == max(i + 1 for i, a in enumerate(accuracies)
                                                             if a == max(accuracies))  # the latest of ties
    assert max(accuracies) > 0.9 and not torch.equal(method.alpha, torch.zeros(3))


def test_without_validation_images_it_refuses_up_front(tmp_path, tiny_backbone):
    train = make_samples(tmp_path / "train", count=9)
    cfg = tiny_backbone.preprocess_cfg
    datamodule = PromptDataModule(ProtocolData(train, [], CLASSES, TEMPLATES, [], dataset="toy"),
                                  tiny_backbone.image_size, cfg["mean"], cfg["std"], train_augment="none")
    with pytest.raises(ConfigError, match="no validation images"):
        LPPlusPlus(tiny_backbone, CLASSES, TEMPLATES).fit_without_gradients(datamodule)


@pytest.mark.parametrize("settings, message", [
    ({"alpha_every": 0}, "alpha_every must be at least 1"),
    ({"alpha_gradient": "fresh"}, "alpha_gradient must be accumulated or epoch"),
    ({"view_augment": "tip"}, "view_augment must be lpp or suite"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        LPPlusPlus.Config(**settings)

"""CLAP: it starts as zero-shot CLIP, its class multipliers are zero-shot CLIP's per-class accuracy in soft form,
its loss is cross-entropy plus their weighted distance to the zero-shot prototypes, it trains on every augmented
pass with the reference's number of batches, and it learns."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlpt.data.datamodule import PromptDataModule
from vlpt.data.run_data import ProtocolData
from vlpt.errors import ConfigError
from vlpt.methods.clap import CLAP
from vlpt.methods.zeroshot import ZeroShotCLIP

from test_feature_cache import make_samples

CLASSES = ["class0", "class1", "class2"]
TEMPLATES = ["a photo of a {}."]


def datamodule_of(tmp_path, backbone, count=9):
    train = make_samples(tmp_path / "train", count=count)
    data = ProtocolData(train, [], CLASSES, TEMPLATES, [], dataset="toy")
    cfg = backbone.preprocess_cfg
    return PromptDataModule(data, backbone.image_size, cfg["mean"], cfg["std"], train_augment="none"), train


def test_before_training_it_is_zero_shot_clip(tiny_backbone):
    method = CLAP(tiny_backbone, CLASSES, TEMPLATES)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(method.logits(images), ZeroShotCLIP(tiny_backbone, CLASSES, TEMPLATES).logits(images),
                                   rtol=1e-5, atol=1e-5)


def test_multipliers_and_loss_have_their_closed_form(tiny_backbone):
    method = CLAP(tiny_backbone, CLASSES, TEMPLATES)
    generator = torch.Generator().manual_seed(1)
    features, labels = torch.randn(12, tiny_backbone.embed_dim, generator=generator), torch.arange(12) % 3
    lam = method.class_multipliers(features, labels)
    p = (tiny_backbone.logit_scale * F.normalize(features, dim=-1) @ F.normalize(method.zero_shot, dim=-1).T).softmax(-1)
    expected = torch.stack([p[labels == c, c].mean() for c in range(3)])
    torch.testing.assert_close(lam, expected)
    method.multipliers = lam
    with torch.no_grad():
        method.prototypes.add_(torch.randn(method.prototypes.shape, generator=generator))
        logits = tiny_backbone.logit_scale * F.normalize(features, dim=-1) @ F.normalize(method.prototypes, dim=-1).T
        penalty = sum(lam[c] * (method.prototypes[c] - method.zero_shot[c]).pow(2).sum() for c in range(3)) / 3
        torch.testing.assert_close(method.bank_loss(features, labels), F.cross_entropy(logits, labels) + penalty)
        method.config.constraint = "none"  # ZS-LP
        torch.testing.assert_close(method.bank_loss(features, labels), F.cross_entropy(logits, labels))


def test_the_bank_holds_every_augmented_pass(tmp_path, tiny_backbone):
    datamodule, train = datamodule_of(tmp_path, tiny_backbone)
    method = CLAP(tiny_backbone, CLASSES, TEMPLATES, CLAP.Config(augment_passes=4))
    features, labels, images = method.support_bank(datamodule)
    assert (features.shape, images) == ((4 * len(train), tiny_backbone.embed_dim), len(train))
    assert torch.equal(labels, torch.tensor([s.label for s in train] * 4))
    assert not torch.allclose(features[: len(train)], features[len(train): 2 * len(train)])  # augmented apart


@pytest.mark.parametrize("constraint", ["l2", "none"])
def test_it_takes_the_references_batches_and_learns(tmp_path, tiny_backbone, monkeypatch, constraint):
    """On separable features (class directions plus noise, 3 passes of 8 images): as many batches per epoch as
    the images fill, drawn from the whole bank, and the probe ends up classifying the bank."""
    datamodule, _ = datamodule_of(tmp_path, tiny_backbone)
    generator = torch.Generator().manual_seed(2)
    directions = torch.randn(3, tiny_backbone.embed_dim, generator=generator)
    labels = torch.arange(24) % 3
    features = directions[labels] + 0.3 * torch.randn(24, tiny_backbone.embed_dim, generator=generator)
    method = CLAP(tiny_backbone, CLASSES, TEMPLATES, CLAP.Config(epochs=50, lr=2.0, batch_size=3, constraint=constraint))
    monkeypatch.setattr(method, "support_bank", lambda _: (features, labels, 8))
    seen, loss = [], method.bank_loss
    monkeypatch.setattr(method, "bank_loss", lambda f, y: seen.append(len(y)) or loss(f, y))
    before = (method.scores(features, method.prototypes).argmax(-1) == labels).float().mean()
    assert method.fit_without_gradients(datamodule)
    assert seen == [3] * (50 * (8 // 3))
    after = (method.scores(features, method.prototypes).argmax(-1) == labels).float().mean()
    assert before < 0.7 and after == 1.0


def test_it_refuses_classes_it_has_no_prototype_of(tiny_backbone):
    method = CLAP(tiny_backbone, CLASSES, TEMPLATES)
    method.set_classnames(CLASSES[:2])  # a subset is fine
    assert method.logits(torch.randn(1, 3, 32, 32)).shape == (1, 2)
    with pytest.raises(ConfigError, match="clap has no prototypes of classes"):
        method.set_classnames(["class0", "novel"])


@pytest.mark.parametrize("settings, message", [
    ({"augment_passes": 0}, "augment_passes must be at least 1"),
    ({"constraint": "cosine"}, "constraint must be l2 or none"),
    ({"cache_augment": "tip"}, "cache_augment must be clap or suite"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        CLAP.Config(**settings)

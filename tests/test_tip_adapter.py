"""Tip-Adapter: the cache's scores equal their closed form, alpha 0 is zero-shot CLIP, the keys are the mean of
the augmented passes, and the search keeps the best validation accuracy of the reference's grid."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlpt.data.datamodule import PromptDataModule
from vlpt.data.feature_cache import ViewDataset
from vlpt.data.run_data import ProtocolData
from vlpt.errors import ConfigError
from vlpt.methods.tip_adapter import TipAdapter, search_grid
from vlpt.methods.zeroshot import ZeroShotCLIP

from test_feature_cache import make_samples

CLASSES = ["class0", "class1", "class2"]
TEMPLATES = ["a photo of a {}."]


@pytest.fixture
def fitted(tmp_path, tiny_backbone):
    train, val = make_samples(tmp_path / "train", count=9), make_samples(tmp_path / "val", count=6, seed=1)
    data = ProtocolData(train, val, CLASSES, TEMPLATES, [], dataset="toy")
    cfg = tiny_backbone.preprocess_cfg
    datamodule = PromptDataModule(data, tiny_backbone.image_size, cfg["mean"], cfg["std"], train_augment="none")
    method = TipAdapter(tiny_backbone, CLASSES, TEMPLATES, TipAdapter.Config(augment_passes=3,
                                                                             search_steps=[20, 10]))
    assert method.fit_without_gradients(datamodule)
    return method, datamodule, train, val


def test_keys_are_the_normalised_mean_of_the_augmented_passes(fitted, tiny_backbone):
    method, datamodule, train, _ = fitted
    transform = method.cache_transform(datamodule)
    with torch.no_grad():
        passes = [tiny_backbone.encode_image(torch.stack([ViewDataset(train, transform, v)[i][0]
                                                          for i in range(len(train))])) for v in range(3)]
    torch.testing.assert_close(method.keys, F.normalize(torch.stack(passes).mean(0), dim=-1), rtol=1e-5, atol=1e-6)
    assert torch.equal(method.values, F.one_hot(torch.tensor([s.label for s in train]), 3).float())
    assert not torch.allclose(passes[0], passes[1])  # the passes are augmented differently


def test_scores_are_zero_shot_plus_the_closed_form_cache_vote(fitted, tiny_backbone):
    method, *_ = fitted
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        f = F.normalize(tiny_backbone.encode_image(images), dim=-1)
        zero_shot = ZeroShotCLIP(tiny_backbone, CLASSES, TEMPLATES).logits(images)
        clip = zero_shot  # at the backbone's logit scale (100 for OpenAI CLIP, the reference's fixed value)
        beta, alpha = float(method.beta), float(method.alpha)
        vote = torch.tensor([[sum(torch.exp(-beta * (1 - f[i] @ k)) for k, v in zip(method.keys, method.values)
                                  if v[c] == 1) for c in range(3)] for i in range(4)])
        torch.testing.assert_close(method.logits(images), clip + alpha * vote, rtol=1e-4, atol=1e-4)
        method.alpha.fill_(0.0)
        torch.testing.assert_close(method.logits(images), clip, rtol=1e-5, atol=1e-5)


def test_the_search_keeps_the_first_best_validation_accuracy_of_the_grid(fitted, tiny_backbone):
    method, datamodule, _, val = fitted
    with torch.no_grad():
        x = F.normalize(tiny_backbone.encode_image(torch.stack([datamodule.eval_tf(Image.open(
            s.path).convert("RGB")) for s in val])), dim=-1)
    y = torch.tensor([s.label for s in val])
    scores = [(((method.clip_logits(x) + a * method.cache_logits(x @ method.keys.T, b)).argmax(-1) == y)
               .float().mean().item(), b, a)
              for b in search_grid(7.0, 20) for a in search_grid(3.0, 10)]
    best = max(s for s, _, _ in scores)
    first = next((b, a) for s, b, a in scores if s == best)
    assert (float(method.beta), float(method.alpha)) == pytest.approx(first)
    assert search_grid(13.0, 200)[0] == 0.1 and search_grid(13.0, 200)[-1] < 13.0 and len(search_grid(7, 200)) == 200


def test_it_scores_training_classes_only_and_its_checkpoint_keeps_the_cache(fitted, tiny_backbone, tmp_path):
    method, *_ = fitted
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = method.logits(images)
    with pytest.raises(ConfigError, match="cache holds no images of classes"):
        method.set_classnames(["class0", "unseen"], TEMPLATES)
    assert method.classnames == CLASSES  # a refused class list leaves the method as it was
    path = method.save_checkpoint(tmp_path / "tip.pt")
    fresh = TipAdapter(tiny_backbone, CLASSES, TEMPLATES, method.config)
    fresh.load_checkpoint(path)
    reordered = TipAdapter(tiny_backbone, ["class2", "class1", "class0"], TEMPLATES, method.config)
    reordered.load_checkpoint(path)  # the checkpoint's class order is the cache's
    with torch.no_grad():
        assert torch.equal(fresh.logits(images), full)
        torch.testing.assert_close(reordered.logits(images), full, rtol=1e-5, atol=1e-5)
        method.set_classnames(["class2", "class0"], TEMPLATES)
        torch.testing.assert_close(method.logits(images), full[:, [2, 0]], rtol=1e-5, atol=1e-5)


def test_per_dataset_search_ranges_and_bad_settings(tiny_backbone):
    cfg = TipAdapter.Config()
    assert cfg.scale_for("dtd") == [13.0, 13.0] and cfg.scale_for("dtd~pixelate:3") == [13.0, 13.0]
    assert cfg.scale_for("imagenet") == cfg.scale_for(None) == [7.0, 3.0] and cfg.scale_for("oxford_flowers") == [50, 50]
    assert cfg.alpha_for("oxford_flowers") == 10.0 and cfg.alpha_for("oxford_pets") == 1.17
    with pytest.raises(ValueError, match="augment_passes must be at least 1"):
        TipAdapter.Config(augment_passes=0)
    with pytest.raises(ValueError, match="search_scale"):
        TipAdapter.Config(search_scale=[0.05, 3.0])


def test_a_run_without_validation_images_is_refused_before_any_work(tmp_path, tiny_backbone):
    data = ProtocolData(make_samples(tmp_path / "train", count=3), [], CLASSES, TEMPLATES, [], dataset="toy")
    cfg = tiny_backbone.preprocess_cfg
    datamodule = PromptDataModule(data, tiny_backbone.image_size, cfg["mean"], cfg["std"])
    with pytest.raises(ConfigError, match="has none; give the dataset a validation split, or set search: false"):
        TipAdapter(tiny_backbone, CLASSES, TEMPLATES).fit_without_gradients(datamodule)
    unsearched = TipAdapter(tiny_backbone, CLASSES, TEMPLATES, TipAdapter.Config(search=False, augment_passes=1))
    assert unsearched.fit_without_gradients(datamodule) and float(unsearched.alpha) == pytest.approx(1.17)


def test_scores_are_float32_under_autocast(fitted):
    method, *_ = fitted
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = method.logits(images)
        features = method.backbone.encode_image(images).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = method._scores(features)  # evaluation under a bf16 run's autocast
    assert mixed.dtype == torch.float32 and torch.equal(mixed, plain)

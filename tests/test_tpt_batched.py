"""Batched TPT: several test images adapted at once, each with its own prompt and optimizer state, give each
image what adapting it alone gives (to float rounding of the batched text pass), and leave nothing behind."""
from __future__ import annotations

import pytest
import torch

from vlpt.methods.cocoop import MIB, CoCoOp, activation_bytes_per_prompt
from vlpt.methods.difftpt import DiffTPT
from vlpt.methods.tpt import TPT
from vlpt.tta.evaluate import evaluate_test_time

from test_feature_cache import make_samples

CLASSES = ["red square", "green circle", "blue star", "yellow kite"]
TEMPLATES = ["a photo of a {}."]


def _features(backbone, count: int, n: int = 16, extra: int = 0):
    """Normalised image features of ``count`` images' views (and extra views), from random pixels."""
    generator = torch.Generator().manual_seed(count)
    out = []
    for _ in range(count):
        pixels = torch.randn(n + extra, 3, backbone.image_size, backbone.image_size, generator=generator)
        features = backbone.encode_image(pixels, normalize=True).detach()
        out.append((features[:n], features[n:] if extra else None))
    return out


def _alone_and_batched(method, images):
    method.start_episodes()
    start = method.context.ctx.detach().clone()
    alone = [method.adapt_on_features(f, e) for f, e in images]
    batched = method.adapt_batch([f for f, _ in images], [e for _, e in images])
    assert torch.equal(method.context.ctx, start), "a batch changed the method's own context"
    return alone, batched


def _assert_same(alone, batched):
    assert len(alone) == len(batched)
    for one, many in zip(alone, batched):
        torch.testing.assert_close(many, one, rtol=1e-4, atol=1e-4)  # float32 rounding of batched passes
        assert int(many.argmax()) == int(one.argmax())


@pytest.mark.parametrize("params", [{}, {"steps": 3, "lr": 0.05}, {"optimizer": "sgd", "steps": 2, "lr": 0.5}])
def test_each_image_of_a_batch_gets_what_it_gets_alone(tiny_backbone, params):
    method = TPT(tiny_backbone, CLASSES, TEMPLATES, TPT.Config(views=16, **params))
    alone, batched = _alone_and_batched(method, _features(tiny_backbone, 5))
    _assert_same(alone, batched)
    unadapted = TPT(tiny_backbone, CLASSES, TEMPLATES, TPT.Config(views=16, steps=0))
    still = unadapted.adapt_batch(*zip(*_features(tiny_backbone, 5)))
    assert not all(torch.allclose(a, b) for a, b in zip(still, batched)), "adaptation changed nothing"


def test_difftpt_and_conditional_tpt_batch_too(tiny_backbone, tmp_path):
    difftpt = DiffTPT(tiny_backbone, CLASSES, TEMPLATES, DiffTPT.Config(pipeline="tiny-random", views=16,
                                                                         generated_views=4, lr=0.05))
    _assert_same(*_alone_and_batched(difftpt, _features(tiny_backbone, 3, extra=4)))
    torch.manual_seed(0)
    cocoop = CoCoOp(tiny_backbone, CLASSES, TEMPLATES)
    with torch.no_grad():
        for p in cocoop.meta_net.parameters():
            p.normal_(0, 0.2)
    path = cocoop.save_checkpoint(tmp_path / "cocoop.pt")
    conditional = TPT(tiny_backbone, CLASSES, TEMPLATES, TPT.Config(views=16, conditional=True, init_from=str(path),
                                                                    steps=2, lr=0.05))
    _assert_same(*_alone_and_batched(conditional, _features(tiny_backbone, 3)))


def test_evaluation_in_batches_equals_evaluation_one_at_a_time(tmp_path, tiny_backbone, monkeypatch):
    """Every image's scores from batches of 3 (the last one short) equal those adapted one at a time."""
    samples = make_samples(tmp_path / "images", count=7)
    cfg = tiny_backbone.preprocess_cfg
    scores, sizes = {}, {}
    adapt = TPT.adapt_batch

    def spy(self, features, extras):
        out = adapt(self, features, extras)
        scores.setdefault(self.config.images_per_batch, []).extend(out)
        sizes.setdefault(self.config.images_per_batch, []).append(len(features))
        return out

    monkeypatch.setattr(TPT, "adapt_batch", spy)
    results = []
    for per_batch in (1, 3):
        method = TPT(tiny_backbone, ["class0", "class1", "class2"], TEMPLATES,
                     TPT.Config(views=8, augment="augmix", steps=2, lr=0.05, images_per_batch=per_batch))
        views = method.test_time_dataset(samples, tiny_backbone.image_size, cfg["mean"], cfg["std"], seed=1)
        results.append(evaluate_test_time(method, views, torch.device("cpu")))
    assert sizes == {1: [1] * 7, 3: [3, 3, 1]}
    _assert_same(scores[1], scores[3])
    assert results[0]["accuracy"] == results[1]["accuracy"] and results[1]["n"] == 7


def test_a_memory_budget_decides_the_batch(tiny_backbone):
    method = TPT(tiny_backbone, CLASSES, TEMPLATES, TPT.Config(images_per_batch=None, batch_memory_mb=64))
    length = tiny_backbone.text_sequence_length(method.context.eot_positions, tiny_backbone.context_length)
    per_image = len(CLASSES) * activation_bytes_per_prompt(tiny_backbone, True, length)
    assert method.images_per_batch() == 64 * MIB // per_image > 1
    assert TPT(tiny_backbone, CLASSES, TEMPLATES,
               TPT.Config(images_per_batch=None, batch_memory_mb=1e-6)).images_per_batch() == 1
    assert TPT(tiny_backbone, CLASSES, TEMPLATES).images_per_batch() == 1  # the reference: one at a time
    default_budget = TPT(tiny_backbone, CLASSES, TEMPLATES, TPT.Config(images_per_batch=None)).images_per_batch()
    assert default_budget == 2048 * MIB // per_image
    assert {"images_per_batch", "batch_memory_mb"} <= set(TPT.Config.result_neutral)


@pytest.mark.parametrize("params, message", [
    ({"images_per_batch": 0}, "images_per_batch must be at least 1"),
    ({"images_per_batch": None, "batch_memory_mb": -1}, "batch_memory_mb must be a positive"),
    ({"batch_memory_mb": 4096}, "batch_memory_mb \\(4096\\) decides the batch only with images_per_batch: null"),
])
def test_bad_batch_settings_are_named(params, message):
    with pytest.raises(ValueError, match=message):
        TPT.Config(**params)

"""R-AMT: it starts as zero-shot CLIP, a masked weight equals the frozen one where its mask is 1 (and 0 elsewhere)
without the backbone changing, the scores learn through a straight-through mask, and the gradient dropout keeps
an element always where the zero-shot gradient agrees and with probability |g| / (|g| + |k|) where it conflicts."""
from __future__ import annotations

import copy

import pytest
import torch

from vlpt.errors import ConfigError
from vlpt.methods.base import cosine_logits
from vlpt.methods.r_amt import RAMT, keep_probability
from vlpt.methods.step import TrainingStep
from vlpt.methods.zeroshot import ZeroShotCLIP

CLASSES = ["red circle", "green square", "blue star"]
TEMPLATES = ["a photo of a {}."]


def images(n=4, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_it_starts_as_zero_shot_clip(tiny_backbone):
    method = RAMT(tiny_backbone, CLASSES, TEMPLATES)
    with torch.no_grad():
        torch.testing.assert_close(method.logits(images()), ZeroShotCLIP(tiny_backbone, CLASSES, TEMPLATES).logits(images()))
    assert method.masked_names[0] == "conv1.weight" and len(method.masked_names) == 1 + 2 * tiny_backbone.vision_layers


def test_masked_weights_are_the_frozen_ones_where_the_mask_is_one(tiny_backbone):
    method = RAMT(tiny_backbone, CLASSES, TEMPLATES)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for s in method.scores:  # about half the masks off
            s.copy_(5e-3 + 1e-3 * torch.randn(s.shape, generator=generator))
    frozen = {k: v.clone() for k, v in tiny_backbone.state_dict().items()}
    by_hand = copy.deepcopy(tiny_backbone)
    visual = dict(by_hand.model.visual.named_parameters())
    with torch.no_grad():
        for name, s in zip(method.masked_names, method.scores):
            visual[name].mul_((s > 5e-3).float())
        expected = cosine_logits(by_hand.encode_image(images()), method.classifier, tiny_backbone.logit_scale)
        torch.testing.assert_close(method.logits(images()), expected)
    assert all(torch.equal(v, frozen[k]) for k, v in tiny_backbone.state_dict().items())
    off = sum(int((s <= 5e-3).sum()) for s in method.scores)
    assert 0 < off < sum(s.numel() for s in method.scores)


def test_the_scores_learn_through_the_straight_through_mask(tiny_backbone):
    method = RAMT(tiny_backbone, CLASSES, TEMPLATES)
    loss = method.training_loss(images(), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in method.scores)


def test_the_gradient_dropout_follows_the_zero_shot_gradients_sign():
    g = torch.tensor([1.0, -2.0, 3.0, -1.0])
    k = torch.tensor([2.0, -1.0, -1.0, 3.0])
    torch.testing.assert_close(keep_probability(g, k), torch.tensor([1.0, 1.0, 0.75, 0.25]))


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_the_transform_keeps_or_drops_each_element(tiny_backbone, lam, monkeypatch):
    """With every uniform draw at 0.5: an element is kept where its keep probability exceeds 0.5, which every
    element whose zero-shot gradient agrees in sign does, and keeps 1 - lambda of itself elsewhere."""
    method = RAMT(tiny_backbone, CLASSES, TEMPLATES, RAMT.Config(gdr_lambda=lam))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # some masks off, as after training (at the start the zero-shot gradient is 0)
        for s in method.scores:
            s.copy_(6e-3 + 2e-3 * torch.randn(s.shape, generator=generator))
    x, y = images(), torch.tensor([0, 1, 2, 0])
    step = TrainingStep(method, lambda fn: fn(x, y))
    grads = step.gradients(step.loss())
    toward = step.gradients(step.loss(method.zero_shot_loss))
    monkeypatch.setattr(torch, "rand_like", lambda t: torch.full_like(t, 0.5))
    kept = method.transform_gradients(grads, step)
    dropped = 0
    for name, g in grads.items():
        keep = keep_probability(g, toward[name]) > 0.5
        torch.testing.assert_close(kept[name], torch.where(keep, g, (1 - lam) * g))
        agree = (torch.sign(g) == torch.sign(toward[name])) & (g.abs() + toward[name].abs() > 1e-6)
        assert bool(keep[agree].all())
        dropped += int((~keep).sum())
    assert dropped > 0, "no gradient element conflicted: the test checks one branch only"


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="init_score .* must exceed the threshold"):
        RAMT.Config(init_score=1e-3)
    with pytest.raises(ConfigError, match="gdr_lambda must be in"):
        RAMT.Config(gdr_lambda=2.0)

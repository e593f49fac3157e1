"""CLIP-Adapter: a residual mix of the frozen image feature and its adapted copy, classified by zero-shot text
embeddings; ratio 0 is zero-shot CLIP (to float rounding), and the adapter serves classes it never saw."""
from __future__ import annotations

import pytest
import torch

from vlpt.methods.clip_adapter import CLIPAdapter
from vlpt.methods.zeroshot import ZeroShotCLIP

CLASSES = ["red circle", "green square", "blue star"]
TEMPLATES = ["a photo of a {}."]


def _images(n=6, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_ratio_zero_is_zero_shot_clip_and_the_mix_is_the_residual_formula(tiny_backbone):
    images = _images()
    with torch.no_grad():
        zero_shot = ZeroShotCLIP(tiny_backbone, CLASSES, TEMPLATES).logits(images)
        bypassed = CLIPAdapter(tiny_backbone, CLASSES, TEMPLATES, CLIPAdapter.Config(residual_ratio=0.0))
        torch.testing.assert_close(bypassed.logits(images), zero_shot, rtol=1e-6, atol=1e-6)
        method = CLIPAdapter(tiny_backbone, CLASSES, TEMPLATES)
        features = tiny_backbone.encode_image(images)
        w1, w2 = method.adapter[0].weight, method.adapter[2].weight
        expected = 0.2 * torch.relu(torch.relu(features @ w1.T) @ w2.T) + 0.8 * features
        torch.testing.assert_close(method.adapted_features(images), expected)
        assert w1.shape == (tiny_backbone.embed_dim // 4, tiny_backbone.embed_dim)
        assert not torch.allclose(method.logits(images), zero_shot)  # a random adapter moves the scores


def test_only_the_adapter_learns_and_it_serves_unseen_classes(tiny_backbone):
    method = CLIPAdapter(tiny_backbone, CLASSES, TEMPLATES)
    assert set(method.prompt_parameters()) == {"adapter.0.weight", "adapter.2.weight"}
    assert CLIPAdapter.unseen_classes(method.config) == "any"
    adapter = {k: v.clone() for k, v in method.adapter.state_dict().items()}
    method.set_classnames(["yellow kite", "purple moon"], TEMPLATES)
    assert method.logits(_images(2)).shape == (2, 2)
    assert all(torch.equal(v, method.adapter.state_dict()[k]) for k, v in adapter.items())


@pytest.mark.parametrize("params, message", [({"reduction": 0}, "reduction must be a positive integer"),
                                             ({"residual_ratio": 1.5}, "residual_ratio must be in")])
def test_bad_settings_are_named(params, message):
    with pytest.raises(ValueError, match=message):
        CLIPAdapter.Config(**params)

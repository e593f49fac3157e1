"""C-TPT: TPT plus the text feature dispersion (ATFD) in the test-time objective."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vlpt.methods.c_tpt import CTPT, text_feature_dispersion
from vlpt.methods.tpt import TPT

CLASSES = ["red square", "green circle", "blue star"]
TEMPLATES = ["a photo of a {}."]


def _views(backbone, seed: int, n: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, backbone.image_size, backbone.image_size, generator=generator)


def test_dispersion_is_the_mean_distance_to_the_centroid():
    text = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]), dim=-1)
    assert torch.isclose(text_feature_dispersion(text), torch.tensor(1.0))  # centroid at 0, unit distances
    same = F.normalize(torch.ones(3, 4), dim=-1)
    assert text_feature_dispersion(same) == 0


def test_weight_zero_is_tpt_exactly(tiny_backbone):
    views = _views(tiny_backbone, 1)
    tpt = TPT(tiny_backbone, CLASSES, TEMPLATES, TPT.Config(views=16, steps=2, lr=0.05))
    c_tpt = CTPT(tiny_backbone, CLASSES, TEMPLATES, CTPT.Config(views=16, steps=2, lr=0.05, dispersion_weight=0.0))
    assert torch.equal(tpt.adapt_and_predict(views), c_tpt.adapt_and_predict(views))


def test_the_dispersion_term_spreads_the_class_features(tiny_backbone):
    """With a large weight, the adapted prompt's class features are further apart than TPT's."""
    views = _views(tiny_backbone, 2)
    dispersions = {}
    for weight in (0.0, 50.0):
        method = CTPT(tiny_backbone, CLASSES, TEMPLATES, CTPT.Config(views=16, steps=3, lr=0.05,
                                                                    dispersion_weight=weight))
        method.start_episodes()
        seen = []
        original = method.test_time_loss
        method.test_time_loss = lambda logits, text: seen.append(text_feature_dispersion(text).item()) or \
            original(logits, text)
        method.adapt_and_predict(views)
        dispersions[weight] = seen[-1]
    assert dispersions[50.0] > dispersions[0.0]


def test_batched_c_tpt_equals_one_image_at_a_time(tiny_backbone):
    images = [_views(tiny_backbone, seed) for seed in (3, 4)]
    one = CTPT(tiny_backbone, CLASSES, TEMPLATES, CTPT.Config(views=16, lr=0.05))
    batched = CTPT(tiny_backbone, CLASSES, TEMPLATES, CTPT.Config(views=16, lr=0.05, images_per_batch=2))
    features = [one.encode_views(v)[0] for v in images]
    singles = [one.adapt_on_features(f) for f in features]
    together = batched.adapt_batch(features, [None, None])
    for a, b in zip(singles, together):
        assert torch.allclose(a, b, atol=1e-4)

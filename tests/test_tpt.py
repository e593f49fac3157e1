"""TPT and DiffTPT: episodic reset, view selection, a frozen image encoder, and initialisations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlpt.errors import CheckpointError, ConfigError
from vlpt.methods.cocoop import CoCoOp
from vlpt.methods.coop import CoOp
from vlpt.methods.difftpt import DiffTPT
from vlpt.methods.tpt import TPT
from vlpt.methods.zeroshot import ZeroShotCLIP
from vlpt.tta import selection
from vlpt.tta import views as view_ops
from vlpt.tta.views import AugmentedViews, ReferenceAugMix, resolve_augment

CLASSES = ["red square", "green circle", "blue star"]
TEMPLATES = ["a photo of a {}."]


def _views(backbone, seed: int, n: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, backbone.image_size, backbone.image_size, generator=generator)


def _tpt(backbone, **params) -> TPT:
    return TPT(backbone, CLASSES, TEMPLATES, TPT.Config(**{"views": 16, **params}))


def test_episodic_reset_is_exact(tiny_backbone):
    """Adapting on A then B gives B exactly what adapting on B alone gives; nothing persists."""
    a, b = _views(tiny_backbone, 1), _views(tiny_backbone, 2)
    method = _tpt(tiny_backbone, steps=3, lr=0.05)
    start = method.context.ctx.detach().clone()
    method.start_episodes()
    method.adapt_and_predict(a)
    after_a_then_b = method.adapt_and_predict(b)

    alone = _tpt(tiny_backbone, steps=3, lr=0.05)
    alone.start_episodes()
    b_alone = alone.adapt_and_predict(b)
    assert torch.equal(after_a_then_b, b_alone)
    assert torch.equal(method.context.ctx, start)
    assert method._episode.optimizer.state_dict()["state"] == {}
    assert method.context.ctx.grad is None
    unadapted = _tpt(tiny_backbone, steps=0)
    assert not torch.allclose(b_alone, unadapted.adapt_and_predict(b)), "three steps at lr 0.05 changed nothing"


def test_adaptation_lowers_the_entropy_of_the_selected_views(tiny_backbone, monkeypatch):
    losses = []
    entropy = selection.marginal_entropy
    monkeypatch.setattr("vlpt.methods.tpt.marginal_entropy", lambda logits: losses.append(entropy(logits)) or losses[-1])
    _tpt(tiny_backbone, steps=6, lr=0.05).adapt_and_predict(_views(tiny_backbone, 3))
    assert len(losses) == 6 and losses[-1] < losses[0]


def test_confidence_selection_keeps_exactly_the_lowest_entropy_views():
    logits = torch.tensor([[0.0, 0.0, 0.0],   # uniform: highest entropy
                           [9.0, 0.0, 0.0],   # most confident
                           [2.0, 0.0, 0.0],
                           [0.0, 5.0, 0.0],
                           [1.0, 1.0, 0.0]])
    assert selection.confident_views(logits, 0.4).tolist() == [1, 3]
    assert selection.confident_views(logits, 0.01).tolist() == [1]  # at least one view
    assert selection.kept_count(64, 0.1) == 6 and selection.kept_count(64, 0.3) == 19
    with pytest.raises(ValueError, match="fraction"):
        selection.kept_count(64, 0.0)


def test_marginal_entropy_is_the_entropy_of_the_averaged_prediction():
    logits = torch.randn(7, 5)
    mean = F.softmax(logits, dim=-1).mean(dim=0)
    assert torch.allclose(selection.marginal_entropy(logits), -(mean * mean.log()).sum(), atol=1e-6)
    assert math.isclose(selection.marginal_entropy(torch.zeros(3, 4)).item(), math.log(4), rel_tol=1e-6)


def test_the_loss_sees_exactly_the_selected_views(tiny_backbone, monkeypatch):
    """The loss gets the rows of the 10% lowest-entropy views, chosen on the starting prompt."""
    method = _tpt(tiny_backbone, steps=2, views=20, selection=0.1)
    views = _views(tiny_backbone, 4, n=20)
    seen = []
    monkeypatch.setattr("vlpt.methods.tpt.marginal_entropy", lambda logits: (seen.append(logits.detach()), logits.sum() * 0)[1])
    method.adapt_and_predict(views)
    with torch.no_grad():
        features = tiny_backbone.encode_image(views, normalize=True)
        logits = tiny_backbone.logit_scale * features @ method.text_features().T
    expected = torch.argsort(selection.prediction_entropy(logits))[:2]
    assert len(seen) == 2
    assert torch.allclose(seen[0], logits[expected], atol=1e-5)


def test_difftpt_features_option_keeps_the_generated_views_most_similar_to_the_original(tiny_backbone):
    method = DiffTPT(tiny_backbone, CLASSES, TEMPLATES, DiffTPT.Config(similarity_selection=0.5, similarity="features"))
    original = F.normalize(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), dim=-1)
    generated = F.normalize(torch.tensor([[0.0, 1.0, 0.0, 0.0],    # orthogonal
                                          [1.0, 0.1, 0.0, 0.0],    # close
                                          [-1.0, 0.0, 0.0, 0.0],   # opposite
                                          [1.0, 0.5, 0.0, 0.0]]), dim=-1)  # fairly close
    pool = method.adaptation_features(original, generated)
    assert torch.equal(pool, torch.cat([original, generated[[1, 3]]]))
    assert torch.equal(method.adaptation_features(original, None), original)


def test_difftpt_selects_by_logit_similarity_then_entropy_as_the_reference(tiny_backbone):
    """chunmeifeng/DiffTPT: cosine of every non-original view's logits to the original's (80% kept, conventional
    and generated views alike), then the 30% lowest-entropy of the original and the kept views."""
    config = DiffTPT.Config(pipeline="tiny-random")
    assert (config.similarity, config.views, config.generated_views, config.similarity_selection, config.selection) \
        == ("logits", 65, 63, 0.8, 0.3)
    method = DiffTPT(tiny_backbone, CLASSES, TEMPLATES, DiffTPT.Config(pipeline="tiny-random", selection=0.5,
                                                                        similarity_selection=0.5))
    features, extra = torch.randn(3, 8), torch.randn(2, 8)
    assert torch.equal(method.adaptation_features(features, extra), torch.cat([features, extra]))
    logits = torch.tensor([[4.0, 0.0, 0.0],    # the original
                           [0.0, 4.0, 0.0],    # dissimilar
                           [9.0, 0.0, 0.0],    # similar, confident
                           [1.0, 0.0, 0.0],    # similar, unsure
                           [0.0, 0.0, 9.0]])   # dissimilar, confident
    # similar to the original: rows 2 and 3 (2 of 4); of [0, 2, 3] the half most confident: int(3 * .5) = 1 -> row 2
    assert method.select_views(logits).tolist() == [2]
    method.config.selection = 1.0
    assert sorted(method.select_views(logits).tolist()) == [0, 2, 3]


def test_the_image_encoder_is_never_differentiated(tiny_backbone):
    calls = []
    hook = tiny_backbone.model.visual.register_forward_hook(
        lambda module, inputs, output: calls.append((torch.is_grad_enabled(), output.requires_grad)))
    try:
        method = _tpt(tiny_backbone, steps=2)
        method.adapt_and_predict(_views(tiny_backbone, 5), _views(tiny_backbone, 6, n=4))
    finally:
        hook.remove()
    # views and extra views: one pass each, without gradients
    assert calls == [(False, False)] * 2, "every view must go through the image encoder once, without gradients"


def test_without_steps_tpt_is_zero_shot_clip_with_the_same_prompt(tiny_backbone):
    views = _views(tiny_backbone, 7, n=4)
    scores = _tpt(tiny_backbone, steps=0).adapt_and_predict(views)
    zero_shot = ZeroShotCLIP(tiny_backbone, CLASSES, TEMPLATES)
    with torch.no_grad():
        assert torch.allclose(scores, zero_shot.logits(views[:1])[0], atol=1e-4)


def test_tpt_starts_from_a_coop_checkpoint(tiny_backbone, tmp_path):
    coop = CoOp(tiny_backbone, CLASSES, TEMPLATES, CoOp.Config(n_ctx=4, ctx_init=None))
    path = coop.save_checkpoint(tmp_path / "coop.pt")
    method = _tpt(tiny_backbone, init_from=str(path))
    assert torch.equal(method.context.ctx, coop.context.ctx)
    with pytest.raises(CheckpointError, match="shape"):
        _tpt(tiny_backbone, n_ctx=4, ctx_init=None, init_from=str(
            CoOp(tiny_backbone, CLASSES, TEMPLATES, CoOp.Config(n_ctx=8)).save_checkpoint(tmp_path / "coop8.pt")))


def test_conditional_tpt_starts_from_cocoops_image_conditioned_context(tiny_backbone, tmp_path):
    torch.manual_seed(0)
    cocoop = CoCoOp(tiny_backbone, CLASSES, TEMPLATES)
    with torch.no_grad():
        for p in cocoop.meta_net.parameters():
            p.normal_(0, 0.2)  # a meta-net whose bias is far from zero
    path = cocoop.save_checkpoint(tmp_path / "cocoop.pt")
    views = _views(tiny_backbone, 8, n=4)
    method = _tpt(tiny_backbone, conditional=True, init_from=str(path), steps=0)
    with torch.no_grad():
        expected = cocoop.logits(views[:1])[0]
    assert torch.allclose(method.adapt_and_predict(views), expected, atol=1e-4)
    assert torch.equal(method.context.ctx, cocoop.context.ctx)  # restored after the image
    with pytest.raises(ConfigError, match="init_from"):
        _tpt(tiny_backbone, conditional=True)
    coop = CoOp(tiny_backbone, CLASSES, TEMPLATES, CoOp.Config(n_ctx=4)).save_checkpoint(tmp_path / "coop.pt")
    with pytest.raises(CheckpointError, match="meta-net"):
        _tpt(tiny_backbone, conditional=True, init_from=str(coop))


def test_views_are_the_original_then_seeded_augmentations(tmp_path):
    image = Image.new("RGB", (48, 40), (10, 200, 30))
    image.paste((250, 20, 20), (5, 5, 30, 25))
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    for augment in ("crop_flip", "augmix", "augmix_torchvision"):
        maker = AugmentedViews(32, mean, std, augment)
        views = maker.views(image, 6, seed=3)
        assert views.shape == (6, 3, 32, 32)
        assert torch.equal(views[0], maker.original(image))
        assert torch.equal(views, maker.views(image, 6, seed=3))
        assert not torch.equal(views[1:], maker.views(image, 6, seed=4)[1:])
        assert not torch.equal(views[1], views[2])


def _picture(size=(64, 48)) -> Image.Image:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    image = Image.fromarray(pixels.numpy())
    image.paste((250, 20, 20), (5, 5, 30, 25))
    return image


@pytest.mark.parametrize("dataset, expected", [
    ("dtd", "augmix"), ("oxford_flowers", "augmix"), ("fgvc_aircraft", "augmix"), ("ucf101", "augmix"),
    ("cifar10~gaussian_noise:3", "augmix"), ("pacs@photo", "augmix"),
    ("imagenet", "crop_flip"), ("imagenet_a", "crop_flip"), ("imagenet_r", "crop_flip"),
    ("imagenet_sketch", "crop_flip"), ("imagenet_v2", "crop_flip"),
])
def test_default_tpt_views_follow_the_reference_augmix_for_fine_grained_sets_crops_for_imagenet(
        tiny_backbone, dataset, expected):
    """The reference code uses AugMix views for every set but ImageNet and its variants (augmix=len(set_id)>1)."""
    method = TPT(tiny_backbone, CLASSES, TEMPLATES)
    assert method.config.augment == "auto"
    views = method.test_time_dataset([], 32, (0.5,) * 3, (0.25,) * 3, seed=0, dataset=dataset)
    assert views.augment == expected
    assert DiffTPT(tiny_backbone, CLASSES, TEMPLATES, DiffTPT.Config(pipeline="tiny-random")).view_maker(
        32, (0.5,) * 3, (0.25,) * 3, dataset).augment == expected
    forced = TPT(tiny_backbone, CLASSES, TEMPLATES, TPT.Config(augment="crop_flip"))
    assert forced.view_maker(32, (0.5,) * 3, (0.25,) * 3, dataset).augment == "crop_flip"
    with pytest.raises(ConfigError, match="depends on the dataset"):
        resolve_augment("auto", None)


def test_reference_augmix_mixes_in_floating_point_unlike_torchvision():
    """The reference mixes normalised tensors (no rounding); torchvision's AugMix rounds to 8 bits."""
    image, mean, std = _picture(), (0.5,) * 3, (0.25,) * 3
    for augment, on_grid in (("crop_flip", True), ("augmix_torchvision", True), ("augmix", False)):
        views = AugmentedViews(32, mean, std, augment).views(image, 8, seed=1)[1:]
        levels = (views * 0.25 + 0.5) * 255  # back to 0..255
        assert torch.allclose(levels, levels.round(), atol=1e-3) == on_grid, augment


def test_reference_augmix_operations_and_magnitudes_at_severity_one():
    """Nine operations (none of ImageNet-C's colour/contrast/brightness/sharpness); at severity 1 a geometric
    operation moves the image (torchvision's AugMix at severity 1 leaves it unchanged)."""
    names = sorted(op.__name__.strip("_") for op in view_ops.AUGMIX_OPERATIONS)
    assert names == ["autocontrast", "equalize", "posterize", "rotate", "shear_x", "shear_y", "solarize",
                     "translate_x", "translate_y"]
    image = Image.new("RGB", (224, 224), (0, 0, 0))
    image.paste((255, 255, 255), (100, 100, 124, 124))
    shifts = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(300):
            moved = torch.from_numpy(np.array(view_ops._translate_x(image, 1)))[:, :, 0]
            columns = (moved > 127).any(dim=0).nonzero().flatten()
            shifts.add(100 - int(columns[0]) if len(columns) else None)
    assert shifts <= set(range(-7, 8)) and len(shifts) > 5  # int(U(0.1, 1) * 224/3 / 10) pixels, either way
    assert max(abs(s) for s in shifts) == 7


def test_reference_augmix_weights_are_dirichlet_and_beta_over_three_chains(monkeypatch):
    """Three chains of 1-3 operations; the crop is kept with weight m ~ Beta(1, 1), the chains share 1 - m."""
    depths = []
    monkeypatch.setattr(view_ops, "AUGMIX_OPERATIONS", (lambda image, severity: depths.append(1) or image,))
    mixer = ReferenceAugMix(lambda images: torch.tensor([float(image.getpixel((0, 0))[0]) for image in images]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(200):
            depths.clear()
            assert math.isclose(float(mixer(Image.new("RGB", (4, 4), (9, 9, 9)))), 9.0, rel_tol=1e-5)
            assert 3 <= len(depths) <= 9

"""TPT's views (azshue/TPT: data/augmix_ops.py, data/datautils.py) against vlpt's ``vlpt.tta.views``.

test_tpt.py feeds both sides the same views; this file compares how the views are made. Both sides
draw their random values from one scripted source (``Draws``): the reference's ``numpy.random``
calls and vlpt's torch calls inside ``vlpt.tta.views`` are replaced for the duration of a call, so
that both consume the same values in the same order, and the order and kind of the draws each side
asks for is compared as well. The crops are drawn by torchvision on both sides and seeded with
``torch.manual_seed``, as in the reference code.

Nothing of the reference is imported while tests are collected (every test needs ``references``).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

#: CLIP's normalisation, as tpt_classification.main_worker builds it
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
SIZE = 224  # the reference's resolution: get_preaugment crops to 224, augmix_ops.IMAGE_SIZE
#: fp32 agreement of the normalised views: a few ulp of their largest value
FP32_ROUNDING = 4 * torch.finfo(torch.float32).eps
#: (width, height) of the source images: one of the reference's size, one small and not square
SOURCES = {"224px": (224, 224), "small 72x56": (72, 56)}
#: uniform draws fed to an operation: its level (0.1 + (severity - 0.1) u) and its sign (u > 0.5 negates)
LEVELS = (0.0, 0.05, 0.3, 0.5, 0.77, 0.999)
SIGNS = (0.2, 0.9)


def make_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A real-looking RGB image: colour gradients, a texture, noise, and a few filled shapes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    array = np.stack([255 * x / (width - 1), 255 * y / (height - 1), 128 + 90 * np.sin(x / 7 + y / 11)], -1)
    array += rng.normal(0, 6, array.shape)
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")
    draw, w, h = ImageDraw.Draw(image), width, height
    draw.ellipse((0.15 * w, 0.2 * h, 0.55 * w, 0.7 * h), fill=(230, 40, 40))
    draw.rectangle((0.5 * w, 0.45 * h, 0.9 * w, 0.85 * h), fill=(20, 60, 200), outline=(250, 250, 250), width=2)
    draw.polygon([(0.1 * w, 0.9 * h), (0.35 * w, 0.6 * h), (0.45 * w, 0.95 * h)], fill=(30, 180, 60))
    draw.line((0, h - 1, w - 1, 0), fill=(10, 10, 10), width=3)
    return image


class Draws:
    """One scripted source of random values, and the log of what was asked of it.

    With ``units`` the uniform [0, 1) draws are those values in turn; otherwise every value comes
    from a numpy generator seeded by ``seed``. Two ``Draws`` of the same arguments give the same
    values as long as they are asked for the same kinds of values in the same order.
    """

    def __init__(self, seed: int = 0, units=None):
        self.generator = np.random.default_rng(seed)
        self.units = None if units is None else list(units)
        self.log: list[tuple] = []

    def unit(self) -> float:
        self.log.append(("uniform [0, 1)",))
        return self.units.pop(0) if self.units is not None else float(self.generator.random())

    def integer(self, low: int, high: int) -> int:
        self.log.append(("integer", int(low), int(high)))
        return int(self.generator.integers(low, high))

    def dirichlet(self, alpha) -> np.ndarray:
        self.log.append(("dirichlet", tuple(float(a) for a in alpha)))
        return self.generator.dirichlet(alpha)

    def beta(self, a: float, b: float) -> float:
        self.log.append(("beta", float(a), float(b)))
        return float(self.generator.beta(a, b))


def drive_reference(monkeypatch, draws: Draws) -> None:
    """The ``numpy.random`` functions the reference's AugMix calls, answered by ``draws``."""

    def randint(low, high=None, size=None):
        assert size is None, "the reference draws single integers"
        return draws.integer(0, low) if high is None else draws.integer(low, high)

    def choice(a, size=None, replace=True, p=None):
        assert size is None and p is None, "the reference draws one operation, uniformly"
        return a[draws.integer(0, len(a))]

    def uniform(low=0.0, high=1.0, size=None):
        assert size is None
        return low + (high - low) * draws.unit()  # numpy's own formula

    def random(size=None):
        assert size is None
        return draws.unit()

    def dirichlet(alpha, size=None):
        assert size is None
        return draws.dirichlet(alpha)

    def beta(a, b, size=None):
        assert size is None
        return draws.beta(a, b)

    for name, function in dict(randint=randint, choice=choice, uniform=uniform, random=random,
                               dirichlet=dirichlet, beta=beta).items():
        monkeypatch.setattr(np.random, name, function)


class DrivenTorch:
    """``torch`` as vlpt.tta.views sees it, with its random draws answered by ``draws`` (the rest is torch)."""

    def __init__(self, draws: Draws):
        self._draws = draws

        class Dirichlet:
            def __init__(self, concentration):
                self.concentration = concentration

            def sample(self):
                values = draws.dirichlet(self.concentration.tolist())
                return torch.tensor(values, dtype=self.concentration.dtype)

        class Beta:
            def __init__(self, a, b):
                self.a, self.b = torch.as_tensor(a), torch.as_tensor(b)

            def sample(self):
                return torch.tensor(draws.beta(self.a.item(), self.b.item()), dtype=self.a.dtype)

        self.distributions = SimpleNamespace(Dirichlet=Dirichlet, Beta=Beta)

    def __getattr__(self, name):
        return getattr(torch, name)

    def rand(self, *size, **kwargs):
        assert size in ((), ((),)) and not kwargs, f"vlpt draws single uniforms, not torch.rand{size}"
        return torch.tensor(self._draws.unit(), dtype=torch.float64)  # .item() gives the value exactly

    def randint(self, *args, **kwargs):
        assert not kwargs and len(args) in (2, 3) and tuple(args[-1]) == (), f"torch.randint{args}"
        low, high = (0, args[0]) if len(args) == 2 else args[:2]
        return torch.tensor(self._draws.integer(low, high))


def drive_ours(monkeypatch, draws: Draws) -> None:
    import vlpt.tta.views

    monkeypatch.setattr(vlpt.tta.views, "torch", DrivenTorch(draws))


def reference_transforms():
    """tpt_classification.main_worker's base_transform and preprocess at resolution 224."""
    from torchvision import transforms

    base_transform = transforms.Compose([
        transforms.Resize(SIZE, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(SIZE)])
    preprocess = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=MEAN, std=STD)])
    return base_transform, preprocess


def operations(references):
    """``(name, reference operation, vlpt operation)`` for the 9 operations, and the reference's module."""
    from vlpt.tta.views import AUGMIX_OPERATIONS

    datautils = references.module("TPT", "data/datautils.py")
    ops = datautils.augmentations  # the data/augmix_ops module that datautils.augmix uses
    theirs = [op.__name__ for op in ops.augmentations]
    ours = [op.__name__.lstrip("_") for op in AUGMIX_OPERATIONS]
    assert ours == theirs, f"the operations (and their order) differ: reference {theirs}, vlpt {ours}"
    return list(zip(theirs, ops.augmentations, AUGMIX_OPERATIONS)), ops, datautils


@pytest.mark.parametrize("severity", [1, 10])
@pytest.mark.parametrize("size", [SIZE, 64])
def test_each_operation_gives_the_reference_pixels(references, differences, monkeypatch, size, severity):
    """Every operation at every scripted level and sign: pixel for pixel the reference's.

    Severity 1 is TPT's (levels 0.1-1); severity 10 covers the operations' whole range of magnitudes.
    At 64 pixels the reference's module constant ``IMAGE_SIZE`` is set to 64, as its comment asks
    ("ImageNet code should change this value"): it fixes the output size and the translation range.
    Left at 224, the reference's shears and translations of a 64-pixel image return a 224-pixel canvas,
    where vlpt keeps the image's size; TPT only ever passes them its 224-pixel crops.
    """
    triples, ops, _ = operations(references)
    monkeypatch.setattr(ops, "IMAGE_SIZE", size)
    image = make_image(size, size, seed=size)
    check = differences.comparison("TPT AugMix", f"operation at {size}px, severity {severity}")
    for name, reference_op, our_op in triples:
        outputs = {"reference": [], "vlpt": []}
        for level in LEVELS:
            for sign in SIGNS:
                for side, op, drive in (("reference", reference_op, drive_reference), ("vlpt", our_op, drive_ours)):
                    draws = Draws(units=[level, sign])
                    with monkeypatch.context() as patch:
                        drive(patch, draws)
                        result = op(image.copy(), severity)
                    outputs[side].append((np.asarray(result, dtype=np.uint8), draws.log))
        (reference, reference_logs), (ours, our_logs) = (zip(*outputs[side]) for side in ("reference", "vlpt"))
        assert our_logs == reference_logs, f"{name}: the draws asked for differ"
        check(f"{name} pixels", torch.from_numpy(np.stack(reference)), torch.from_numpy(np.stack(ours)), tolerance=0)
        if name not in ("autocontrast", "equalize") and severity == 10:  # the operation does something
            assert any((out != np.asarray(image)).any() for out in reference), name
    check.assert_agreement()


def test_the_pre_augment_crop_is_the_reference_crop(references, differences):
    """get_preaugment (RandomResizedCrop(224), bilinear, and a flip) and vlpt's crop, under one torch seed."""
    from vlpt.tta.views import AugmentedViews
    from torchvision import transforms as T

    datautils = references.module("TPT", "data/datautils.py")
    for augment in ("augmix", "crop_flip"):
        crop = T.Compose(AugmentedViews(SIZE, MEAN, STD, augment).augmented.transforms[:2])
        for case, (width, height) in SOURCES.items():
            check = differences.comparison("TPT views", f"pre-augment crop ({augment}), {case}")
            image = make_image(width, height, seed=width)
            flipped, reference, ours = 0, [], []
            for seed in range(12):
                torch.manual_seed(seed)
                reference.append(np.array(datautils.get_preaugment()(image)))
                torch.manual_seed(seed)
                ours.append(np.array(crop(image)))
                torch.manual_seed(seed)
                unflipped = np.asarray(datautils.get_preaugment().transforms[0](image))
                flipped += int((unflipped != reference[-1]).any())
            assert 0 < flipped < 12  # both flipped and unflipped crops were compared
            check("crop pixels (12 seeds)", torch.from_numpy(np.stack(reference)), torch.from_numpy(np.stack(ours)),
                  tolerance=0)
            check.assert_agreement()


@pytest.mark.parametrize("augment", ["augmix", "crop_flip"])
@pytest.mark.parametrize("case", list(SOURCES))
def test_the_views_are_the_reference_views(references, differences, monkeypatch, case, augment):
    """AugMixAugmenter (TPT's view transform) against AugmentedViews.views: the original view and 15
    augmented views (crop, flip, then for ``augmix`` three chains mixed in fp32), one draw source."""
    from vlpt.tta.views import AugmentedViews

    _, ops, datautils = operations(references)
    base_transform, preprocess = reference_transforms()
    reference_views = datautils.AugMixAugmenter(base_transform, preprocess, n_views=15, augmix=augment == "augmix")
    ours = AugmentedViews(SIZE, MEAN, STD, augment)
    image = make_image(*SOURCES[case], seed=7)
    check = differences.comparison("TPT views", f"{augment} views, {case}")
    reference, views = [], []
    for seed in (0, 1, 2):
        reference_draws, our_draws = Draws(seed), Draws(seed)
        with monkeypatch.context() as patch:
            drive_reference(patch, reference_draws)
            torch.manual_seed(seed)  # the reference's crops draw from torch's global generator
            reference.append(torch.stack(reference_views(image)))
        with monkeypatch.context() as patch:
            drive_ours(patch, our_draws)
            views.append(ours.views(image, 16, seed=seed))
        assert our_draws.log == reference_draws.log, f"seed {seed}: the draws asked for differ"
        if augment == "augmix":
            assert len(our_draws.log) > 15 * 5  # 15 x (Dirichlet, Beta, 3 depths, >= 3 operations)
    reference, views = torch.stack(reference), torch.stack(views)
    check("original view (3 seeds)", reference[:, :1], views[:, :1], tolerance=0)
    tolerance = 0 if augment == "crop_flip" else FP32_ROUNDING
    check(f"{augment} views (3 seeds x 15)", reference[:, 1:], views[:, 1:], tolerance=tolerance)
    check.assert_agreement()


@pytest.mark.xfail(strict=True, reason="translate_x/y round their shift at a boundary level differently: the "
                   "reference computes int(level * (IMAGE_SIZE / 3) / 10), vlpt int(level * width / 3 / 10)")
def test_translate_at_a_rounding_boundary(references, monkeypatch):
    """At the level just below 45/112 (a shift of exactly 3 pixels at 224) the reference shifts by 3, vlpt by 2.

    A difference of floating-point association alone, at one float64 level below each boundary (3, 6
    and 7 pixels at severity 1, more at higher severities); vlpt's levels come from fp32 uniforms.
    """
    import vlpt.tta.views

    triples, _, _ = operations(references)
    level = float(np.nextafter(45 / 112, 0))  # 0.40178571428571425

    def uniform(low=0.0, high=1.0, size=None):  # the level, then a positive sign
        return level if (low, high) == (0.1, 1) else 0.2

    monkeypatch.setattr(np.random, "uniform", uniform)
    monkeypatch.setattr(np.random, "random", lambda size=None: 0.2)
    monkeypatch.setattr(vlpt.tta.views, "_uniform", uniform)
    image = make_image(SIZE, SIZE)
    for name, reference_op, our_op in triples:
        if name in ("translate_x", "translate_y"):
            reference, ours = (np.asarray(op(image.copy(), 1)) for op in (reference_op, our_op))
            assert (reference == ours).all(), name

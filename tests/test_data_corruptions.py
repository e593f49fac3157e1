"""Common-corruption shift: every corruption, severities, determinism, specs and `~` dataset names."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vlpt.data import ImageDataset, load_dataset
from vlpt.data.corruptions import CORRUPTIONS, corrupt, parse_corruption, split_corrupted_name
from vlpt.data.image_dataset import load_rgb, load_sample
from vlpt.errors import ConfigError

BENCHMARK = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
             "zoom_blur", "snow", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression"]


def scene(width: int, height: int) -> Image.Image:
    """A small natural-ish image: colour gradients, a red disc and a green box."""
    y, x = np.mgrid[:height, :width] / max(width, height)
    pixels = np.stack([x, y, 1 - x * y], -1) * 0.9
    pixels[(x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.06] = (0.9, 0.2, 0.1)
    pixels[(abs(x - 0.25) < 0.1) & (abs(y - 0.6) < 0.15)] = (0.1, 0.6, 0.2)
    return Image.fromarray(np.uint8(pixels * 255))


def damage(image: Image.Image, corrupted: Image.Image) -> float:
    return float(np.abs(np.asarray(corrupted, float) - np.asarray(image, float)).mean())


def test_all_benchmark_corruptions_but_frost_and_three_extras_are_provided():
    assert set(CORRUPTIONS) == {*BENCHMARK, "speckle_noise", "gaussian_blur", "saturate"}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_every_corruption_keeps_size_and_mode_and_changes_the_image(name):
    for size in ((32, 32), (64, 48)):
        image = scene(*size)
        for severity in range(1, 6):
            out = corrupt(image, name, severity, key="a.png")
            assert out.mode == "RGB" and out.size == size, (name, severity)
            assert damage(image, out) > 0, (name, severity, size)
            assert out.tobytes() == corrupt(image, name, severity, key="a.png").tobytes()


def test_grey_and_rgba_inputs_come_back_rgb():
    image = scene(40, 30)
    for mode in ("L", "RGBA"):
        out = corrupt(image.convert(mode), "gaussian_noise", 2, key="x")
        assert out.mode == "RGB" and out.size == (40, 30)


@pytest.mark.parametrize("name", ["gaussian_noise", "contrast", "gaussian_blur", "pixelate"])
def test_damage_grows_with_severity(name):
    image = scene(64, 48)
    damages = [damage(image, corrupt(image, name, severity, key="a.png")) for severity in range(1, 6)]
    assert all(a < b for a, b in zip(damages, damages[1:])), damages


def test_noise_is_seeded_by_the_key_name_and_severity():
    image = scene(32, 32)
    first = np.asarray(corrupt(image, "gaussian_noise", 3, key="/data/a.png"))
    assert np.array_equal(first, np.asarray(corrupt(image, "gaussian_noise", 3, key="/data/a.png")))
    assert not np.array_equal(first, np.asarray(corrupt(image, "gaussian_noise", 3, key="/data/b.png")))
    spatial = np.asarray(corrupt(image, "glass_blur", 3, key="/data/a.png"))
    assert not np.array_equal(spatial, np.asarray(corrupt(image, "glass_blur", 3, key="/data/b.png")))


def test_noise_is_the_same_in_another_process():
    code = ("import hashlib; from PIL import Image; from vlpt.data.corruptions import corrupt; "
            "image = Image.linear_gradient('L').convert('RGB').resize((32, 32)); "
            "print(hashlib.sha256(corrupt(image, 'shot_noise', 4, key='k.png').tobytes()).hexdigest())")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    image = Image.linear_gradient("L").convert("RGB").resize((32, 32))
    assert runs[0].strip() == runs[1].strip() == hashlib.sha256(
        corrupt(image, "shot_noise", 4, key="k.png").tobytes()).hexdigest()


def test_glass_blur_swaps_pixels_within_delta(monkeypatch):
    """Between its two blurs, glass blur only swaps pixels with near neighbours (ImageNet-C's swap loop:
    a pixel swapped again later in a pass can travel further than ``delta``), and moves most of them."""
    import vlpt.data.corruptions as corruptions

    monkeypatch.setattr(corruptions, "_gaussian", lambda x, sigma: x)
    h, w, delta, iterations = 30, 40, 2, 3
    x = np.arange(h * w, dtype=np.float64).reshape(h, w, 1)  # each pixel's value names where it started
    out = corruptions.glass_blur(x.copy(), (0.0, delta, iterations), np.random.default_rng(0))
    assert sorted(out.ravel()) == sorted(x.ravel())  # a permutation of the pixels
    rows, cols = np.divmod(out[..., 0].astype(int), w)  # where each output pixel came from
    moved_rows, moved_cols = np.abs(rows - np.arange(h)[:, None]), np.abs(cols - np.arange(w)[None, :])
    assert np.median(np.maximum(moved_rows, moved_cols)) <= delta * iterations  # local, not a shuffle
    assert (out[..., 0] != x[..., 0]).mean() > 0.5


# ------------------------------------------------------------------------------------------- specs
def test_parse_and_split():
    assert parse_corruption("gaussian_noise:3") == ("gaussian_noise", 3)
    assert split_corrupted_name("cifar10~gaussian_noise:3") == ("cifar10", "gaussian_noise:3")
    assert split_corrupted_name("pacs@sketch~contrast:5") == ("pacs@sketch", "contrast:5")
    assert split_corrupted_name("cifar10") == ("cifar10", None)


@pytest.mark.parametrize("spec, expected", [
    ("frost:3", ["'frost'", "gaussian_noise", "jpeg_compression"]),
    ("gaussian_noise:0", ["severity 0", "1..5"]),
    ("gaussian_noise:6", ["severity 6", "1..5"]),
    ("gaussian_noise", ["'gaussian_noise'", "1..5", "jpeg_compression"]),
    ("gaussian_noise:x", ["'gaussian_noise:x'", "1..5", "jpeg_compression"]),
    ("gaussian_noise:3:1", ["'gaussian_noise:3:1'"]),
    (":3", ["':3'"]),
])
def test_bad_specs_are_named(spec, expected):
    with pytest.raises(ConfigError) as err:
        parse_corruption(spec)
    assert all(text in str(err.value) for text in expected), str(err.value)
    with pytest.raises(ConfigError, match=re.escape(f"cifar10~{spec}")):
        split_corrupted_name(f"cifar10~{spec}")


def test_bad_corrupt_arguments():
    with pytest.raises(ConfigError, match="'frost'.*valid: .*gaussian_noise"):
        corrupt(scene(8, 8), "frost", 1, key="k")
    with pytest.raises(ConfigError, match="1..5"):
        corrupt(scene(8, 8), "contrast", 7, key="k")


# ----------------------------------------------------------------------------------------- datasets
@pytest.fixture(scope="module")
def starter_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def test_corrupted_starter_dataset(starter_root):
    clean = load_dataset("starter_digits", starter_root)
    shifted = load_dataset("starter_digits~gaussian_noise:3", starter_root)
    assert shifted.name == "starter_digits~gaussian_noise:3"
    assert shifted.classnames == clean.classnames and shifted.templates == clean.templates
    for part in ("train", "val", "test"):
        ours, theirs = getattr(shifted, part), getattr(clean, part)
        assert [(s.path, s.label) for s in ours] == [(s.path, s.label) for s in theirs]
        assert all(s.corruption == "gaussian_noise:3" for s in ours)
        assert all(s.corruption is None for s in theirs)
    image, label = ImageDataset(shifted.test[:1])[0]
    clean_image, clean_label = ImageDataset(clean.test[:1])[0]
    assert label == clean_label and image.size == clean_image.size
    assert np.array_equal(np.asarray(clean_image), np.asarray(load_rgb(clean.test[0].path)))
    assert damage(clean_image, image) > 0
    assert np.array_equal(np.asarray(image), np.asarray(load_sample(shifted.test[0])))


def test_bad_corruption_in_dataset_name(starter_root):
    with pytest.raises(ConfigError, match="starter_digits~blur:3"):
        load_dataset("starter_digits~blur:3", starter_root)


def test_corruption_with_a_domain(shared_data):
    clean = load_dataset("pacs@sketch", shared_data)
    shifted = load_dataset("pacs@sketch~contrast:2", shared_data)
    assert shifted.name == "pacs@sketch~contrast:2" and shifted.classnames == clean.classnames
    assert [(s.path, s.label, s.domain) for s in shifted.test] == [(s.path, s.label, s.domain) for s in clean.test]
    assert {s.domain for s in shifted.test} == {"sketch"}
    assert {s.corruption for s in shifted.train + shifted.val + shifted.test} == {"contrast:2"}
    image, _ = ImageDataset(shifted.test[:1])[0]
    assert damage(load_rgb(clean.test[0].path), image) > 0

"""The starter world: small images a fresh machine can make without a network.

Three families of 32x32 RGB images, all deterministic given a seed:

* ``digits8``: scikit-learn's 8x8 handwritten digits, upscaled (the pretraining domain);
* ``rendered_digits``: digits typed in Pillow's built-in font at random size, angle, position,
  stroke and blur (never seen in pretraining: the shifted domain);
* ``shapes``: coloured shapes, 6 colours x 4 shapes = 24 classes, of which
  ``HELD_OUT_SHAPES`` are never captioned in pretraining (unseen classes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

IMAGE_SIZE = 32
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (150, 50, 190),
    "orange": (245, 140, 30),
}
SHAPES = ["circle", "square", "triangle", "star"]
SHAPE_CLASSES = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
HELD_OUT_SHAPES = {"red star", "green triangle", "blue square", "yellow circle", "purple triangle", "orange star"}


@dataclass(frozen=True)
class SyntheticImage:
    image: Image.Image
    classname: str


def _rng(seed: int, family: str) -> np.random.Generator:
    return np.random.default_rng([seed, sum(ord(c) * 31**i for i, c in enumerate(family)) % 2**32])


def load_digits8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images ``[N, 8, 8]`` in 0..16 and labels ``[N]``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images, data.target


def digit8_image(pixels: np.ndarray) -> Image.Image:
    """An 8x8 digit (values 0..16) as a 32x32 RGB image, white on black."""
    gray = Image.fromarray((pixels * (255.0 / 16.0)).astype(np.uint8), mode="L")
    return gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR).convert("RGB")


def digits8(indices: np.ndarray | None = None) -> Iterator[SyntheticImage]:
    """scikit-learn digits at ``indices`` (all when None) as starter images."""
    images, labels = load_digits8()
    for i in range(len(images)) if indices is None else indices:
        yield SyntheticImage(digit8_image(images[i]), DIGIT_NAMES[labels[i]])


def rendered_digit(digit: int, rng: np.random.Generator) -> Image.Image:
    """A digit typed in Pillow's font: light strokes on a dark ground, random size, angle,
    position, stroke width and blur (a font glyph, not handwriting: the shifted domain)."""
    scale = 4
    canvas = IMAGE_SIZE * scale
    glyph = Image.new("L", (canvas, canvas), 0)
    font = ImageFont.load_default(size=int(rng.integers(18, 28)) * scale)
    draw = ImageDraw.Draw(glyph)
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font)
    x = (canvas - (right - left)) / 2 - left + rng.uniform(-2, 2) * scale
    y = (canvas - (bottom - top)) / 2 - top + rng.uniform(-2, 2) * scale
    draw.text((x, y), str(digit), fill=255, font=font, stroke_width=int(rng.integers(1, 3)) * scale)
    glyph = glyph.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
    glyph = glyph.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS).filter(ImageFilter.GaussianBlur(float(rng.uniform(0.6, 1.2))))
    ground, ink = int(rng.integers(0, 60)), int(rng.integers(180, 256))
    pixels = ground + (ink - ground) * (np.asarray(glyph, dtype=np.float32) / 255.0)
    return Image.fromarray(pixels.astype(np.uint8), mode="L").convert("RGB")


def rendered_digits(count_per_class: int, seed: int) -> Iterator[SyntheticImage]:
    """``count_per_class`` rendered images of each digit, deterministic in ``seed``."""
    rng = _rng(seed, "rendered_digits")
    for _ in range(count_per_class):
        for digit, name in enumerate(DIGIT_NAMES):
            yield SyntheticImage(rendered_digit(digit, rng), name)


def _star(cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        r = radius if k % 2 == 0 else radius * 0.45
        a = angle + k * math.pi / 5
        points.append((cx + r * math.sin(a), cy - r * math.cos(a)))
    return points


def shape_image(colour: str, shape: str, rng: np.random.Generator) -> Image.Image:
    """One coloured shape on a noisy grey background."""
    scale = 4
    canvas = IMAGE_SIZE * scale
    grey = int(rng.integers(70, 190))
    noise = rng.normal(0, 10, size=(canvas, canvas, 1)).repeat(3, axis=2)
    image = Image.fromarray(np.clip(grey + noise, 0, 255).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    fill = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in COLOURS[colour])
    radius = rng.uniform(6, 12) * scale
    cx, cy = (rng.uniform(radius, canvas - radius) for _ in range(2))
    angle = rng.uniform(-0.3, 0.3)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    elif shape == "square":
        half = radius * 0.85
        corners = [(-half, -half), (half, -half), (half, half), (-half, half)]
        draw.polygon([(cx + x * math.cos(angle) - y * math.sin(angle), cy + x * math.sin(angle) + y * math.cos(angle))
                      for x, y in corners], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx + radius * math.sin(angle + k * 2 * math.pi / 3), cy - radius * math.cos(angle + k * 2 * math.pi / 3))
                      for k in range(3)], fill=fill)
    else:
        draw.polygon(_star(cx, cy, radius, angle), fill=fill)
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)


def shapes(count_per_class: int, seed: int, classes: list[str] = SHAPE_CLASSES) -> Iterator[SyntheticImage]:
    """``count_per_class`` images of each colour-shape class, deterministic in ``seed``."""
    rng = _rng(seed, "shapes")
    for _ in range(count_per_class):
        for name in classes:
            colour, shape = name.split(" ")
            yield SyntheticImage(shape_image(colour, shape, rng), name)

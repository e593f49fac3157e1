"""Common-corruption shift: the corruptions of Hendrycks & Dietterich, *Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations*, ICLR 2019 (ImageNet-C, CIFAR-10-C), at severity 1..5.

Provided: 14 of the 15 benchmark corruptions, ``gaussian_noise``, ``shot_noise``, ``impulse_noise``,
``defocus_blur``, ``glass_blur``, ``motion_blur``, ``zoom_blur``, ``snow``, ``fog``, ``brightness``,
``contrast``, ``elastic_transform``, ``pixelate``, ``jpeg_compression``, and three of the paper's four
extra ones, ``speckle_noise``, ``gaussian_blur``, ``saturate``. Not provided: ``frost``, which blends in
the paper's frost photographs (not shipped with vlpt), and the optional extra ``spatter``.

The per-severity constants are ImageNet-C's (published for 224-px images). They are applied in pixels
at any image size, so blurs are relatively stronger on small images (CIFAR-10-C used milder constants
of its own); only ``elastic_transform``, whose constants are fractions of the image side, and ``fog``,
whose fractal spans the image, scale with it. Written from the paper's definitions with numpy, scipy
and PIL; where ImageNet-C's reference code relies on a library, the behaviour reproduced is that
library's (ImageMagick's motion-blur kernel for ``motion_blur`` and ``snow``, scikit-image's HSV).
Differences from that code: ``glass_blur`` swaps each pixel with a random neighbour in interleaved
groups of non-overlapping neighbourhoods (one numpy step per group, not a pixel loop), ``saturate``
leaves grey pixels grey, and blurs mirror the image at its borders.

``corrupt`` is deterministic: its randomness is seeded by sha256 of (key, name, severity), the key being
the sample's ``seed_key`` (its path within the data root), so an image always gets the same noise, in
any process and wherever the data lies.
"""
from __future__ import annotations

import functools
import hashlib
import io
import re
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from vlpt.errors import ConfigError

SEVERITIES = range(1, 6)
Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
# name -> fn(x, severity, rng): x is float HxWx3 in [0, 1]; the result is clipped by ``corrupt``
CORRUPTIONS: dict[str, Corruption] = {}


def _corruption(*levels):
    """Register ``fn(x, level, rng)`` under its name, called with the level of the given severity."""
    def register(fn):
        @functools.wraps(fn)
        def apply(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
            return fn(x, levels[severity - 1], rng)
        CORRUPTIONS[fn.__name__] = apply
        return fn
    return register


# ------------------------------------------------------------------------------------------- helpers
def _to_pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8))


def _to_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(x, (sigma, sigma, 0), mode="nearest")


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Each channel convolved with an odd-sized 2-D kernel, borders mirrored; same size out."""
    ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(x, ((ph, ph), (pw, pw), (0, 0)), mode="reflect")
    shape = padded.shape[:2]
    spectrum = np.fft.rfft2(padded, axes=(0, 1)) * np.fft.rfft2(kernel, shape)[:, :, None]
    return np.fft.irfft2(spectrum, shape, axes=(0, 1))[2 * ph:, 2 * pw:]  # the part without wrap-around


def _zoom_centre(x: np.ndarray, zoom: float) -> np.ndarray:
    """The image's centre magnified by ``zoom`` (bilinear), same size."""
    centre = (np.array(x.shape[:2]) - 1) / 2
    offset = (*(centre * (1 - 1 / zoom)), 0)
    return ndimage.affine_transform(x, (1 / zoom, 1 / zoom, 1), offset=offset, order=1, mode="nearest")


def _plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """A square diamond-square (plasma) height map in [0, 1], side the power of two >= ``size``.

    The map wraps around; each level's random offsets are ``decay**2`` times smaller than the
    previous level's (ImageNet-C's fog, whose constants are tuned to this).
    """
    n = 1 << max(1, int(np.ceil(np.log2(size))))
    height = np.zeros((n, n))
    step, amplitude = n, 1e4

    def mean_plus_noise(total):
        return total / 4 + rng.uniform(-amplitude, amplitude, total.shape)

    while step >= 2:
        half = step // 2
        corners = height[::step, ::step]
        height[half::step, half::step] = mean_plus_noise(
            corners + np.roll(corners, -1, 0) + np.roll(corners, -1, 1) + np.roll(corners, (-1, -1), (0, 1)))
        centres = height[half::step, half::step]
        height[::step, half::step] = mean_plus_noise(
            corners + np.roll(corners, -1, 1) + centres + np.roll(centres, 1, 0))
        height[half::step, ::step] = mean_plus_noise(
            corners + np.roll(corners, -1, 0) + centres + np.roll(centres, 1, 1))
        step, amplitude = half, amplitude / decay**2
    height -= height.min()
    return height / height.max()


# --------------------------------------------------------------------------------------------- noise
@_corruption(0.08, 0.12, 0.18, 0.26, 0.38)
def gaussian_noise(x, std, rng):
    """Additive Gaussian noise of standard deviation ``std``."""
    return x + rng.normal(0, std, x.shape)


@_corruption(60, 25, 12, 5, 3)
def shot_noise(x, photons, rng):
    """Poisson (photon) noise with ``photons`` expected counts at full intensity."""
    return rng.poisson(x * photons) / photons


@_corruption(0.03, 0.06, 0.09, 0.17, 0.27)
def impulse_noise(x, amount, rng):
    """Salt-and-pepper noise: a fraction ``amount`` of the channel values set to 0 or 1."""
    return np.where(rng.random(x.shape) < amount, rng.random(x.shape) < 0.5, x)


@_corruption(0.15, 0.2, 0.35, 0.45, 0.6)
def speckle_noise(x, std, rng):
    """Multiplicative Gaussian noise of standard deviation ``std``."""
    return x * (1 + rng.normal(0, std, x.shape))


# ---------------------------------------------------------------------------------------------- blur
@_corruption(1, 2, 3, 4, 6)
def gaussian_blur(x, sigma, rng):
    """Gaussian blur of standard deviation ``sigma`` pixels."""
    return _gaussian(x, sigma)


@_corruption((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))
def defocus_blur(x, level, rng):
    """Convolution with a disk of ``radius`` pixels, anti-aliased by a Gaussian of ``alias_sigma``."""
    radius, alias_sigma = level
    r = np.arange(-radius - 2, radius + 3)
    disk = (r[:, None] ** 2 + r[None, :] ** 2 <= radius**2).astype(float)
    disk = ndimage.gaussian_filter(disk, alias_sigma, mode="constant")
    return _convolve(x, disk / disk.sum())


@_corruption((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))
def glass_blur(x, level, rng):
    """Gaussian blur, ``iterations`` passes swapping every pixel with a random one at most ``delta``
    away in each direction, and Gaussian blur again.

    Pixels ``2 * delta + 1`` apart in both directions have disjoint neighbourhoods, so each pass runs
    over the ``(2 * delta + 1)**2`` interleaved grids of such pixels, one vectorised swap per grid.
    """
    sigma, delta, iterations = level
    x = _gaussian(x, sigma)
    h, w = x.shape[:2]
    stride = 2 * delta + 1
    for _ in range(iterations):
        for top in range(delta, min(delta + stride, h - delta)):
            for left in range(delta, min(delta + stride, w - delta)):
                rows, cols = np.meshgrid(np.arange(top, h - delta, stride), np.arange(left, w - delta, stride),
                                         indexing="ij")
                rows2 = rows + rng.integers(-delta, delta + 1, rows.shape)
                cols2 = cols + rng.integers(-delta, delta + 1, cols.shape)
                x[rows, cols], x[rows2, cols2] = x[rows2, cols2], x[rows, cols]  # fancy indexing copies
    return _gaussian(x, sigma)


def _motion_kernel(radius: int, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's motion-blur kernel: ``2 * radius + 1`` taps one pixel apart along a line at
    ``angle`` degrees, weighted by a one-sided Gaussian of ``sigma``."""
    steps = np.arange(2 * radius + 1)
    kernel = np.zeros((4 * radius + 1, 4 * radius + 1))
    taps = (2 * radius + np.rint(steps * np.sin(np.deg2rad(angle))).astype(int),
            2 * radius + np.rint(steps * np.cos(np.deg2rad(angle))).astype(int))
    np.add.at(kernel, taps, np.exp(-steps**2 / (2 * sigma**2)))
    return kernel / kernel.sum()


@_corruption((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
def motion_blur(x, level, rng):
    """ImageMagick's motion blur of ``radius`` and ``sigma`` at a random angle in [-45, 45] degrees."""
    radius, sigma = level
    return _convolve(x, _motion_kernel(radius, sigma, rng.uniform(-45, 45)))


@_corruption(np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
             np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03))
def zoom_blur(x, zooms, rng):
    """The mean of the image and its centre magnified by each factor in ``zooms``."""
    return (x + sum(_zoom_centre(x, zoom) for zoom in zooms)) / (len(zooms) + 1)


# ------------------------------------------------------------------------------------------- weather
@_corruption((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4))
def fog(x, level, rng):
    """A plasma fractal of weight ``thickness`` added, the result rescaled to the image's maximum."""
    thickness, decay = level
    h, w = x.shape[:2]
    top = x.max()
    x = x + thickness * _plasma_fractal(max(h, w), decay, rng)[:h, :w, None]
    return x * top / (top + thickness)


@_corruption((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
             (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))
def snow(x, level, rng):
    """Flakes (Gaussian noise of ``mean`` and ``std`` magnified by ``zoom``, values below ``threshold``
    dropped, motion-blurred with ``radius`` and ``sigma`` at a random angle in [-135, -45] degrees) added
    twice, the second copy turned half a turn, to the image whitened towards 1.5 * grey + 0.5 with
    weight 1 - ``keep``."""
    mean, std, zoom, threshold, radius, sigma, keep = level
    flakes = _zoom_centre(rng.normal(mean, std, (*x.shape[:2], 1)), zoom)
    flakes = np.clip(np.where(flakes < threshold, 0, flakes), 0, 1)
    flakes = _convolve(flakes, _motion_kernel(radius, sigma, rng.uniform(-135, -45)))
    grey = x @ np.array([0.299, 0.587, 0.114])
    x = keep * x + (1 - keep) * np.maximum(x, grey[..., None] * 1.5 + 0.5)
    return x + flakes + flakes[::-1, ::-1]


@_corruption(0.1, 0.2, 0.3, 0.4, 0.5)
def brightness(x, shift, rng):
    """HSV value (the largest channel) raised by ``shift``, hue and saturation kept."""
    value = x.max(axis=2, keepdims=True)
    raised = np.minimum(value + shift, 1)
    return np.where(value > 0, x * raised / np.maximum(value, 1e-12), raised)


# ------------------------------------------------------------------------------------------- digital
@_corruption(0.4, 0.3, 0.2, 0.1, 0.05)
def contrast(x, factor, rng):
    """Each channel's deviation from its mean scaled by ``factor``."""
    mean = x.mean(axis=(0, 1))
    return (x - mean) * factor + mean


@_corruption((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))
def saturate(x, level, rng):
    """HSV saturation times ``scale`` plus ``shift``, hue and value kept (grey pixels stay grey)."""
    scale, shift = level
    value = x.max(axis=2, keepdims=True)
    saturation = 1 - x.min(axis=2, keepdims=True) / np.maximum(value, 1e-12)
    new = np.clip(saturation * scale + shift, 0, 1)
    ratio = np.where(saturation > 0, new / np.maximum(saturation, 1e-12), 1)
    return value - (value - x) * ratio


# (alpha, sigma, affine shift) in units of 244 px at 224 px (the published constants), scaled with the image
@_corruption((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02))
def elastic_transform(x, level, rng):
    """A random affine warp (three points moved by up to ``shift``) composed with a smooth random
    displacement field (uniform noise, Gaussian-filtered with ``sigma``, times ``alpha``)."""
    h, w = x.shape[:2]
    alpha, sigma, shift = np.array(level) * 244 * min(h, w) / 224
    size = max(1, min(h, w) // 3)
    points = np.array([h // 2, w // 2]) + np.array([[size, size], [size, -size], [-size, -size]])
    moved = points + rng.uniform(-shift, shift, points.shape)
    affine = np.linalg.solve(np.c_[moved, np.ones(3)], points)  # output -> input coordinates, 3x2
    field = [ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma, mode="reflect", truncate=3) * alpha
             for _ in range(2)]
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1) + np.stack(field, -1)
    coords = (grid @ affine[:2] + affine[2]).transpose(2, 0, 1)
    return np.stack([ndimage.map_coordinates(x[..., c], coords, order=1, mode="reflect") for c in range(3)], -1)


@_corruption(0.6, 0.5, 0.4, 0.3, 0.25)
def pixelate(x, factor, rng):
    """Box-downsampled by ``factor`` and box-upsampled back."""
    image = _to_pil(x)
    w, h = image.size
    small = image.resize((max(1, int(w * factor)), max(1, int(h * factor))), Image.Resampling.BOX)
    return _to_array(small.resize((w, h), Image.Resampling.BOX))


@_corruption(25, 18, 15, 10, 7)
def jpeg_compression(x, quality, rng):
    """Saved and reloaded as JPEG at ``quality``."""
    buffer = io.BytesIO()
    _to_pil(x).save(buffer, "JPEG", quality=quality)
    with Image.open(buffer) as image:
        return _to_array(image)


# ------------------------------------------------------------------------------------------- public
def _check(name: str, severity: int) -> None:
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ConfigError(f"corruption severity {severity!r} of {name!r} is outside 1..5")


def parse_corruption(spec: str) -> tuple[str, int]:
    """``"gaussian_noise:3"`` -> ``("gaussian_noise", 3)``; ConfigError for a bad name, severity or form."""
    match = re.fullmatch(r"(\w+):([0-9]+)", spec)
    if match is None:
        raise ConfigError(f"corruption {spec!r} must be NAME:SEVERITY with SEVERITY in 1..5, "
                          f"e.g. 'gaussian_noise:3'; names: {', '.join(CORRUPTIONS)}")
    name, severity = match[1], int(match[2])
    _check(name, severity)
    return name, severity


def catalog_name(name: str | None) -> str | None:
    """The catalog dataset a name refers to: ``"pacs@sketch~contrast:5"`` -> ``"pacs"`` (None stays None)."""
    return split_corrupted_name(name)[0].partition("@")[0] if name else None


def split_corrupted_name(name: str) -> tuple[str, str | None]:
    """``"pacs@sketch~contrast:5"`` -> ``("pacs@sketch", "contrast:5")``; ``"cifar10"`` -> ``("cifar10", None)``."""
    base, tilde, spec = name.partition("~")
    if not tilde:
        return name, None
    try:
        corruption, severity = parse_corruption(spec)
    except ConfigError as exc:
        raise ConfigError(f"dataset {name!r} (NAME[@DOMAIN]~CORRUPTION:SEVERITY): {exc}") from None
    return base, f"{corruption}:{severity}"


def corrupt(image: Image.Image, name: str, severity: int, key: str) -> Image.Image:
    """``image`` with corruption ``name`` at ``severity`` (1..5), as an RGB image of the same size;
    its randomness is seeded by sha256 of (``key``, ``name``, ``severity``)."""
    _check(name, severity)
    digest = hashlib.sha256(f"{key}\0{name}\0{severity}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:16], "big"))
    return _to_pil(CORRUPTIONS[name](_to_array(image), severity, rng))

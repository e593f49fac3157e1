"""The starter segmentation dataset ``starter_seg_shapes``: coloured shapes whose masks come from drawing them.

32x32 RGB images: a noisy grey background (as ``vlpt.starter.synthetic.shape_image``) with 1 to 3
shapes (circle, square, triangle, star) in the starter colours, radius 7..13 px, at a random
position and angle; a later shape covers earlier ones, in the image and the mask alike. Image and
mask are drawn at 4x with the same geometry, then the image is downsampled with LANCZOS and the mask
with NEAREST, so they stay aligned. Labels are colours: 0 background, then the six starter colours
(red, green, blue, yellow, purple, orange), whatever the shape; a 32-px image leaves the starter
backbone's 8x8 patch grid too coarse to tell its shapes apart pixel by pixel, but not its colours.

Generated on first use into ``<folder>/images/<id>.png``, ``<folder>/masks/<id>.png`` and
``<folder>/split.json``, in a temporary folder renamed when complete (an interrupted generation
leaves nothing half-done). Fixed seeds: every machine writes the same files.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vlpt.data.fewshot import split_rng
from vlpt.starter import synthetic

CLASSES = ["background", *synthetic.COLOURS]
COUNTS = {"train": 240, "val": 40, "test": 200}
SEED = 31
SCALE = 4  # drawn at 4x, then downsampled
# vertex radii, relative to the shape's radius, going round the centre at equal angles
OUTLINES = {"square": [1.0] * 4, "triangle": [1.0] * 3, "star": [1.0, 0.45] * 5}


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, radius: float, angle: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
        return
    radii = OUTLINES[shape]
    steps = [angle + 2 * math.pi * k / len(radii) for k in range(len(radii))]
    draw.polygon([(cx + radius * r * math.sin(a), cy - radius * r * math.cos(a)) for r, a in zip(radii, steps)],
                 fill=fill)


def shapes_scene(rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """One 32x32 RGB image and its label map (mode L, values 0..6)."""
    canvas = synthetic.IMAGE_SIZE * SCALE
    noise = rng.normal(0, 10, size=(canvas, canvas, 1)).repeat(3, axis=2)
    image = Image.fromarray(np.clip(int(rng.integers(70, 190)) + noise, 0, 255).astype(np.uint8), mode="RGB")
    mask = Image.new("L", (canvas, canvas), 0)
    paint, label = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    colours = list(synthetic.COLOURS)
    for _ in range(int(rng.integers(1, 4))):
        shape = synthetic.SHAPES[int(rng.integers(len(synthetic.SHAPES)))]
        colour = colours[int(rng.integers(len(colours)))]
        fill = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in synthetic.COLOURS[colour])
        radius = rng.uniform(7, 13) * SCALE
        cx, cy = rng.uniform(radius, canvas - radius, size=2)
        angle = rng.uniform(0, 2 * math.pi)
        _draw(paint, shape, cx, cy, radius, angle, fill)
        _draw(label, shape, cx, cy, radius, angle, CLASSES.index(colour))
    size = (synthetic.IMAGE_SIZE, synthetic.IMAGE_SIZE)
    return image.resize(size, Image.LANCZOS), mask.resize(size, Image.NEAREST)


def _write(folder: Path) -> None:
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    ids = {}
    for split, count in COUNTS.items():
        rng = split_rng(SEED, f"starter_seg_shapes:{split}")
        ids[split] = [f"{split}_{i:04d}" for i in range(count)]
        for name in ids[split]:
            image, mask = shapes_scene(rng)
            image.save(folder / "images" / f"{name}.png")
            mask.save(folder / "masks" / f"{name}.png")
    (folder / "split.json").write_text(json.dumps(ids, indent=0) + "\n")


def generate_seg_shapes(folder: Path) -> Path:
    """Write the dataset into ``folder`` unless it is there already; returns ``folder``."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        _write(tmp)
        tmp.rename(folder)
    except OSError:
        if not folder.is_dir():  # else another process finished first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder

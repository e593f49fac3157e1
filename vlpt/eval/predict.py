"""``vlpt predict CHECKPOINT IMAGES...``: a trained prompt's classes for images of one's own.

A method checkpoint (``OUTPUT/checkpoints/RUN_ID.pt``) names its method, backbone, classes, templates and
config (segmentation: its VLSM's settings), so the trained method is rebuilt from it alone: the backbone is built
(downloaded where it must be), the method made for the checkpoint's classes and its tensors loaded.
Classification prints each image's class; segmentation writes each image's mask as a PNG.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable

import torch
from PIL import Image

from vlpt.backbone import ClipBackbone
from vlpt.data.image_dataset import load_rgb
from vlpt.data.samples import IMAGE_EXTENSIONS
from vlpt.data.transforms import eval_transform
from vlpt.errors import CheckpointError, ConfigError
from vlpt.registry import method_class

#: the template a checkpoint written before checkpoints kept their templates is rebuilt with
FALLBACK_TEMPLATES = ["a photo of a {}."]


def load_trained_method(path: str | Path, device: str = "cpu"):
    """The method of the checkpoint at ``path``, trained tensors loaded, in eval mode on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (a run's is OUTPUT/checkpoints/RUN_ID.pt)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or not {"method", "backbone", "classnames", "config"} <= set(payload):
        raise CheckpointError(f"{path} is not a vlpt method checkpoint (it needs method, backbone, classnames and "
                              f"config)")
    cls = method_class(payload["method"])
    if cls.adapts_at_test_time:
        raise ConfigError(f"{path} holds test-time method {cls.name}, which adapts to each test image: vlpt predict "
                          f"would score zero-shot; evaluate it with a test_time suite")
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    values = {k: v for k, v in payload["config"].items() if k in fields}
    config = cls.Config(**{**values, "init_from": None, "regulator_from": None})
    model = segmentation_model(payload, path) if cls.task == "segmentation" else \
        ClipBackbone.from_name(payload["backbone"])
    method = cls(model.to(device), payload["classnames"], payload.get("templates") or FALLBACK_TEMPLATES, config)
    method.load_checkpoint(path)
    return method.to(device).eval()


def segmentation_model(payload: dict, path: Path):
    """The VLSM a segmentation checkpoint was tuned for, from the settings it keeps."""
    from vlpt.seg.vlsm import VLSMSpec, build_vlsm

    extra = payload.get("extra", {})
    if "vlsm" not in extra:
        raise CheckpointError(f"{path} was written before segmentation checkpoints kept their VLSM's settings; "
                              f"train the run again to predict with it")
    spec = VLSMSpec(**extra["vlsm"])
    return build_vlsm(spec, ClipBackbone.from_name(extra["clip"]) if spec.kind == "clip_decoder" else None)


def image_paths(inputs: Iterable[str], leave_out: Path | None = None) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders searched recursively (sorted), without those
    under ``leave_out`` (the folder masks are written to)."""
    found = []
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            found += sorted(Path(folder) / name for folder, _, names in os.walk(path) for name in names
                            if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith("."))
        elif path.is_file():
            found.append(path)
        else:
            raise ConfigError(f"{path} is neither an image file nor a folder")
    if leave_out is not None:
        found = [path for path in found if not path.resolve().is_relative_to(leave_out.resolve())]
    if not found:
        raise ConfigError(f"no images found in {', '.join(inputs)} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return found


@torch.no_grad()
def predict_masks(method, paths: list[Path], folder: Path, batch_size: int = 8) -> list[tuple[Path, Path]]:
    """Each image's predicted mask, at the image's size, as ``folder/<image name>.png``: binary 0/255,
    multi-class the class index per pixel; returns (image, mask file) pairs."""
    import numpy as np
    import torchvision.transforms.functional as TF

    stems = [path.stem for path in paths]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        raise ConfigError(f"images {', '.join(repeated[:3])} appear more than once by name; their masks would "
                          f"overwrite each other in {folder}")
    inputs = {path.resolve() for path in paths}
    clashing = [path for path in paths if (folder / f"{path.stem}.png").resolve() in inputs]
    if clashing:
        raise ConfigError(f"the mask of {clashing[0]} would overwrite an input image: choose an --output folder "
                          f"that holds no input images")
    vlsm, size = method.backbone, method.backbone.image_size
    folder.mkdir(parents=True, exist_ok=True)
    device = next(method.parameters()).device
    written = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images, sizes = [], []
        for path in chunk:
            rgb = load_rgb(str(path))
            sizes.append(rgb.size)
            images.append(TF.normalize(TF.to_tensor(rgb.resize((size, size), Image.BICUBIC)), vlsm.mean, vlsm.std))
        labels = method.predict(torch.stack(images).to(device)).cpu().numpy().astype(np.uint8)
        for path, label_map, original in zip(chunk, labels, sizes):
            values = label_map * 255 if method.binary else label_map
            mask = Image.fromarray(values, mode="L").resize(original, Image.NEAREST)
            target = folder / f"{path.stem}.png"
            mask.save(target)
            written.append((path, target))
    return written


@torch.no_grad()
def predict(method, paths: list[Path], batch_size: int = 32) -> list[tuple[Path, str, float]]:
    """(image, predicted class, its probability) for every image."""
    cfg = method.backbone.preprocess_cfg
    transform = eval_transform(method.backbone.image_size, cfg["mean"], cfg["std"])
    device = next(method.backbone.parameters()).device
    results = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images = []
        images += [transform(load_rgb(str(path))) for path in chunk]
        probabilities = method.logits(torch.stack(images).to(device)).float().softmax(dim=-1)
        best, labels = probabilities.max(dim=-1)
        results += [(path, method.classnames[label], float(p)) for path, label, p in
                    zip(chunk, labels.tolist(), best.tolist())]
    return results

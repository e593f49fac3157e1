"""Image-caption pairs for meta-prompt learning (GRAM's meta-training data).

GRAM (Li et al., "Gradient-Regulated Meta-Prompt Learning for Generalizable Vision-Language
Models", ICCV 2023) meta-learns a prompt initialization from *unlabeled image-text pairs* of the
kind CLIP is pre-trained on, grouped into domains so that a support batch and a query batch can be
drawn from different domains. This module turns three kinds of sources into ``CaptionPair`` lists,
one list per domain:

* ``caption_folder(dir, domain)``: image files with a same-stem ``.txt`` caption beside each
  (``a/b/0001.jpg`` + ``a/b/0001.txt``), searched recursively;
* ``caption_shards(paths, domain)``: webdataset-style tar shards (members ``KEY.jpg|png|...`` and
  ``KEY.txt``, the key being the member path up to the first dot of its file name), read with
  Python's ``tarfile`` and extracted once into a cache folder, each image decoded there so that a
  broken shard fails at once, naming the shard and the member;
* ``starter_caption_pairs(root)``: captioned PNG files generated from the project's starter world,
  in two domains, ``digits8`` (scikit-learn's 8x8 digits, the pretraining fifths only) and
  ``shapes`` (the colour-shape classes captioned in pretraining only), with the pretraining caption
  templates, so meta-learning sees nothing that the starter suite evaluates on.

``CaptionDataset`` / ``caption_loader`` give ``(image tensor, caption)`` batches.
"""
from __future__ import annotations

import glob as globlib
import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vlpt.data.image_dataset import load_rgb
from vlpt.data.samples import IMAGE_EXTENSIONS
from vlpt.errors import ConfigError, DatasetError
from vlpt.results.store import atomic_write_text

CAPTION_SUFFIX = ".txt"
#: bump when the layout written by ``starter_caption_pairs`` or the shard cache changes
CACHE_VERSION = 1


@dataclass(frozen=True)
class CaptionPair:
    """One image file and its caption, tagged with the domain it belongs to."""

    path: str
    caption: str
    domain: str


def _read_caption(path: Path, where: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{where}: caption file {path} is not UTF-8 text: {exc}") from exc
    caption = " ".join(text.split())
    if not caption:
        raise DatasetError(f"{where}: caption file {path} is empty")
    return caption


def caption_folder(directory: str | Path, domain: str) -> list[CaptionPair]:
    """Every image under ``directory`` (recursively, sorted) with the caption in its same-stem ``.txt``.

    An image without a caption file, an empty or non-UTF-8 caption, a missing folder or a folder
    without images raises DatasetError naming the file. Images are decoded when they are loaded
    (``load_rgb`` names an undecodable file then).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"caption folder {directory} (domain {domain!r}) does not exist")
    images = sorted(
        p for p in directory.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )
    if not images:
        raise DatasetError(
            f"caption folder {directory} (domain {domain!r}) holds no images "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    pairs = []
    for image in images:
        caption_file = image.with_suffix(CAPTION_SUFFIX)
        if not caption_file.is_file():
            raise DatasetError(
                f"caption folder {directory}: image {image} has no caption file {caption_file.name} beside it"
            )
        pairs.append(CaptionPair(str(image.resolve()), _read_caption(caption_file, f"caption folder {directory}"),
                                 domain))
    return pairs


# ---- webdataset-style tar shards ------------------------------------------------------------
def _split_key(member_name: str) -> tuple[str, str]:
    """webdataset's rule: the key is the path up to the first dot of the file name, the rest the extension."""
    directory, _, base = member_name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{directory}/{stem}" if directory else stem
    return key, (ext.lower() if dot else "")


def _shard_digest(shard: Path) -> str:
    stat = shard.stat()
    ident = f"{shard.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|v{CACHE_VERSION}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """Where shard members are extracted when no cache folder is given."""
    return Path(tempfile.gettempdir()) / "vlpt-caption-cache"


def _extract_shard(shard: Path, target: Path) -> list[dict]:
    """Write the shard's images under ``target`` and return its manifest; bad members raise DatasetError."""
    images: dict[str, tarfile.TarInfo] = {}
    captions: dict[str, tarfile.TarInfo] = {}
    image_exts = {e.lstrip(".") for e in IMAGE_EXTENSIONS}
    try:
        archive = tarfile.open(shard, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise DatasetError(f"tar shard {shard} cannot be opened: {exc}") from exc
    with archive:
        try:
            members = [m for m in archive.getmembers() if m.isfile()]
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DatasetError(f"tar shard {shard} is truncated or corrupt: {exc}") from exc
        order: list[str] = []
        for member in members:
            key, ext = _split_key(member.name)
            if os.path.basename(member.name).startswith("."):
                continue
            if ext in image_exts:
                if key in images:
                    raise DatasetError(f"tar shard {shard}: key {key!r} has two images "
                                       f"({images[key].name}, {member.name})")
                images[key] = member
                order.append(key)
            elif ext == "txt":
                captions[key] = member
        for key, member in captions.items():
            if key not in images:
                raise DatasetError(f"tar shard {shard}: caption member {member.name} has no image with key {key!r}")
        if not images:
            raise DatasetError(f"tar shard {shard} holds no image members ({', '.join(sorted(image_exts))})")
        target.mkdir(parents=True, exist_ok=True)
        manifest = []
        for index, key in enumerate(order):
            member = images[key]
            if key not in captions:
                raise DatasetError(f"tar shard {shard}: image member {member.name} has no caption member {key}.txt")
            raw_caption = archive.extractfile(captions[key]).read()
            try:
                caption = " ".join(raw_caption.decode("utf-8").split())
            except UnicodeDecodeError as exc:
                raise DatasetError(f"tar shard {shard}: caption member {captions[key].name} is not UTF-8 text") from exc
            if not caption:
                raise DatasetError(f"tar shard {shard}: caption member {captions[key].name} is empty")
            data = archive.extractfile(member).read()
            try:
                with Image.open(io.BytesIO(data)) as image:
                    image.convert("RGB")  # full decode: a broken image fails here, named by shard and member
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                raise DatasetError(f"tar shard {shard}: image member {member.name} cannot be decoded: {exc}") from exc
            # our own file names (never the member's path), so no member can write outside the cache
            name = f"{index:07d}.{_split_key(member.name)[1]}"
            (target / name).write_bytes(data)
            manifest.append({"key": key, "member": member.name, "file": name, "caption": caption})
    return manifest


def caption_shards(paths: str | Path | Sequence[str | Path], domain: str,
                   cache_dir: str | Path | None = None) -> list[CaptionPair]:
    """Pairs from webdataset-style tar shards (paths or glob patterns), extracted once into ``cache_dir``.

    Each shard is extracted into ``cache_dir/<shard-name>-<digest>/`` (the digest covers the shard's
    path, size and modification time) with a manifest written last, so a later call reuses it. An
    image without a caption, a caption without an image, an undecodable image or an unreadable
    shard raises DatasetError naming the shard and the member.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    shards: list[Path] = []
    for entry in paths:
        text = str(entry)
        if any(c in text for c in "*?["):
            matched = sorted(globlib.glob(text))
            if not matched:
                raise DatasetError(f"shard pattern {text} (domain {domain!r}) matches no file")
            shards.extend(Path(m) for m in matched)
        else:
            shards.append(Path(text))
    if not shards:
        raise DatasetError(f"no tar shards given for domain {domain!r}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    pairs: list[CaptionPair] = []
    for shard in shards:
        if not shard.is_file():
            raise DatasetError(f"tar shard {shard} (domain {domain!r}) does not exist")
        target = cache / f"{shard.name}-{_shard_digest(shard)}"
        manifest_file = target / "manifest.json"
        if manifest_file.is_file():
            manifest = json.loads(manifest_file.read_text())
        else:
            manifest = _extract_shard(shard, target)
            atomic_write_text(manifest_file, json.dumps({"shard": str(shard.resolve()), "pairs": manifest}))
            manifest = {"pairs": manifest}
        for item in manifest["pairs"]:
            pairs.append(CaptionPair(str((target / item["file"]).resolve()), item["caption"], domain))
    return pairs


def load_caption_domains(sources: Mapping[str, str | Path | Sequence[str | Path]],
                         cache_dir: str | Path | None = None) -> dict[str, list[CaptionPair]]:
    """``{domain: folder | shard path/pattern | list of shards}`` -> ``{domain: pairs}``.

    A folder is read with ``caption_folder``; ``.tar`` files and glob patterns with ``caption_shards``.
    """
    domains: dict[str, list[CaptionPair]] = {}
    for domain, source in sources.items():
        entries = [source] if isinstance(source, (str, Path)) else list(source)
        if len(entries) == 1 and Path(entries[0]).is_dir():
            domains[domain] = caption_folder(entries[0], domain)
        else:
            domains[domain] = caption_shards(entries, domain, cache_dir)
    return domains


def parse_domain_specs(specs: Iterable[str]) -> dict[str, list[str]]:
    """Command-line ``NAME=PATH[,PATH...]`` entries -> ``{NAME: [PATH, ...]}`` (repeated names add paths)."""
    domains: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, paths = spec.partition("=")
        if not sep or not name.strip() or not paths.strip():
            raise ConfigError(
                f"caption domain {spec!r}: expected NAME=PATH[,PATH...] (a folder, .tar shards or a glob)"
            )
        domains.setdefault(name.strip(), []).extend(p for p in paths.split(",") if p)
    return domains


# ---- the starter world as captioned image files ------------------------------------------------
STARTER_CAPTION_DOMAINS = ("digits8", "shapes")


def starter_caption_pairs(root: str | Path, shapes_per_class: int = 40, digits_limit: int | None = None,
                          seed: int = 0) -> dict[str, list[CaptionPair]]:
    """Captioned PNG files from the starter world under ``root``, one folder per domain.

    ``digits8``: scikit-learn's 8x8 digits that pretraining used (every fifth digit, the starter
    digits' test set, is left out), captioned with ``DIGIT_CAPTIONS``; ``digits_limit`` keeps the
    first N. ``shapes``: ``shapes_per_class`` images of each colour-shape class that pretraining
    captioned (the never-captioned ``HELD_OUT_SHAPES`` are left out, so base-to-novel evaluation
    stays novel), drawn with the pretraining seed, captioned with ``SHAPE_CAPTIONS``. Each image gets
    one template chosen by an RNG seeded with ``seed``. The files are written once; a folder whose
    ``done.json`` records the same settings is reused. Each folder is also a valid ``caption_folder``.
    """
    from vlpt.starter import pretrain, synthetic

    root = Path(root)
    builders = {
        "digits8": lambda: _starter_digits(digits_limit),
        "shapes": lambda: synthetic.shapes(
            shapes_per_class, pretrain.SHAPES_PRETRAIN_SEED,
            [c for c in synthetic.SHAPE_CLASSES if c not in synthetic.HELD_OUT_SHAPES],
        ),
    }
    templates = {"digits8": pretrain.DIGIT_CAPTIONS, "shapes": pretrain.SHAPE_CAPTIONS}
    settings = {
        "digits8": {"digits_limit": digits_limit, "seed": seed, "version": CACHE_VERSION},
        "shapes": {"shapes_per_class": shapes_per_class, "seed": seed, "version": CACHE_VERSION},
    }
    domains = {}
    for index, domain in enumerate(STARTER_CAPTION_DOMAINS):
        folder = root / domain
        done = folder / "done.json"
        if not (done.is_file() and json.loads(done.read_text()) == settings[domain]):
            _write_captioned(folder, builders[domain](), templates[domain],
                             np.random.default_rng([seed, index]))
            done.write_text(json.dumps(settings[domain]))
        domains[domain] = caption_folder(folder, domain)
    return domains


def _starter_digits(limit: int | None):
    from vlpt.starter import pretrain, synthetic

    _, labels = synthetic.load_digits8()
    indices = [i for i in range(len(labels)) if pretrain.is_pretraining_digit(i)]
    if limit is not None:
        indices = indices[:limit]
    return synthetic.digits8(np.array(indices))


def _write_captioned(folder: Path, items, templates: Sequence[str], rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("*.png"), *folder.glob("*.txt"), folder / "done.json"]:
        stale.unlink(missing_ok=True)
    for i, item in enumerate(items):
        template = templates[int(rng.integers(len(templates)))]
        item.image.save(folder / f"{i:05d}.png")
        (folder / f"{i:05d}{CAPTION_SUFFIX}").write_text(template.format(item.classname) + "\n", encoding="utf-8")


# ---- (image tensor, caption) batches --------------------------------------------------------------
class CaptionDataset(Dataset):
    """Pairs as ``(transform(image), caption)``; the PIL image itself when ``transform`` is None."""

    def __init__(self, pairs: Sequence[CaptionPair], transform: Callable | None = None):
        self.pairs = list(pairs)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        pair = self.pairs[index]
        image = load_rgb(pair.path)
        return (self.transform(image) if self.transform is not None else image), pair.caption

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, list[str]]:
        """The pairs at ``indices`` as a stacked image tensor and their captions."""
        items = [self[int(i)] for i in indices]
        return torch.stack([image for image, _ in items]), [caption for _, caption in items]


def caption_loader(pairs: Sequence[CaptionPair], transform: Callable, batch_size: int, shuffle: bool = True,
                   seed: int = 0, num_workers: int = 0, drop_last: bool = False) -> DataLoader:
    """A DataLoader of ``(images [B, 3, H, W], captions: list[str])`` batches, shuffled by a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(CaptionDataset(pairs, transform), batch_size=batch_size, shuffle=shuffle,
                      generator=generator, num_workers=num_workers, drop_last=drop_last)

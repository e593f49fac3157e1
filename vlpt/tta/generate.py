"""Generating a dataset's diffusion views into the view store, and reading them back for adaptation.

``generate_views`` is what ``vlpt tta generate`` runs: resumable (each image's views are saved
atomically, stored ones are reused), splittable over processes with ``shard`` (samples whose
index ``i`` has ``i % N == I``), and it loads the diffusion pipeline only when something must be
generated. ``read_views`` is what adaptation calls; it never generates.
"""
from __future__ import annotations

import shlex
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from vlpt.data.image_dataset import load_sample
from vlpt.data.samples import Sample
from vlpt.errors import ConfigError, DatasetError
from vlpt.tta.diffusion import DiffusionSettings, DiffusionViewGenerator
from vlpt.tta.store import CorruptViewError, ViewStore, image_digest


@dataclass
class GenerationReport:
    """What one ``generate_views`` call did, in samples."""

    generated: int = 0  # views were missing and have been generated
    reused: int = 0  # views were stored already (or generated earlier in this call for the same image)
    regenerated: int = 0  # stored views were corrupt and have been generated again
    skipped_other_shards: int = 0


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; anything else raises ConfigError."""
    index, slash, count = text.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = None
    if not slash or shard is None or not 0 <= shard[0] < shard[1]:
        raise ConfigError(f"shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return shard


def generate_views(samples: Sequence[Sample], store: ViewStore, settings: DiffusionSettings,
                   device: str | torch.device = "cpu", shard: tuple[int, int] = (0, 1), progress: bool = False,
                   generator: DiffusionViewGenerator | None = None) -> GenerationReport:
    """Make sure the store holds ``settings``' views of every sample of this shard; reuses what is stored.

    Corrupt views are regenerated with a warning naming their folder; identical images are
    generated once. ``generator`` (default: one for ``settings`` on ``device``) must have these settings.
    """
    index, count = shard
    if not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count}: expected I/N with 0 <= I < N")
    if generator is None:
        generator = DiffusionViewGenerator(settings, device)
    elif generator.settings.key() != settings.key():
        raise ConfigError(f"the view generator's settings {generator.settings} differ from the settings {settings}")
    mine = [sample for i, sample in enumerate(samples) if i % count == index]
    report = GenerationReport(skipped_other_shards=len(samples) - len(mine))
    done: set[str] = set()
    for sample in tqdm(mine, desc=f"diffusion views {settings.key()}", unit="image", disable=not progress):
        image = load_sample(sample)
        digest = image_digest(image)
        state = "ok" if digest in done else store.status(digest, settings)
        if state == "ok":
            report.reused += 1
        else:
            if state == "corrupt":
                warnings.warn(f"stored views of {sample.path} in {store.folder(digest, settings)} are corrupt; "
                              f"generating them again", stacklevel=2)
                report.regenerated += 1
            else:
                report.generated += 1
            store.save(digest, settings, generator.generate(image, digest))
        done.add(digest)
    return report


def generate_command(store: ViewStore, settings: DiffusionSettings) -> str:
    """The ``vlpt tta generate`` command line that fills ``store`` with ``settings``' views (DATASET left to fill in)."""
    canonical = settings.canonical()
    args = ["vlpt", "tta", "generate", "DATASET", "--store", str(store.root), "--pipeline", canonical["pipeline"]]
    if canonical["revision"] is not None:
        args += ["--revision", canonical["revision"]]
    args += ["--guidance", str(settings.guidance_scale), "--steps", str(settings.inference_steps),
             "--views", str(settings.views), "--seed", str(settings.seed), "--dtype", settings.dtype]
    return shlex.join(args)


def read_views(store: ViewStore, image: Image.Image, settings: DiffusionSettings) -> list[Image.Image]:
    """The stored views of ``image`` (as loaded, corruption applied); DatasetError when absent or corrupt."""
    digest = image_digest(image)
    hint = f"run `{generate_command(store, settings)}` for the dataset first"
    try:
        views = store.load(digest, settings)
    except CorruptViewError as exc:
        raise CorruptViewError(f"{exc}; {hint} (it regenerates corrupt views)") from exc
    if views is None:
        raise DatasetError(f"no generated views of image {digest} (settings {settings.key()}) in "
                           f"{store.folder(digest, settings)}; {hint}")
    return views


__all__ = ["GenerationReport", "generate_command", "generate_views", "parse_shard", "read_views"]

"""DiffTPT: TPT with diffusion-generated views (Feng et al., "Diverse Data Augmentation with
Diffusions for Effective Test-time Prompt Tuning", ICCV 2023).

Besides TPT's conventional views, each test image gets ``generated_views`` images from a Stable
Diffusion image-variation pipeline conditioned on it (diffusers'
``StableDiffusionImageVariationPipeline``; ``lambdalabs/sd-image-variations-diffusers`` at guidance
scale 3 by default, any local pipeline folder, or ``tiny-random`` offline). As in the reference code
(chunmeifeng/DiffTPT, ``difftpt_utils.select_confident_samples_cosine``), ``similarity: logits``: on
the starting prompt's predictions, the ``similarity_selection`` (80%) of all views but the original,
conventional and generated alike, whose logits are most cosine-similar to the original's are kept;
then the ``selection`` (30%) of the original and the kept views with the lowest prediction entropy
drive ``steps`` (4) AdamW steps at lr 5e-3. The reference's view counts are the original, 64
conventional and 63 generated views (``views: 65``, ``generated_views: 63``). ``similarity:
features`` is vlpt's earlier reading of the paper: the similarity of CLIP image features, over the
generated views only, every conventional view staying in the entropy selection. The conventional
views are TPT's (``augment: auto``: crops and flips for the ImageNet family, the reference AugMix
otherwise; see ``vlpt.methods.tpt``).

The conventional views' features are stored like TPT's (``vlpt.tta.view_features``): a DiffTPT run reads those
a TPT run with the same view settings stored (and the reverse); the generated views are encoded per run, in a
pass of their own (the reference encodes both in one batch: the same features up to float rounding).

Generation is separate from adaptation: the views are generated once into a store (``view_store``, by
default ``<data root>/generated_views``; a location, not a setting: it changes no result), keyed by image content and generator settings. ``vlpt tta
generate`` fills it ahead of time, split across workers if wanted; adaptation reads the store,
and the harness first generates whatever is missing (nothing on a second run).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from vlpt.data.transforms import eval_transform
from vlpt.methods.tpt import TPT, TPTConfig
from vlpt.registry import register_method
from vlpt.tta.data import TestTimeViews
from vlpt.tta.diffusion import DiffusionSettings
from vlpt.tta.generate import generate_views, read_views
from vlpt.tta.selection import confident_views, similar_views
from vlpt.tta.store import DEFAULT_FOLDER, ViewStore

@dataclass
class DiffTPTConfig(TPTConfig):
    steps: int = 4
    selection: float = 0.3
    #: the original and 64 conventional views (the reference's difftpt mode)
    views: int = 65
    #: logits: cosine of every non-original view's logits to the original's (the reference); features: cosine
    #: of the generated views' CLIP image features, conventional views all kept (vlpt's earlier reading)
    similarity: Literal["logits", "features"] = "logits"
    #: fraction of generated views kept by cosine similarity to the original image
    similarity_selection: float = 0.8
    pipeline: str = "lambdalabs/sd-image-variations-diffusers"
    pipeline_revision: str | None = "v2.0"
    guidance_scale: float = 3.0
    inference_steps: int = 50
    generated_views: int = 63
    generation_seed: int = 0
    #: fp16 generation needs a CUDA device
    generation_dtype: Literal["fp32", "fp16"] = "fp32"
    #: the generated-view store's folder (default: ``<data root>/generated_views``)
    view_store: str | None = None

    result_neutral = TPTConfig.result_neutral + ("view_store",)  # where views are kept, not which

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.similarity_selection <= 1:
            raise ValueError(f"similarity_selection must be in (0, 1], got {self.similarity_selection}")
        if self.similarity not in ("logits", "features"):
            raise ValueError(f"similarity must be logits or features, got {self.similarity!r}")
        self.diffusion_settings()  # validates the generator fields

    def diffusion_settings(self) -> DiffusionSettings:
        return DiffusionSettings(pipeline=self.pipeline, revision=self.pipeline_revision,
                                 guidance_scale=self.guidance_scale, inference_steps=self.inference_steps,
                                 views=self.generated_views, seed=self.generation_seed, dtype=self.generation_dtype)


class StoredViews:
    """The stored generated views of an image, in the backbone's evaluation preprocessing."""

    def __init__(self, store: ViewStore, settings: DiffusionSettings, image_size: int, mean, std):
        self.store, self.settings = store, settings
        self.transform = eval_transform(image_size, mean, std)

    def __call__(self, image) -> torch.Tensor:
        return torch.stack([self.transform(view) for view in read_views(self.store, image, self.settings)])


@register_method("difftpt")
class DiffTPT(TPT):
    """TPT over conventional plus similarity-filtered diffusion-generated views."""

    Config = DiffTPTConfig

    def test_time_dataset(self, samples, image_size, mean, std, seed, dataset: str | None = None,
                          data_root: str | Path | None = None, device: str = "cpu", progress: bool = False):
        """Generate the views missing from the view store (none on a second run), then read them per image."""
        cfg, settings = self.config, self.config.diffusion_settings()
        if cfg.view_store is None and data_root is None:
            raise ValueError("DiffTPT needs its view store: set view_store, or give the data root it defaults into")
        store = ViewStore(cfg.view_store or Path(data_root) / DEFAULT_FOLDER)
        generate_views(samples, store, settings, device=str(device), progress=progress)
        return TestTimeViews(samples, self.view_maker(image_size, mean, std, dataset), cfg.views, seed,
                             extra_views=StoredViews(store, settings, image_size, mean, std))

    def adaptation_features(self, features, extra):
        if extra is None:
            return features
        if self.config.similarity == "logits":  # every view; select_views filters them by their logits
            return torch.cat([features, extra])
        kept = similar_views(extra, features[0], self.config.similarity_selection)
        return torch.cat([features, extra[kept]])

    def select_views(self, logits):
        """``similarity: logits``: the views whose logits are most cosine-similar to the original's (row 0),
        then the most confident of those and the original."""
        if self.config.similarity != "logits" or len(logits) < 2:
            return super().select_views(logits)
        logits = logits.detach()
        similar = 1 + similar_views(logits[1:], logits[0], self.config.similarity_selection)
        pool = torch.cat([similar.new_zeros(1), similar])
        return pool[confident_views(logits[pool], self.config.selection)]

"""Diffusion-generated views of a test image for DiffTPT.

DiffTPT (Feng et al., "Diverse Data Augmentation with Diffusions for Effective Test-time Prompt
Tuning", ICCV 2023) adds, to TPT's augmented views of a test image, variations of the image made
by Stable Diffusion conditioned on its CLIP image embedding: diffusers'
``StableDiffusionImageVariationPipeline`` with ``lambdalabs/sd-image-variations-diffusers``
(revision ``v2.0``), guidance scale 3 and 50 denoising steps. As in DiffTPT's generator and the
model card, the conditioning image is resized to the image encoder's input size (224x224,
bicubic, no antialiasing, aspect ratio not kept) and normalised with the encoder's mean and std.

The pipeline is a hub id, a local pipeline folder (``save_pretrained`` output) or ``tiny-random``:
a pipeline of the same classes with tiny configs and random weights, as diffusers' own tests
build, that runs the real pipeline code offline in a fraction of a second (32-px images of noise).
Unlike DiffTPT's script, the pipeline's safety checker is kept when it ships one (it blacks out
flagged images); a local folder saved without one generates unfiltered views.

Views are generated once per dataset (``vlpt tta generate``) and stored by ``vlpt.tta.store``.
"""
from __future__ import annotations

import hashlib
import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from vlpt.errors import ConfigError
from vlpt.tta.views import image_seed

TINY_RANDOM = "tiny-random"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@dataclass
class DiffusionSettings:
    """Everything that decides the generated views; ``key()`` names them in the view store."""

    #: a hub id, a local pipeline folder, or "tiny-random"
    pipeline: str = "lambdalabs/sd-image-variations-diffusers"
    #: hub revision (ignored for tiny-random and local folders)
    revision: str | None = "v2.0"
    guidance_scale: float = 3.0
    inference_steps: int = 50
    #: images generated per test image
    views: int = 63
    seed: int = 0
    dtype: Literal["fp32", "fp16"] = "fp32"

    def __post_init__(self):
        if not isinstance(self.pipeline, str) or not self.pipeline.strip():
            raise ValueError(f"pipeline must be a hub id, a local folder or {TINY_RANDOM!r}, got {self.pipeline!r}")
        if self.revision is not None and (not isinstance(self.revision, str) or not self.revision.strip()):
            raise ValueError(f"revision must be a non-empty string or None, got {self.revision!r}")
        if (isinstance(self.guidance_scale, bool) or not isinstance(self.guidance_scale, (int, float))
                or not math.isfinite(self.guidance_scale) or self.guidance_scale < 0):
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {self.guidance_scale!r}")
        self.guidance_scale = float(self.guidance_scale)
        for name in ("inference_steps", "views"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    def local_folder(self) -> Path | None:
        """The pipeline's resolved folder when ``pipeline`` names a local path, else None."""
        if self.pipeline == TINY_RANDOM:
            return None
        path = Path(self.pipeline).expanduser()
        if self.pipeline.startswith((".", "~", "/", "\\")) or path.is_absolute() or path.is_dir():
            return path.resolve()
        return None

    def canonical(self) -> dict:
        """The settings as stored and hashed: a local folder as its absolute path, no revision unless from the hub."""
        values = asdict(self)
        folder = self.local_folder()
        if folder is not None:
            values["pipeline"] = str(folder)
        if folder is not None or self.pipeline == TINY_RANDOM:
            values["revision"] = None
        return values

    def key(self) -> str:
        """16 hex digits of the sha256 of the canonical settings (their folder in the view store)."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@contextmanager
def _quiet():
    """diffusers/transformers warnings (e.g. "accelerate not found") and loading bars off; hub download bars kept."""
    import huggingface_hub.utils as hub
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    saved = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libraries]
    hub_bars = not hub.are_progress_bars_disabled()
    for lib in libraries:
        lib.set_verbosity_error()
        lib.disable_progress_bar()  # transformers' also turns the hub's download bars off
    if hub_bars:
        hub.enable_progress_bars()
    try:
        yield
    finally:
        for lib, verbosity, bars in saved:
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()
            else:
                lib.disable_progress_bar()
        if hub_bars:
            hub.enable_progress_bars()
        else:
            hub.disable_progress_bars()


def build_tiny_pipeline(seed: int = 0):
    """A StableDiffusionImageVariationPipeline with tiny configs and random weights (fixed by ``seed``).

    32-px inputs and outputs, no safety checker, progress bar off: the real pipeline code, offline.
    """
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionImageVariationPipeline, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    with _quiet(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8)
        vae = AutoencoderKL(
            block_out_channels=(32, 64), in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4, image_size=32,
            intermediate_size=37, patch_size=4))
        pipe = StableDiffusionImageVariationPipeline(
            vae=vae, image_encoder=image_encoder, unet=unet, scheduler=PNDMScheduler(skip_prk_steps=True),
            safety_checker=None, feature_extractor=CLIPImageProcessor(crop_size=32, size=32),
            requires_safety_checker=False)
    for model in (unet, vae, image_encoder):
        model.eval()  # as from_pretrained leaves them: the same kernels as a saved and reloaded pipeline
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _device_and_dtype(settings: DiffusionSettings, device: str | torch.device) -> tuple[torch.device, torch.dtype]:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device (expected cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device} requested but CUDA is not available; use device cpu")
    if settings.dtype == "fp16" and device.type != "cuda":
        raise ConfigError(f"dtype fp16 needs a CUDA device, got device {device}; use dtype fp32")
    return device, DTYPES[settings.dtype]


def load_pipeline(settings: DiffusionSettings, device: str | torch.device = "cpu"):
    """The image-variation pipeline ``settings.pipeline`` names, on ``device`` in ``settings.dtype``."""
    from diffusers import StableDiffusionImageVariationPipeline

    device, dtype = _device_and_dtype(settings, device)
    folder = settings.local_folder()
    # fp32 is every version's default; torch_dtype (renamed dtype in recent diffusers) works in all of them
    dtype_option = {} if dtype == torch.float32 else {"torch_dtype": dtype}
    with _quiet():
        if settings.pipeline == TINY_RANDOM:
            pipe = build_tiny_pipeline()
            if dtype != torch.float32:
                pipe = pipe.to(dtype=dtype)
        elif folder is not None:
            if not folder.is_dir():
                raise ConfigError(f"pipeline folder {folder} does not exist")
            if not (folder / "model_index.json").is_file():
                raise ConfigError(f"pipeline folder {folder} has no model_index.json; expected a diffusers pipeline "
                                  f"folder (StableDiffusionImageVariationPipeline.save_pretrained output)")
            try:
                pipe = StableDiffusionImageVariationPipeline.from_pretrained(folder, **dtype_option)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"pipeline folder {folder} cannot be loaded as an image-variation "
                                  f"pipeline: {exc}") from exc
        else:
            try:
                pipe = StableDiffusionImageVariationPipeline.from_pretrained(
                    settings.pipeline, revision=settings.revision, **dtype_option)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"pipeline {settings.pipeline!r} (revision {settings.revision}) cannot be loaded from the "
                    f"Hugging Face hub or its local cache: {exc}. Downloading it needs network access; offline, "
                    f"pass a local pipeline folder (save_pretrained output) or {TINY_RANDOM!r} instead") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class DiffusionViewGenerator:
    """Generates ``settings.views`` variations of an image; the pipeline is loaded on first use.

    View ``i`` of an image starts from noise seeded by (``settings.seed``, image digest, ``i``), so
    the same image and settings give the same views whatever the chunking or the other images.
    """

    def __init__(self, settings: DiffusionSettings, device: str | torch.device = "cpu", chunk: int = 16):
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        self.settings = settings
        self.device, self.dtype = _device_and_dtype(settings, device)
        self.chunk = chunk
        self._pipeline = None

    @property
    def loaded(self) -> bool:
        """Whether the pipeline has been loaded."""
        return self._pipeline is not None

    @property
    def pipeline(self):
        """The pipeline, loaded on first access."""
        if self._pipeline is None:
            self._pipeline = load_pipeline(self.settings, self.device)
        return self._pipeline

    def _condition(self, image: Image.Image) -> torch.Tensor:
        """DiffTPT's conditioning input: RGB, resized to the encoder's size (bicubic, no antialias), normalised."""
        from torchvision.transforms import functional as F

        pipe = self.pipeline
        size = pipe.image_encoder.config.image_size
        tensor = F.to_tensor(image.convert("RGB"))
        tensor = F.resize(tensor, [size, size], interpolation=F.InterpolationMode.BICUBIC, antialias=False)
        tensor = F.normalize(tensor, pipe.feature_extractor.image_mean, pipe.feature_extractor.image_std)
        return tensor.unsqueeze(0).to(self.device, self.dtype)

    def generate(self, image: Image.Image, digest: str) -> list[Image.Image]:
        """``settings.views`` RGB variations of ``image`` (whose content digest is ``digest``), in the settings'
        dtype whatever autocast the caller runs under (views are stored by settings, not by the caller's precision)."""
        s = self.settings
        with torch.autocast(self.pipeline.device.type, enabled=False):
            return self._generate(image, digest)

    def _generate(self, image: Image.Image, digest: str) -> list[Image.Image]:
        s = self.settings
        condition = self._condition(image)
        views: list[Image.Image] = []
        for start in range(0, s.views, self.chunk):
            count = min(self.chunk, s.views - start)
            noise = [torch.Generator().manual_seed(image_seed(s.seed, f"{digest}:{start + i}")) for i in range(count)]
            output = self.pipeline(condition, num_images_per_prompt=count, guidance_scale=s.guidance_scale,
                                   num_inference_steps=s.inference_steps, generator=noise)
            views.extend(view.convert("RGB") for view in output.images)
        return views


__all__ = ["DiffusionSettings", "DiffusionViewGenerator", "TINY_RANDOM", "build_tiny_pipeline", "load_pipeline"]

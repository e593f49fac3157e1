"""SegPromptMethod: the LightningModule base of prompt tuning on a vision-language segmentation model.

TuneVLSeg (Adhikari et al., "TuneVLSeg: Prompt Tuning Benchmark for Vision-Language Segmentation
Models", ACCV 2024) tunes textual, visual and multimodal prompts of a frozen VLSM. A method here is a
:class:`PromptMethod` whose backbone is a :class:`~vlpt.seg.vlsm.SegmentationModel`; subclasses (one
module each in ``vlpt/seg/methods/``, registered with ``register_seg_method``) say what they prompt:

* ``class_embeddings(image_features)``: the decoder's text conditioning per class, ``[C, D]`` (or per
  image ``[B, C, D]``, CoCoOp); the default encodes the dataset's hand-written prompt;
* ``vision_prompts()``: deep visual prompts ``{layer: tokens}`` for the image tower (default none).

The base supplies the rest: per-class decoding (``logits`` returns mask logits ``[B, C, H, W]``), the
TuneVLSeg loss (Dice + 0.2 x BCE for one class, Dice + 0.2 x CE for several; pixels labelled
``IGNORE_INDEX`` excluded), prediction (sigmoid > threshold, or per-pixel argmax), and the decoder:
frozen (TuneVLSeg's setting; left out of checkpoints) or trained with the prompts (``train_decoder``).
A dataset with one class name is binary; with several, each pixel takes the class of highest logit.
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch

from vlpt.backbone.deep_prompts import DeepPromptTokens
from vlpt.errors import ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod
from vlpt.prompts.context import readable
from vlpt.prompts.deep import check_prompt_layers
from vlpt.seg.data import IGNORE_INDEX
from vlpt.seg.loss import segmentation_loss

DECODER_PREFIX = "decoder."


@dataclass
class SegMethodConfig(MethodConfig):
    """TuneVLSeg's optimisation: AdamW lr 2e-4 without weight decay (its model configs; its Optuna search
    tunes lr, weight decay and prompt depth per dataset), batch 32 (its ``scripts/schedule_*.sh``: 32, or
    16 with two accumulated steps), loss Dice + 0.2 x BCE/CE, at most 20 epochs."""

    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = 2e-4
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int | dict[int, int] = 20
    scheduler: Literal["cosine", "constant"] = "constant"
    warmup_epochs: int = 0
    #: tune the decoder with the prompts; TuneVLSeg keeps the whole VLSM frozen
    train_decoder: bool = False
    dice_weight: float = 1.0
    ce_weight: float = 0.2
    #: binary segmentation: foreground where sigmoid(logit) > threshold
    threshold: float = 0.5


def prompt_layers(depth: int, n_layers: int, what: str) -> list[int]:
    """Layers ``0 .. depth-1`` of a tower of ``n_layers`` (TuneVLSeg's prompt depth), checked."""
    if depth < 1:
        raise ConfigError(f"{what}: prompt_depth must be at least 1, got {depth}")
    return check_prompt_layers(range(depth), n_layers, f"{what} (prompt_depth {depth})")


class SegPromptMethod(PromptMethod):
    """Base of the segmentation methods; see the module docstring."""

    Config = SegMethodConfig
    task: ClassVar[str] = "segmentation"
    #: whether ``class_embeddings`` needs the image feature (instance-conditional prompts)
    needs_image_feature: ClassVar[bool] = False

    def __init__(self, backbone, classnames, templates, config=None):
        self.binary = len(classnames) == 1
        super().__init__(backbone, classnames, templates, config)

    def build(self, classnames, templates):
        cfg = self.config
        if not cfg.train_decoder and not self.backbone.spec.has_trained_decoder:
            raise ConfigError(f"{self.name}: the VLSM {self.backbone.describe()} has a random decoder (no "
                              f"decoder_from) that this method would keep frozen; train it (train_decoder: true, "
                              f"or method seg_decoder) or give the VLSM trained decoder weights")
        self.decoder = self.backbone.new_decoder()
        self.decoder.requires_grad_(bool(cfg.train_decoder))
        self.build_prompts(classnames, templates)
        deepest, last_tap = max(self.vision_prompts(), default=-1), max(self.backbone.extract_layers)
        if deepest > last_tap and not self.needs_image_feature:
            raise ConfigError(f"{self.name}: a visual prompt at image layer {deepest} would never reach the decoder, "
                              f"which reads layers {self.backbone.extract_layers}; use a prompt_depth of at most "
                              f"{last_tap + 1}")

    def build_prompts(self, classnames: list[str], templates: list[str]) -> None:
        """Create the method's prompt parameters (none by default)."""

    def frozen_prefixes(self) -> tuple[str, ...]:
        return super().frozen_prefixes() + (() if self.config.train_decoder else (DECODER_PREFIX,))

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.config.train_decoder:
            self.decoder.eval()
        return self

    def set_classnames(self, classnames, templates=None):
        if (len(classnames) == 1) != self.binary:
            raise ConfigError(f"{self.name} was built for {'binary' if self.binary else 'multi-class'} segmentation "
                              f"and cannot segment classes {list(classnames)}")
        super().set_classnames(classnames, templates)

    # ---- what subclasses prompt ------------------------------------------------------------
    def class_embeddings(self, image_features: torch.Tensor | None) -> torch.Tensor:
        """Text conditioning ``[C, D]`` (or ``[B, C, D]``); default: the hand-written prompt of each class."""
        texts = tuple(self.templates[0].format(readable(name)) for name in self.classnames)
        return self.backbone.remember(("prompts", texts), lambda: self.backbone.encode_texts(texts))

    def vision_prompts(self) -> DeepPromptTokens:
        return {}

    # ---- provided --------------------------------------------------------------------------
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Mask logits ``[B, C, H, W]`` at the input resolution."""
        activations, features = self.backbone.image_activations(images, self.vision_prompts() or None,
                                                                pooled=self.needs_image_feature)
        return self.backbone.decode(self.decoder, activations, self.class_embeddings(features))

    def training_loss(self, images, masks):
        cfg = self.config
        return segmentation_loss(self.logits(images), masks, self.binary, IGNORE_INDEX,
                                 dice_weight=cfg.dice_weight, ce_weight=cfg.ce_weight)

    def checkpoint_extra(self) -> dict:
        """The VLSM the prompts were tuned for (its settings and, for clip_decoder, the CLIP backbone), so a
        checkpoint alone rebuilds the trained model (``vlpt predict``)."""
        backbone, spec = getattr(self.backbone, "backbone", None), dataclasses.asdict(self.backbone.spec)
        for key in ("decoder_from", "model"):  # files found from anywhere the checkpoint is used
            if spec[key] and Path(spec[key]).expanduser().exists():
                spec[key] = str(Path(spec[key]).expanduser().resolve())
        return {"vlsm": spec, **({"clip": backbone.describe()} if backbone is not None else {})}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Label maps ``[B, H, W]``: 0/1 for binary segmentation, class indices otherwise."""
        logits = self.logits(images)
        if self.binary:
            return (torch.sigmoid(logits[:, 0]) > self.config.threshold).long()
        return logits.argmax(dim=1)


__all__ = ["SegMethodConfig", "SegPromptMethod", "prompt_layers"]

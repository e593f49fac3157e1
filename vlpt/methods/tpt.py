"""TPT: Test-time Prompt Tuning (Shu et al., "Test-Time Prompt Tuning for Zero-Shot Generalization
in Vision-Language Models", NeurIPS 2022).

For each test image: N views (the original and N-1 augmented ones) go through the frozen image
encoder once, without gradients; the views whose predictions have the lowest entropy (the
fraction ``selection``, 10%) are kept; the entropy of their averaged prediction is minimised by
``steps`` AdamW steps on the text context (4 tokens from "a photo of a"); the tuned prompt then
classifies the original view. Prompt and optimizer state are restored after every image
(episodic). The image features are computed once per image and reused by every step; the harness stores
them (``vlpt.tta.view_features``), so runs adapting on the same views (TPT, TPT+CoOp, TPT+CoCoOp, C-TPT and
DiffTPT's conventional views with one seed) encode them once. ``images_per_batch`` adapts several images at once, each with its own context and
optimizer state (``adapt_batch``; equal to the one-at-a-time loop, the default, to float rounding).

Views follow the reference code (azshue/TPT): ``augment: auto`` gives random resized crops with flips
for ImageNet and its variants and AugMix (the reference's own, see ``vlpt.tta.views``) for every other
dataset, resolved per evaluation set from the dataset catalog's ``family``; the paper describes only
the crops, ``augment: crop_flip`` keeps them for every dataset. Crops are resized bilinearly
(torchvision's default, as in the reference); ``view_interpolation: bicubic`` is vlpt's former reading.
The augmentation each evaluation set used is written to the run record (``config.test_time.views``).

The context starts from the hand-written prompt, from a trained CoOp context (``init_from`` a
CoOp checkpoint with the same ``n_ctx``: TPT+CoOp), or from a CoCoOp checkpoint with
``conditional: true``: the starting context is then CoCoOp's image-conditioned context
``v + pi(x)`` for the original view, and TPT tunes it (the meta-net stays fixed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from vlpt.errors import CheckpointError, ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod, cosine_logits
from vlpt.methods.cocoop import MIB, activation_bytes_per_prompt
from vlpt.prompts.context import TextContext
from vlpt.prompts.meta_net import MetaNet
from vlpt.registry import register_method
from vlpt.tta.data import TestTimeViews
from vlpt.tta.episodic import EpisodicState
from vlpt.tta.selection import confident_views, marginal_entropy
from vlpt.tta.views import AugmentedViews, ViewAugment, ViewInterpolation, check_view_settings, resolve_augment


#: MiB of text-tower activations per batched step when ``images_per_batch`` is null and no budget is given
DEFAULT_BATCH_MEMORY_MB = 2048.0


@dataclass
class TPTConfig(MethodConfig):
    n_ctx: int = 4
    ctx_init: str | None = "a photo of a"
    init_std: float = 0.02
    #: start from CoCoOp's image-conditioned context (needs ``init_from`` a CoCoOp checkpoint)
    conditional: bool = False
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = 5e-3
    weight_decay: float = 0.01  # AdamW's default, as in the reference code
    #: optimisation steps per test image
    steps: int = 1
    #: views per test image, the original included
    views: int = 64
    #: auto: crop_flip for the ImageNet family, augmix otherwise (the reference code); or one of those for all
    augment: ViewAugment = "auto"
    #: resampling of the random resized crops (bilinear: torchvision's default, as in the reference code)
    view_interpolation: ViewInterpolation = "bilinear"
    #: fraction of views kept by confidence (lowest prediction entropy)
    selection: float = 0.1
    #: test images adapted together, each with its own prompt and optimizer state (1: one at a time, as the
    #: reference code); None: as many as ``batch_memory_mb`` of text-tower activations allows
    images_per_batch: int | None = 1
    #: MiB of text-tower activations per batched step (only with ``images_per_batch: null``; default 2048)
    batch_memory_mb: float | None = None
    epochs: int | dict[int, int] = 1  # nothing is trained before test time

    # how many images share a step changes no result beyond float rounding (tests/test_tpt_batched.py)
    result_neutral = MethodConfig.result_neutral + ("images_per_batch", "batch_memory_mb")

    def __post_init__(self):
        super().__post_init__()
        if self.steps < 0:
            raise ValueError(f"steps must be at least 0, got {self.steps}")
        check_view_settings(self.views, self.selection, self.augment)
        if self.images_per_batch is not None and (isinstance(self.images_per_batch, bool) or self.images_per_batch < 1):
            raise ValueError(f"images_per_batch must be at least 1 (or null: from batch_memory_mb), "
                             f"got {self.images_per_batch!r}")
        if self.batch_memory_mb is not None:
            if self.images_per_batch is not None:
                raise ValueError(f"batch_memory_mb ({self.batch_memory_mb}) decides the batch only with "
                                 f"images_per_batch: null; images_per_batch is {self.images_per_batch}")
            if isinstance(self.batch_memory_mb, bool) or not (isinstance(self.batch_memory_mb, (int, float))
                                                              and 0 < self.batch_memory_mb < math.inf):
                raise ValueError(f"batch_memory_mb must be a positive number of MiB, got {self.batch_memory_mb!r}")


def fp16_loss_scaler(device: torch.device) -> torch.amp.GradScaler | None:
    """A fresh loss scaler when the adaptation runs under fp16 autocast (``16-mixed``), as the reference code
    scales TPT's loss (``GradScaler(init_scale=1000)``); fresh per image, so images stay independent. None
    otherwise (fp32, bf16)."""
    if torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.float16:
        return torch.amp.GradScaler(device.type, init_scale=1000)
    return None


def step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """One optimizer step on ``loss`` (scaled, and skipped on overflow, with a loss scaler)."""
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


@register_method("tpt")
class TPT(PromptMethod):
    """Per-image entropy minimisation over confident augmented views, on the text context."""

    Config = TPTConfig
    trains = False
    adapts_at_test_time = True
    frozen_view_features = True

    def build(self, classnames, templates):
        cfg = self.config
        self.context = TextContext(self.backbone, classnames, n_ctx=cfg.n_ctx, ctx_init=cfg.ctx_init,
                                   init_std=cfg.init_std)
        if cfg.conditional:
            if not cfg.init_from:
                raise ConfigError(f"{self.name}: conditional: true starts from a trained CoCoOp prompt; "
                                  f"set init_from to a CoCoOp checkpoint (or experiment:NAME/cocoop)")
            self.meta_net = MetaNet(self.backbone.embed_dim, self.backbone.text_width).to(self.backbone.dtype)
            self.meta_net.requires_grad_(False)
        self._episode: EpisodicState | None = None

    def update_classnames(self, classnames, templates):
        self.context.set_classnames(classnames)

    def initialize_from(self, path):
        copied = super().initialize_from(path)
        if self.config.conditional and not any(name.startswith("meta_net.") for name in copied):
            raise CheckpointError(f"{self.name}: conditional: true needs a CoCoOp checkpoint with a meta-net; "
                                  f"{path} holds none")
        return copied

    def text_features(self) -> torch.Tensor:
        return self.backbone.encode_text_embeds(self.context(), self.context.eot_positions, normalize=True)

    def logits(self, images):
        """The current prompt's scores, without adaptation."""
        return cosine_logits(self.backbone.encode_image(images), self.text_features(), self.backbone.logit_scale)

    # ---- test time -----------------------------------------------------------------------
    def view_maker(self, image_size: int, mean, std, dataset: str | None) -> AugmentedViews:
        """The view generator for images of ``dataset`` (``augment: auto`` resolved for it)."""
        augment = resolve_augment(self.config.augment, dataset)
        return AugmentedViews(image_size, mean, std, augment, self.config.view_interpolation)

    def test_time_dataset(self, samples: Sequence, image_size: int, mean, std, seed: int,
                          dataset: str | None = None, **context):
        """The views of each test image of ``dataset`` (``context``: the run's data root, device and progress
        flag); its ``augment`` is the view augmentation used."""
        return TestTimeViews(samples, self.view_maker(image_size, mean, std, dataset), self.config.views, seed)

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        """A fresh optimizer of the test-time steps (AdamW, as the reference code, or SGD) over ``params``."""
        cfg = self.config
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def start_episodes(self) -> None:
        """Snapshot the starting prompt and a fresh optimizer; every image restores this state."""
        params = [self.context.ctx]
        self._episode = EpisodicState(params, self.make_optimizer(params))

    def adaptation_features(self, features: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        """Image features of the views the entropy selection chooses from (TPT: the augmented views)."""
        return features

    def select_views(self, logits: torch.Tensor) -> torch.Tensor:
        """Rows of the pool's ``logits`` the entropy loss is taken over (TPT: the most confident views)."""
        return confident_views(logits, self.config.selection)

    def test_time_loss(self, logits: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The loss a test-time step minimises, from the chosen views' scores and the prompt's normalised text
        features ``[C, D]`` (TPT: the entropy of the views' averaged prediction)."""
        return marginal_entropy(logits)

    def images_per_batch(self) -> int:
        """Test images adapted in one batch: ``images_per_batch``, or as many as ``batch_memory_mb`` of text-tower
        activations (with gradients) holds for the current classes, at least one."""
        if self.config.images_per_batch is not None:
            return self.config.images_per_batch
        length = self.backbone.text_sequence_length(self.context.eot_positions, self.backbone.context_length)
        per_image = len(self.context.classnames) * activation_bytes_per_prompt(self.backbone, True, length)
        return max(1, math.floor((self.config.batch_memory_mb or DEFAULT_BATCH_MEMORY_MB) * MIB / per_image))

    def encode_views(self, views: torch.Tensor, extra: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised image features of one image's views and of its extra views (None without): one pass each, so
        the views' features are what ``vlpt.tta.view_features`` stores, bit for bit."""
        with torch.no_grad():  # the image encoder is never differentiated
            features = self.backbone.encode_image(views, normalize=True)
            if extra is None or not len(extra):
                return features, None
            return features, self.backbone.encode_image(extra, normalize=True)

    def adapt_and_predict(self, views: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Tune the prompt on one image's views, return the original view's scores ``[C]``, restore."""
        return self.adapt_on_features(*self.encode_views(views, extra))

    def adapt_on_features(self, features: torch.Tensor, extra_features: torch.Tensor | None = None) -> torch.Tensor:
        """``adapt_and_predict`` from the views' normalised image features ``[N, D]`` (and the extra views')."""
        if self._episode is None:
            self.start_episodes()
        pool = self.adaptation_features(features, extra_features)
        scale = self.backbone.logit_scale.detach()
        optimizer, scaler = self._episode.optimizer, fp16_loss_scaler(features.device)
        try:
            if self.config.conditional:
                with torch.no_grad():
                    self.context.ctx.add_(self.meta_net(features[:1])[0])
            chosen = None
            for _ in range(self.config.steps):
                text = self.text_features()
                logits = scale * pool @ text.T
                if chosen is None:  # chosen once, on the starting prompt's predictions
                    chosen = self.select_views(logits)
                loss = self.test_time_loss(logits[chosen], text)
                optimizer.zero_grad(set_to_none=True)
                step(loss, optimizer, scaler)
            with torch.no_grad():
                return scale * features[0] @ self.text_features().T
        finally:
            self._episode.restore()

    def adapt_batch(self, features: Sequence[torch.Tensor], extra_features: Sequence[torch.Tensor | None]
                    ) -> list[torch.Tensor]:
        """``adapt_on_features`` for several images at once: each image gets its own copy of the starting context
        (a leading image dimension) and its own optimizer state (the optimizers' updates are elementwise, so
        one optimizer over the stacked contexts updates each image's as its own would); every step runs all
        images' prompts through the text tower in one pass. Equal to adapting one image at a time up to float
        rounding of the batched pass (``tests/test_tpt_batched.py``)."""
        if len(features) == 1:
            return [self.adapt_on_features(features[0], extra_features[0])]
        cfg, scale = self.config, self.backbone.logit_scale.detach()
        with torch.no_grad():
            start = self.context.ctx.detach().unsqueeze(0).repeat(len(features), 1, 1)  # [B, M, W]
            if cfg.conditional:  # each image's CoCoOp context v + pi(x) for its original view
                start += self.meta_net(torch.cat([f[:1] for f in features]))[:, None, :]
        contexts = torch.nn.Parameter(start)
        optimizer, scaler = self.make_optimizer([contexts]), fp16_loss_scaler(features[0].device)
        pools = [self.adaptation_features(f, e) for f, e in zip(features, extra_features)]
        chosen: list[torch.Tensor | None] = [None] * len(features)
        for _ in range(cfg.steps):
            text = self.per_image_text_features(contexts)
            loss = 0.0
            for i, pool in enumerate(pools):
                logits = scale * pool @ text[i].T
                if chosen[i] is None:
                    chosen[i] = self.select_views(logits)
                loss = loss + self.test_time_loss(logits[chosen[i]], text[i])
            optimizer.zero_grad(set_to_none=True)
            step(loss, optimizer, scaler)
        with torch.no_grad():
            text = self.per_image_text_features(contexts)
            return [scale * f[0] @ text[i].T for i, f in enumerate(features)]

    def per_image_text_features(self, contexts: torch.Tensor) -> torch.Tensor:
        """Normalised text features ``[B, C, D]`` of each image's context ``[B, n_ctx, W]``, in one pass."""
        prompts = self.context.per_image(contexts)
        batch, n_classes = prompts.shape[:2]
        text = self.backbone.encode_text_embeds(prompts.flatten(0, 1), self.context.eot_positions.repeat(batch),
                                                normalize=True)
        return text.view(batch, n_classes, -1)

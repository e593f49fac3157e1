"""Vision-language segmentation models (VLSMs): frozen CLIP towers plus a text-conditioned decoder.

A VLSM segments an image for a text prompt: the image tower's tokens from a few layers and the
prompt's text embedding go through a light decoder that returns mask logits at the input size
(CLIPSeg, Lüddecke & Ecker, "Image Segmentation Using Text and Image Prompts", CVPR 2022). Two kinds:

* ``clip_decoder``: any :class:`ClipBackbone` with a ViT image tower (the starter model included) with
  :class:`ConditionalDecoder`, a CLIPSeg-style decoder written here. Its decoder
  starts random (seeded by the run) unless ``decoder_from`` names trained decoder weights.
* ``clipseg``: CLIPSeg through transformers (``CIDAS/clipseg-rd64-refined``, ``CIDAS/clipseg-rd64``, a
  local folder, or ``tiny-random``: the real CLIPSeg code with a tiny random configuration, offline).

The seam for prompt tuning (TuneVLSeg, Adhikari et al., ACCV 2024) is the same as for classification:
a VLSM is a :class:`~vlpt.backbone.text.TextTower` (``clip_decoder`` delegates to its backbone,
``clipseg`` drives CLIPSeg's text model), so the blocks of ``vlpt.prompts`` work on it unchanged, plus
``image_activations`` (image-tower tokens at the decoder's layers, with deep visual prompts), ``new_decoder``
and ``decode``.
Visual prompt tokens are taken out of the tapped layers before the decoder reads them (TuneVLSeg's
VPT code carries them through CLIPSeg's decoder layers and drops them at its output); the decoder
thus sees the same token grid with and without visual prompts.
"""
from __future__ import annotations

import abc
import copy
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import open_clip
from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD
import torch
import torch.nn.functional as F
from torch import nn

from vlpt.backbone import ClipBackbone
from vlpt.backbone.clip import describe_mismatch, load_state_dict_file, tokenize_fitting
from vlpt.backbone.deep_prompts import (
    DeepPromptTokens,
    check_layers,
    insert_after_class_token,
    run_text_blocks,
    run_vision_blocks,
)
from vlpt.backbone.text import TextTower
from vlpt.errors import CheckpointError, ConfigError

CLIPSEG_HUB_MODELS = ("CIDAS/clipseg-rd64-refined", "CIDAS/clipseg-rd64", "CIDAS/clipseg-rd16")
TINY_RANDOM = "tiny-random"
#: CLIPSeg's processor resizes images to 352 x 352
CLIPSEG_IMAGE_SIZE = 352


@dataclass
class VLSMSpec:
    """Which VLSM a segmentation experiment tunes prompts on (the suite's ``vlsm`` key)."""

    kind: Literal["clip_decoder", "clipseg"] = "clip_decoder"
    #: clipseg: a hub id (CIDAS/clipseg-rd64-refined), a local folder, or tiny-random
    model: str | None = None
    revision: str | None = None
    #: clip_decoder: image blocks whose tokens feed the decoder (default: CLIPSeg's 3 of 12, scaled to the tower)
    extract_layers: list[int] | None = None
    reduce_dim: int = 64
    decoder_heads: int = 4
    #: clip_decoder: a file of trained ConditionalDecoder weights (else the decoder starts random)
    decoder_from: str | None = None
    #: input size; default: the backbone's (clip_decoder), 352 (CLIPSeg hub models) or the config's (tiny)
    image_size: int | None = None

    def __post_init__(self):
        if self.kind == "clipseg" and not self.model:
            raise ValueError(f"kind clipseg needs `model`: one of {', '.join(CLIPSEG_HUB_MODELS)}, a local "
                             f"folder, or {TINY_RANDOM}")
        if self.kind == "clip_decoder" and self.model:
            raise ValueError("kind clip_decoder uses the suite's backbone; `model` is for kind clipseg")
        if self.reduce_dim < 1 or self.decoder_heads < 1 or self.reduce_dim % self.decoder_heads:
            raise ValueError(f"reduce_dim ({self.reduce_dim}) must be a positive multiple of decoder_heads "
                             f"({self.decoder_heads})")
        decoder_fields = {"extract_layers": self.extract_layers, "decoder_from": self.decoder_from,
                          "reduce_dim": None if self.reduce_dim == 64 else self.reduce_dim,
                          "decoder_heads": None if self.decoder_heads == 4 else self.decoder_heads}
        foreign = [k for k, v in decoder_fields.items() if v is not None] if self.kind == "clipseg" \
            else (["revision"] if self.revision else [])
        if foreign:
            raise ValueError(f"{', '.join(foreign)} do(es) not apply to kind {self.kind} (CLIPSeg brings its own "
                             f"decoder; revision is for CLIPSeg hub models)")

    @property
    def has_trained_decoder(self) -> bool:
        """Whether the decoder starts from trained weights (CLIPSeg's, or ``decoder_from``)."""
        return self.kind == "clipseg" or self.decoder_from is not None

    def describe(self, backbone: str) -> str:
        """The model identity written in run records (``backbone`` is the suite's, for clip_decoder):
        every setting that changes results, the decoder weights by content."""
        size = f",{self.image_size}px" if self.image_size else ""
        if self.kind == "clipseg":
            return f"clipseg:{self.model}" + (f"@{self.revision}" if self.revision else "") + \
                (f"({size[1:]})" if size else "")
        layers = "default" if self.extract_layers is None else "-".join(map(str, self.extract_layers))
        decoder = f"+decoder(rd{self.reduce_dim},h{self.decoder_heads},layers {layers}{size}"
        if self.decoder_from:
            path = Path(self.decoder_from)
            if not path.is_file():
                raise ConfigError(f"vlsm decoder_from: decoder weights file {path} does not exist")
            decoder += f",from {path.name}#{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"
        return backbone + decoder + ")"


def default_extract_layers(n_layers: int) -> list[int]:
    """CLIPSeg taps blocks 3, 6 and 9 of 12 (0-based): a quarter, half and three quarters of the tower."""
    return sorted({min(n_layers - 1, round(n_layers * k / 4)) for k in (1, 2, 3)})


def pair_up(activations: list[torch.Tensor], pairs_per_image: int) -> list[torch.Tensor]:
    """Each image's activations ``[B, T, W]`` repeated for each of its pairs: ``[B*K, T, W]``, image-major."""
    return [a.repeat_interleave(pairs_per_image, dim=0) for a in activations]


class ConditionalDecoder(nn.Module):
    """CLIPSeg's decoder design (with PyTorch's ReLU transformer layers where CLIPSeg uses quick-GELU): tokens of each tapped layer are projected to ``reduce_dim`` and added,
    deepest first; after the first, FiLM by the text embedding (``gamma(t) * x + beta(t)``); a
    transformer layer follows each; the patch tokens are unfolded to a grid and a transposed
    convolution of the patch size returns mask logits at the input resolution."""

    def __init__(self, vision_width: int, cond_dim: int, n_layers: int, patch_size: int, reduce_dim: int = 64,
                 heads: int = 4):
        super().__init__()
        self.reduces = nn.ModuleList(nn.Linear(vision_width, reduce_dim) for _ in range(n_layers))
        self.film_mul = nn.Linear(cond_dim, reduce_dim)
        self.film_add = nn.Linear(cond_dim, reduce_dim)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(reduce_dim, heads, dim_feedforward=4 * reduce_dim, dropout=0.0,
                                       activation="relu", batch_first=True)
            for _ in range(n_layers)
        )
        self.upsample = nn.ConvTranspose2d(reduce_dim, 1, kernel_size=patch_size, stride=patch_size)

    def forward(self, activations: Sequence[torch.Tensor], conditional: torch.Tensor) -> torch.Tensor:
        """``activations``: ``[B, 1+P, W]`` per tapped layer, shallow to deep; ``conditional`` ``[B*K, D]``, K
        embeddings per image, image-major; returns logits ``[B*K, H, W]``. Each image's tokens are reduced once,
        then repeated for its K pairs (the projection is per token: the same as reducing every pair's copy)."""
        batch = activations[0].shape[0]
        if batch < 1 or conditional.shape[0] < batch or conditional.shape[0] % batch:
            raise ValueError(f"the decoder pairs each of {batch} image(s) with the same number of embeddings, "
                             f"got {conditional.shape[0]}")
        pairs_per_image = conditional.shape[0] // batch
        x = None
        for index, (tokens, reduce, block) in enumerate(zip(reversed(activations), self.reduces, self.blocks)):
            reduced = reduce(tokens).repeat_interleave(pairs_per_image, dim=0)
            x = reduced if x is None else x + reduced
            if index == 0:
                x = self.film_mul(conditional).unsqueeze(1) * x + self.film_add(conditional).unsqueeze(1)
            x = block(x)
        patches = x[:, 1:]
        side = math.isqrt(patches.shape[1])
        grid = patches.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)
        return self.upsample(grid).squeeze(1)


class SegmentationModel(nn.Module, TextTower):
    """A frozen VLSM: a text tower plus the image side; see the module docstring."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int

    def __init__(self):
        super().__init__()
        self._memo: dict[tuple, torch.Tensor] = {}

    def train(self, mode: bool = True) -> "SegmentationModel":
        """The VLSM stays in eval mode: it is frozen whatever its owner does."""
        return super().train(False)

    def remember(self, key: tuple, compute) -> torch.Tensor:
        """A tensor that depends only on the frozen weights and ``key``, computed once per device
        (in the weights' own precision, whatever autocast a caller runs under)."""
        device = self.device
        full_key = (key, str(device))
        if full_key not in self._memo:
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                self._memo[full_key] = compute()
        return self._memo[full_key]

    # ---- image side ---------------------------------------------------------------------
    @abc.abstractmethod
    def image_activations(self, images: torch.Tensor, deep_prompts: DeepPromptTokens | None = None,
                          pooled: bool = False) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Tokens ``[B, 1+P, W]`` of the decoder's layers (prompts removed), and with ``pooled`` the
        projected image feature ``[B, D]``."""

    @abc.abstractmethod
    def new_decoder(self) -> nn.Module:
        """A decoder to tune or keep frozen: a copy of the trained one, or a fresh one."""

    def decode(self, decoder: nn.Module, activations: list[torch.Tensor], conditional: torch.Tensor) -> torch.Tensor:
        """Mask logits ``[B, C, H, W]``: every image decoded for every class embedding (``[C, D]`` or ``[B, C, D]``)."""
        batch = activations[0].shape[0]
        if conditional.dim() == 2:
            conditional = conditional.unsqueeze(0).expand(batch, -1, -1)
        flat = conditional.reshape(-1, conditional.shape[-1]).to(activations[0].dtype)  # [B*C, D], image-major
        logits = self._run_decoder(decoder, activations, flat)
        return logits.view(batch, -1, *logits.shape[-2:])

    @abc.abstractmethod
    def _run_decoder(self, decoder: nn.Module, activations: list[torch.Tensor], conditional: torch.Tensor) -> torch.Tensor:
        """Logits ``[B*C, H, W]`` of every (image, class) pair: ``activations`` ``[B, T, W]`` per layer, one per image;
        ``conditional`` ``[B*C, D]``, image-major."""

    @abc.abstractmethod
    def describe(self) -> str: ...


class ClipDecoderModel(SegmentationModel):
    """A :class:`ClipBackbone` with a :class:`ConditionalDecoder` over its ViT tokens."""

    def __init__(self, backbone: ClipBackbone, spec: VLSMSpec):
        super().__init__()
        if not backbone.is_vit:
            raise ConfigError(f"{backbone.model_name}: a segmentation decoder needs a ViT image tower")
        self.backbone = backbone
        self.spec = spec
        n_layers = backbone.vision_layers
        self.extract_layers = list(spec.extract_layers) if spec.extract_layers is not None \
            else default_extract_layers(n_layers)
        bad = [layer for layer in self.extract_layers if not 0 <= layer < n_layers]
        if not self.extract_layers or bad:
            raise ConfigError(f"vlsm extract_layers {self.extract_layers}: {backbone.model_name} has image layers "
                              f"0..{n_layers - 1}")
        self.image_size = spec.image_size or backbone.image_size
        if self.image_size != backbone.image_size:
            raise ConfigError(f"vlsm image_size {self.image_size}: {backbone.model_name} takes {backbone.image_size} px")
        self.mean, self.std = tuple(backbone.preprocess_cfg["mean"]), tuple(backbone.preprocess_cfg["std"])
        self.patch_size = backbone.patch_size

    # text side: the backbone's own
    def tokenize(self, texts):
        return self.backbone.tokenize(texts)

    def embed_tokens(self, tokens):
        return self.backbone.embed_tokens(tokens)

    def encode_text_embeds(self, embeds, eot_positions, deep_prompts=None, normalize=False):
        return self.backbone.encode_text_embeds(embeds, eot_positions, deep_prompts, normalize)

    @property
    def context_length(self) -> int:
        return self.backbone.context_length

    @property
    def text_width(self) -> int:
        return self.backbone.text_width

    @property
    def text_layers(self) -> int:
        return self.backbone.text_layers

    @property
    def vision_width(self) -> int:
        return self.backbone.vision_width

    @property
    def vision_layers(self) -> int:
        return self.backbone.vision_layers

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    def image_activations(self, images, deep_prompts=None, pooled=False):
        return self.backbone.image_layer_tokens(images, self.extract_layers, deep_prompts, pooled=pooled)

    def new_decoder(self) -> ConditionalDecoder:
        decoder = ConditionalDecoder(self.vision_width, self.embed_dim, len(self.extract_layers), self.patch_size,
                                     self.spec.reduce_dim, self.spec.decoder_heads).to(self.dtype)
        if self.spec.decoder_from:
            path = Path(self.spec.decoder_from)
            state = load_state_dict_file(path)
            problem = describe_mismatch(decoder, state)
            if problem:
                raise CheckpointError(f"decoder weights {path} do not fit this VLSM's decoder "
                                      f"({self.describe()}): {problem}")
            decoder.load_state_dict(state)
        return decoder.to(self.device)

    def _run_decoder(self, decoder, activations, conditional):
        return decoder(activations, conditional)

    def describe(self) -> str:
        return self.spec.describe(self.backbone.describe())


def tiny_clipseg_config():
    """A CLIPSeg configuration small enough for tests on a CPU (CLIP's tokenizer vocabulary, 64 px)."""
    from transformers import CLIPSegConfig

    return CLIPSegConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=2, max_position_embeddings=77),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=32, extract_layers=[1, 2, 3], reduce_dim=16, decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )


def load_clipseg(model: str, revision: str | None = None):
    """CLIPSegForImageSegmentation from the hub, a local folder, or ``tiny-random`` (seeded random weights)."""
    from transformers import CLIPSegForImageSegmentation

    if model == TINY_RANDOM:
        state = torch.random.get_rng_state()
        torch.manual_seed(0)  # the same tiny model on every machine
        try:
            return CLIPSegForImageSegmentation(tiny_clipseg_config())
        finally:
            torch.random.set_rng_state(state)
    try:
        return CLIPSegForImageSegmentation.from_pretrained(model, revision=revision)
    except OSError as exc:
        raise ConfigError(f"CLIPSeg model {model!r} cannot be loaded ({exc}); use a hub id such as "
                          f"{CLIPSEG_HUB_MODELS[0]} (needs a network once), a local folder, or {TINY_RANDOM}") from exc


class ClipSegModel(SegmentationModel):
    """CLIPSeg (transformers) with deep text and visual prompts spliced into its towers."""

    def __init__(self, spec: VLSMSpec, model=None):
        super().__init__()
        self.spec = spec
        self.model = model if model is not None else load_clipseg(spec.model, spec.revision)
        self.model.requires_grad_(False)
        self.model.eval()
        config = self.model.config
        self.extract_layers = list(config.extract_layers)
        self.image_size = spec.image_size or (config.vision_config.image_size if spec.model == TINY_RANDOM
                                              else CLIPSEG_IMAGE_SIZE)
        # CLIPSeg was trained on ImageNet-normalised images (its processor's image_mean / image_std)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        # CLIP's BPE vocabulary, as CLIPSeg's tokenizer; the context is the text tower's position count
        self.tokenizer = open_clip.SimpleTokenizer(context_length=config.text_config.max_position_embeddings)

    @property
    def _text(self):
        return self.model.clip.text_model

    @property
    def _vision(self):
        return self.model.clip.vision_model

    @property
    def _token_embedding(self) -> nn.Embedding:
        return self._text.embeddings.token_embedding

    def tokenize(self, texts):
        return tokenize_fitting(self.tokenizer, texts, self.context_length, self.device)

    def embed_tokens(self, tokens):
        return self._token_embedding(tokens)

    @property
    def dtype(self) -> torch.dtype:
        return self._token_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self._token_embedding.weight.device

    @property
    def context_length(self) -> int:
        return self.model.config.text_config.max_position_embeddings

    @property
    def text_width(self) -> int:
        return self.model.config.text_config.hidden_size

    @property
    def text_layers(self) -> int:
        return self.model.config.text_config.num_hidden_layers

    @property
    def vision_width(self) -> int:
        return self.model.config.vision_config.hidden_size

    @property
    def vision_layers(self) -> int:
        return self.model.config.vision_config.num_hidden_layers

    @property
    def embed_dim(self) -> int:
        return self.model.config.projection_dim

    def encode_text_embeds(self, embeds, eot_positions, deep_prompts=None, normalize=False):
        prompts = deep_prompts or {}
        check_layers(prompts, self.text_layers, self.text_width, "text")
        length = embeds.shape[1]
        positions = self._text.embeddings.position_embedding.weight[:length]
        x = embeds.to(self.dtype) + positions
        causal = torch.full((length, length), float("-inf"), dtype=x.dtype, device=x.device).triu(1)[None, None]
        x = run_text_blocks(self._text.encoder.layers, x, None, prompts,
                            run_block=lambda block, h: block(h, attention_mask=causal))
        x = self._text.final_layer_norm(x)
        x = self.model.clip.text_projection(x[torch.arange(x.shape[0], device=x.device), eot_positions])
        return F.normalize(x, dim=-1) if normalize else x

    def image_activations(self, images, deep_prompts=None, pooled=False):
        prompts = deep_prompts or {}
        check_layers(prompts, self.vision_layers, self.vision_width, "image")
        x = self._vision.embeddings(images.to(self.dtype), interpolate_pos_encoding=True)
        n_prompts = 0
        if 0 in prompts:
            x = insert_after_class_token(x, prompts[0])
            n_prompts = prompts[0].shape[-2]
        deeper = {layer: tokens for layer, tokens in prompts.items() if layer > 0}
        x, n_prompts, tapped = run_vision_blocks(
            self._vision.encoder.layers, self._vision.pre_layrnorm(x), deeper, n_prompts, taps=self.extract_layers,
            stop_after=None if pooled else max(self.extract_layers), run_block=lambda block, h: block(h, None),
        )
        feature = self.model.clip.visual_projection(self._vision.post_layernorm(x[:, 0])) if pooled else None
        return tapped, feature

    def new_decoder(self) -> nn.Module:
        return copy.deepcopy(self.model.decoder)

    def _run_decoder(self, decoder, activations, conditional):
        pairs = pair_up(activations, conditional.shape[0] // activations[0].shape[0])
        logits = decoder(pairs, conditional).logits
        return logits.view(conditional.shape[0], *logits.shape[-2:])  # CLIPSeg squeezes a batch of one

    def describe(self) -> str:
        return self.spec.describe("")


def build_vlsm(spec: VLSMSpec, backbone: ClipBackbone | None = None) -> SegmentationModel:
    """The VLSM of ``spec``; ``clip_decoder`` runs on ``backbone`` (the suite's)."""
    if spec.kind == "clipseg":
        return ClipSegModel(spec)
    if backbone is None:
        raise ConfigError("vlsm kind clip_decoder needs a backbone")
    return ClipDecoderModel(backbone, spec)


__all__ = ["ClipDecoderModel", "ClipSegModel", "ConditionalDecoder", "SegmentationModel", "VLSMSpec", "build_vlsm"]

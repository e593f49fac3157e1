"""ClipBackbone: a frozen open_clip model, the only code in vlpt that touches open_clip internals."""
from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Hashable, Sequence

import open_clip
from open_clip.transformer import QuickGELU
import torch
import torch.nn.functional as F
from torch import nn

from vlpt.backbone.deep_prompts import (
    DeepPromptTokens,
    check_layers,
    insert_after_class_token,
    run_text_blocks,
    run_vision_blocks,
)
from vlpt.backbone.text import TextTower
from vlpt.errors import CheckpointError, ConfigError
from vlpt.paths import STARTER_WEIGHTS

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)

#: pretrained tags that name a checkpoint shipped with vlpt instead of an open_clip download
SHIPPED_WEIGHTS = {"vlpt-starter": STARTER_WEIGHTS}
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
MEMO_ENTRIES = 256

#: ``edit(layer, block, h, attend)``: what a block adds to its residual stream in place of its attention output
#: ([B, L, W], batch first), given the block's index, the block, its normalised input ``h`` and ``attend()``, which
#: computes the block's own attention output on ``h`` (an edit that replaces it need not call it)
AttentionEdit = Callable[[int, nn.Module, torch.Tensor, Callable[[], torch.Tensor]], torch.Tensor]


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a .safetensors or torch file (a ``state_dict`` entry is unwrapped)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure means the file is not a checkpoint
        raise CheckpointError(f"checkpoint file {path} cannot be read: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint file {path} holds {type(state).__name__}, expected a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def describe_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """A short description of how ``state`` fails to fit ``model``, or None when it fits."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) such as {missing[:3]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) such as {unexpected[:3]}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) such as {shapes[:2]}")
    return "; ".join(parts) or None


def tokenize_fitting(tokenizer, texts: Sequence[str], context_length: int, device) -> torch.Tensor:
    """Token ids ``[N, context_length]`` on ``device``; a text cut off by the context raises ConfigError."""
    tokens = tokenizer(list(texts))
    for text, row in zip(texts, tokens):
        if row[-1] != 0:
            raise ConfigError(f"text {text!r} is longer than the backbone's context of {context_length} tokens")
    return tokens.to(device)


def checkpoint_file(pretrained: str | None) -> Path | None:
    """The local file ``pretrained`` names (a shipped tag or a path), or None for an open_clip tag or no weights."""
    if not pretrained:
        return None
    if pretrained in SHIPPED_WEIGHTS:
        return SHIPPED_WEIGHTS[pretrained]
    if Path(pretrained).suffix in CHECKPOINT_SUFFIXES or Path(pretrained).exists():
        return Path(pretrained)
    return None


def metadata_quick_gelu(path: Path) -> bool | None:
    """The activation a .safetensors checkpoint states in its metadata (``quick_gelu: true|false``), or None."""
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            value = (handle.metadata() or {}).get("quick_gelu")
    except Exception:  # an unreadable file: the loader reports it, naming the file
        return None
    if value is None:
        return None
    if value.strip().lower() not in ("true", "false"):
        raise CheckpointError(f"checkpoint {path}: metadata quick_gelu = {value!r}, expected true or false")
    return value.strip().lower() == "true"


def implied_quick_gelu(model_name: str, pretrained: str | None) -> tuple[bool | None, str]:
    """The activation the weights imply (True: QuickGELU) and what says so; None for a checkpoint file
    that states none on an architecture whose config names none.

    An open_clip pretrained tag decides by its config (OpenAI's CLIP weights were trained with QuickGELU;
    open_clip's plain ``ViT-B-16`` would only warn and compute with GELU), else by the architecture's; a
    checkpoint file by its ``quick_gelu`` metadata, else by an architecture that names it (``-quickgelu``);
    vlpt's shipped and random weights by the architecture's config.
    """
    model_cfg = open_clip.get_model_config(model_name) or {}
    architecture = bool(model_cfg.get("quick_gelu", False)), f"architecture {model_name}"
    checkpoint = checkpoint_file(pretrained)
    if pretrained and checkpoint is None:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise ConfigError(
                f"pretrained tag {pretrained!r} is not known for {model_name}; valid tags: "
                f"{', '.join(tags) or 'none'}, {', '.join(SHIPPED_WEIGHTS)}, or a checkpoint file path"
            )
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        if "quick_gelu" in tag_cfg:
            return bool(tag_cfg["quick_gelu"]), f"pretrained tag {pretrained!r} of {model_name}"
        return architecture
    if checkpoint is not None and pretrained not in SHIPPED_WEIGHTS:
        if not checkpoint.exists():
            raise CheckpointError(f"checkpoint file {checkpoint} does not exist")
        if not checkpoint.is_file():
            raise CheckpointError(f"checkpoint {checkpoint} is not a file")
        stated = metadata_quick_gelu(checkpoint)
        if stated is not None:
            return stated, f"checkpoint {checkpoint}'s metadata"
        return architecture if "quick_gelu" in model_cfg else (None, f"checkpoint {checkpoint}")
    return architecture


def resolve_quick_gelu(model_name: str, pretrained: str | None, stated: bool | None = None) -> bool | None:
    """Whether the model must run QuickGELU (``x * sigmoid(1.702 x)``) instead of GELU: what the weights
    imply (``implied_quick_gelu``); ``stated`` (the suite's ``backbone.quick_gelu``) decides where they
    cannot tell and for random weights, and must agree elsewhere. None when nothing tells."""
    implied, source = implied_quick_gelu(model_name, pretrained)
    if implied is None or (pretrained is None and stated is not None):
        return stated  # a checkpoint that cannot tell, or random weights: the suite's choice
    if stated is not None and stated != implied:
        raise ConfigError(f"backbone quick_gelu: {str(stated).lower()} contradicts the {source}, "
                          f"which computes with {'QuickGELU' if implied else 'GELU'}")
    return implied


def activation_suffix(model_name: str, pretrained: str | None, stated: bool | None) -> str:
    """``+quickgelu`` or ``+gelu`` for a backbone identity whose activation the suite chose (a checkpoint
    that cannot tell, or random weights against their architecture); empty where the weights decide."""
    if stated is None or stated == implied_quick_gelu(model_name, pretrained)[0]:
        return ""
    return "+quickgelu" if stated else "+gelu"


class ClipBackbone(nn.Module, TextTower):
    """A frozen open_clip CLIP model with text-embedding injection and deep prompts (a :class:`TextTower`).

    ``model_name`` is any open_clip architecture (``open_clip.list_models()`` plus vlpt's own
    ``vlpt-starter-vit``); ``pretrained`` is an open_clip pretrained tag (downloaded), a shipped tag
    (``vlpt-starter``), a local checkpoint path, or None for random weights. The MLP activation
    follows the weights (see ``resolve_quick_gelu``); ``quick_gelu`` states it where they cannot tell.
    """

    def __init__(self, model_name: str, pretrained: str | None = None, precision: str = "fp32",
                 quick_gelu: bool | None = None):
        super().__init__()
        if model_name not in open_clip.list_models():
            raise ConfigError(
                f"unknown backbone architecture {model_name!r}; see open_clip.list_models() "
                f"(vlpt adds: {', '.join(p.stem for p in MODEL_CONFIG_DIR.glob('*.json'))})"
            )
        self.model_name = model_name
        self.pretrained = pretrained
        self.stated_quick_gelu = quick_gelu
        resolved = resolve_quick_gelu(model_name, pretrained, quick_gelu)
        self.model = self._create(model_name, pretrained, precision, bool(resolved))  # a bad file is named first
        if resolved is None:
            raise ConfigError(
                f"checkpoint {pretrained}: its activation cannot be known; state it in the suite's backbone "
                f"(quick_gelu: true for weights trained with QuickGELU, such as OpenAI's CLIP; false for GELU)"
            )
        self.quick_gelu = resolved
        self.model.requires_grad_(False)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.preprocess_cfg = dict(self.model.visual.preprocess_cfg)
        #: run the text tower over the whole context, as the reference code does (benchmarks, equality tests)
        self.full_text_sequence = False
        self._memo: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    @staticmethod
    def _create(model_name: str, pretrained: str | None, precision: str, quick_gelu: bool) -> nn.Module:
        checkpoint = checkpoint_file(pretrained)
        if checkpoint is None and pretrained:
            # force_quick_gelu before open_clip compares the tag's activation with the config (no false warning)
            return open_clip.create_model(model_name, pretrained=pretrained, precision=precision,
                                          force_quick_gelu=quick_gelu, quick_gelu=quick_gelu)
        open_clip_log = logging.getLogger()
        level = open_clip_log.level
        open_clip_log.setLevel(logging.ERROR)  # open_clip warns "no pretrained weights"; vlpt loads them below
        try:
            model = open_clip.create_model(model_name, pretrained=None, precision=precision, quick_gelu=quick_gelu)
        finally:
            open_clip_log.setLevel(level)
        if checkpoint is not None:
            state = load_state_dict_file(Path(checkpoint))
            problem = describe_mismatch(model, state)
            if problem:
                raise CheckpointError(f"checkpoint {checkpoint} does not fit architecture {model_name}: {problem}")
            dtype = next(model.parameters()).dtype
            model.load_state_dict({k: v.to(dtype) for k, v in state.items()})
        return model

    def remember(self, key: Hashable, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Memoize a tensor that depends only on the frozen weights and ``key`` (per device).

        Class-text embeddings of fixed prompts are the typical case: methods that switch class
        lists often (multitask training, novel-class evaluation) then encode each list once.
        The least recently used of more than ``MEMO_ENTRIES`` entries are dropped.
        """
        full_key = (key, str(self.device), self.full_text_sequence)
        if full_key in self._memo:
            self._memo.move_to_end(full_key)
        else:
            self._memo[full_key] = compute()
            if len(self._memo) > MEMO_ENTRIES:
                self._memo.popitem(last=False)
        return self._memo[full_key]

    def compile_blocks(self, backend: str = "inductor") -> None:
        """``torch.compile`` every transformer block of both towers in place (prompted forward passes call
        the blocks one by one, so compiling blocks serves every method)."""
        towers = [self.model.transformer, getattr(self.model.visual, "transformer", None)]
        for tower in filter(None, towers):
            for block in tower.resblocks:
                block.compile(backend=backend)

    def train(self, mode: bool = True) -> "ClipBackbone":
        """The backbone stays in eval mode: it is frozen whatever its owner does."""
        return super().train(False)

    # ---- sizes -------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        """The joint embedding's width (open_clip makes ``text_projection`` a tensor, or a Linear with a bias)."""
        projection = self.model.text_projection
        if projection is None:
            return self.text_width
        return projection.out_features if isinstance(projection, nn.Linear) else projection.shape[-1]

    @property
    def device(self) -> torch.device:
        """Where the frozen weights are."""
        return self.model.token_embedding.weight.device

    @property
    def is_vit(self) -> bool:
        """Whether the image tower is a ViT (class token, patch tokens), which image prompts need."""
        return hasattr(self.model.visual, "class_embedding")

    @property
    def patch_size(self) -> int:
        """A ViT image tower's patch side in pixels."""
        if not self.is_vit:
            raise ConfigError(f"{self.model_name}: its image tower is not a ViT and has no patches")
        return self.model.visual.conv1.kernel_size[0]

    def state_fingerprint(self) -> str:
        """A hash of every frozen tensor (names, shapes, dtypes, values) and the activation: what the
        backbone computes, for cache keys."""
        digest = hashlib.blake2b(digest_size=16)
        for name, tensor in self.model.state_dict().items():
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return f"{digest.hexdigest()}-{self.activation}"

    def zero_shot_classifier(self, classnames: Sequence[str], templates: Sequence) -> torch.Tensor:
        """Normalized class embeddings ``[C, D]``, each the mean over the templates (open_clip's builder)."""
        return open_clip.build_zero_shot_classifier(self.model, self.tokenizer, list(classnames), templates,
                                                    device=self.device).T

    @property
    def text_width(self) -> int:
        return self.model.token_embedding.weight.shape[1]

    @property
    def vision_width(self) -> int:
        return self.model.visual.class_embedding.shape[-1]

    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def image_size(self) -> int:
        size = self.preprocess_cfg["size"]
        return size[0] if isinstance(size, (tuple, list)) else size

    @property
    def text_layers(self) -> int:
        return len(self.model.transformer.resblocks)

    @property
    def vision_layers(self) -> int:
        return len(self.model.visual.transformer.resblocks)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    @property
    def dtype(self) -> torch.dtype:
        return self.model.token_embedding.weight.dtype

    # ---- text --------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids ``[N, context_length]``; a text that does not fit raises ConfigError."""
        return tokenize_fitting(self.tokenizer, texts, self.context_length, self.device)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[N, L, text_width]`` (without positional embedding)."""
        return self.model.token_embedding(tokens)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.model.encode_text(tokens, normalize=normalize)

    def encode_text_embeds(
        self,
        embeds: torch.Tensor,
        eot_positions: torch.Tensor,
        deep_prompts: DeepPromptTokens | None = None,
        normalize: bool = False,
    ) -> torch.Tensor:
        """Run the text transformer on given token embeddings ``[N, L, W]``.

        With the tokens' own embeddings this equals ``encode_text`` (to float rounding); learned context
        vectors are spliced into ``embeds`` by the caller. ``deep_prompts`` replace positions 1..n at the
        given layers (see ``deep_prompts.py``). A causal tower runs on the sequence cut after the last
        end-of-text position (``text_sequence_length``): the pooled features cannot see the positions cut.
        """
        model = self.model
        if model.text_pool_type not in ("argmax", "eos"):
            raise ConfigError(f"{self.model_name}: text pooling {model.text_pool_type!r} cannot take learned context")
        prompts = deep_prompts or {}
        check_layers(prompts, self.text_layers, self.text_width, "text")
        length = self.text_sequence_length(eot_positions, embeds.shape[1])
        cast = model.transformer.get_cast_dtype()
        x = embeds[:, :length].to(cast) + model.positional_embedding[:length].to(cast)
        mask = None if model.attn_mask is None else model.attn_mask[:length, :length]
        x = self._batch_first(model.transformer, x)
        x = run_text_blocks(model.transformer.resblocks, x, mask, prompts)
        x = self._batch_first(model.transformer, x)
        x = model.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_positions]
        if model.text_projection is not None:
            x = model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
        return F.normalize(x, dim=-1) if normalize else x

    @property
    def text_is_causal(self) -> bool:
        """Whether each text position attends only to itself and earlier ones (CLIP's causal mask)."""
        return self.model.attn_mask is not None

    def text_sequence_length(self, eot_positions: torch.Tensor, length: int) -> int:
        """How much of a length-``length`` token sequence the text tower must run: up to the last end-of-text
        position for a causal tower (what is pooled cannot depend on later positions), all of it otherwise."""
        if not self.text_is_causal or self.full_text_sequence or eot_positions.numel() == 0:
            return length
        return min(length, int(eot_positions.max()) + 1)

    # ---- image -------------------------------------------------------------------------
    def encode_image(
        self, images: torch.Tensor, deep_prompts: DeepPromptTokens | None = None, normalize: bool = False,
        input_prompts_after_ln_pre: bool = False, attention_edit: AttentionEdit | None = None,
    ) -> torch.Tensor:
        """Image features ``[B, embed_dim]``; ``deep_prompts`` enter a ViT tower at the given layers.

        Layer-0 prompts join the patch tokens before ``ln_pre`` (MaPLe's CLIP code), or after it with
        ``input_prompts_after_ln_pre`` (MVLPT's code for VPT and UPT). ``attention_edit`` rewrites each
        block's attention output before the residual sum (see ``AttentionEdit``)."""
        if not deep_prompts and attention_edit is None:
            return self.model.encode_image(images.to(self.dtype), normalize=normalize)
        x, _ = self._run_vision_tower(images, deep_prompts or {}, after_ln_pre=input_prompts_after_ln_pre,
                                      attention_edit=attention_edit)
        return self._pool_image(x, normalize)

    def image_layer_tokens(
        self, images: torch.Tensor, layers: Sequence[int], deep_prompts: DeepPromptTokens | None = None,
        pooled: bool = False,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Outputs of image blocks ``layers`` (class and patch tokens ``[B, 1+P, W]``, prompts taken out),
        for dense heads such as a segmentation decoder; with ``pooled`` also the image feature ``[B, D]``
        (the tower then runs to the end, else it stops after the last of ``layers``)."""
        layers = list(layers)
        bad = [layer for layer in layers if not 0 <= layer < self.vision_layers]
        if not layers or bad:
            raise ConfigError(f"{self.model_name}: image layers {layers} must be within 0..{self.vision_layers - 1}")
        x, tapped = self._run_vision_tower(images, deep_prompts or {}, taps=layers,
                                           stop_after=None if pooled else max(layers))
        return tapped, (self._pool_image(x) if pooled else None)

    def _run_vision_tower(self, images: torch.Tensor, deep_prompts: DeepPromptTokens, taps: Sequence[int] = (),
                          stop_after: int | None = None, after_ln_pre: bool = False,
                          attention_edit: AttentionEdit | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The ViT tower on ``images`` with deep prompts; the output sequence without prompt tokens and
        the tapped block outputs (see ``run_vision_blocks``). Layer-0 prompts join before ``ln_pre``,
        or after it with ``after_ln_pre``; ``attention_edit`` rewrites the blocks' attention outputs."""
        visual = self.model.visual
        if not hasattr(visual, "class_embedding"):
            raise ConfigError(f"{self.model_name}: deep prompts and layer tokens need a ViT image tower")
        check_layers(deep_prompts, self.vision_layers, self.vision_width, "image")
        x = self.patch_embeddings(images)
        n_prompts = 0
        if 0 in deep_prompts and not after_ln_pre:  # input prompts join the patches before ln_pre (MaPLe's code)
            x = insert_after_class_token(x, deep_prompts[0])
            n_prompts = deep_prompts[0].shape[-2]
        transformer = visual.transformer
        run_block = None if getattr(transformer, "batch_first", True) else _sequence_first_block
        if attention_edit is not None:
            run_block = edited_block_runner(transformer, attention_edit, self.model_name)
        deeper = {layer: tokens for layer, tokens in deep_prompts.items() if layer > 0 or after_ln_pre}
        x, n_prompts, tapped = run_vision_blocks(transformer.resblocks, visual.ln_pre(x), deeper, n_prompts,
                                                 taps=taps, stop_after=stop_after, run_block=run_block)
        return torch.cat([x[:, :1], x[:, 1 + n_prompts:]], dim=1), tapped

    def _pool_image(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        visual = self.model.visual
        pooled, _ = visual._pool(x)
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def patch_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """Class token and patch tokens with positional embeddings ``[B, 1+P, W]``, before ``ln_pre``."""
        visual = self.model.visual
        x = visual.conv1(images.to(self.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        return visual.patch_dropout(x + visual.positional_embedding.to(x.dtype))

    @staticmethod
    def _batch_first(transformer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Swap batch and sequence axes for towers that run sequence-first (a self-inverse step)."""
        return x if getattr(transformer, "batch_first", True) else x.transpose(0, 1)

    @classmethod
    def from_name(cls, text: str) -> "ClipBackbone":
        """The backbone a record, checkpoint or command line names: ``MODEL@PRETRAINED[+quickgelu|+gelu]``."""
        model, pretrained, stated = parse_backbone_name(text)
        return cls(model, pretrained, quick_gelu=stated)

    def describe(self) -> str:
        """Identity string used in run records: ``architecture@weights``, plus ``activation_suffix``."""
        suffix = activation_suffix(self.model_name, self.pretrained, self.stated_quick_gelu)
        return f"{self.model_name}@{self.pretrained or 'random'}{suffix}"

    @property
    def activation(self) -> str:
        """The MLP activation the model computes with (``quick_gelu`` or ``gelu``), read from its modules."""
        quick = any(isinstance(m, QuickGELU) for m in self.model.modules())
        return "quick_gelu" if quick else "gelu"


def edited_block_runner(transformer: nn.Module, edit: AttentionEdit, model_name: str):
    """A ``run_block`` for ``run_vision_blocks`` that runs each block of ``transformer`` as open_clip's
    ``ResidualAttentionBlock`` does, with ``edit`` applied to the attention output before ``ls_1`` and the
    residual sum."""
    blocks = list(transformer.resblocks)
    if not all(hasattr(block, "ln_1") and hasattr(block, "attention") and not hasattr(block, "ln_attn")
               for block in blocks):
        raise ConfigError(f"{model_name}: attention edits need open_clip's ResidualAttentionBlock in the image "
                          f"tower, got {type(blocks[0]).__name__}")
    layer_of = {id(block): index for index, block in enumerate(blocks)}
    batch_first = getattr(transformer, "batch_first", True)

    def run(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        h = block.ln_1(x)

        def attend() -> torch.Tensor:
            out = block.attention(q_x=h if batch_first else h.transpose(0, 1))
            return out if batch_first else out.transpose(0, 1)

        x = x + block.ls_1(edit(layer_of[id(block)], block, h, attend))
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    return run


def parse_backbone_name(text: str) -> tuple[str, str | None, bool | None]:
    """``MODEL@PRETRAINED[+quickgelu|+gelu]`` (as identities print) as (model, pretrained or None for random
    weights, the stated activation or None)."""
    model, _, pretrained = str(text).partition("@")
    stated = None
    for suffix, value in (("+quickgelu", True), ("+gelu", False)):
        if pretrained.endswith(suffix):
            pretrained, stated = pretrained.removesuffix(suffix), value
    if not model:
        raise ConfigError(f"backbone {text!r} must be MODEL@PRETRAINED, e.g. ViT-B-16@openai")
    return model, None if pretrained in ("", "random") else pretrained, stated


def _sequence_first_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Call a block of a sequence-first tower on a batch-first ``x``."""
    return block(x.transpose(0, 1)).transpose(0, 1)

"""CoCoOp: Conditional Context Optimization (Zhou et al., "Conditional Prompt Learning for
Vision-Language Models", CVPR 2022).

A meta-net maps each image's feature to a bias added to every context token, so each image
gets its own prompts: ``v_m(x) = v_m + pi(x)``. The prompts of several images (all classes of
each) go through the text encoder in one pass; the result equals the per-image loop of the paper.

How many images share a pass follows from a memory budget, ``chunk_memory_mb`` (MiB of text-encoder
activations per pass): ``CoCoOp.images_per_chunk_for(n_classes)`` divides it by the estimated cost
of one image's prompts (see ``activation_bytes_per_prompt``), which is far lower without gradients
(evaluation) than in training, so evaluation takes larger chunks. ``images_per_chunk`` fixes the
number instead. When a training batch needs more than one pass, each pass is recomputed in the
backward pass (activation checkpointing), so the budget bounds the activations alive at any time
rather than those of each pass only; a batch within one pass costs no recomputation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from vlpt.backbone import ClipBackbone
from vlpt.errors import ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod
from vlpt.prompts.meta_net import conditional_context, encode_conditional
from vlpt.registry import register_method

MIB = 2 ** 20
#: CLIP's attention head width; the text tower has ``width / 64`` heads in every released model
HEAD_WIDTH = 64


def activation_bytes_per_prompt(backbone: ClipBackbone, grad: bool, length: int | None = None) -> int:
    """Estimated text-encoder activation bytes for one prompt sequence of ``length`` tokens (default: the whole
    context; the tower runs causal prompts cut after their end-of-text token), with or without gradients.

    Per token, in elements of the backbone's dtype, with width W, L tokens and H = W / 64 heads:

    * with gradients, autograd keeps for every pre-LN block ``h = x + attn(ln_1(x))``,
      ``y = h + mlp(ln_2(h))``: the block input x (for ln_1's backward) 1 W, q, k and v 3 W, the
      attention output 1 W, the mid-block residual h (ln_2) 1 W, and the MLP's 4x-wide hidden
      pre-activation (GELU's backward) 4 W: 10 W per layer. The LayerNorm and GELU outputs are not kept:
      they feed only linear layers with frozen weights, whose input gradient needs the weight alone.
      A fused attention kernel keeps nothing more; a plain one also keeps the softmax probabilities,
      H x L per token, counted here so the estimate holds for either. The backward pass of a block
      needs about as much again for its gradients while the block's saved tensors are still held,
      so one more layer's worth is added; outside the blocks, the prompts and the final LayerNorm's
      input add 2 W. Total: (layers + 1) x (10 W + H L) + 2 W.
    * without gradients, nothing outlives its block, so the peak is inside one block: the block input
      and the residual h (2 W), the MLP's hidden activation before and after GELU (8 W), the prompts
      and their sum with the positional embedding (2 W), plus the attention scores H L: 12 W + H L,
      whatever the depth.
    """
    width, length = backbone.text_width, length or backbone.context_length
    scores = max(1, width // HEAD_WIDTH) * length
    if grad:
        per_token = (backbone.text_layers + 1) * (10 * width + scores) + 2 * width
    else:
        per_token = 12 * width + scores
    return length * per_token * backbone.dtype.itemsize


@dataclass
class CoCoOpConfig(MethodConfig):
    result_neutral = ("images_per_chunk", "chunk_memory_mb")  # text-tower chunks: the same gradients
    n_ctx: int = 4
    ctx_init: str | None = "a photo of a"
    init_std: float = 0.02
    batch_size: int = 1
    epochs: int | dict[int, int] = 10
    #: MiB of text-encoder activations one pass may use: it sets how many images' prompts share a pass
    #: (ViT-B/16, fp32, training: about 22 MiB per class and image, so 2048 takes 9 images of 10 classes)
    chunk_memory_mb: float = 2048.0
    #: a fixed number of images per text-encoder pass instead of the budget (None: from chunk_memory_mb)
    images_per_chunk: int | None = None

    def __post_init__(self):
        super().__post_init__()
        budget = self.chunk_memory_mb
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) \
                or budget <= 0:
            raise ConfigError(f"chunk_memory_mb must be a positive finite number of MiB, got {budget!r}")
        chunk = self.images_per_chunk
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ConfigError(f"images_per_chunk must be an integer of at least 1, or None to follow "
                              f"chunk_memory_mb, got {chunk!r}")


@register_method("cocoop")
class CoCoOp(PromptMethod):
    """Instance-conditional context: shared context plus a meta-net bias per image."""

    Config = CoCoOpConfig
    frozen_image_features = True

    def build(self, classnames, templates):
        cfg = self.config
        self.context, self.meta_net = conditional_context(self.backbone, classnames, cfg.n_ctx, cfg.ctx_init,
                                                          cfg.init_std)

    def update_classnames(self, classnames, templates):
        self.context.set_classnames(classnames)

    def activation_bytes_per_image(self, n_classes: int, grad: bool | None = None) -> int:
        """Estimated text-encoder activation bytes of one image's ``n_classes`` prompts.

        ``grad`` defaults to ``torch.is_grad_enabled()``.
        """
        grad = torch.is_grad_enabled() if grad is None else grad
        length = self.backbone.text_sequence_length(self.context.eot_positions, self.backbone.context_length)
        return n_classes * activation_bytes_per_prompt(self.backbone, grad, length)

    def images_per_chunk_for(self, n_classes: int, grad: bool | None = None) -> int:
        """Images whose prompts share one text-encoder pass: ``images_per_chunk`` if set, else
        ``floor(chunk_memory_mb / cost of one image)``, at least 1. ``grad`` defaults to
        ``torch.is_grad_enabled()``."""
        if self.config.images_per_chunk is not None:
            return self.config.images_per_chunk
        budget = self.config.chunk_memory_mb * MIB
        return max(1, math.floor(budget / self.activation_bytes_per_image(n_classes, grad)))

    def logits(self, images):
        image_features = F.normalize(self.image_features(images), dim=-1)
        scale = self.backbone.logit_scale
        chunks = image_features.split(self.images_per_chunk_for(len(self.context.classnames)))
        # In training, autograd would keep every chunk's activations until the backward pass, so chunks
        # alone bound nothing: with more than one, each chunk keeps only its image features and its
        # text-tower pass is recomputed in the backward pass, one chunk at a time (one extra forward).
        recompute = torch.is_grad_enabled() and len(chunks) > 1
        logits = []
        for feats in chunks:
            if recompute:
                text = checkpoint(self._conditional_text_features, feats, use_reentrant=False)
            else:
                text = self._conditional_text_features(feats)
            logits.append(scale * torch.einsum("bd,bcd->bc", feats, text))
        return torch.cat(logits)

    def _conditional_text_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """Normalised text features ``[b, C, D]`` of each image's own prompts, in one text-tower pass."""
        return encode_conditional(self.backbone, self.context, self.meta_net(image_features), normalize=True)

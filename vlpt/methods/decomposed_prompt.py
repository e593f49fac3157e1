"""Decomposed prompts on CLIP's text tower, after Shi & Lipani ("DePT: Decomposed Prompt Tuning for Parameter-
Efficient Fine-tuning", ICLR 2024; not Zhang et al.'s Decoupled Prompt Tuning, ``vlpt.methods.dept``).

The paper shortens a soft prompt and spends the parameters saved on a low-rank update of the frozen input
embeddings: the sequence's token embeddings get ``A B`` added position by position (``A``: positions x rank,
``B``: rank x width), and the prompt and the update train at two learning rates. Here the prompt is CoOp's
learned context, shortened (``n_ctx`` 8 against CoOp's 16), and the update covers every position after the
context: the class name's tokens, the period, the end of text and whatever follows (the rest of an initialisation
phrase longer than ``n_ctx``; padding, which a causal tower never reads), the same update for every class, so the
method scores classes it never saw. ``rank: null`` picks the largest rank whose parameters, with the short context's,
fit in the budget of a CoOp context of ``budget_tokens`` (16) tokens, which is how the paper compares: at equal
trainable parameters.

vlpt's reading where the paper (on T5) leaves CLIP open: ``A`` starts at zero (so training starts from CoOp with
the short context exactly, and positions past every training prompt's end of text, which get no gradient under
CLIP's causal mask, keep a zero update for longer names seen later) and ``B`` from a uniform Kaiming
initialisation; the update is added
unscaled; CoOp's optimizer, schedule and epochs; the update's learning rate ``low_rank_lr`` (null: the prompt's;
the paper's ratio of about 1/3000 is tuned for Adafactor-style steps on T5's embeddings and leaves the update
unmoved under CoOp's SGD here). Only a shared context with the class token at the end is supported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vlpt.errors import ConfigError
from vlpt.methods.coop import CoOp, CoOpConfig
from vlpt.registry import register_method


@dataclass
class DecomposedPromptConfig(CoOpConfig):
    n_ctx: int = 8
    #: rank of the embedding update; null: the largest that keeps the parameters within budget_tokens' budget
    rank: int | None = None
    #: the CoOp context length whose parameter count the decomposition matches (rank: null)
    budget_tokens: int = 16
    #: learning rate of the low-rank update (null: the prompt's lr)
    low_rank_lr: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.csc or self.class_token_position != "end":
            raise ValueError("decomposed prompts take a shared context with the class token at the end "
                             "(csc: false, class_token_position: end)")
        if self.rank is not None and self.rank < 0:
            raise ValueError(f"rank must be at least 0 (or null: from budget_tokens), got {self.rank}")
        if self.budget_tokens < self.n_ctx:
            raise ValueError(f"budget_tokens ({self.budget_tokens}) must be at least n_ctx ({self.n_ctx})")
        if self.low_rank_lr is not None and self.low_rank_lr <= 0:
            raise ValueError(f"low_rank_lr must be positive, got {self.low_rank_lr}")


def budget_rank(budget_tokens: int, n_ctx: int, positions: int, width: int) -> int:
    """The largest rank r with ``n_ctx * width + r * (positions + width) <= budget_tokens * width``."""
    return (budget_tokens - n_ctx) * width // (positions + width)


@register_method("decomposed_prompt")
class DecomposedPrompt(CoOp):
    """A short CoOp context plus a low-rank, position-wise update of the embeddings after it."""

    Config = DecomposedPromptConfig

    def build(self, classnames, templates):
        super().build(classnames, templates)
        cfg, width = self.config, self.backbone.text_width
        n_ctx = self.context.n_ctx  # learned tokens: fewer than n_ctx when ctx_init is a shorter phrase
        positions = self.context.tokens.shape[1] - 1 - n_ctx
        rank = budget_rank(cfg.budget_tokens, n_ctx, positions, width) if cfg.rank is None else cfg.rank
        if rank < 1:
            raise ConfigError(f"decomposed_prompt: a budget of {cfg.budget_tokens} tokens leaves no room for a "
                              f"rank-1 update beside {n_ctx} context tokens ({positions} positions x width "
                              f"{width}); raise budget_tokens or set rank")
        dtype = self.backbone.dtype
        # A starts at zero: the update is zero at first, and the rows of positions no training prompt reaches (past
        # its end of text, which a causal tower never lets back) stay zero for longer class names seen later
        self.update_a = nn.Parameter(torch.zeros(positions, rank, dtype=dtype))
        self.update_b = nn.Parameter(torch.empty(rank, width, dtype=dtype))
        nn.init.kaiming_uniform_(self.update_b, a=math.sqrt(5))

    def embedding_update(self) -> torch.Tensor:
        """The low-rank update ``[positions, width]`` added to the embeddings after the context."""
        return self.update_a @ self.update_b

    def text_features(self):
        prompts = self.context()
        start = 1 + self.context.n_ctx
        prompts = torch.cat([prompts[:, :start], prompts[:, start:] + self.embedding_update()], dim=1)
        return self.backbone.encode_text_embeds(prompts, self.context.eot_positions)

    def build_optimizer(self, params):
        """Two groups: the context at ``lr``, the low-rank update at ``low_rank_lr``."""
        cfg = self.config
        update = {id(self.update_a), id(self.update_b)}
        groups = [{"params": [p for p in params if id(p) not in update]},
                  {"params": [p for p in params if id(p) in update], "lr": cfg.low_rank_lr or cfg.lr}]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

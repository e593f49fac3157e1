"""TextTower: the text side that prompt building blocks work on.

A text tower tokenizes with CLIP's BPE vocabulary, embeds tokens, and runs its transformer on token
embeddings the caller may have edited (learned context spliced in), with deep prompts replacing
positions ``1 .. n`` at chosen layers (see ``deep_prompts.py``). :class:`~vlpt.backbone.ClipBackbone`
implements it for open_clip models; the segmentation models of ``vlpt.seg.vlsm`` implement it for
their own text towers (CLIPSeg's) or by delegating to a ``ClipBackbone``. ``TextContext`` and the other
blocks of ``vlpt.prompts`` use nothing else of a backbone's text side.
"""
from __future__ import annotations

import abc
from typing import Sequence

import torch

from vlpt.backbone.deep_prompts import DeepPromptTokens


class TextTower(abc.ABC):
    """A frozen CLIP-style text encoder that takes token embeddings and deep prompts."""

    @abc.abstractmethod
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids ``[N, context_length]`` on ``device``; a text that does not fit raises ConfigError."""

    @abc.abstractmethod
    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[N, L, text_width]`` (without positional embedding)."""

    def eot_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Position of the end-of-text token in each row (CLIP's is the highest id)."""
        return tokens.argmax(dim=-1)

    @abc.abstractmethod
    def encode_text_embeds(self, embeds: torch.Tensor, eot_positions: torch.Tensor,
                           deep_prompts: DeepPromptTokens | None = None, normalize: bool = False) -> torch.Tensor:
        """Text features ``[N, embed_dim]`` from token embeddings ``[N, L, W]``, pooled at ``eot_positions``."""

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Features ``[N, embed_dim]`` of hand-written texts."""
        tokens = self.tokenize(texts)
        return self.encode_text_embeds(self.embed_tokens(tokens), self.eot_positions(tokens))

    @property
    @abc.abstractmethod
    def text_width(self) -> int: ...

    @property
    @abc.abstractmethod
    def text_layers(self) -> int: ...

    @property
    @abc.abstractmethod
    def context_length(self) -> int: ...

    @property
    @abc.abstractmethod
    def embed_dim(self) -> int:
        """The width of the text features (the joint embedding's)."""

    @property
    @abc.abstractmethod
    def dtype(self) -> torch.dtype: ...

    @property
    @abc.abstractmethod
    def device(self) -> torch.device: ...

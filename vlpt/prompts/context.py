"""Learnable text context, the building block of CoOp-style prompts.

A prompt for class ``c`` is the token-embedding sequence
``[SOS] [V_1 .. V_M] [CLASS_c] [.] [EOT] [pad ...]`` where ``V_1..V_M`` are learned
(Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022). The context is
shared by all classes or class-specific (CSC), initialised from a phrase such as
"a photo of a" or from N(0, init_std); the class token sits at the end, middle or front.
With a phrase, the first ``min(n_ctx, phrase length)`` tokens are learned and the rest of the
phrase stays fixed text (MaPLe learns "a photo" of "a photo of a"); CoOp uses the whole phrase.
It works on any :class:`~vlpt.backbone.text.TextTower` (a ``ClipBackbone`` or a segmentation model).
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from vlpt.backbone.text import TextTower
from vlpt.errors import ConfigError

ClassTokenPosition = Literal["end", "middle", "front"]


def readable(classname: str) -> str:
    """Class names are written with spaces in prompts ("_" becomes " ")."""
    return classname.replace("_", " ")


class TextContext(nn.Module):
    """Learned context vectors and the frozen token embeddings around them."""

    def __init__(
        self,
        tower: TextTower,
        classnames: Sequence[str],
        n_ctx: int = 16,
        ctx_init: str | None = None,
        csc: bool = False,
        class_token_position: ClassTokenPosition = "end",
        init_std: float = 0.02,
        learned: bool = True,
        pad_init: bool = False,
        template: str = "{ctx} {}.",
    ):
        super().__init__()
        if not template.startswith("{ctx}") or "{}" not in template:
            raise ConfigError(f"a prompt template starts with {{ctx}} (the context) and holds {{}} (the class name), "
                              f"got {template!r}")
        if template != "{ctx} {}." and class_token_position != "end":
            raise ConfigError("a prompt template of its own needs class_token_position 'end'")
        #: the prompt's text: ``{ctx}`` the learned context's placeholder, ``{}`` the class name
        self.template = template
        if class_token_position not in ("end", "middle", "front"):
            raise ConfigError(f"class_token_position {class_token_position!r}: expected end, middle or front")
        self.tower = [tower]  # a list keeps the frozen tower out of this module's parameters
        self.csc = csc
        self.class_token_position = class_token_position
        width = tower.text_width
        if ctx_init and pad_init:
            ctx = self._padded_init(tower, ctx_init, n_ctx, csc, len(classnames), class_token_position)
        elif ctx_init:
            init_tokens = tower.tokenize([ctx_init])
            n_ctx = min(n_ctx, int(tower.eot_positions(init_tokens)[0]) - 1)
            if n_ctx < 1:
                raise ConfigError(f"n_ctx must be at least 1, got {n_ctx}")
            if class_token_position != "end" and n_ctx < int(tower.eot_positions(init_tokens)[0]) - 1:
                raise ConfigError("a partly learned init phrase needs class_token_position 'end'")
            with torch.no_grad():
                init = tower.embed_tokens(init_tokens)[0, 1:1 + n_ctx].clone()
            ctx = init.unsqueeze(0).repeat(len(classnames), 1, 1) if csc else init
            self.placeholder = ctx_init
        else:
            if n_ctx < 1:
                raise ConfigError(f"n_ctx must be at least 1, got {n_ctx}")
            shape = (len(classnames), n_ctx, width) if csc else (n_ctx, width)
            ctx = torch.randn(shape, dtype=tower.dtype) * init_std
            self.placeholder = " ".join(["X"] * n_ctx)
        self.n_ctx = n_ctx
        if learned:
            self.ctx = nn.Parameter(ctx.to(tower.dtype))
        else:  # the context comes from elsewhere at every call (a shared prompt space); this is its initial value
            self.register_buffer("ctx", ctx.to(tower.dtype), persistent=False)
        self.set_classnames(classnames)

    def _padded_init(self, tower: TextTower, ctx_init: str, n_ctx: int, csc: bool, n_classes: int,
                     class_token_position: str) -> torch.Tensor:
        """ProGrad's initialisation (``pad_init``): ``n_ctx`` vectors, zeros followed by the phrase's first W token
        embeddings, W its number of space-separated words (its code counts words); the prompt text is ``n_ctx - W``
        placeholders and the phrase, so phrase tokens beyond the first W (a comma makes one more) stay fixed before the
        name."""
        words = len(ctx_init.split(" "))
        if n_ctx < words:
            raise ConfigError(f"n_ctx {n_ctx} is shorter than the {words} words of the init phrase {ctx_init!r}")
        if class_token_position != "end":
            raise ConfigError("a padded init phrase needs class_token_position 'end'")
        with torch.no_grad():
            phrase = tower.embed_tokens(tower.tokenize([ctx_init]))[0, 1:1 + words]
        init = torch.cat([phrase.new_zeros(n_ctx - words, phrase.shape[-1]), phrase])
        self.placeholder = " ".join(["X"] * (n_ctx - words) + [ctx_init])
        return init.unsqueeze(0).repeat(n_classes, 1, 1) if csc else init

    def set_classnames(self, classnames: Sequence[str]) -> None:
        """Rebuild the frozen parts of every prompt for a new list of class names."""
        if self.csc and len(classnames) != self.ctx.shape[0]:
            raise ConfigError(
                f"class-specific context was learned for {self.ctx.shape[0]} classes and cannot serve "
                f"{len(classnames)} other classes"
            )
        tower = self.tower[0]
        names = [readable(c) for c in classnames]
        tokens = tower.tokenize([self.template.format(name, ctx=self.placeholder) for name in names])
        with torch.no_grad():
            embeds = tower.embed_tokens(tokens)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("prefix", embeds[:, :1], persistent=False)
        self.register_buffer("suffix", embeds[:, 1 + self.n_ctx:], persistent=False)
        # the name's tokens counted on the name alone, as CoOp's code does: for a name whose last token merges
        # with the period ("kite (bird of prey)" ends in ")."), the class part then includes the merged token
        self.name_lengths = (tower.eot_positions(tower.tokenize(names)) - 1).tolist()
        self.classnames = list(classnames)

    @property
    def eot_positions(self) -> torch.Tensor:
        return self.tokens.argmax(dim=-1)

    def forward(self, ctx_shift: torch.Tensor | None = None, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Prompt embeddings ``[C, L, W]``; with a per-image ``ctx_shift`` ``[B, W]``, ``[B, C, L, W]``.

        ``ctx`` replaces the context vectors (``[n_ctx, W]``) for this call (made by another module).
        """
        n_classes = self.prefix.shape[0]
        ctx = self.ctx if ctx is None else ctx
        ctx = ctx if self.csc else ctx.unsqueeze(0).expand(n_classes, -1, -1)
        if ctx_shift is None:
            return self._assemble(ctx, self.prefix, self.suffix)
        return self._assemble_per_image(ctx.unsqueeze(0) + ctx_shift[:, None, None, :])  # [B, C, M, W]

    def per_image(self, contexts: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings ``[B, C, L, W]`` of each image's own shared context ``contexts`` ``[B, n_ctx, W]``."""
        if self.csc:
            raise ValueError("per-image contexts replace a shared context; this one is class-specific (csc)")
        return self._assemble_per_image(contexts.unsqueeze(1).expand(-1, self.prefix.shape[0], -1, -1))

    def _assemble_per_image(self, contexts: torch.Tensor) -> torch.Tensor:
        """``[B, C, L, W]`` from per-image, per-class context vectors ``[B, C, n_ctx, W]``."""
        batch, n_classes = contexts.shape[:2]
        expand = lambda t: t.unsqueeze(0).expand(batch, *t.shape)  # noqa: E731
        flat = self._assemble(
            contexts.flatten(0, 1), expand(self.prefix).flatten(0, 1), expand(self.suffix).flatten(0, 1),
            lengths=self.name_lengths * batch,
        )
        return flat.view(batch, n_classes, *flat.shape[1:])

    def _assemble(self, ctx, prefix, suffix, lengths=None) -> torch.Tensor:
        if self.class_token_position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        lengths = lengths or self.name_lengths
        rows = []
        for i, n_name in enumerate(lengths):
            name, rest = suffix[i:i + 1, :n_name], suffix[i:i + 1, n_name:]
            if self.class_token_position == "front":
                rows.append(torch.cat([prefix[i:i + 1], name, ctx[i:i + 1], rest], dim=1))
            else:
                half = self.n_ctx // 2
                rows.append(torch.cat([prefix[i:i + 1], ctx[i:i + 1, :half], name, ctx[i:i + 1, half:], rest], dim=1))
        return torch.cat(rows, dim=0)

"""Deep prompts: learnable tokens that enter a transformer tower at chosen layers.

One mechanism serves every method that prompts a tower beyond its input (deep VPT,
MaPLe, multitask UPT, segmentation prompts):

* image tower (ViT): at the first prompted layer the tokens are inserted right after
  the class token; at each later prompted layer they *replace* the tokens inserted
  before (VPT-deep, Jia et al. 2022). They are removed again before pooling. Layer-0
  tokens join the patch embeddings before CLIP's ``ln_pre``, as in MaPLe's code.
* text tower: at each prompted layer the tokens replace the sequence positions
  ``1 .. n`` (the learned-context slots after the start token), as MaPLe does
  (Khattak et al. 2023).

Prompts of shape ``[n, width]`` are shared by the batch; ``[B, n, width]`` are per sample.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

DeepPromptTokens = Mapping[int, torch.Tensor]


def _batched(prompt: torch.Tensor, batch_size: int, dtype: torch.dtype) -> torch.Tensor:
    if prompt.dim() == 2:
        prompt = prompt.unsqueeze(0).expand(batch_size, -1, -1)
    return prompt.to(dtype)


def check_layers(prompts: DeepPromptTokens, n_layers: int, width: int, tower: str) -> None:
    """Raise ValueError if a prompt names a layer the tower lacks or has the wrong width."""
    for layer, tokens in prompts.items():
        if not 0 <= layer < n_layers:
            raise ValueError(f"{tower} deep prompt at layer {layer}: the tower has layers 0..{n_layers - 1}")
        if tokens.shape[-1] != width:
            raise ValueError(f"{tower} deep prompt at layer {layer} has width {tokens.shape[-1]}, expected {width}")


def insert_after_class_token(x: torch.Tensor, tokens: torch.Tensor, n_replaced: int = 0) -> torch.Tensor:
    """``x`` ([B, L, W]) with ``tokens`` placed after the class token, replacing ``n_replaced`` old ones."""
    return torch.cat([x[:, :1], _batched(tokens, x.shape[0], x.dtype), x[:, 1 + n_replaced:]], dim=1)


def run_vision_blocks(blocks, x: torch.Tensor, prompts: DeepPromptTokens, n_inserted: int = 0, *,
                      taps: Sequence[int] = (), stop_after: int | None = None,
                      run_block: Callable | None = None) -> tuple[torch.Tensor, int, list[torch.Tensor]]:
    """Run ViT blocks on ``x`` ([B, 1+P, W], batch first) inserting/replacing prompt tokens.

    ``n_inserted`` prompt tokens may already follow the class token. ``taps`` are block indices whose
    outputs are also returned, with the prompt tokens taken out ([B, 1+P, W], for dense heads);
    ``stop_after`` ends the loop after that block; ``run_block(block, x)`` calls a block of another
    signature (default ``block(x)``). Returns the output sequence, the number of prompt tokens it still
    holds (so the caller can drop them before pooling) and the tapped outputs in ``taps`` order.
    """
    tapped: dict[int, torch.Tensor] = {}
    for index, block in enumerate(blocks):
        if index in prompts:
            n_tokens = prompts[index].shape[-2]
            if n_inserted and n_tokens != n_inserted:
                raise ValueError(
                    f"image deep prompt at layer {index} has {n_tokens} tokens, "
                    f"but {n_inserted} were inserted at an earlier layer"
                )
            x = insert_after_class_token(x, prompts[index], n_inserted)
            n_inserted = n_tokens
        x = run_block(block, x) if run_block is not None else block(x)
        if index in taps:
            tapped[index] = torch.cat([x[:, :1], x[:, 1 + n_inserted:]], dim=1)
        if index == stop_after:
            break
    return x, n_inserted, [tapped[index] for index in taps]


def run_text_blocks(blocks, x: torch.Tensor, attn_mask, prompts: DeepPromptTokens,
                    run_block: Callable | None = None) -> torch.Tensor:
    """Run text blocks on ``x`` ([N, L, W], batch first), replacing positions 1..n at prompted layers.

    ``run_block(block, x)`` calls a block of another signature (default ``block(x, attn_mask=attn_mask)``).
    """
    for index, block in enumerate(blocks):
        if index in prompts:
            tokens = _batched(prompts[index], x.shape[0], x.dtype)
            n = tokens.shape[1]
            x = torch.cat([x[:, :1], tokens, x[:, 1 + n:]], dim=1)
        x = run_block(block, x) if run_block is not None else block(x, attn_mask=attn_mask)
    return x


def decomposed_prompt_attention(block: nn.Module, h: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """The attention output of an open_clip block for ``h``'s tokens ([B, L, W], the block's normalised input)
    when ``prompts`` ([M, W], residual-stream tokens, as deep prompts after ``ln_pre``) join its keys and values,
    computed as two parts per head (APT's decomposition): the tokens' own attention weighted by ``1 - lam`` and
    the attention over the prompts weighted by ``lam``, the prompts' share of the softmax mass. Equal to running
    the block on the joined sequence, without computing the prompts' own outputs."""
    attn = block.attn
    heads, width = attn.num_heads, h.shape[-1]
    head = width // heads
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    p = block.ln_1(prompts.to(h.dtype))
    _, k_p, v_p = F.linear(p, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v, k_p, v_p = (t.unflatten(-1, (heads, head)).transpose(-3, -2) for t in (q, k, v, k_p, v_p))
    scores = q @ k.transpose(-1, -2) / head ** 0.5
    prompt_scores = q @ k_p.transpose(-1, -2) / head ** 0.5
    lam = torch.sigmoid(prompt_scores.logsumexp(-1, keepdim=True) - scores.logsumexp(-1, keepdim=True))
    mixed = (1 - lam) * (scores.softmax(-1) @ v) + lam * (prompt_scores.softmax(-1) @ v_p)
    return attn.out_proj(mixed.transpose(-3, -2).flatten(-2))

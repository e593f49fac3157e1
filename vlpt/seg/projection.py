"""TuneVLSeg's small projection networks (``BaseProjectorLearner.get_mlp_projection``).

With an intermediate width: ``Linear(in, hidden)`` and ReLU (weights kaiming-normal for ReLU), then
``Linear(hidden, out)`` without bias when a final LayerNorm follows, then ``LayerNorm(out)`` (with or
without its bias). Without an intermediate width: one ``Linear(in, out)``. TuneVLSeg's MaPLe maps text
prompts to visual ones with it (hidden 64, LayerNorm with bias) and its CoCoOp turns the image feature
into the context bias (hidden 64, no final bias at all).
"""
from __future__ import annotations

from torch import nn


def mlp_projection(in_dim: int, out_dim: int, hidden: int | None, final_norm: bool = True,
                   final_bias: bool = True) -> nn.Module:
    """The projection described in the module docstring."""
    if hidden is None:
        return nn.Linear(in_dim, out_dim)
    first = nn.Linear(in_dim, hidden)
    nn.init.kaiming_normal_(first.weight, nonlinearity="relu")
    layers = [first, nn.ReLU(inplace=True), nn.Linear(hidden, out_dim, bias=final_bias and not final_norm)]
    if final_norm:
        layers.append(nn.LayerNorm(out_dim, bias=final_bias))
    return nn.Sequential(*layers)


__all__ = ["mlp_projection"]

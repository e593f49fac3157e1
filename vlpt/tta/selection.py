"""Which views a test-time step learns from, and the loss on them.

* TPT (Shu et al., NeurIPS 2022): keep the fraction ``rho`` of views whose predicted class
  distribution has the lowest entropy ("confidence selection") and minimise the entropy of their
  averaged distribution, ``H(mean_i p(y | x_i))``.
* DiffTPT (Feng et al., ICCV 2023): first keep the generated views whose CLIP image feature is
  most similar (cosine) to the original's, then apply the entropy selection over all kept views.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def kept_count(total: int, fraction: float) -> int:
    """``int(total * fraction)`` views (as the reference code), but at least one."""
    if not 0 < fraction <= 1:
        raise ValueError(f"selection fraction must be in (0, 1], got {fraction}")
    return max(1, int(total * fraction))


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each row's softmax distribution ``[N]``."""
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def confident_views(logits: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the ``fraction`` of views with the lowest prediction entropy (most confident first)."""
    entropy = prediction_entropy(logits.detach())
    return torch.argsort(entropy, stable=True)[:kept_count(len(entropy), fraction)]


def marginal_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the views' averaged class distribution, computed in log space for stability."""
    log_p = F.log_softmax(logits, dim=-1)
    mean_log_p = torch.logsumexp(log_p, dim=0) - math.log(log_p.shape[0])
    mean_log_p = mean_log_p.clamp(min=torch.finfo(mean_log_p.dtype).min)
    return -(mean_log_p.exp() * mean_log_p).sum()


def similar_views(features: torch.Tensor, reference: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the ``fraction`` of ``features`` ``[M, D]`` most cosine-similar to ``reference`` ``[D]``."""
    similarity = F.cosine_similarity(features, reference.unsqueeze(0), dim=-1)
    return torch.argsort(similarity, descending=True, stable=True)[:kept_count(len(similarity), fraction)]

"""Decomposed prompts (Shi & Lipani): a short CoOp context plus a low-rank update of the embeddings after it,
within CoOp's parameter budget, at two learning rates."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlpt.errors import ConfigError
from vlpt.methods.coop import CoOp
from vlpt.methods.decomposed_prompt import DecomposedPrompt, budget_rank

CLASSES = ["red circle", "green square", "blue star"]
TEMPLATES = ["a photo of a {}."]


def _features(backbone, n=8, seed=0):
    return torch.randn(n, backbone.embed_dim, generator=torch.Generator().manual_seed(seed))


def test_a_zero_update_is_coop_with_the_short_context(tiny_backbone):
    method = DecomposedPrompt(tiny_backbone, CLASSES, TEMPLATES, DecomposedPrompt.Config(n_ctx=4))
    coop = CoOp(tiny_backbone, CLASSES, TEMPLATES, CoOp.Config(n_ctx=4))
    with torch.no_grad():
        coop.context.ctx.copy_(method.context.ctx)
    assert torch.count_nonzero(method.embedding_update()) == 0  # B starts at zero
    x = _features(tiny_backbone)
    assert torch.equal(method.logits(x), coop.logits(x))
    with torch.no_grad():
        method.update_b.normal_()
    assert not torch.allclose(method.logits(x), coop.logits(x))


def test_the_rank_fills_coops_parameter_budget(tiny_backbone):
    width, length = tiny_backbone.text_width, tiny_backbone.context_length
    method = DecomposedPrompt(tiny_backbone, CLASSES, TEMPLATES, DecomposedPrompt.Config(n_ctx=8))
    positions = length - 1 - 8
    rank = method.update_a.shape[1]
    own = sum(p.numel() for p in method.trainable_parameters())
    assert own == 8 * width + rank * (positions + width) <= 16 * width
    assert 8 * width + (rank + 1) * (positions + width) > 16 * width  # the largest rank that fits
    assert rank == budget_rank(16, 8, positions, width) >= 1
    fixed = DecomposedPrompt(tiny_backbone, CLASSES, TEMPLATES, DecomposedPrompt.Config(n_ctx=8, rank=2))
    assert fixed.update_b.shape == (2, width)


def test_two_learning_rates_and_both_parts_learn(tiny_backbone):
    method = DecomposedPrompt(tiny_backbone, CLASSES, TEMPLATES,
                              DecomposedPrompt.Config(n_ctx=4, lr=0.05, low_rank_lr=0.01))
    optimizer = method.build_optimizer(method.trainable_parameters())
    assert [group["lr"] for group in optimizer.param_groups] == [0.05, 0.01]
    assert optimizer.param_groups[1]["params"] == [method.update_a, method.update_b]
    x, y = _features(tiny_backbone, 12, seed=1), torch.arange(12) % 3
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(method.logits(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    assert torch.count_nonzero(method.update_b) > 0


def test_it_scores_classes_it_never_saw(tiny_backbone):
    method = DecomposedPrompt(tiny_backbone, CLASSES, TEMPLATES, DecomposedPrompt.Config(n_ctx=4))
    assert DecomposedPrompt.unseen_classes(method.config) == "any"
    method.set_classnames(["purple moon", "red circle"])
    assert method.logits(_features(tiny_backbone)).shape == (8, 2)


def test_bad_settings_are_refused(tiny_backbone):
    with pytest.raises(ValueError, match="shared context with the class token at the end"):
        DecomposedPrompt.Config(csc=True)
    with pytest.raises(ValueError, match="budget_tokens"):
        DecomposedPrompt.Config(n_ctx=8, budget_tokens=4)
    with pytest.raises(ConfigError, match="no room for a rank-1 update"):
        DecomposedPrompt(tiny_backbone, CLASSES, TEMPLATES, DecomposedPrompt.Config(n_ctx=8, budget_tokens=8))

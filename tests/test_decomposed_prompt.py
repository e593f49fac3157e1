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
    assert torch.count_nonzero(method.embedding_update()) == 0  # A starts at zero
    x = _features(tiny_backbone)
    assert torch.equal(method.logits(x), coop.logits(x))
    with torch.no_grad():
        method.update_a.normal_()
    assert not torch.allclose(method.logits(x), coop.logits(x))


def test_the_update_lands_on_the_positions_after_the_context(tiny_backbone):
    method = DecomposedPrompt(tiny_backbone, CLASSES, TEMPLATES, DecomposedPrompt.Config(n_ctx=4, rank=2))
    with torch.no_grad():
        method.update_a.normal_()
        prompts = method.context().clone()
        prompts[:, 5:] += method.update_a @ method.update_b  # by hand: [SOS] + 4 context tokens untouched
        expected = tiny_backbone.encode_text_embeds(prompts, method.context.eot_positions)
        assert torch.allclose(method.text_features(), expected, atol=1e-6)


def test_a_shorter_init_phrase_sets_the_context_length(tiny_backbone):
    """n_ctx 8 with "a photo of a": 4 learned tokens, so the update starts after them and the budget counts 4."""
    method = DecomposedPrompt(tiny_backbone, CLASSES, TEMPLATES,
                              DecomposedPrompt.Config(n_ctx=8, ctx_init="a photo of a"))
    width = tiny_backbone.text_width
    assert method.context.n_ctx == 4 and method.update_a.shape[0] == tiny_backbone.context_length - 5
    rank = method.update_a.shape[1]
    assert rank == budget_rank(16, 4, tiny_backbone.context_length - 5, width)
    with torch.no_grad():
        method.update_a.normal_()
    coop = CoOp(tiny_backbone, CLASSES, TEMPLATES, CoOp.Config(n_ctx=4, ctx_init="a photo of a"))
    x = _features(tiny_backbone)
    assert not torch.allclose(method.logits(x), coop.logits(x))  # the update is live


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
    assert torch.count_nonzero(method.update_a) > 0


def test_the_warm_up_puts_both_learning_rates_at_dassls_constant_then_each_at_its_own(tiny_backbone):
    method = DecomposedPrompt(tiny_backbone, CLASSES, TEMPLATES,
                              DecomposedPrompt.Config(n_ctx=4, lr=0.05, low_rank_lr=0.01))
    method.max_epochs = 5
    setup = method.configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([1e-5, 1e-5])
    optimizer.step()
    scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.05, 0.01])


def test_positions_no_training_prompt_reached_keep_a_zero_update(tiny_backbone):
    """Trained on short names, the update past their end of text stays zero, so a longer unseen name gets no
    untrained update there."""
    method = DecomposedPrompt(tiny_backbone, CLASSES, TEMPLATES, DecomposedPrompt.Config(n_ctx=4, lr=0.1))
    optimizer = method.build_optimizer(method.trainable_parameters())
    x, y = _features(tiny_backbone, 12, seed=2), torch.arange(12) % 3
    for _ in range(5):
        loss = F.cross_entropy(method.logits(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last = int(method.context.eot_positions.max()) - 5  # the update's row of the longest training prompt's EOT
    assert torch.count_nonzero(method.update_a[:last + 1]) > 0
    assert torch.count_nonzero(method.update_a[last + 1:]) == 0
    assert DecomposedPrompt.unseen_classes(method.config) == "any"
    method.set_classnames(["a very long purple crescent moon shape", "red circle"])
    assert method.logits(x).shape == (12, 2)


def test_bad_settings_are_refused(tiny_backbone):
    with pytest.raises(ValueError, match="shared context with the class token at the end"):
        DecomposedPrompt.Config(csc=True)
    with pytest.raises(ValueError, match="budget_tokens"):
        DecomposedPrompt.Config(n_ctx=8, budget_tokens=4)
    with pytest.raises(ConfigError, match="no room for a rank-1 update"):
        DecomposedPrompt(tiny_backbone, CLASSES, TEMPLATES, DecomposedPrompt.Config(n_ctx=8, budget_tokens=8))

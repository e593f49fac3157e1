"""The text tower runs on the token sequence cut after the last end-of-text position when it is causal: the
features, logits and prompt gradients of every text-prompt method equal the full-length path's (to float
rounding), and a tower that is not causal runs the whole sequence."""
from __future__ import annotations

import copy

import pytest
import torch

from vlpt.factory import create_method
from vlpt.seg.vlsm import VLSMSpec, build_vlsm

CLASSES = ["cat", "dog", "red circle", "the number seven"]
TEMPLATES = ["a photo of a {}."]


@pytest.fixture(scope="module")
def bidirectional(deep_backbone):
    """The 12-layer tiny backbone with its text tower's causal mask removed (every position sees every other)."""
    backbone = copy.deepcopy(deep_backbone)
    backbone.model.attn_mask = None
    return backbone


def _outputs(method, backbone, full: bool, images, labels):
    """(loss, prompt gradients) of one training loss with the text tower on the full or the cut sequence."""
    backbone.full_text_sequence = full
    try:
        method.zero_grad(set_to_none=True)
        loss = method.training_loss(images, labels)
        loss.backward()
        grads = {name: p.grad.detach().clone() for name, p in method.named_parameters() if p.grad is not None}
        return loss.detach(), grads
    finally:
        backbone.full_text_sequence = False


def _assert_same(method, backbone, images, labels):
    loss_full, grads_full = _outputs(method, backbone, True, images, labels)
    loss_cut, grads_cut = _outputs(method, backbone, False, images, labels)
    assert grads_full and grads_full.keys() == grads_cut.keys()
    torch.testing.assert_close(loss_cut, loss_full, rtol=1e-5, atol=1e-5 * float(loss_full.abs()))
    for name, full in grads_full.items():  # float rounding relative to the gradient's own scale
        torch.testing.assert_close(grads_cut[name], full, rtol=1e-4, atol=1e-5 * float(full.abs().max()) + 1e-8)


def _batch(backbone, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 3, backbone.image_size, backbone.image_size, generator=generator)
    return images, torch.tensor([0, 2, 3])


@pytest.mark.parametrize("name, params", [
    ("coop", {"n_ctx": 16}), ("coop_m4", {}), ("coop", {"n_ctx": 4, "class_token_position": "middle"}),
    ("cocoop", {}), ("kgcoop", {}), ("maple", {}), ("ivlp", {}), ("upt", {}),
])
def test_text_prompt_methods_train_the_same_on_the_cut_sequence(deep_backbone, name, params):
    torch.manual_seed(0)
    method = create_method(name, deep_backbone, CLASSES, TEMPLATES, **params)
    context = method.context if hasattr(method, "context") else None
    if context is not None:  # the cut is real: the prompts end well before the context length
        length = deep_backbone.text_sequence_length(context.eot_positions, deep_backbone.context_length)
        assert length < deep_backbone.context_length
    _assert_same(method, deep_backbone, *_batch(deep_backbone))


def test_tpt_adapts_the_same_on_the_cut_sequence(deep_backbone):
    torch.manual_seed(0)
    views = torch.randn(8, 3, deep_backbone.image_size, deep_backbone.image_size)
    scores = {}
    for full in (True, False):
        method = create_method("tpt", deep_backbone, CLASSES, TEMPLATES, views=8)
        deep_backbone.full_text_sequence = full
        try:
            scores[full] = method.adapt_and_predict(views)
        finally:
            deep_backbone.full_text_sequence = False
    torch.testing.assert_close(scores[False], scores[True], rtol=1e-5, atol=1e-5 * float(scores[True].abs().max()))


@pytest.mark.parametrize("name", ["seg_coop", "seg_maple", "seg_shared_separate"])
def test_segmentation_text_prompts_train_the_same_on_the_cut_sequence(tiny_backbone, name):
    vlsm = build_vlsm(VLSMSpec(), tiny_backbone)
    torch.manual_seed(0)
    method = create_method(name, vlsm, ["background", "red", "green"], TEMPLATES, train_decoder=True)
    assert tiny_backbone.text_sequence_length(method.context.eot_positions, vlsm.context_length) < vlsm.context_length
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, vlsm.image_size, vlsm.image_size, generator=generator)
    masks = torch.randint(0, 3, (2, vlsm.image_size, vlsm.image_size), generator=generator)
    _assert_same(method, tiny_backbone, images, masks)


def test_a_tower_that_is_not_causal_runs_the_whole_sequence(bidirectional):
    tokens = bidirectional.tokenize(CLASSES)
    eot = bidirectional.eot_positions(tokens)
    assert not bidirectional.text_is_causal
    assert bidirectional.text_sequence_length(eot, tokens.shape[1]) == tokens.shape[1]
    # without the cut a bidirectional tower's features do depend on the positions after end-of-text
    embeds = bidirectional.embed_tokens(tokens)
    shifted = embeds.clone()
    shifted[:, int(eot.max()) + 1:] += 1.0
    assert not torch.allclose(bidirectional.encode_text_embeds(embeds, eot),
                              bidirectional.encode_text_embeds(shifted, eot))


def test_the_causal_tower_ignores_what_follows_end_of_text(deep_backbone):
    tokens = deep_backbone.tokenize(CLASSES)
    eot = deep_backbone.eot_positions(tokens)
    embeds = deep_backbone.embed_tokens(tokens)
    shifted = embeds.clone()
    shifted[:, int(eot.max()) + 1:] += 1.0
    deep_backbone.full_text_sequence = True
    try:
        full = deep_backbone.encode_text_embeds(shifted, eot)
    finally:
        deep_backbone.full_text_sequence = False
    cut, direct = deep_backbone.encode_text_embeds(embeds, eot), deep_backbone.encode_text(tokens)
    rounding = 1e-5 * float(direct.abs().max())
    torch.testing.assert_close(cut, full, rtol=1e-5, atol=rounding)
    torch.testing.assert_close(cut, direct, rtol=1e-5, atol=rounding)

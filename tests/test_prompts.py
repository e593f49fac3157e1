"""CoOp's context options: initialisation text, class-token position, class-specific context."""
from __future__ import annotations

import pytest
import torch

from vlpt.errors import ConfigError
from vlpt.prompts.context import TextContext

NAMES = ["red_circle", "dog", "electric_guitar"]


@pytest.mark.parametrize("position, text", [
    ("end", "a photo of a {}."),
    ("front", "{} a photo of a."),
    ("middle", "a photo {} of a."),
])
def test_initialised_context_places_the_class_token(tiny_backbone, position, text):
    context = TextContext(tiny_backbone, NAMES, ctx_init="a photo of a", class_token_position=position)
    tokens = tiny_backbone.tokenize([text.format(n.replace("_", " ")) for n in NAMES])
    assert torch.equal(context(), tiny_backbone.embed_tokens(tokens))
    assert torch.equal(context.eot_positions, tokens.argmax(dim=-1))


def test_random_context_has_the_requested_length_and_scale(tiny_backbone):
    torch.manual_seed(0)
    context = TextContext(tiny_backbone, NAMES, n_ctx=16, init_std=0.02)
    assert context.ctx.shape == (16, 128)
    assert 0.015 < context.ctx.std().item() < 0.025


def test_class_specific_context_is_per_class_and_fixed_to_its_classes(tiny_backbone):
    context = TextContext(tiny_backbone, NAMES, n_ctx=4, csc=True)
    assert context.ctx.shape == (3, 4, 128)
    prompts = context()
    assert torch.equal(prompts[1, 1:5], context.ctx[1])
    with pytest.raises(ConfigError, match="learned for 3 classes and cannot serve 2 other classes"):
        context.set_classnames(["cat", "dog"])


def test_instance_conditional_shift_is_added_to_every_context_token(tiny_backbone):
    context = TextContext(tiny_backbone, NAMES, ctx_init="a photo of a")
    shift = torch.randn(2, 128)
    shifted = context(shift)
    assert shifted.shape == (2, 3, 32, 128)
    assert torch.allclose(shifted[1, 2, 1:5], context.ctx + shift[1])
    assert torch.equal(shifted[0, :, 5:], context()[:, 5:])


def test_unknown_class_token_position_is_rejected(tiny_backbone):
    with pytest.raises(ConfigError, match="class_token_position 'start'"):
        TextContext(tiny_backbone, NAMES, class_token_position="start")


@pytest.mark.parametrize("position, text", [
    ("front", "kite (bird of prey). a photo of a"),
    ("middle", "a photo kite (bird of prey). of a"),
])
def test_a_name_merging_with_the_period_is_counted_on_its_own_tokens(tiny_backbone, position, text):
    """CoOp's code counts a name's tokens on the name alone; its last token ")." then carries the period."""
    name = "kite_(bird_of_prey)"
    alone = int(tiny_backbone.eot_positions(tiny_backbone.tokenize(["kite (bird of prey)"]))[0]) - 1
    in_prompt = int(tiny_backbone.eot_positions(tiny_backbone.tokenize(["a photo of a kite (bird of prey)."]))[0]) - 5
    assert alone == in_prompt  # ")." is one token: no separate period follows the name in the prompt
    context = TextContext(tiny_backbone, [name, "dog"], ctx_init="a photo of a", class_token_position=position)
    tokens = tiny_backbone.tokenize([text])
    assert context.name_lengths[0] == alone
    assert torch.equal(context()[0], tiny_backbone.embed_tokens(tokens)[0])


def test_class_specific_context_with_an_init_phrase_is_shared_as_in_coops_code(tiny_backbone):
    from vlpt.registry import METHODS

    coop = METHODS.get("coop")
    shared = coop(tiny_backbone, NAMES, ["a photo of a {}."], coop.Config(csc=True, ctx_init="a photo of a"))
    assert shared.context.ctx.shape == (4, 128) and coop.unseen_classes(shared.config) == "any"
    per_class = coop(tiny_backbone, NAMES, ["a photo of a {}."],
                     coop.Config(csc=True, ctx_init="a photo of a", csc_with_init="per_class"))
    assert per_class.context.ctx.shape == (3, 4, 128) and coop.unseen_classes(per_class.config) == "none"
    assert coop(tiny_backbone, NAMES, ["a photo of a {}."], coop.Config(csc=True)).context.ctx.shape == (3, 16, 128)

"""TCP: each class's context is replaced deep in the text tower by tokens its hand-written text embedding makes
(so unseen classes get their own), its prompts keep the dataset's words around the name, and it trains with the
reference's Adam and KgCoOp's penalty."""
from __future__ import annotations

import pytest
import torch

from vlpt.errors import ConfigError
from vlpt.methods.tcp import TCP
from vlpt.methods.zeroshot import zero_shot_weights
from vlpt.prompts.context import TextContext

CLASSES = ["red circle", "green square", "blue star"]
PETS = ["a photo of a {}, a type of pet."]


def tcp(backbone, classes=CLASSES, templates=PETS, **settings):
    layer = backbone.text_layers - 1
    return TCP(backbone, classes, templates, TCP.Config(class_token_layer=layer, **settings))


def test_the_class_tokens_come_from_each_classs_text_embedding_seen_or_not(tiny_backbone):
    method = tcp(tiny_backbone)
    method.set_classnames(["purple moon", "orange kite"])  # unseen classes
    with torch.no_grad():
        expected = method.class_net(zero_shot_weights(tiny_backbone, ["purple moon", "orange kite"], PETS))
        torch.testing.assert_close(method.class_tokens().flatten(1), expected)
        deep = {method.config.class_token_layer: method.class_tokens()}
        features = tiny_backbone.encode_text_embeds(method.context(), method.context.eot_positions, deep_prompts=deep)
        torch.testing.assert_close(method.text_features(), features)
        plain = tiny_backbone.encode_text_embeds(method.context(), method.context.eot_positions)
    assert not torch.allclose(method.text_features(), plain, atol=1e-4)  # the tokens change the features


def test_the_prompt_keeps_the_datasets_words_and_the_penalty_its_own_templates(tiny_backbone):
    method = tcp(tiny_backbone)
    assert torch.equal(method.context.tokens, tiny_backbone.tokenize([f"X X X X {c}, a type of pet." for c in CLASSES]))
    method.set_classnames(CLASSES, ["{} texture."])
    assert torch.equal(method.context.tokens, tiny_backbone.tokenize([f"X X X X {c} texture." for c in CLASSES]))
    torch.testing.assert_close(method.handcrafted,
                               zero_shot_weights(tiny_backbone, CLASSES, ["a photo of a {}, a type of texture."]))
    method.set_classnames(CLASSES, ["a photo of a {}."])
    assert torch.equal(method.context.tokens, tiny_backbone.tokenize([f"X X X X {c}." for c in CLASSES]))


def test_it_trains_with_adam_and_kgcoops_penalty(tiny_backbone):
    method = tcp(tiny_backbone)
    assert (method.config.kg_weight, method.config.kg_penalty, method.config.n_ctx, method.config.ctx_init) == \
        (8.0, "cosine", 4, None)
    method.max_epochs = 50
    optimizer = method.configure_optimizers()["optimizer"]
    assert type(optimizer) is torch.optim.Adam
    group = optimizer.param_groups[0]
    assert (group["eps"], group["weight_decay"], group["initial_lr"]) == (1e-3, 5e-4, 0.002)
    assert TCP.Config().epochs_for(16, "sun397") == 25 and TCP.Config().epochs_for(16, "dtd") == 50


def test_bad_settings_are_named(tiny_backbone):
    with pytest.raises(ConfigError, match="tcp class_token_layer 9: this text tower allows 1..3"):
        TCP(tiny_backbone, CLASSES, PETS, TCP.Config(class_token_layer=9))
    with pytest.raises(ConfigError, match="tcp optimizer must be adam, adamw or sgd"):
        TCP.Config(optimizer="rmsprop")
    with pytest.raises(ConfigError, match="a prompt template starts with {ctx}"):
        TextContext(tiny_backbone, CLASSES, n_ctx=4, template="{} is a {ctx}")

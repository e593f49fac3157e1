"""VPT, MaPLe and IVLP: prompts enter the layers they claim, and MaPLe's coupling carries gradients."""
from __future__ import annotations

import pytest
import torch

from vlpt.errors import ConfigError
from vlpt.registry import METHODS

CLASSES = ["red_circle", "blue_square", "dog"]
TEMPLATES = ["a photo of a {}."]
SEQ = 1 + (32 // 4) ** 2  # class token + patches of the 4-layer test backbone


def _block_inputs(blocks, run):
    seen = {}
    handles = [b.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0].detach().clone()))
               for i, b in enumerate(blocks)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("params, lengths", [
    ({"mode": "shallow", "n_tokens": 5}, [SEQ + 5] * 4),
    ({"mode": "deep", "n_tokens": 3, "layers": [1, 3]}, [SEQ, SEQ + 3, SEQ + 3, SEQ + 3]),
    ({"mode": "deep", "n_tokens": 2}, [SEQ + 2] * 4),
])
def test_vpt_tokens_enter_exactly_the_chosen_layers(tiny_backbone, params, lengths):
    cls = METHODS.get("vpt")
    method = cls(tiny_backbone, CLASSES, TEMPLATES, cls.Config(**params))
    images = torch.randn(2, 3, 32, 32)
    seen = _block_inputs(tiny_backbone.model.visual.transformer.resblocks, lambda: method.logits(images))
    assert [seen[i].shape[1] for i in range(4)] == lengths
    prompts = method.visual_prompts()
    ln_pre = tiny_backbone.model.visual.ln_pre
    for layer, tokens in prompts.items():
        expected = ln_pre(tokens) if layer == 0 else tokens  # input prompts join the patches before ln_pre
        assert torch.allclose(seen[layer][:, 1:1 + tokens.shape[0]], expected.expand(2, -1, -1), atol=1e-6)
    unprompted = [i for i in range(4) if i not in prompts and lengths[i] > SEQ]
    for layer in unprompted:  # carried over from the layer before, not replaced
        assert not any(torch.equal(seen[layer][0, 1:1 + t.shape[0]], t) for t in prompts.values())


def test_vpt_rejects_layers_the_tower_lacks(tiny_backbone):
    cls = METHODS.get("vpt")
    with pytest.raises(ConfigError, match=r"layer\(s\) \[4, 9\] do not exist; this tower has layers 0..3"):
        cls(tiny_backbone, CLASSES, TEMPLATES, cls.Config(layers=[0, 4, 9]))


def test_vpt_learns_only_visual_prompts_and_keeps_the_text_classifier(tiny_backbone):
    cls = METHODS.get("vpt")
    method = cls(tiny_backbone, CLASSES, TEMPLATES, cls.Config(mode="deep", n_tokens=2))
    names = [n for n, p in method.named_parameters() if p.requires_grad]
    assert names and all(n.startswith("visual_prompts.") for n in names)
    assert method.class_embeddings.shape == (3, 128)


def test_maple_vision_prompts_are_the_coupled_language_prompts(tiny_backbone):
    cls = METHODS.get("maple")
    method = cls(tiny_backbone, CLASSES, TEMPLATES, cls.Config(prompt_depth=3))
    images = torch.randn(2, 3, 32, 32)
    seen = _block_inputs(tiny_backbone.model.visual.transformer.resblocks, lambda: method.logits(images))
    with torch.no_grad():
        expected = {0: tiny_backbone.model.visual.ln_pre(method.couplings[0](method.context.ctx)),
                    1: method.couplings[1](method.text_prompts.tokens[0]),
                    2: method.couplings[2](method.text_prompts.tokens[1])}
    for layer, tokens in expected.items():
        assert torch.allclose(seen[layer][0, 1:3], tokens)
    assert seen[3].shape[1] == SEQ + 2  # depth 3: layer 3 keeps what layer 2 produced


def test_maple_text_prompts_enter_text_layers_one_to_depth_minus_one(tiny_backbone):
    cls = METHODS.get("maple")
    method = cls(tiny_backbone, CLASSES, TEMPLATES, cls.Config(prompt_depth=3))
    seen = _block_inputs(tiny_backbone.model.transformer.resblocks, method.text_features)
    assert torch.equal(seen[1][0, 1:3], method.text_prompts.tokens[0].detach())
    assert torch.equal(seen[2][0, 1:3], method.text_prompts.tokens[1].detach())
    assert not torch.equal(seen[3][0, 1:3], method.text_prompts.tokens[1].detach())


def test_maple_learns_the_first_tokens_of_its_phrase(tiny_backbone):
    cls = METHODS.get("maple")
    method = cls(tiny_backbone, CLASSES, TEMPLATES, cls.Config(prompt_depth=2))  # n_ctx 2 of "a photo of a"
    tokens = tiny_backbone.tokenize([f"a photo of a {c.replace('_', ' ')}." for c in CLASSES])
    assert method.context.ctx.shape == (2, 128)
    assert torch.equal(method.context(), tiny_backbone.embed_tokens(tokens))


def _image_side_grads(method):
    images = torch.randn(2, 3, 32, 32)
    method.zero_grad()
    method.backbone.encode_image(images, deep_prompts=method.vision_prompts()).sum().backward()
    return {n: p.grad for n, p in method.named_parameters() if p.requires_grad}


def test_maple_coupling_sends_image_gradients_to_the_language_prompts(tiny_backbone):
    cls = METHODS.get("maple")
    grads = _image_side_grads(cls(tiny_backbone, CLASSES, TEMPLATES, cls.Config(prompt_depth=3)))
    assert grads["context.ctx"] is not None and grads["context.ctx"].abs().sum() > 0
    assert all(grads[f"text_prompts.tokens.{i}"].abs().sum() > 0 for i in range(2))
    assert all(grads[f"couplings.{i}.weight"].abs().sum() > 0 for i in range(3))


def test_ivlp_vision_prompts_are_independent_of_the_language_prompts(tiny_backbone):
    cls = METHODS.get("ivlp")
    grads = _image_side_grads(cls(tiny_backbone, CLASSES, TEMPLATES, cls.Config(prompt_depth=3)))
    assert grads["context.ctx"] is None
    assert all(grads[f"visual_prompts.tokens.{i}"].abs().sum() > 0 for i in range(3))


def test_maple_depth_beyond_the_backbone_is_rejected(tiny_backbone):
    cls = METHODS.get("maple")
    with pytest.raises(ConfigError, match="prompt_depth 9: this backbone allows 1..4"):
        cls(tiny_backbone, CLASSES, TEMPLATES)

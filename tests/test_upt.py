"""UPT: one shared prompt, mapped by a small transformer to text context and visual prompts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlpt.errors import ConfigError
from vlpt.eval.suite import load_method_config
from vlpt.methods.base import cosine_logits
from vlpt.methods.upt import UPT, UPTConfig
from vlpt.registry import METHODS

CLASSES = ["red square", "green_circle", "blue triangle"]
TEMPLATES = ["a photo of a {}."]


@pytest.fixture
def upt(tiny_backbone) -> UPT:
    torch.manual_seed(0)
    return UPT(tiny_backbone, CLASSES, TEMPLATES)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _capture_block_input(blocks, store: dict):
    """A pre-hook on the first block of a tower that records its input sequence (batch first)."""
    def hook(module, args, kwargs):
        store["x"] = args[0].detach().clone()
    return blocks[0].register_forward_pre_hook(hook, with_kwargs=True)


def _batch_first(transformer, x):
    return x if getattr(transformer, "batch_first", True) else x.transpose(0, 1)


def test_upt_is_registered_with_its_config_file():
    assert METHODS.get("upt") is UPT
    resolved = load_method_config("upt", {}, "test")
    assert resolved.cls is UPT
    cfg = resolved.config
    assert cfg == UPTConfig()  # the config file holds the dataclass defaults
    assert (cfg.n_ctx, cfg.n_layers, cfg.optimizer, cfg.lr, cfg.batch_size, cfg.scheduler) == (4, 1, "sgd", 0.002, 32,
                                                                                              "cosine")
    assert cfg.epochs == UPTConfig().epochs == {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}


def test_shared_prompt_has_text_width_and_maps_to_both_towers(upt, tiny_backbone):
    generator = upt.generator
    assert tuple(generator.prompt.shape) == (4, tiny_backbone.text_width)
    assert len(generator.blocks) == 1
    text_ctx, visual = upt.prompts()
    assert tuple(text_ctx.shape) == (4, tiny_backbone.text_width)
    assert tuple(visual.shape) == (4, tiny_backbone.vision_width)
    # only the prompt network is the method's own state
    assert all(k.startswith("generator.") for k in upt.state_dict())


def test_visual_prompts_enter_the_image_tower_at_its_input(upt, tiny_backbone, images):
    visual_model = tiny_backbone.model.visual
    store = {}
    handle = _capture_block_input(visual_model.transformer.resblocks, store)
    try:
        with torch.no_grad():
            prompted = upt.image_features(images)
            _, visual = upt.prompts()
    finally:
        handle.remove()
    x = _batch_first(visual_model.transformer, store["x"])
    n_patches = (32 // 4) ** 2
    assert x.shape[1] == 1 + 4 + n_patches  # class token, 4 prompt tokens, patches
    with torch.no_grad():
        normalized = visual_model.ln_pre(visual)  # input prompts join the patches before ln_pre
    for b in range(len(images)):
        assert torch.allclose(x[b, 1:5], normalized, atol=1e-6)
    with torch.no_grad():
        plain = tiny_backbone.encode_image(images)
        assert not torch.allclose(prompted, plain, atol=1e-4)
        # the logits use exactly these prompted image features
        expected = cosine_logits(prompted, upt.text_features(), tiny_backbone.logit_scale)
        assert torch.allclose(upt.logits(images), expected, atol=1e-5)


def test_text_context_reaches_the_text_tower(upt, tiny_backbone):
    model = tiny_backbone.model
    store = {}
    handle = _capture_block_input(model.transformer.resblocks, store)
    try:
        with torch.no_grad():
            features = upt.text_features()
            text_ctx, _ = upt.prompts()
    finally:
        handle.remove()
    x = _batch_first(model.transformer, store["x"])
    assert x.shape[0] == len(CLASSES)
    expected = text_ctx + model.positional_embedding[1:5]
    for c in range(len(CLASSES)):
        assert torch.allclose(x[c, 1:5], expected, atol=1e-6)
    with torch.no_grad():  # the class name and [EOT] follow the context as in CoOp: [SOS][ctx][CLASS][.][EOT]
        tokens = tiny_backbone.tokenize([f"X X X X {c.replace('_', ' ')}." for c in CLASSES])
        embeds = tiny_backbone.embed_tokens(tokens)
        embeds[:, 1:5] = text_ctx
        assert torch.allclose(features, tiny_backbone.encode_text_embeds(embeds, tokens.argmax(-1)), atol=1e-5)
        assert not torch.allclose(features, tiny_backbone.encode_text(tokens), atol=1e-4)


def test_each_head_feeds_only_its_own_tower(upt, images):
    with torch.no_grad():
        text_before, image_before = upt.text_features(), upt.image_features(images)
        # random changes: a constant shift would vanish in the towers' LayerNorms
        upt.generator.to_visual.weight.add_(torch.randn_like(upt.generator.to_visual.weight))
        assert torch.equal(upt.text_features(), text_before)
        assert not torch.allclose(upt.image_features(images), image_before, atol=1e-4)
        image_mid = upt.image_features(images)
        upt.generator.to_text.weight.add_(torch.randn_like(upt.generator.to_text.weight))
        assert torch.equal(upt.image_features(images), image_mid)
        assert not torch.allclose(upt.text_features(), text_before, atol=1e-4)


def test_gradients_reach_the_shared_prompt_and_the_transformer_not_the_backbone(upt, tiny_backbone, images):
    loss = F.cross_entropy(upt.logits(images), torch.tensor([0, 1, 2]))
    loss.backward()
    generator = upt.generator
    block = generator.blocks[0]
    for name, param in [("prompt", generator.prompt), ("to_hidden", generator.to_hidden.weight),
                        ("attention", block.attn.in_proj_weight), ("mlp", block.mlp[0].weight),
                        ("text head", generator.to_text.weight), ("visual head", generator.to_visual.weight)]:
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reaches {name}"
    assert all(p.grad is None for p in tiny_backbone.parameters())
    assert set(map(id, upt.trainable_parameters())) == set(map(id, generator.parameters()))


def test_new_classes_and_class_token_positions(tiny_backbone, images):
    for position in ("end", "middle", "front"):
        torch.manual_seed(0)
        method = UPT(tiny_backbone, CLASSES, TEMPLATES, UPTConfig(class_token_position=position))
        with torch.no_grad():
            assert method.logits(images).shape == (3, 3)
            method.set_classnames(["cat", "dog"])
            assert method.logits(images).shape == (3, 2)


def test_prompt_width_and_network_options(tiny_backbone, images):
    method = UPT(tiny_backbone, CLASSES, TEMPLATES, UPTConfig(n_ctx=2, dim=32, proj_dim=32, n_layers=2, n_heads=4))
    assert tuple(method.generator.prompt.shape) == (2, 32)
    assert len(method.generator.blocks) == 2
    with torch.no_grad():
        assert method.logits(images).shape == (3, 3)
    with pytest.raises(ConfigError, match="not divisible by n_heads"):
        UPT(tiny_backbone, CLASSES, TEMPLATES, UPTConfig(proj_dim=10, n_heads=4))


def test_init_from_copies_every_prompt_tensor(upt, tiny_backbone, tmp_path, images):
    with torch.no_grad():
        for p in upt.generator.parameters():
            p.add_(torch.randn_like(p))
    path = upt.save_checkpoint(tmp_path / "source.pt")
    target = UPT(tiny_backbone, ["cat", "dog"], TEMPLATES, UPTConfig(init_from=str(path)))
    source_state, target_state = upt.state_dict(), target.state_dict()
    assert set(source_state) == set(target_state)
    assert all(torch.equal(source_state[k], target_state[k]) for k in source_state)
    assert target.classnames == ["cat", "dog"]
    with torch.no_grad():
        upt.set_classnames(["cat", "dog"])
        assert torch.allclose(target.logits(images), upt.logits(images), atol=1e-6)

"""UPT: text context and visual prompts produced by a small transformer (MVLPT's code by default; the
paper's one shared prompt as design: shared)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlpt.errors import ConfigError
from vlpt.eval.suite import load_method_config
from vlpt.methods.base import cosine_logits
from vlpt.methods.upt import UPT, PromptBlock, UPTConfig
from vlpt.registry import METHODS

CLASSES = ["red square", "green_circle", "blue triangle"]
TEMPLATES = ["a photo of a {}."]


SHARED = dict(design="shared", attend_across_tokens=True, visual_after_ln_pre=False, class_token_position="end")


@pytest.fixture
def upt(tiny_backbone) -> UPT:
    """The paper's reading (design: shared) with vlpt's earlier settings."""
    torch.manual_seed(0)
    return UPT(tiny_backbone, CLASSES, TEMPLATES, UPTConfig(**SHARED))


@pytest.fixture
def mvlpt_upt(tiny_backbone) -> UPT:
    """The default: MVLPT's code."""
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
    # MVLPT's code and configs/trainers/MVLPT/vit_b16.yaml with its scripts
    assert (cfg.design, cfg.deep, cfg.visual_after_ln_pre, cfg.class_token_position) == ("mvlpt", True, True, "middle")
    assert cfg.epochs == 200 and cfg.attend_across_tokens is None and cfg.proj_dim is None
    shared = load_method_config("upt_shared", {}, "test").config
    assert shared == UPTConfig(**SHARED, epochs={1: 50, 2: 100, 4: 100, 8: 200, 16: 200})


def test_shared_prompt_has_text_width_and_maps_to_both_towers(upt, tiny_backbone):
    generator = upt.generator
    assert tuple(generator.prompt.shape) == (4, tiny_backbone.text_width)
    assert len(generator.blocks) == 1
    text_ctx, visual = upt.prompts()
    assert tuple(text_ctx.shape) == (4, tiny_backbone.text_width)
    assert tuple(visual.shape) == (1, 4, tiny_backbone.vision_width)
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
        normalized = visual_model.ln_pre(visual[0])  # visual_after_ln_pre false: they join before ln_pre
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
        method = UPT(tiny_backbone, CLASSES, TEMPLATES, UPTConfig(class_token_position=position))  # MVLPT design
        with torch.no_grad():
            assert method.logits(images).shape == (3, 3)
            method.set_classnames(["cat", "dog"])
            assert method.logits(images).shape == (3, 2)


def test_prompt_width_and_network_options(tiny_backbone, images):
    method = UPT(tiny_backbone, CLASSES, TEMPLATES, UPTConfig(**SHARED, n_ctx=2, dim=32, proj_dim=32, n_layers=2,
                                                              n_heads=4))
    assert tuple(method.generator.prompt.shape) == (2, 32)
    assert len(method.generator.blocks) == 2
    with torch.no_grad():
        assert method.logits(images).shape == (3, 3)
    with pytest.raises(ConfigError, match="not divisible by n_heads"):
        UPT(tiny_backbone, CLASSES, TEMPLATES, UPTConfig(proj_dim=10, n_heads=4))
    with pytest.raises(ConfigError, match="unknown design"):
        UPT(tiny_backbone, CLASSES, TEMPLATES, UPTConfig(design="joint"))


def test_init_from_copies_every_prompt_tensor(upt, tiny_backbone, tmp_path, images):
    with torch.no_grad():
        for p in upt.generator.parameters():
            p.add_(torch.randn_like(p))
    path = upt.save_checkpoint(tmp_path / "source.pt")
    target = UPT(tiny_backbone, ["cat", "dog"], TEMPLATES, UPTConfig(**SHARED, init_from=str(path)))
    source_state, target_state = upt.state_dict(), target.state_dict()
    assert set(source_state) == set(target_state)
    assert all(torch.equal(source_state[k], target_state[k]) for k in source_state)
    assert target.classnames == ["cat", "dog"]
    with torch.no_grad():
        upt.set_classnames(["cat", "dog"])
        assert torch.allclose(target.logits(images), upt.logits(images), atol=1e-6)


# ---- the default: MVLPT's code -----------------------------------------------------------------
def test_mvlpt_design_has_text_context_and_deep_visual_prompts_through_a_128_wide_block(mvlpt_upt, tiny_backbone):
    generator = mvlpt_upt.generator
    n_layers, vision_width = tiny_backbone.vision_layers, tiny_backbone.vision_width
    text_width = tiny_backbone.text_width
    assert tuple(generator.text.shape) == (4, text_width)
    assert tuple(generator.visual.shape) == (n_layers, 4, vision_width)  # VPT deep: every image layer
    patch = tiny_backbone.model.visual.conv1.kernel_size[0]
    assert generator.visual.abs().max() <= (6.0 / (3 * patch**2 + vision_width)) ** 0.5  # VPT's uniform init
    assert len(generator.blocks) == 1
    block = generator.blocks[0]
    assert block.attn.embed_dim == 128 and block.attn.num_heads == 1 and not block.across_tokens
    # linear maps into and out of the 128-wide block where a tower's width differs (MVLPT's pre/post projections)
    for module, width in ((generator.text_in, text_width), (generator.visual_out, vision_width)):
        assert isinstance(module, torch.nn.Identity) if width == 128 else isinstance(module, torch.nn.Linear)
    narrow = UPT(tiny_backbone, CLASSES, TEMPLATES, UPTConfig(proj_dim=32)).generator
    assert (narrow.text_in.in_features, narrow.text_in.out_features) == (text_width, 32)
    assert (narrow.visual_out.in_features, narrow.visual_out.out_features) == (32, vision_width)
    assert block.mlp[0].out_features == 512 and type(block.mlp[1]).__name__ == "QuickGELU"
    text_ctx, visual = mvlpt_upt.prompts()
    assert tuple(text_ctx.shape) == (4, text_width) and tuple(visual.shape) == (n_layers, 4, vision_width)
    assert mvlpt_upt.context.class_token_position == "middle"
    assert all(k.startswith("generator.") for k in mvlpt_upt.state_dict())
    shallow = UPT(tiny_backbone, CLASSES, TEMPLATES, UPTConfig(deep=False))
    assert tuple(shallow.prompts()[1].shape) == (1, 4, vision_width)


def test_mvlpt_block_lets_each_token_attend_only_to_itself_unless_asked():
    """MVLPT gives a [1, tokens, 128] tensor to a sequence-first attention: every token is a sequence of one."""
    torch.manual_seed(0)
    block = PromptBlock(16, 1, 4.0, across_tokens=False)
    x = torch.randn(6, 16)
    with torch.no_grad():
        out = block(x)
        changed = x.clone()
        changed[3:] += torch.randn(3, 16)
        assert torch.allclose(block(changed)[:3], out[:3], atol=1e-6)  # the other tokens change nothing
        # one token alone: attention reduces to the value and output projections
        h = block.ln_attn(x)
        w_v = block.attn.in_proj_weight[32:]
        b_v = block.attn.in_proj_bias[32:]
        attended = block.attn.out_proj(h @ w_v.T + b_v)
        assert torch.allclose(out, x + attended + block.mlp(block.ln_mlp(x + attended)), atol=1e-5)
        block.across_tokens = True
        assert not torch.allclose(block(changed)[:3], block(x)[:3], atol=1e-4)


def test_mvlpt_text_and_visual_prompts_stay_apart_by_default(tiny_backbone):
    for across, coupled in ((None, False), (True, True)):
        torch.manual_seed(0)
        method = UPT(tiny_backbone, CLASSES, TEMPLATES, UPTConfig(attend_across_tokens=across))
        with torch.no_grad():
            text_before = method.prompts()[0]
            method.generator.visual.add_(torch.randn_like(method.generator.visual))
            assert torch.allclose(method.prompts()[0], text_before, atol=1e-6) != coupled


def test_mvlpt_visual_prompts_enter_after_ln_pre_and_replace_at_every_layer(mvlpt_upt, tiny_backbone, images):
    blocks = tiny_backbone.model.visual.transformer.resblocks
    inputs = {}
    hooks = [block.register_forward_pre_hook(
        lambda module, args, index=index: inputs.__setitem__(index, args[0].detach().clone()))
        for index, block in enumerate(blocks)]
    try:
        with torch.no_grad():
            features = mvlpt_upt.image_features(images)
            _, visual = mvlpt_upt.prompts()
    finally:
        for hook in hooks:
            hook.remove()
    transformer = tiny_backbone.model.visual.transformer
    n_patches = (32 // 4) ** 2
    for index in range(len(blocks)):
        x = _batch_first(transformer, inputs[index])
        assert x.shape[1] == 1 + 4 + n_patches
        for b in range(len(images)):  # not passed through ln_pre, as MVLPT's forward_vpt
            assert torch.allclose(x[b, 1:5], visual[index], atol=1e-6)
        assert not torch.allclose(x[0, 1:5], tiny_backbone.model.visual.ln_pre(visual[index]), atol=1e-3)
    with torch.no_grad():  # the logits use these image features
        expected = cosine_logits(features, mvlpt_upt.text_features(), tiny_backbone.logit_scale)
        assert torch.allclose(mvlpt_upt.logits(images), expected, atol=1e-5)

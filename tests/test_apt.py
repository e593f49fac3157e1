"""APT: deep visual prompts as an independent diffusion step; its attention decomposition is VPT-deep exactly."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlpt.errors import ConfigError
from vlpt.methods.apt import APT
from vlpt.methods.vpt import VPT

CLASSES = ["red circle", "green square", "blue star"]
TEMPLATES = ["a photo of a {}."]


def _images(backbone, n=4, seed=0):
    size = backbone.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_the_decomposition_equals_vpt_deep_with_the_same_prompts(deep_backbone):
    torch.manual_seed(1)
    apt = APT(deep_backbone, CLASSES, TEMPLATES, APT.Config(form="exact", n_tokens=3))
    prompts = {layer: tokens * 50 for layer, tokens in zip(apt.slots, apt.prompt_tokens)}  # not small
    with torch.no_grad():
        for layer, tokens in zip(apt.slots, apt.prompt_tokens):
            tokens.copy_(prompts[layer])
    images = _images(deep_backbone)
    full = deep_backbone.encode_image(images, deep_prompts=prompts, input_prompts_after_ln_pre=True)
    decomposed = deep_backbone.encode_image(images, attention_edit=apt.edit)
    torch.testing.assert_close(decomposed, full, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(full, deep_backbone.encode_image(images), atol=1e-3), "the prompts changed nothing"
    vpt = VPT(deep_backbone, CLASSES, TEMPLATES, VPT.Config(n_tokens=3))
    torch.testing.assert_close(apt.class_embeddings, vpt.class_embeddings)  # the same frozen classifier


def test_an_unedited_run_is_the_plain_tower(tiny_backbone):
    images = _images(tiny_backbone)
    unedited = tiny_backbone.encode_image(images, attention_edit=lambda layer, block, h, attend: attend())
    assert torch.equal(unedited, tiny_backbone.encode_image(images))


def test_the_diffusion_step_is_the_reference_modules_computation(tiny_backbone):
    apt = APT(tiny_backbone, CLASSES, TEMPLATES, APT.Config(n_tokens=5, rank=2))
    step = apt.diffusion[0]
    with torch.no_grad():
        step.up.normal_()
        step.log_scale.fill_(0.3)
    width = tiny_backbone.vision_width
    # the reference's layout: mm = Sequential(Linear(dim, rank), Linear(rank, dim)), both without bias
    mm = torch.nn.Sequential(torch.nn.Linear(width, 2, bias=False), torch.nn.Linear(2, width, bias=False))
    with torch.no_grad():
        mm[0].weight.copy_(step.down)
        mm[1].weight.copy_(step.up)
    h, out = torch.randn(2, 7, width), torch.randn(2, 7, width)
    with torch.no_grad():
        attn = torch.relu(h @ (step.tokens + mm(step.tokens)).t())
        expected = (out + (attn @ step.tokens) * attn.max(dim=-1, keepdim=True)[0]) * torch.tensor(0.3).exp()
        torch.testing.assert_close(apt.edit(0, None, h, lambda: out), expected)
    assert apt.edit(99, None, h, lambda: out) is out  # an unprompted layer
    # the largest affinity weighs the step without a gradient of its own (the reference detaches it)
    h.requires_grad_(True)
    apt.edit(0, None, h, lambda: out).sum().backward()
    assert step.tokens.grad is not None and step.log_scale.grad is not None


def test_it_learns_and_trains_only_its_prompts(tiny_backbone):
    torch.manual_seed(0)
    apt = APT(tiny_backbone, CLASSES, TEMPLATES, APT.Config(n_tokens=4))
    trainable = apt.trainable_parameters()
    assert {id(p) for p in trainable} == {id(p) for p in apt.diffusion.parameters()}
    optimizer = torch.optim.Adam(trainable, lr=0.01)  # random towers: SGD's steps are too small to show in 15
    images, labels = _images(tiny_backbone, n=6, seed=2), torch.tensor([0, 1, 2, 0, 1, 2])
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(apt.logits(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1


def test_bad_settings_are_named(deep_backbone):
    with pytest.raises(ConfigError, match="apt form"):
        APT.Config(form="fast")
    with pytest.raises(ConfigError, match="mode"):
        APT.Config(mode="shallow")
    with pytest.raises(ConfigError, match="rank"):
        APT.Config(rank=0)
    with pytest.raises(ConfigError, match="init 'uniform' is VPT's setting"):
        APT.Config(init="uniform")
    # VPT-deep carries prompts through unprompted layers that the decomposition never sees
    with pytest.raises(ConfigError, match="from the first one to the last"):
        APT(deep_backbone, CLASSES, TEMPLATES, APT.Config(form="exact", layers=[0, 5]))
    APT(deep_backbone, CLASSES, TEMPLATES, APT.Config(form="exact", layers=list(range(4, 12))))

"""Registry-driven matrix: every method trains, checkpoints only itself, and never touches the backbone."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from PIL import Image

from vlpt.data import EvalSet, ProtocolData, Sample
from vlpt.data.datamodule import PromptDataModule
from vlpt.errors import CheckpointError, ConfigError
from vlpt.registry import METHODS

COLOURS = {"red_square": (220, 30, 30), "green_square": (30, 200, 30), "blue_square": (30, 30, 220)}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> ProtocolData:
    """Three colour classes, 6 real PNG files each: 4 for training, 2 for validation and test."""
    root = tmp_path_factory.mktemp("colours")
    samples = {"train": [], "val": []}
    for label, (name, rgb) in enumerate(COLOURS.items()):
        for i in range(6):
            path = root / f"{name}_{i}.png"
            shade = tuple(min(255, c + 8 * i) for c in rgb)
            Image.new("RGB", (40, 40), shade).save(path)
            samples["train" if i < 4 else "val"].append(Sample(str(path), label, name))
    names = list(COLOURS)
    templates = ["a photo of a {}."]
    return ProtocolData(samples["train"], samples["val"], names, templates,
                        [EvalSet("test", samples["val"], names, templates)])


def _datamodule(data, backbone, batch_size=4):
    cfg = backbone.preprocess_cfg
    return PromptDataModule(data, backbone.image_size, cfg["mean"], cfg["std"], batch_size=batch_size,
                            train_augment="none", seed=0)


def _fit_two_steps(method, datamodule):
    if method.fit_without_gradients(datamodule):
        return
    method.max_epochs = 1
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(method, train_dataloaders=datamodule.train_dataloader())


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_trains_checkpoints_itself_and_leaves_the_backbone_alone(name, deep_backbone, tiny_data, tmp_path):
    """Each registered method with its paper defaults, on a 12-layer backbone."""
    backbone = deep_backbone
    cls = METHODS.get(name)
    if getattr(cls, "needs_llm", False):
        pytest.skip(f"{name} needs an LLM endpoint: its own tests run it against a scripted local one")
    torch.manual_seed(0)
    backbone_before = {k: v.clone() for k, v in backbone.state_dict().items()}
    method = cls(backbone, tiny_data.classnames, tiny_data.templates, cls.Config(batch_size=4))
    own_before = {k: v.clone() for k, v in method.state_dict().items()}
    datamodule = _datamodule(tiny_data, backbone)
    _fit_two_steps(method, datamodule)

    after = backbone.state_dict()
    assert all(torch.equal(backbone_before[k], after[k]) for k in backbone_before), "backbone weights changed"
    own_after = method.state_dict()
    assert not any(k.startswith("backbone.") for k in own_after)
    if cls.trains:
        assert any(not torch.equal(own_before[k], own_after[k]) for k in own_after), "nothing was learned"

    path = method.save_checkpoint(tmp_path / f"{name}.pt")
    # the method's own tensors only (UPT's faithful 128-wide prompt network is about 200k numbers by itself)
    own_bytes = sum(v.numel() * v.element_size() for v in own_after.values())
    assert path.stat().st_size < 64 * 1024 + own_bytes, "a method checkpoint must hold its own tensors, not CLIP"
    assert own_bytes < 4 * 1024 * 1024
    images, _ = next(iter(datamodule.eval_dataloader(tiny_data.eval_sets[0])))
    fresh = cls(backbone, tiny_data.classnames, tiny_data.templates, cls.Config(batch_size=4))
    fresh.load_checkpoint(path)
    method.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh.logits(images), method.logits(images), atol=1e-5)


def test_checkpoint_of_another_method_is_rejected(tiny_backbone, tiny_data, tmp_path):
    coop = METHODS.get("coop")(tiny_backbone, tiny_data.classnames, tiny_data.templates)
    path = coop.save_checkpoint(tmp_path / "coop.pt")
    kgcoop = METHODS.get("kgcoop")(tiny_backbone, tiny_data.classnames, tiny_data.templates)
    with pytest.raises(CheckpointError, match="holds method 'coop', not 'kgcoop'"):
        kgcoop.load_checkpoint(path)


def test_checkpoint_with_other_prompt_shape_is_rejected(tiny_backbone, tiny_data, tmp_path):
    cls = METHODS.get("coop")
    path = cls(tiny_backbone, tiny_data.classnames, tiny_data.templates, cls.Config(n_ctx=8)).save_checkpoint(tmp_path / "c.pt")
    other = cls(tiny_backbone, tiny_data.classnames, tiny_data.templates, cls.Config(n_ctx=16))
    with pytest.raises(CheckpointError, match=r"context.ctx has shape \(8, 128\)"):
        other.load_checkpoint(path)


def test_coop_context_initialised_from_text_matches_the_phrase(tiny_backbone, tiny_data):
    cls = METHODS.get("coop")
    method = cls(tiny_backbone, tiny_data.classnames, tiny_data.templates, cls.Config(ctx_init="a photo of a"))
    tokens = tiny_backbone.tokenize([f"a photo of a {c.replace('_', ' ')}." for c in tiny_data.classnames])
    with torch.no_grad():
        expected = tiny_backbone.encode_text(tokens)
        assert torch.allclose(method.text_features(), expected, atol=1e-6)


def test_kgcoop_penalty_is_zero_at_the_handcrafted_prompt(tiny_backbone, tiny_data):
    cls = METHODS.get("kgcoop")
    method = cls(tiny_backbone, tiny_data.classnames, ["a photo of a {}."])
    with torch.no_grad():
        assert method.knowledge_distance(method.text_features()).item() < 1e-6
        method.context.ctx.add_(torch.randn_like(method.context.ctx))  # a constant shift would be removed by LayerNorm
        assert method.knowledge_distance(method.text_features()).item() > 1e-3


def test_kgcoop_defaults_are_the_reference_codes(tiny_backbone, tiny_data):
    """1 - mean cos at lambda 8 (the paper's squared distance is twice that), batch 128, 100 epochs."""
    cls = METHODS.get("kgcoop")
    torch.manual_seed(0)
    method = cls(tiny_backbone, tiny_data.classnames, ["a photo of a {}."])
    squared = cls(tiny_backbone, tiny_data.classnames, ["a photo of a {}."], cls.Config(kg_penalty="squared"))
    with torch.no_grad():
        for m in (method, squared):
            m.context.ctx.copy_(torch.randn_like(m.context.ctx))
        squared.context.ctx.copy_(method.context.ctx)
        learned = torch.nn.functional.normalize(method.text_features(), dim=-1)
        cosine = 1 - (learned * method.handcrafted).sum(-1).mean()
        assert torch.allclose(method.knowledge_distance(method.text_features()), cosine, atol=1e-6)
        assert torch.allclose(squared.knowledge_distance(squared.text_features()), 2 * cosine, atol=1e-6)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    ce = torch.nn.functional.cross_entropy(method.logits(images), labels)
    assert torch.allclose(method.training_loss(images, labels), ce + 8.0 * cosine, atol=1e-5)
    config = cls.Config()
    assert (config.kg_weight, config.batch_size, config.epochs_for(16), config.epochs_for(1)) == (8.0, 128, 100, 100)


def test_kgcoop_handcrafted_prompt_for_dtd_is_the_reference_codes(tiny_backbone):
    names = ["banded", "dotted"]
    method = METHODS.get("kgcoop")(tiny_backbone, names, ["{} texture."])
    with torch.no_grad():
        expected = tiny_backbone.encode_text(
            tiny_backbone.tokenize([f"a photo of a {n}, a type of texture." for n in names]), normalize=True)
    assert torch.allclose(method.handcrafted, expected, atol=1e-6)


def test_cocoop_batched_logits_equal_the_per_image_loop(tiny_backbone, tiny_data):
    cls = METHODS.get("cocoop")
    torch.manual_seed(0)
    method = cls(tiny_backbone, tiny_data.classnames, tiny_data.templates, cls.Config(images_per_chunk=32))
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        batched = method.logits(images)
        single = torch.cat([method.logits(images[i:i + 1]) for i in range(5)])
    assert torch.allclose(batched, single, atol=1e-5)


def test_linear_probe_refuses_classes_it_never_saw(tiny_backbone, tiny_data):
    method = METHODS.get("linear_probe")(tiny_backbone, tiny_data.classnames, tiny_data.templates)
    method.set_classnames(tiny_data.classnames[:2])  # a subset is a mask, allowed
    with pytest.raises(ConfigError, match="not trained on: \\['zebra'\\]"):
        method.set_classnames(["zebra"])


def test_unknown_method_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown method 'cooop' \\(did you mean 'coop'.*\\); valid names: .*coop"):
        METHODS.get("cooop")


def test_init_from_copies_exactly_the_trained_prompt(tiny_backbone, tiny_data, tmp_path):
    cls = METHODS.get("coop")
    source = cls(tiny_backbone, ["cat", "dog"], tiny_data.templates, cls.Config(n_ctx=4))
    with torch.no_grad():
        source.context.ctx.normal_()
    path = source.save_checkpoint(tmp_path / "source.pt")
    target = cls(tiny_backbone, tiny_data.classnames, tiny_data.templates, cls.Config(n_ctx=4, init_from=str(path)))
    assert torch.equal(target.context.ctx, source.context.ctx)
    assert target.classnames == tiny_data.classnames  # the target keeps its own classes


def test_init_from_rejects_a_prompt_of_another_shape_or_an_unrelated_checkpoint(tiny_backbone, tiny_data, tmp_path):
    coop = METHODS.get("coop")
    path = coop(tiny_backbone, tiny_data.classnames, tiny_data.templates, coop.Config(n_ctx=4)).save_checkpoint(tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match=r"context.ctx has shape \(4, 128\), coop expects \(16, 128\)"):
        coop(tiny_backbone, tiny_data.classnames, tiny_data.templates, coop.Config(n_ctx=16, init_from=str(path)))
    probe = METHODS.get("linear_probe")
    with pytest.raises(CheckpointError, match="shares no prompt tensor with linear_probe"):
        probe(tiny_backbone, tiny_data.classnames, tiny_data.templates, probe.Config(init_from=str(path)))


def test_cocoop_batched_gradients_equal_the_per_image_loop(tiny_backbone, tiny_data):
    """All images and classes through the text tower together give the paper's per-image loop's gradients."""
    cls = METHODS.get("cocoop")
    torch.manual_seed(0)
    images, labels = torch.randn(5, 3, 32, 32), torch.tensor([0, 1, 2, 1, 0]) % len(tiny_data.classnames)

    def gradients(chunk: int, per_image: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        method = cls(tiny_backbone, tiny_data.classnames, tiny_data.templates, cls.Config(images_per_chunk=chunk))
        if per_image:
            loss = sum(method.training_loss(images[i:i + 1], labels[i:i + 1]) for i in range(5)) / 5
        else:
            loss = method.training_loss(images, labels)
        loss.backward()
        return {n: p.grad.clone() for n, p in method.named_parameters() if p.requires_grad}

    batched, loop, chunked = gradients(32, False), gradients(1, True), gradients(2, False)
    assert batched.keys() == loop.keys() and any(g.abs().sum() > 0 for g in batched.values())
    for name in batched:
        assert torch.allclose(batched[name], loop[name], atol=1e-6), name
        assert torch.allclose(chunked[name], loop[name], atol=1e-6), name


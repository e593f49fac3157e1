"""ConES: class concepts in the joint space, searched on image features with the text tower switched off."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlpt.methods.cones import ConES
from vlpt.methods.zeroshot import ZeroShotCLIP

CLASSES = ["red circle", "green square", "blue star"]
TEMPLATES = ["a photo of a {}."]


def _features(backbone, n=12, seed=0):
    return torch.randn(n, backbone.embed_dim, generator=torch.Generator().manual_seed(seed))


def test_it_starts_as_zero_shot_clip(tiny_backbone):
    x = _features(tiny_backbone)
    cones, zero_shot = ConES(tiny_backbone, CLASSES, TEMPLATES), ZeroShotCLIP(tiny_backbone, CLASSES, TEMPLATES)
    with torch.no_grad():
        assert torch.allclose(cones.logits(x), zero_shot.logits(x).float(), atol=1e-5)


def test_training_never_runs_the_text_tower_and_learns(tiny_backbone, monkeypatch):
    method = ConES(tiny_backbone, CLASSES, TEMPLATES, ConES.Config(lr=0.5))
    start = method.concepts.detach().clone()

    def refuse(*args, **kwargs):
        raise AssertionError("the text tower ran during training")

    for name in ("encode_text_embeds", "encode_text", "zero_shot_classifier"):
        monkeypatch.setattr(tiny_backbone, name, refuse)
    optimizer = method.build_optimizer(method.trainable_parameters())
    x, y = _features(tiny_backbone, seed=1), torch.arange(12) % 3
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(method.logits(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] and not torch.equal(method.concepts, start)
    assert [p for p in method.trainable_parameters()] == [method.concepts]


def test_unseen_classes_keep_their_zero_shot_embedding(tiny_backbone):
    method = ConES(tiny_backbone, CLASSES, TEMPLATES)
    with torch.no_grad():
        method.concepts.add_(torch.randn_like(method.concepts))  # as if searched
    method.set_classnames(["purple moon", "green square"])
    zero_shot = ZeroShotCLIP(tiny_backbone, ["purple moon", "green square"], TEMPLATES)
    embeddings = method.class_embeddings()
    assert torch.allclose(embeddings[0], zero_shot.class_embeddings[0].float(), atol=1e-6)
    assert torch.equal(embeddings[1], method.concepts[1])
    assert ConES.unseen_classes(method.config) == "any"


def test_a_checkpoint_restores_the_searched_rows_for_a_subset(tiny_backbone, tmp_path):
    method = ConES(tiny_backbone, CLASSES, TEMPLATES)
    with torch.no_grad():
        method.concepts.mul_(2.0).add_(0.1)
    path = method.save_checkpoint(tmp_path / "cones.pt")
    fresh = ConES(tiny_backbone, CLASSES, TEMPLATES)
    fresh.load_checkpoint(path)
    fresh.set_classnames(["blue star", "red circle"])
    assert torch.equal(fresh.class_embeddings(), method.concepts[[2, 0]].detach())
    with pytest.raises(Exception):
        ConES(tiny_backbone, CLASSES[:2], TEMPLATES).load_checkpoint(path)  # another class count


def test_a_later_stage_scores_the_searched_classes_against_their_concepts(tiny_backbone, tmp_path):
    from vlpt.methods.apt import APT
    from vlpt.methods.vpt import VPT

    cones = ConES(tiny_backbone, CLASSES, TEMPLATES)
    with torch.no_grad():
        cones.concepts.copy_(torch.randn_like(cones.concepts))  # as if searched
    cones.set_classnames(["purple moon", *CLASSES])  # the checkpoint keeps the rows it searched, by name
    path = cones.save_checkpoint(tmp_path / "cones.pt")
    text = ZeroShotCLIP(tiny_backbone, ["blue star", "purple moon"], ["a photo of a {}."]).class_embeddings.clone()
    for method_cls in (VPT, APT):
        later = method_cls(tiny_backbone, ["blue star", "purple moon"], TEMPLATES,
                           method_cls.Config(n_tokens=2, init_from=str(path)))
        plain = method_cls(tiny_backbone, ["blue star", "purple moon"], TEMPLATES, method_cls.Config(n_tokens=2))
        assert torch.equal(later.class_embeddings[0], cones.concepts[2].detach().to(later.class_embeddings))
        assert torch.equal(later.class_embeddings[1], plain.class_embeddings[1])  # never searched: its text
        saved = later.save_checkpoint(tmp_path / f"{method_cls.name}.pt")
        again = method_cls(tiny_backbone, ["blue star", "purple moon"], TEMPLATES, method_cls.Config(n_tokens=2))
        again.load_checkpoint(saved)
        assert torch.equal(again.class_embeddings, later.class_embeddings)
    # the backbone's stored text features stay the text's (a later stage never writes its concepts into them)
    after = ZeroShotCLIP(tiny_backbone, ["blue star", "purple moon"], ["a photo of a {}."]).class_embeddings
    assert torch.equal(after, text)


def test_a_later_stage_carries_its_concepts_into_the_next_and_refuses_unrelated_ones(tiny_backbone, tmp_path):
    from vlpt.errors import CheckpointError
    from vlpt.methods.vpt import VPT

    cones = ConES(tiny_backbone, CLASSES, TEMPLATES)
    with torch.no_grad():
        cones.concepts.copy_(torch.randn_like(cones.concepts))
    path = cones.save_checkpoint(tmp_path / "cones.pt")
    stage = VPT(tiny_backbone, CLASSES, TEMPLATES, VPT.Config(n_tokens=2, init_from=str(path)))
    chained = VPT(tiny_backbone, CLASSES, TEMPLATES,
                  VPT.Config(n_tokens=2, init_from=str(stage.save_checkpoint(tmp_path / "vpt.pt"))))
    assert torch.equal(chained.class_embeddings, stage.class_embeddings)
    assert torch.equal(chained.visual_prompts.tokens[0], stage.visual_prompts.tokens[0])
    with pytest.raises(CheckpointError, match="ConES searched none of this run's classes"):
        VPT(tiny_backbone, ["purple moon"], TEMPLATES, VPT.Config(n_tokens=2, init_from=str(path)))

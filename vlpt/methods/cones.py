"""ConES: Concept Embedding Search (Yi et al., "ConES: Concept Embedding Search for Parameter Efficient Tuning Large
Vision Language Models", arXiv 2305.18993, 2023; no public code).

The paper drops the text encoder from prompt tuning: it optimises the embeddings the text encoder would output
("concepts") directly against the image side's objective, which makes a step far cheaper, and hands the searched
concepts to a later tuning stage. The classification case on CLIP, as vlpt reads it: each class's concept is a
vector in the joint image-text space, initialised from zero-shot CLIP's normalised class embedding of the
dataset's template (the only time the text tower runs) and searched by cross-entropy on the training images'
frozen features, scores ``logit_scale * cos(image, concept)``. Training never runs the text tower, so a step is a
matrix product on stored image features. Classes it never searched keep their zero-shot embedding, so it scores
any class list. CoOp's optimizer, learning rate, schedule and epochs (the paper's detection and generation
settings do not carry over). A later stage reads the searched concepts from the checkpoint (``concepts``, one
row per class of ``trained_classnames``; ``read_concepts``): the paper's "next stage of fine-tuning the
pre-trained model" is, as vlpt reads it for classification, tuning the image tower against the searched
concepts as the classifier: VPT or APT with ``init_from`` a ConES run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from vlpt.errors import CheckpointError
from vlpt.methods.base import MethodConfig, PromptMethod, TrainedClassesCheckpoint, cosine_logits
from vlpt.methods.zeroshot import zero_shot_weights
from vlpt.registry import register_method


@dataclass
class ConESConfig(MethodConfig):
    epochs: int | dict[int, int] = field(default_factory=lambda: {1: 50, 2: 100, 4: 100, 8: 200, 16: 200})


@register_method("cones")
class ConES(TrainedClassesCheckpoint, PromptMethod):
    """Class concepts in the joint space, searched on image features without the text tower."""

    Config = ConESConfig
    frozen_image_features = True

    def build(self, classnames, templates):
        self.trained_classnames = list(classnames)
        with torch.no_grad():
            start = zero_shot_weights(self.backbone, list(classnames), templates[:1]).float()
        self.concepts = torch.nn.Parameter(start.clone())
        self.update_classnames(classnames, templates)

    def update_classnames(self, classnames, templates):
        """Searched concepts for the classes it trained on, zero-shot embeddings for the others."""
        rows = {name: i for i, name in enumerate(self.trained_classnames)}
        unseen = [c for c in classnames if c not in rows]
        fallback = {}
        if unseen:
            with torch.no_grad():
                fallback = dict(zip(unseen, zero_shot_weights(self.backbone, unseen, templates[:1]).float()))
        self._classes = [(rows.get(c), fallback.get(c)) for c in classnames]

    def class_embeddings(self) -> torch.Tensor:
        """``[C, D]`` for the current classes (gradients reach the searched rows)."""
        if all(row is not None for row, _ in self._classes):
            return self.concepts[[row for row, _ in self._classes]]
        return torch.stack([self.concepts[row] if row is not None else vector.to(self.concepts.device)
                            for row, vector in self._classes])

    def logits(self, images):
        features = self.image_features(images).float()
        return cosine_logits(features, self.class_embeddings(), self.backbone.logit_scale.float())


def read_concepts(path: str | Path, backbone) -> tuple[str, dict[str, torch.Tensor]]:
    """The method of the checkpoint at ``path`` and the searched concept of each class it holds: a ConES run's,
    or those a later stage (VPT, APT) classified with; no concepts for any other checkpoint. A checkpoint of
    another backbone raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"init_from checkpoint {path} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("backbone") != backbone.describe():
        raise CheckpointError(f"init_from checkpoint {path} was trained on backbone {payload.get('backbone')}, "
                              f"not {backbone.describe()}")
    extra = payload.get("extra", {})
    if payload.get("method") == ConES.name:
        names = extra.get("trained_classnames", payload["classnames"])
    else:
        names = extra.get("concept_classnames", [])
    concepts = payload["state_dict"].get("concepts")
    return payload.get("method"), dict(zip(names, concepts.float())) if names else {}

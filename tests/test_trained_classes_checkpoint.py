"""Methods with one row per training class keep those classes in their checkpoints and map any later class list
onto the rows again (``TrainedClassesCheckpoint``)."""
from __future__ import annotations

import pytest
import torch

from vlpt.registry import METHODS

CLASSES = ["red circle", "green square", "blue star"]
TEMPLATES = ["a photo of a {}."]


@pytest.mark.parametrize("name", ["clap", "lp_plus_plus", "cones"])
def test_a_loaded_checkpoint_scores_a_subset_of_its_classes_as_the_trained_method(tiny_backbone, tmp_path, name):
    cls = METHODS.get(name)
    trained = cls(tiny_backbone, CLASSES, TEMPLATES)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for tensor in trained.state_dict().values():  # the method's own tensors (the backbone's are left out)
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=generator))  # as if trained
    path = trained.save_checkpoint(tmp_path / f"{name}.pt")
    loaded = cls(tiny_backbone, CLASSES[::-1], TEMPLATES)  # another order: the checkpoint sets its own
    loaded.load_checkpoint(path)
    features = torch.randn(5, tiny_backbone.embed_dim, generator=generator)
    subset = ["blue star", "red circle"]
    trained.set_classnames(subset)
    loaded.set_classnames(subset)
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(features), trained.logits(features))
        assert not torch.allclose(loaded.logits(features), cls(tiny_backbone, subset, TEMPLATES).logits(features))

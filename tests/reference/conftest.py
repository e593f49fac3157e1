"""Fixtures of the differential test: the reference checkouts, one tiny CLIP for both sides, the report.

Every test here needs ``references``, which skips unless ``$VLPT_REFERENCE_ROOT`` is set; nothing
of the reference code is imported while tests are collected.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from .harness import REPORT_VARIABLE, ROOT_VARIABLE, DifferenceTable, References

#: the tiny architecture: the reference code hard-codes text width 512 and vision width 768 (MaPLe,
#: KgCoOp) and heads of width 64 (``build_model``); 77 tokens and CLIP's vocabulary for its tokenizer
TINY_MODEL = "vlpt-reference-tiny"
TINY_CONFIG = {
    "embed_dim": 256,
    "quick_gelu": True,  # OpenAI's CLIP, and so every reference, computes with QuickGELU
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 768, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 3},
}


@pytest.fixture(scope="session")
def references() -> References:
    value = os.environ.get(ROOT_VARIABLE)
    if not value:
        pytest.skip(f"{ROOT_VARIABLE} is not set (a folder holding the CoOp, KgCoOp, multimodal-prompt-learning "
                    f"and TPT checkouts)")
    if not Path(value).is_dir():
        pytest.fail(f"{ROOT_VARIABLE}={value} is not a folder")
    return References(Path(value))


@pytest.fixture(scope="session")
def tiny_clip(references, tmp_path_factory) -> SimpleNamespace:
    """One OpenAI-format CLIP state dict (seeded random weights) and the same weights as a checkpoint file.

    open_clip's CLIP keeps OpenAI's parameter names, so a random open_clip model of the tiny
    architecture gives the state dict; the references' ``build_model`` loads it strictly. Norms and
    biases get noise so that none is the identity, and every value is an fp16 number, as
    ``build_model`` stores the weights in fp16 before the reference casts them back to fp32.
    """
    import open_clip

    folder = tmp_path_factory.mktemp("reference_clip")
    (folder / f"{TINY_MODEL}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(folder)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    state = open_clip.create_model(TINY_MODEL).state_dict()
    for name, tensor in state.items():
        if tensor.dim() == 1 and name != "logit_scale":
            tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))
    state = {name: tensor.half().float() for name, tensor in state.items()}
    checkpoint = folder / "tiny_clip.pt"
    torch.save(state, checkpoint)
    return SimpleNamespace(state=state, checkpoint=checkpoint)


@pytest.fixture(scope="session")
def backbone(tiny_clip):
    """vlpt's side: a ClipBackbone loading the tiny checkpoint file."""
    from vlpt.backbone import ClipBackbone

    return ClipBackbone(TINY_MODEL, pretrained=str(tiny_clip.checkpoint))


@pytest.fixture(scope="session")
def reference_clip(references, tiny_clip):
    """``reference_clip(repo, *args)``: ``repo``'s ``clip.model.build_model`` of the tiny weights, in fp32 and
    frozen (``args`` follow the state dict: MaPLe's design details); one model per repository and args."""
    models = {}

    def build(repo: str, *args):
        if (repo, repr(args)) not in models:
            model = references.clip(repo).model.build_model(dict(tiny_clip.state), *args).float().eval()
            models[repo, repr(args)] = model.requires_grad_(False)
        return models[repo, repr(args)]

    return build


@pytest.fixture(scope="session")
def differences():
    """The session's comparisons, written as JSON to ``$VLPT_REFERENCE_REPORT`` when it is set."""
    table = DifferenceTable()
    yield table
    if os.environ.get(REPORT_VARIABLE) and table.comparisons:
        table.write(Path(os.environ[REPORT_VARIABLE]))


@pytest.fixture
def images():
    """A seeded batch of 4 random images of the tiny backbone's size, and labels for 4 classes."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 32, 32, generator=generator), torch.tensor([0, 3, 1, 0])

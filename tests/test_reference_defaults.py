"""Method defaults follow the reference code (issue 15, "faithful by default"): each test pins a default
that once differed from the reference repository's config or code."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml

from vlpt.eval.harness import Harness
from vlpt.eval.suite import load_method_config, load_suite
from vlpt.registry import METHODS

CLASSES = ["red_circle", "blue_square", "dog"]
TEMPLATES = ["a photo of a {}."]


def test_ivlp_prompts_all_twelve_layers_of_both_towers(deep_backbone):
    """multimodal-prompt-learning IVLP/vit_b16_c2_ep5_batch4_2+2ctx: PROMPT_DEPTH_VISION = PROMPT_DEPTH_TEXT = 12."""
    resolved = load_method_config("ivlp", {}, "test")
    assert resolved.config.prompt_depth == 12 and METHODS.get("ivlp").Config().prompt_depth == 12
    assert (resolved.config.n_ctx, resolved.config.n_vision_tokens, resolved.config.lr) == (2, 2, 0.0035)
    method = resolved.cls(deep_backbone, CLASSES, TEMPLATES, resolved.config)
    assert sorted(method.vision_prompts()) == list(range(12))
    assert sorted(method.deep_text_prompts()) == list(range(1, 12))
    assert load_method_config("maple", {}, "test").config.prompt_depth == 9  # MaPLe's own depth is unchanged


def test_maple_deeper_couplings_start_as_copies_of_one_layer(deep_backbone):
    """The reference clones one nn.Linear for layers 1..depth-1 (_get_clones); layer 0's proj is its own."""
    cls = METHODS.get("maple")
    method = cls(deep_backbone, CLASSES, TEMPLATES, cls.Config())
    couplings = method.couplings
    assert len(couplings) == 9
    for layer in couplings[2:]:
        assert torch.equal(layer.weight, couplings[1].weight) and torch.equal(layer.bias, couplings[1].bias)
        assert layer.weight.data_ptr() != couplings[1].weight.data_ptr()  # copies, trained separately
    assert not torch.equal(couplings[0].weight, couplings[1].weight)


def test_maple_cross_dataset_config_is_the_references():
    config = load_method_config("maple_cross_dataset", {}, "test").config
    assert (config.prompt_depth, config.lr, config.epochs, config.batch_size, config.n_ctx) == (3, 0.0026, 2, 4, 2)


@pytest.mark.parametrize("name, mode", [("vpt", "deep"), ("vpt_shallow", "shallow")])
def test_vpt_prompts_start_from_the_references_normal_distribution(tiny_backbone, name, mode):
    """multimodal-prompt-learning's VPT baseline draws prompts from N(0, 0.02); uniform stays an option."""
    resolved = load_method_config(name, {}, "test")
    assert resolved.config.init == "normal" and resolved.config.mode == mode
    assert METHODS.get("vpt").Config().init == "normal"
    torch.manual_seed(0)
    method = resolved.cls(tiny_backbone, CLASSES, TEMPLATES, resolved.config)
    tokens = torch.cat([t.detach().flatten() for t in method.visual_prompts().values()])
    assert abs(float(tokens.std()) - 0.02) < 0.004
    uniform = resolved.cls(tiny_backbone, CLASSES, TEMPLATES, METHODS.get("vpt").Config(mode=mode, init="uniform"))
    assert float(torch.cat([t.detach().flatten() for t in uniform.visual_prompts().values()]).std()) > 0.05


@pytest.mark.parametrize("name", ["vpt", "vpt_shallow"])
def test_vpt_classifies_with_a_photo_of_a_for_every_dataset(tiny_backbone, name):
    """multimodal-prompt-learning trainers/vpt.py: the frozen text side is "a photo of a {}." on every dataset."""
    resolved = load_method_config(name, {}, "test")
    method = resolved.cls(tiny_backbone, ["banded", "dotted"], ["{} texture."], resolved.config)
    own = resolved.cls(tiny_backbone, ["banded", "dotted"], ["{} texture."],
                       load_method_config(name, {"text_template": None}, "test").config)
    with torch.no_grad():
        expected = tiny_backbone.encode_text(tiny_backbone.tokenize(["a photo of a banded.", "a photo of a dotted."]),
                                             normalize=True)
        dataset = tiny_backbone.encode_text(tiny_backbone.tokenize(["banded texture.", "dotted texture."]),
                                            normalize=True)
    assert torch.allclose(method.class_embeddings, expected, atol=1e-6)
    assert torch.allclose(own.class_embeddings, dataset, atol=1e-6)


@pytest.mark.parametrize("name", ["coop", "coop_m4"])
def test_coop_trains_imagenet_fifty_epochs_at_every_shot_count(name):
    """CoOp's COOP.md: for ImageNet, *_ep50.yaml for all settings; elsewhere 50/100/100/200/200 by shots."""
    config = load_method_config(name, {}, "test").config
    assert [config.epochs_for(k, "imagenet") for k in (1, 2, 4, 8, 16)] == [50] * 5
    assert config.epochs_for(16, "imagenet~gaussian_noise:3") == 50
    assert [config.epochs_for(k, "dtd") for k in (1, 2, 4, 8, 16)] == [50, 100, 100, 200, 200]
    assert config.epochs_for(16) == 200


def test_kgcoop_does_not_inherit_coops_imagenet_epochs():
    config = load_method_config("kgcoop", {}, "test").config
    assert config.epochs_for(16, "imagenet") == config.epochs_for(16, "dtd")


def test_the_harness_trains_the_datasets_epochs(tmp_path):
    suite = {"name": "epochs", "backbone": {"model": "vlpt-starter-vit", "pretrained": None},
             "data_root": str(tmp_path / "data"), "output": str(tmp_path / "out"),
             "experiments": [{"protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1],
                              "methods": [{"config": "coop",
                                           "params": {"epochs": 1, "dataset_epochs": {"starter_shapes": 2}}}]}]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    Harness(load_suite(path), progress=False).run_all()
    (record,) = [json.loads(f.read_text()) for f in (tmp_path / "out" / "records").glob("*.json")]
    assert record["config"]["epochs"] == 2


def test_tpt_and_cocoop_defaults_are_the_reference_settings():
    """TPT (azshue/TPT scripts/test_tpt.sh + argparse defaults) and CoCoOp (vit_b16_c4_ep10_batch1_ctxv1)."""
    tpt = load_method_config("tpt", {}, "test").config
    assert (tpt.lr, tpt.steps, tpt.views, tpt.selection, tpt.optimizer, tpt.weight_decay, tpt.n_ctx, tpt.ctx_init) \
        == (5e-3, 1, 64, 0.1, "adamw", 0.01, 4, "a photo of a")
    assert (tpt.augment, tpt.view_interpolation) == ("auto", "bilinear")
    cocoop = load_method_config("cocoop", {}, "test").config
    assert (cocoop.n_ctx, cocoop.ctx_init, cocoop.batch_size, cocoop.epochs, cocoop.lr, cocoop.optimizer,
            cocoop.warmup_epochs, cocoop.warmup_lr, cocoop.scheduler) \
        == (4, "a photo of a", 1, 10, 0.002, "sgd", 1, 1e-5, "cosine")


DIM = 128  # the starter backbone's embedding width


class _FakeLogistic:
    """Stands in for a fitted LogisticRegression whose validation accuracy depends on C alone."""

    def __init__(self, c, accuracy):
        self.c, self.accuracy = c, accuracy
        self.coef_, self.intercept_, self.classes_ = np.zeros((3, DIM)), np.zeros(3), np.arange(3)

    def score(self, x, y):
        return self.accuracy(self.c)


def _probe(tiny_backbone, monkeypatch, accuracy, **params):
    cls = METHODS.get("linear_probe")
    fits = []
    monkeypatch.setattr("vlpt.methods.linear_probe.extract_features",
                        lambda method, loader: (np.zeros((3, DIM)), np.arange(3)))
    monkeypatch.setattr(cls, "_fit", lambda self, c, x, y: fits.append(c) or _FakeLogistic(c, accuracy))
    config = load_method_config("linear_probe", params, "test").config
    method = cls(tiny_backbone, CLASSES, TEMPLATES, config)

    class Data:
        def train_eval_dataloader(self):
            return None

        def val_dataloader(self):
            return None

    method.fit_without_gradients(Data())
    return method, fits


def test_linear_probe_searches_c_as_coops_lpclip(tiny_backbone, monkeypatch):
    """lpclip/linear_probe.py: sweep [1e6 .. 1e-6] in that order, then halve the log interval
    [peak/10, peak*10] towards the better end; the last round's choice is kept."""
    peaked = lambda c: -abs(math.log10(c) - 0.3)  # noqa: E731  best at C = 10**0.3
    method, fits = _probe(tiny_backbone, monkeypatch, peaked, refine_steps=3)
    assert fits[:7] == [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]
    # rounds: [-1, 1] -> right (10) -> [0, 1]: left (1) -> [0, .5]: right (10**.5), the last choice
    assert [round(math.log10(c), 6) for c in fits[7:]] == [-1, 1, 0, 1, 0, 0.5]
    assert math.isclose(method.chosen_c, 10 ** 0.5)
    flat, _ = _probe(tiny_backbone, monkeypatch, lambda c: 0.5, refine_steps=0)
    assert flat.chosen_c == 1e6  # ties go to the first grid value, the largest C
    ternary, _ = _probe(tiny_backbone, monkeypatch, peaked, refine_steps=3, search="ternary")
    assert not math.isclose(ternary.chosen_c, 10 ** 0.5)


def test_every_method_config_has_its_reference_and_departures_in_docs_fidelity():
    """docs/fidelity.md names every method config (its reference code and known departures) and holds the
    differential check's measured table."""
    from checkout import CHECKOUT
    from vlpt.paths import CONFIG_DIR

    text = (CHECKOUT / "docs" / "fidelity.md").read_text()
    missing = [path.stem for path in sorted((CONFIG_DIR / "methods").glob("*.yaml")) if f"`{path.stem}`" not in text]
    assert missing == []
    assert "| method | quantity | max abs | max rel |" in text

"""Gradient transforms (``PromptMethod.transform_gradients``, ``vlpt.methods.step``) act the same under the three
drivers of a training step: single-task Lightning training, the multitask module (MVLPT) and GRAM's inner step.

The gradient-editing method is one module's worth of code here: a ProGrad-style CoOp (Zhu et al., "Prompt-aligned
Gradient for Prompt Tuning", ICCV 2023) whose step never conflicts with the gradient toward the zero-shot prediction.
"""
from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from vlpt.data import ProtocolData
from vlpt.meta import starter_caption_pairs
from vlpt.meta.gram import _CaptionBatch, _MethodCall, adapt, meta_learn_initialization
from vlpt.methods.base import cosine_logits
from vlpt.methods.coop import CoOp, CoOpConfig
from vlpt.methods.step import Grads, TrainingStep
from vlpt.methods.zeroshot import zero_shot_weights
from vlpt.multitask import MultitaskPromptModule, Task
from vlpt.registry import METHODS, register_method

CLASSES = ["cat", "dog", "bird"]
TEMPLATES = ["a photo of a {}."]
CAPTIONS = ["a red circle", "the digit one", "a blue square", "a red circle"]


def project(grads: Grads, toward: Grads) -> Grads:
    """ProGrad: ``g`` minus its component against ``toward`` when the two conflict (``g . toward < 0``)."""
    dot = sum((grads[n] * toward[n]).sum() for n in grads)
    if dot >= 0:
        return grads
    norm = sum(toward[n].pow(2).sum() for n in grads)
    return {n: grads[n] - dot / norm * toward[n] for n in grads}


class ProGradCoOp(CoOp):
    """CoOp whose gradient is projected off the direction that conflicts with the zero-shot prediction's."""

    def build(self, classnames, templates):
        super().build(classnames, templates)
        self.update_zero_shot(classnames, templates)

    def update_classnames(self, classnames, templates):
        super().update_classnames(classnames, templates)
        self.update_zero_shot(classnames, templates)

    def update_zero_shot(self, classnames, templates):
        self.register_buffer("zero_shot", zero_shot_weights(self.backbone, classnames, templates), persistent=False)

    def zero_shot_kl(self, images, labels):
        target = F.softmax(cosine_logits(self.image_features(images), self.zero_shot, self.backbone.logit_scale), -1)
        return F.kl_div(F.log_softmax(self.logits(images), -1), target, reduction="batchmean")

    def transform_gradients(self, grads, step):
        return project(grads, step.gradients(step.loss(self.zero_shot_kl)))


class ScaledCoOp(CoOp):
    """CoOp whose gradient is multiplied by ``factor``."""

    factor = 1.0

    def transform_gradients(self, grads, step):
        return {n: self.factor * g for n, g in grads.items()}


def _config(lr=0.1, **params) -> CoOpConfig:
    """Plain SGD at a constant lr: a step is exactly ``-lr * grad``."""
    return CoOpConfig(n_ctx=4, lr=lr, momentum=0.0, weight_decay=0.0, scheduler="constant", warmup_epochs=0,
                      batch_size=4, **params)


def _method(cls, backbone, classnames=CLASSES, factor=None, **params):
    torch.manual_seed(0)
    method = cls(backbone, classnames, TEMPLATES, _config(**params))
    if factor is not None:
        method.factor = factor
    return method


def _trainer(epochs=2) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0)


def _batches(n=8, classes=3, tasks=None, seed=1) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(n, 3, 32, 32, generator=generator), torch.randint(0, classes, (n,), generator=generator)]
    if tasks is not None:
        tensors.append(torch.arange(n) % tasks)
    return DataLoader(TensorDataset(*tensors), batch_size=4)


def _tasks() -> list[Task]:
    split = {"animals": ["cat", "dog"], "colours": ["red", "green", "blue"]}
    return [Task(name, ProtocolData([], [], names, TEMPLATES, [], dataset=name)) for name, names in split.items()]


def _train_single(method, epochs=2) -> torch.Tensor:
    _trainer(epochs).fit(method, train_dataloaders=_batches())
    return method.context.ctx.detach().clone()


def _train_multitask(method, scoring, epochs=2) -> torch.Tensor:
    module = MultitaskPromptModule(method, _tasks(), max_epochs=epochs, scoring=scoring)
    _trainer(epochs).fit(module, train_dataloaders=_batches(classes=2, tasks=2))
    return method.context.ctx.detach().clone()


def _inner_step(method, lr=0.5, create_graph=False) -> torch.Tensor:
    """GRAM's inner step from the method's prompt on one image-caption batch, with the method's transforms."""
    images = torch.randn(len(CAPTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(2))
    batch = _CaptionBatch(method, _MethodCall(method), images, CAPTIONS, "contrastive", create_graph)
    adapted, _ = adapt(method.prompt_parameters(), batch, None, lr, first_order=not create_graph,
                       transform=batch.transform)
    return adapted["context.ctx"].detach()


# ---- the projection --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(20))
def test_projection_never_conflicts_with_the_zero_shot_gradient(seed):
    generator = torch.Generator().manual_seed(seed)
    draw = lambda: {"a": torch.randn(4, 8, generator=generator, dtype=torch.float64),  # noqa: E731
                    "b": torch.randn(3, generator=generator, dtype=torch.float64)}
    grads, toward = draw(), draw()
    projected = project(grads, toward)
    dot = lambda x, y: float(sum((x[n] * y[n]).sum() for n in x))  # noqa: E731
    assert dot(projected, toward) >= -1e-12
    if dot(grads, toward) >= 0:
        assert projected is grads
    else:  # the smallest change that removes the conflict: along ``toward`` only
        change = {n: grads[n] - projected[n] for n in grads}
        assert abs(dot(change, toward)) ** 2 == pytest.approx(dot(change, change) * dot(toward, toward))


def test_the_gradient_editing_method_registers_like_any_other(monkeypatch, tiny_backbone):
    METHODS.names()  # every built-in method registered first
    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))  # the registration ends with the test
    register_method("prograd_test")(ProGradCoOp)
    assert METHODS.get("prograd_test") is ProGradCoOp
    method = _method(ProGradCoOp, tiny_backbone)
    assert method.gradient_transforms() == [method.transform_gradients]
    assert _method(CoOp, tiny_backbone).gradient_transforms() == []


# ---- the same transform under every driver ------------------------------------------------------------
def test_a_zeroing_transform_leaves_the_prompt_unchanged_under_every_driver(tiny_backbone):
    start = _method(ScaledCoOp, tiny_backbone).context.ctx.detach().clone()
    assert torch.equal(_train_single(_method(ScaledCoOp, tiny_backbone, factor=0.0)), start)
    for scoring in ("union", "own"):
        method = _method(ScaledCoOp, tiny_backbone, classnames=["cat", "dog"], factor=0.0)
        assert torch.equal(_train_multitask(method, scoring), start)
    assert torch.equal(_inner_step(_method(ScaledCoOp, tiny_backbone, factor=0.0)), start)
    assert not torch.equal(_train_single(_method(ScaledCoOp, tiny_backbone, factor=1.0)), start)  # it does train


class PrecisionProbe(CoOp):
    """CoOp whose gradient transform evaluates a second loss, recording whether autocast was on for it."""

    def transform_gradients(self, grads, step):
        def probe(images, labels):
            self.autocast_seen.append(torch.is_autocast_enabled("cpu"))
            return self.training_loss(images, labels)
        step.gradients(step.loss(probe))
        return grads


@pytest.mark.parametrize("precision, expected", [("bf16-mixed", True), ("32-true", False)])
def test_a_transforms_loss_runs_in_the_training_precision_under_every_trainer_driver(tiny_backbone, precision,
                                                                                    expected):
    """ProGrad's and R-AMT's second loss runs after the backward pass, outside the training step's autocast; the
    drivers put it back under the Trainer's precision."""
    for multitask in (False, True):
        method = _method(PrecisionProbe, tiny_backbone, classnames=["cat", "dog"] if multitask else CLASSES)
        method.autocast_seen = []
        trainer = L.Trainer(max_epochs=1, accelerator="cpu", precision=precision, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        if multitask:
            trainer.fit(MultitaskPromptModule(method, _tasks(), max_epochs=1, scoring="union"),
                        train_dataloaders=_batches(classes=2, tasks=2))
        else:
            trainer.fit(method, train_dataloaders=_batches())
        assert method.autocast_seen and set(method.autocast_seen) == {expected}


def test_under_fp16_mixed_precision_a_transforms_loss_stays_in_fp32():
    """Its gradients are taken without the loss scaler: fp16 could underflow them, so 16-mixed keeps fp32."""
    from types import SimpleNamespace

    from lightning.pytorch.plugins.precision import MixedPrecision

    from vlpt.methods.step import training_precision

    module = SimpleNamespace(_trainer=SimpleNamespace(precision_plugin=MixedPrecision("16-mixed", "cpu")))
    with training_precision(module)():
        assert not torch.is_autocast_enabled("cpu")
    module._trainer.precision_plugin = MixedPrecision("bf16-mixed", "cpu")
    with training_precision(module)():
        assert torch.is_autocast_enabled("cpu")


def test_doubling_the_gradient_equals_doubling_the_lr_under_every_driver(tiny_backbone):
    doubled = _method(ScaledCoOp, tiny_backbone, factor=2.0)
    assert torch.equal(_train_single(doubled), _train_single(_method(CoOp, tiny_backbone, lr=0.2)))
    for scoring in ("union", "own"):
        doubled = _method(ScaledCoOp, tiny_backbone, classnames=["cat", "dog"], factor=2.0)
        plain = _method(CoOp, tiny_backbone, classnames=["cat", "dog"], lr=0.2)
        assert torch.equal(_train_multitask(doubled, scoring), _train_multitask(plain, scoring))
    assert torch.equal(_inner_step(_method(ScaledCoOp, tiny_backbone, factor=2.0)),
                       _inner_step(_method(CoOp, tiny_backbone), lr=1.0))


def _by_hand(method, evaluate, lr, objective=None) -> torch.Tensor:
    """The prompt after one SGD step along ProGrad's direction, the batch's losses taken by ``evaluate(fn)``
    (the objective: the method's training loss unless given); the projection must be active."""
    params = method.prompt_parameters()
    grad = lambda loss: dict(zip(params, torch.autograd.grad(loss, list(params.values()))))  # noqa: E731
    raw = grad(evaluate(objective or method.training_loss))
    projected = project(raw, grad(evaluate(method.zero_shot_kl)))
    assert projected is not raw, "the batch's gradients do not conflict: pick another seed"
    return method.context.ctx.detach() - lr * projected["context.ctx"]


def test_prograd_steps_along_the_projected_gradient_under_every_driver(tiny_backbone):
    lr = 0.1
    loader = _batches(n=4, seed=5)  # one batch, whose gradients conflict
    images, labels = next(iter(loader))
    method = _method(ProGradCoOp, tiny_backbone)
    expected = _by_hand(method, lambda fn: fn(images, labels), lr)
    _trainer(1).fit(method, train_dataloaders=loader)
    assert torch.allclose(method.context.ctx.detach(), expected, atol=1e-6)

    loader = _batches(n=4, classes=2, tasks=2, seed=5)
    images, labels, task_ids = next(iter(loader))
    method = _method(ProGradCoOp, tiny_backbone, classnames=["cat", "dog"])
    module = MultitaskPromptModule(method, _tasks(), max_epochs=1, scoring="own")
    expected = _by_hand(method, lambda fn: module.multitask_loss(images, labels, task_ids, fn), lr)
    _trainer(1).fit(module, train_dataloaders=loader)
    assert torch.allclose(method.context.ctx.detach(), expected, atol=1e-6)

    method = _method(ProGradCoOp, tiny_backbone)
    caption_images = torch.randn(len(CAPTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(2))
    batch = _CaptionBatch(method, _MethodCall(method), caption_images, CAPTIONS, "contrastive")
    expected = _by_hand(method, batch.step(method.prompt_parameters()).loss, 0.5, batch.objective)
    assert torch.allclose(_inner_step(method, lr=0.5), expected, atol=1e-6)


def test_gram_meta_learning_applies_the_methods_transforms_to_the_inner_step_only(tiny_backbone, tmp_path):
    domains = starter_caption_pairs(tmp_path, shapes_per_class=1, digits_limit=16)
    method = _method(CoOp, tiny_backbone, classnames=["x"])
    steps: list[TrainingStep] = []
    method.attach_gradient_transform(lambda grads, step: steps.append(step) or grads)
    meta_learn_initialization(method, domains, steps=2, batch_size=3, seed=0, first_order=True)
    assert len(steps) == 2  # one inner step per meta-step; the outer gradient is not transformed
    assert all(list(s.params) == ["context.ctx"] and s.params["context.ctx"] is method.context.ctx for s in steps)

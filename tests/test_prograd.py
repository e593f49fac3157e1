"""ProGrad: the applied gradient never conflicts with the gradient towards zero-shot CLIP (lambda 1), conflicts
are removed along that gradient only, and the context starts from the hand-written prompt as its code does."""
from __future__ import annotations

import pytest
import torch

from vlpt.errors import ConfigError
from vlpt.methods.prograd import ProGrad, project_conflicts
from vlpt.methods.step import TrainingStep

CLASSES = ["red circle", "green square", "blue star", "yellow kite"]
TEMPLATES = ["a photo of a {}."]


def _dot(a, b) -> float:
    return float(sum((a[n] * b[n]).sum() for n in a))


def _step(method, seed):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(8, 3, 32, 32, generator=generator)
    labels = torch.randint(0, len(CLASSES), (8,), generator=generator)
    return TrainingStep(method, lambda fn: fn(images, labels))


@pytest.mark.parametrize("strength", [1.0, 0.8])
def test_the_applied_gradient_never_goes_against_the_zero_shot_gradient(tiny_backbone, strength):
    """On real batches: where the cross-entropy gradient conflicts with the distillation gradient, the applied
    one has lambda of the conflict removed (none left at lambda 1); where it does not, it is unchanged."""
    method = ProGrad(tiny_backbone, CLASSES, TEMPLATES, ProGrad.Config(prograd_lambda=strength))
    conflicts = 0
    for seed in range(12):
        step = _step(method, seed)
        ce = step.gradients(step.loss())
        toward = step.gradients(step.loss(method.zero_shot_loss))
        applied = method.transform_gradients(ce, step)
        before, after = _dot(ce, toward), _dot(applied, toward)
        if before < 0:
            conflicts += 1
            scale = (_dot(ce, ce) * _dot(toward, toward)) ** 0.5  # float32 rounding relative to |g| |k|
            assert abs(after - (1 - strength) * before) <= 1e-5 * scale
            change = {n: ce[n] - applied[n] for n in ce}  # along the zero-shot gradient only
            assert abs(_dot(change, toward)) ** 2 == pytest.approx(_dot(change, change) * _dot(toward, toward), rel=1e-4)
        else:
            assert all(torch.equal(applied[n], ce[n]) for n in ce)
    assert 0 < conflicts < 12, "the batches never (or always) conflicted: the test checks one branch only"


def test_the_projection_is_per_parameter():
    grads = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([1.0, 1.0])}
    toward = {"a": torch.tensor([-1.0, 1.0]), "b": torch.tensor([1.0, 0.0])}
    out = project_conflicts(grads, toward)
    assert torch.allclose(out["a"], torch.tensor([0.5, 0.5])) and torch.equal(out["b"], grads["b"])
    assert project_conflicts(grads, {"a": torch.zeros(2), "b": torch.zeros(2)}) == grads


def test_the_context_starts_from_the_zero_padded_hand_written_prompt(tiny_backbone):
    method = ProGrad(tiny_backbone, CLASSES, TEMPLATES)
    phrase = tiny_backbone.embed_tokens(tiny_backbone.tokenize(["a photo of a"]))[0, 1:5]
    ctx = method.context.ctx.detach()
    assert ctx.shape[0] == 16 and torch.equal(ctx[:12], torch.zeros_like(ctx[:12])) and torch.equal(ctx[12:], phrase)
    # pets: ProGrad's own prompt (class name last); its code counts 8 words, so the 9th token (the comma's
    # split leaves "a") stays fixed before the name
    pets = ProGrad(tiny_backbone, ["abyssinian"], ["a photo of a {}, a type of pet."])
    assert pets.context.placeholder == " ".join(["X"] * 8 + ["a type of pet, a photo of a"])
    tokens = tiny_backbone.tokenize(["a type of pet, a photo of a"])[0]
    assert torch.equal(pets.context.suffix[0, 0], tiny_backbone.embed_tokens(tokens[None])[0, 9])
    teacher = tiny_backbone.zero_shot_classifier(["abyssinian"], ["a type of pet, a photo of a {}."])
    assert torch.allclose(pets.zero_shot, teacher)


def test_bad_settings_are_named(tiny_backbone):
    with pytest.raises(ConfigError, match="does not end with its class name"):
        ProGrad(tiny_backbone, CLASSES, ["{} in a photo."])
    with pytest.raises(ConfigError, match="n_ctx 2 is shorter than the 4 words"):
        ProGrad(tiny_backbone, CLASSES, TEMPLATES, ProGrad.Config(n_ctx=2))
    with pytest.raises(ValueError, match="prograd_lambda must be in"):
        ProGrad.Config(prograd_lambda=1.5)
    assert ProGrad(tiny_backbone, CLASSES, TEMPLATES, ProGrad.Config(ctx_init="a photo of a")).context.n_ctx == 4


def test_prograd_trains_along_the_projected_gradient_under_every_driver(tiny_backbone):
    """Lightning single-task training, the multitask module and GRAM's inner step all take ProGrad's step."""
    from test_gradient_hooks import CAPTIONS, _batches, _inner_step, _tasks, _trainer
    from vlpt.meta.gram import _CaptionBatch, _MethodCall
    from vlpt.multitask import MultitaskPromptModule

    def method(classnames=("cat", "dog", "bird")):
        torch.manual_seed(0)
        config = ProGrad.Config(n_ctx=4, ctx_init=None, lr=0.1, momentum=0.0, weight_decay=0.0,
                                scheduler="constant", warmup_epochs=0, batch_size=4)
        return ProGrad(tiny_backbone, list(classnames), TEMPLATES, config)

    def by_hand(m, evaluate, lr, objective=None):
        params = m.prompt_parameters()
        grad = lambda loss: dict(zip(params, torch.autograd.grad(loss, list(params.values()))))  # noqa: E731
        raw = grad(evaluate(objective or m.training_loss))
        toward = grad(evaluate(m.zero_shot_loss))
        assert _dot(raw, toward) < 0, "the batch's gradients do not conflict: pick another seed"
        return m.context.ctx.detach() - lr * project_conflicts(raw, toward)["context.ctx"]

    loader = _batches(n=4, seed=5)
    images, labels = next(iter(loader))
    single = method()
    expected = by_hand(single, lambda fn: fn(images, labels), 0.1)
    _trainer(1).fit(single, train_dataloaders=loader)
    assert torch.allclose(single.context.ctx.detach(), expected, atol=1e-6)

    loader = _batches(n=4, classes=2, tasks=2, seed=5)
    images, labels, task_ids = next(iter(loader))
    multi = method(["cat", "dog"])
    module = MultitaskPromptModule(multi, _tasks(), max_epochs=1, scoring="own")
    expected = by_hand(multi, lambda fn: module.multitask_loss(images, labels, task_ids, fn), 0.1)
    _trainer(1).fit(module, train_dataloaders=loader)
    assert torch.allclose(multi.context.ctx.detach(), expected, atol=1e-6)

    gram = method()
    caption_images = torch.randn(len(CAPTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(2))
    batch = _CaptionBatch(gram, _MethodCall(gram), caption_images, CAPTIONS, "contrastive")
    expected = by_hand(gram, batch.step(gram.prompt_parameters()).loss, 0.5, batch.objective)
    assert torch.allclose(_inner_step(gram, lr=0.5), expected, atol=1e-6)

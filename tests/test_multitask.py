"""Multitask prompt learning (MVLPT): union and per-task scoring, the two samplings, source-to-target transfer."""
from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlpt.data import EvalSet, ProtocolData, Sample
from vlpt.data.transforms import eval_transform
from vlpt.errors import ConfigError
from vlpt.methods.base import cosine_logits
from vlpt.multitask import MultitaskDataModule, MultitaskPromptModule, Task
from vlpt.registry import METHODS

TEMPLATES = ["a photo of a {}."]
#: task "shapes" has 2 classes, task "colours" 3; 4 training and 2 test images per class
TASK_CLASSES = {"shapes": ["square", "circle"], "colours": ["red", "green", "blue"]}
N_TRAIN, N_TEST = 4, 2


def _make_task(root, task_index: int, name: str, classnames: list[str]) -> Task:
    """Real PNGs, each of one unique colour (so a transformed image identifies its sample)."""
    train, test = [], []
    for label, classname in enumerate(classnames):
        for i in range(N_TRAIN + N_TEST):
            path = root / f"{name}_{classname}_{i}.png"
            Image.new("RGB", (40, 40), (40 + 100 * task_index + 10 * i, 30 + 60 * label, 200 - 20 * i)).save(path)
            (train if i < N_TRAIN else test).append(Sample(str(path), label, classname))
    return Task(name, ProtocolData(train, test[:len(classnames)], list(classnames), TEMPLATES,
                                   [EvalSet("test", test, list(classnames), TEMPLATES)], dataset=name))


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> list[Task]:
    root = tmp_path_factory.mktemp("multitask")
    return [_make_task(root, i, name, classes) for i, (name, classes) in enumerate(TASK_CLASSES.items())]


def _datamodule(tasks, backbone, sampling="mixed", seed=0, batch_size=4) -> MultitaskDataModule:
    cfg = backbone.preprocess_cfg
    return MultitaskDataModule(tasks, backbone.image_size, cfg["mean"], cfg["std"], batch_size=batch_size,
                               train_augment="none", seed=seed, sampling=sampling)


def _coop(backbone, tasks, **params):
    cls = METHODS.get("coop")
    torch.manual_seed(0)
    return cls(backbone, tasks[0].classnames, TEMPLATES, cls.Config(n_ctx=4, batch_size=4, **params))


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, **kwargs)


def _sample_keys(tasks, backbone):
    """(task, label) of every training sample, keyed by its transformed image's corner pixel."""
    cfg = backbone.preprocess_cfg
    tf = eval_transform(backbone.image_size, cfg["mean"], cfg["std"])
    keys = {}
    for t, task in enumerate(tasks):
        for sample in task.data.train:
            keys[_key(tf(Image.open(sample.path).convert("RGB")))] = (t, sample.label)
    return keys


def _key(image: torch.Tensor) -> tuple:
    return tuple(round(v, 3) for v in image[:, 0, 0].tolist())


def _epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return [tuple(part.clone() for part in batch) for batch in loader]


# ---- data ------------------------------------------------------------------------------------
def test_training_batches_carry_each_tasks_own_labels(tasks, tiny_backbone):
    keys = _sample_keys(tasks, tiny_backbone)
    seen = []
    for images, labels, task_ids in _datamodule(tasks, tiny_backbone).train_dataloader():
        for image, label, task_id in zip(images, labels.tolist(), task_ids.tolist()):
            assert keys[_key(image)] == (task_id, label)
            seen.append(_key(image))
    assert sorted(seen) == sorted(keys)  # one epoch is every sample of every task once
    assert len(seen) == sum(len(t.data.train) for t in tasks)


def test_mixed_sampling_mixes_tasks_within_batches_deterministically(tasks, tiny_backbone):
    loader = _datamodule(tasks, tiny_backbone, "mixed").train_dataloader()
    first, second = _epoch(loader), _epoch(loader)
    assert any(len(set(ids.tolist())) > 1 for _, _, ids in first), "no batch holds two tasks"
    again = _epoch(_datamodule(tasks, tiny_backbone, "mixed").train_dataloader())
    assert all(torch.equal(a, b) for x, y in zip(first, again) for a, b in zip(x, y))
    assert not all(torch.equal(x[2], y[2]) and torch.equal(x[1], y[1]) for x, y in zip(first, second))
    other_seed = _epoch(_datamodule(tasks, tiny_backbone, "mixed", seed=1).train_dataloader())
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(first, other_seed))


def test_per_task_sampling_draws_every_batch_from_one_task_deterministically(tasks, tiny_backbone):
    keys = _sample_keys(tasks, tiny_backbone)
    loader = _datamodule(tasks, tiny_backbone, "per_task").train_dataloader()
    sizes = [len(t.data.train) for t in tasks]
    assert len(loader) == sum(math.ceil(n / 4) for n in sizes)
    first, second = _epoch(loader), _epoch(loader)
    for epoch in (first, second):
        seen = []
        for images, labels, ids in epoch:
            assert len(set(ids.tolist())) == 1, "a per-task batch holds two tasks"
            seen += [_key(image) for image in images]
        assert sorted(seen) == sorted(keys)
    assert {int(ids[0]) for _, _, ids in first} == {0, 1}
    # tasks are interleaved: the order of batches is shuffled, not task after task
    orders = [[int(ids[0]) for _, _, ids in epoch] for epoch in (first, second)]
    assert any(order != sorted(order) for order in orders)
    again = _epoch(_datamodule(tasks, tiny_backbone, "per_task").train_dataloader())
    assert all(torch.equal(a, b) for x, y in zip(first, again) for a, b in zip(x, y))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(first, second))


def test_evaluation_loaders_and_bad_settings(tasks, tiny_backbone):
    dm = _datamodule(tasks, tiny_backbone)
    eval_set = tasks[1].data.eval_sets[0]
    batches = list(dm.eval_dataloader(1, eval_set))
    assert all(len(batch) == 2 for batch in batches)
    assert torch.cat([labels for _, labels in batches]).tolist() == [s.label for s in eval_set.samples]
    assert dm.eval_set(1, "test") is eval_set
    images, labels, ids = next(iter(dm.val_dataloader()))
    assert ids.tolist() == [0] * len(tasks[0].data.val) + [1] * len(tasks[1].data.val)
    assert len(next(iter(dm.val_dataloader(0)))) == 2
    with pytest.raises(ConfigError, match="unknown multitask sampling 'round_robin'"):
        _datamodule(tasks, tiny_backbone, "round_robin")
    with pytest.raises(ConfigError, match="task index 2 out of range"):
        dm.eval_dataloader(2, eval_set)
    with pytest.raises(ConfigError, match="no evaluation set 'novel'"):
        dm.eval_set(0, "novel")
    with pytest.raises(ConfigError, match="distinct"):
        _datamodule([tasks[0], tasks[0]], tiny_backbone)


# ---- per-task scoring --------------------------------------------------------------------------
def _tagged_batch(tasks, tiny_backbone):
    """A mixed batch whose images carry their batch position in pixel [0, 0, 0]."""
    task_ids = torch.tensor([0, 1, 1, 0, 1, 0, 1])
    labels = torch.tensor([1, 2, 0, 0, 1, 1, 2])
    images = torch.randn(len(labels), 3, 32, 32, generator=torch.Generator().manual_seed(3))
    images[:, 0, 0, 0] = torch.arange(len(labels), dtype=images.dtype) * 10.0
    return images, labels, task_ids


@pytest.mark.parametrize("name", ["coop", "upt"])
def test_loss_scores_each_sample_against_its_own_tasks_classes(name, tasks, tiny_backbone):
    cls = METHODS.get(name)
    torch.manual_seed(0)
    method = cls(tiny_backbone, tasks[0].classnames, TEMPLATES, cls.Config(n_ctx=4))
    module = MultitaskPromptModule(method, tasks, scoring="own")
    images, labels, task_ids = _tagged_batch(tasks, tiny_backbone)

    calls = []
    original = method.logits

    def spy(batch_images):
        out = original(batch_images)
        positions = (batch_images[:, 0, 0, 0] / 10.0).round().long().tolist()
        calls.append((positions, list(method.classnames), out.shape[1]))
        return out

    method.logits = spy
    loss = module.multitask_loss(images, labels, task_ids)
    del method.logits

    # every call scores samples of one task against exactly that task's classes
    assert sorted(p for positions, _, _ in calls for p in positions) == list(range(len(labels)))
    for positions, classnames, width in calls:
        owners = {int(task_ids[p]) for p in positions}
        assert len(owners) == 1
        owner = owners.pop()
        assert classnames == tasks[owner].classnames and width == len(tasks[owner].classnames)

    # the loss is the mean over the batch of per-sample cross-entropy on per-task logits (by hand)
    with torch.no_grad():
        per_sample = torch.empty(len(labels))
        for t, task in enumerate(tasks):
            method.set_classnames(task.classnames, task.templates)
            index = (task_ids == t).nonzero(as_tuple=True)[0]
            if name == "coop":
                logits = cosine_logits(tiny_backbone.encode_image(images[index]), method.text_features(),
                                       tiny_backbone.logit_scale)
            else:
                logits = method.logits(images[index])
            assert logits.shape == (len(index), len(task.classnames))
            per_sample[index] = F.cross_entropy(logits, labels[index], reduction="none")
    assert torch.allclose(loss, per_sample.mean(), atol=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in method.trainable_parameters())


@pytest.mark.parametrize("name,params", [
    ("coop", {"n_ctx": 4}), ("coop", {"n_ctx": 4, "class_token_position": "middle"}),
    ("upt", {"class_token_position": "front"}), ("kgcoop", {}), ("vpt", {"n_tokens": 4}),  # MCoOp, MUPT, MVPT
])
def test_switching_tasks_back_and_forth_equals_a_fresh_set_classnames(name, params, tasks, tiny_backbone):
    if name not in METHODS.names():
        pytest.skip(f"method {name} is not implemented")
    cls = METHODS.get(name)
    torch.manual_seed(0)
    method = cls(tiny_backbone, tasks[0].classnames, TEMPLATES, cls.Config(**params))
    module = MultitaskPromptModule(method, tasks, scoring="own")
    torch.manual_seed(0)
    reference = cls(tiny_backbone, tasks[0].classnames, TEMPLATES, cls.Config(**params))
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        for task_index in [1, 0, 1, 1, 0, 1]:
            module.use_task(task_index)
            reference.set_classnames(tasks[task_index].classnames, TEMPLATES)
            assert method.classnames == tasks[task_index].classnames
            assert torch.allclose(module.task_logits(images, task_index), reference.logits(images), atol=1e-6)
            assert torch.allclose(method.training_loss(images, torch.tensor([0, 1, 1])),
                                  reference.training_loss(images, torch.tensor([0, 1, 1])), atol=1e-6)


@pytest.mark.parametrize("name", ["coop", "upt", "vpt"])
def test_default_loss_scores_every_sample_against_the_union_of_all_tasks_classes(name, tasks, tiny_backbone):
    """MVLPT's scripts: the tasks' labels are offset into one label space, one cross-entropy over all classes."""
    cls = METHODS.get(name)
    params = {"n_tokens": 4} if name == "vpt" else {"n_ctx": 4}
    torch.manual_seed(0)
    method = cls(tiny_backbone, tasks[0].classnames, TEMPLATES, cls.Config(**params))
    module = MultitaskPromptModule(method, tasks)
    assert module.scoring == "union" and module.offsets == [0, 2]
    images, labels, task_ids = _tagged_batch(tasks, tiny_backbone)
    loss = module.multitask_loss(images, labels, task_ids)
    union = tasks[0].classnames + tasks[1].classnames
    assert method.classnames == union and method.templates == ["a photo of a {}."]
    with torch.no_grad():
        logits = method.logits(images)
        assert logits.shape == (len(labels), len(union))
        expected = F.cross_entropy(logits, labels + torch.tensor([0, 2])[task_ids])
    assert torch.allclose(loss, expected, atol=1e-5)
    own = MultitaskPromptModule(method, tasks, scoring="own").multitask_loss(images, labels, task_ids)
    assert not torch.allclose(loss, own, atol=1e-4)
    loss.backward()
    assert all(p.grad is not None for p in method.trainable_parameters())
    module.use_task(1)  # evaluation stays per task, on the task's own classes and templates
    assert method.classnames == tasks[1].classnames
    with pytest.raises(ConfigError, match="unknown multitask scoring 'masked'"):
        MultitaskPromptModule(method, tasks, scoring="masked")


def test_methods_that_cannot_switch_classes_or_do_not_train_are_refused(tasks, tiny_backbone):
    with pytest.raises(ConfigError, match="class-specific context"):
        MultitaskPromptModule(_coop(tiny_backbone, tasks, csc=True), tasks)
    zeroshot = METHODS.get("zeroshot")(tiny_backbone, tasks[0].classnames, TEMPLATES)
    with pytest.raises(ConfigError, match="learns nothing"):
        MultitaskPromptModule(zeroshot, tasks)


# ---- training, transfer, evaluation -----------------------------------------------------------
@pytest.mark.parametrize("sampling", ["mixed", "per_task"])
def test_multitask_coop_fit_then_init_a_target_task(sampling, tasks, tiny_backbone, tmp_path):
    backbone_before = {k: v.clone() for k, v in tiny_backbone.state_dict().items()}
    method = _coop(tiny_backbone, tasks, lr=0.5, warmup_epochs=0)
    ctx_before = method.context.ctx.detach().clone()
    module = MultitaskPromptModule(method, tasks)
    dm = _datamodule(tasks, tiny_backbone, sampling)
    _trainer(max_epochs=2).fit(module, train_dataloaders=dm.train_dataloader())
    assert method.max_epochs == 2
    assert not torch.allclose(method.context.ctx, ctx_before), "the shared context did not change"
    assert all(torch.equal(v, tiny_backbone.state_dict()[k]) for k, v in backbone_before.items())
    assert method.classnames == tasks[0].classnames  # left on the first task after training
    assert not any(k.startswith("method.backbone.") for k in module.state_dict())

    path = method.save_checkpoint(tmp_path / "source.pt")
    cls = METHODS.get("coop")
    target = cls(tiny_backbone, ["triangle", "star", "hexagon", "moon"], TEMPLATES,
                 cls.Config(n_ctx=4, init_from=str(path)))
    assert torch.equal(target.context.ctx, method.context.ctx)
    assert target.classnames == ["triangle", "star", "hexagon", "moon"]


def test_multitask_upt_fit_then_init_a_target_upt(tasks, tiny_backbone, tmp_path):
    cls = METHODS.get("upt")
    torch.manual_seed(0)
    method = cls(tiny_backbone, tasks[0].classnames, TEMPLATES, cls.Config(lr=0.5, warmup_epochs=0))
    before = {k: v.clone() for k, v in method.state_dict().items()}
    module = MultitaskPromptModule(method, tasks)
    _trainer(max_steps=3).fit(module, train_dataloaders=_datamodule(tasks, tiny_backbone).train_dataloader())
    after = method.state_dict()
    for key in ("generator.text", "generator.visual", "generator.blocks.0.attn.in_proj_weight"):
        assert not torch.equal(before[key], after[key]), key

    path = method.save_checkpoint(tmp_path / "upt.pt")
    target = cls(tiny_backbone, ["cat", "dog", "bird"], TEMPLATES, cls.Config(init_from=str(path)))
    assert all(torch.equal(after[k], target.state_dict()[k]) for k in after)


def test_target_group_trains_jointly_from_the_source_prompt(tasks, tiny_backbone, tmp_path):
    source = _coop(tiny_backbone, tasks)
    with torch.no_grad():
        source.context.ctx.normal_()
    path = source.save_checkpoint(tmp_path / "source.pt")

    target = _coop(tiny_backbone, tasks, init_from=str(path))
    assert torch.equal(target.context.ctx, source.context.ctx)
    module = MultitaskPromptModule(target, tasks, max_epochs=5)
    dm = _datamodule(tasks, tiny_backbone, "per_task")
    _trainer(max_steps=2).fit(module, train_dataloaders=dm.train_dataloader())
    assert target.max_epochs == 5  # the schedule follows the module's max_epochs

    assert not torch.equal(target.context.ctx, source.context.ctx)  # the group was learned jointly from the source


def test_mcoop_and_mvpt_configs_hold_mvlpts_settings():
    """MVLPT's scripts/mvlpt with configs/trainers/MVLPT/vit_b16.yaml: M=16, class token in the middle, 200 epochs."""
    from vlpt.eval.suite import load_method_config

    common = dict(optimizer="sgd", lr=0.002, batch_size=32, epochs=200, scheduler="cosine", warmup_epochs=1)
    mcoop = load_method_config("mcoop", {}, "test")
    assert mcoop.cls is METHODS.get("coop")
    assert (mcoop.config.n_ctx, mcoop.config.csc, mcoop.config.class_token_position) == (16, False, "middle")
    mvpt = load_method_config("mvpt", {}, "test")
    assert mvpt.cls is METHODS.get("vpt")
    assert (mvpt.config.mode, mvpt.config.n_tokens, mvpt.config.init) == ("deep", 16, "uniform")
    for config in (mcoop.config, mvpt.config, load_method_config("upt", {}, "test").config):
        assert {k: getattr(config, k) for k in common} == common

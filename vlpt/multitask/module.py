"""MultitaskPromptModule: one prompt method trained on several tasks at once (MVLPT).

Shen et al., "Multitask Vision-Language Prompt Tuning", 2022: a prompt (CoOp's text context for
MCoOp, VPT's visual prompts for MVPT, UPT's unified prompt for MUPT) is learned on several source tasks
together, then initialises the prompt of a target task; target tasks can also be grouped and learned
jointly. Two ways to score a training sample (``scoring``):

* ``union`` (default, MVLPT's code as its scripts run it): the tasks' class lists are concatenated into
  one label space and every sample is scored against all of them, one cross-entropy over the union
  (``MVLPTCOOPDataManager`` offsets each task's labels; ``DATASET.MULTITASK_LABEL_PERTASK`` stays off). The
  union's class prompts use MVLPT's one template, "a photo of a {}." (methods that read templates, e.g.
  VPT's frozen text side);
* ``own``: each sample is scored against its own task's classes only (with the task's templates), the
  loss being the cross-entropy averaged over the batch. (The code's ``MULTITASK_LABEL_PERTASK`` option
  instead multiplies the other tasks' logits by 0, which leaves them in the softmax at logit 0; here they
  are not computed at all.)

Evaluation is per task on its own classes in both cases, as in the code.

The wrapped method stays an ordinary ``PromptMethod``: the module switches its classes with
``set_classnames`` per task and delegates the loss, the gradient transforms (``vlpt.methods.step``:
a method that edits its gradients does so here as in single-task training), the optimizer and the
schedule to it. After
``trainer.fit`` the method holds the shared prompt; ``method.save_checkpoint(path)`` writes it and a
target-task method built with ``init_from=path`` starts from it.
"""
from __future__ import annotations

from typing import Sequence

import lightning as L
import torch

from vlpt.errors import ConfigError
from vlpt.methods.base import BACKBONE_PREFIX, PromptMethod
from vlpt.methods.step import BatchLoss, TrainingStep, process_mean, training_precision
from vlpt.multitask.data import Task

METHOD_PREFIX = "method."
SCORINGS = ("union", "own")
#: the one prompt template MVLPT's code gives every class when it scores against the union of the tasks
UNION_TEMPLATES = ("a photo of a {}.",)
#: ``active_task`` while the method scores against the union of all tasks' classes
UNION = -1


class MultitaskPromptModule(L.LightningModule):
    """Trains one ``PromptMethod`` on several tasks, each sample scored against the union of the tasks'
    classes (``scoring="union"``) or its own task's classes (``"own"``).

    Batches are ``(images, labels, task_ids)`` (``MultitaskDataModule``), labels within each task's own
    class list. ``max_epochs`` sets the length of the method's cosine schedule (default: the Trainer's
    ``max_epochs``).
    """

    def __init__(self, method: PromptMethod, tasks: Sequence[Task], max_epochs: int | None = None,
                 scoring: str = "union"):
        super().__init__()
        if scoring not in SCORINGS:
            raise ConfigError(f"unknown multitask scoring {scoring!r}; valid: {', '.join(SCORINGS)}")
        self.scoring = scoring
        if not method.trains:
            raise ConfigError(f"method {method.name} learns nothing from images and cannot be trained on tasks")
        self.method = method
        self.tasks = list(tasks)
        if not self.tasks:
            raise ConfigError("a multitask run needs at least one task")
        self.max_epochs = max_epochs
        self.active_task: int | None = None
        self._pending_step: TrainingStep | None = None
        #: where each task's classes start in the union
        self.offsets = [sum(len(t.classnames) for t in self.tasks[:i]) for i in range(len(self.tasks))]
        for task in self.tasks:  # fail early on a method that cannot serve a task's classes (e.g. CSC context)
            method.set_classnames(task.classnames, task.templates)
        if scoring == "union":
            self.use_union()
        self.use_task(0)

    # ---- tasks ----------------------------------------------------------------------------
    def use_task(self, task_index: int) -> None:
        """Make the wrapped method score against task ``task_index``'s classes (with its templates).

        Switching is cheap: frozen class-text embeddings are memoized on the backbone.
        """
        if self.active_task == task_index:
            return
        task = self.tasks[task_index]
        self.method.set_classnames(task.classnames, task.templates)
        self.active_task = task_index

    def use_union(self) -> None:
        """Make the wrapped method score against every task's classes, in task order."""
        if self.active_task == UNION:
            return
        self.method.set_classnames([name for task in self.tasks for name in task.classnames], list(UNION_TEMPLATES))
        self.active_task = UNION

    def task_logits(self, images: torch.Tensor, task_index: int) -> torch.Tensor:
        """Scores ``[B, C_task]`` of images against one task's classes."""
        self.use_task(task_index)
        return self.method.logits(images)

    def multitask_loss(self, images: torch.Tensor, labels: torch.Tensor, task_ids: torch.Tensor,
                       loss_fn: BatchLoss | None = None) -> torch.Tensor:
        """The batch's loss: ``loss_fn`` (default: the method's ``training_loss``, cross-entropy plus the
        method's own terms such as KgCoOp's) against the union of the tasks' classes (``union``), or the mean
        over the batch of each sample's loss against its own task's classes (``own``: each task's samples
        weighted by its share of the batch).
        """
        loss_fn = loss_fn if loss_fn is not None else self.method.training_loss
        if self.scoring == "union":
            self.use_union()
            offsets = torch.tensor(self.offsets, device=labels.device)[task_ids.to(labels.device)]
            return loss_fn(images, labels + offsets)
        present = torch.unique(task_ids).tolist()
        if self.active_task in present:  # the current classes first: one switch fewer
            present.remove(self.active_task)
            present.insert(0, self.active_task)
        total = images.new_zeros(())
        for task_index in present:
            index = (task_ids == task_index).nonzero(as_tuple=True)[0]
            self.use_task(int(task_index))
            loss = loss_fn(images[index], labels[index])
            total = total + loss * (len(index) / len(labels))
        return total

    # ---- Lightning ------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        images, labels, task_ids = batch
        self._pending_step = TrainingStep(self.method, lambda fn: self.multitask_loss(images, labels, task_ids, fn),
                                          reduce=process_mean(self), precision=training_precision(self))
        loss = self._pending_step.loss()
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=len(labels))
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        step, self._pending_step = self._pending_step, None
        if step is not None:
            step.apply_transforms()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self.method.epoch_finished(self.current_epoch, self.method.max_epochs)

    def configure_optimizers(self):
        epochs = self.max_epochs
        if epochs is None:
            trainer = self._trainer
            epochs = trainer.max_epochs if trainer is not None and (trainer.max_epochs or 0) > 0 else 1
        self.method.max_epochs = epochs
        return self.method.configure_optimizers()

    def on_train_end(self) -> None:
        """Leave the method scoring against the first task's classes."""
        self.use_task(0)

    def state_dict(self, *args, **kwargs):
        """The wrapped method's own tensors only (never the backbone)."""
        state = super().state_dict(*args, **kwargs)
        for key in [k for k in state if k.startswith(METHOD_PREFIX + BACKBONE_PREFIX)]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        own = {k.removeprefix(METHOD_PREFIX): v for k, v in state_dict.items() if k.startswith(METHOD_PREFIX)}
        return self.method.load_state_dict(own, strict=strict, assign=assign)

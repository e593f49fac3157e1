"""Data for multitask prompt learning: several tasks' few-shot samples in one training stream.

Every training item is ``(image, label, task_id)``, the label in the task's own class list. Two
samplings (both deterministic given ``seed``):

* ``mixed``: one shuffle over the union of all tasks' samples, so a batch may hold several tasks
  (as MVLPT's reference code does, which concatenates the tasks' datasets);
* ``per_task``: each task's samples are shuffled and cut into batches, then the order of all batches
  is shuffled, so every batch comes from one task.

Evaluation loaders are per task and evaluation set and yield ``(image, label)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from vlpt.data.image_dataset import ImageDataset
from vlpt.data.run_data import EvalSet, ProtocolData
from vlpt.data.samples import Sample
from vlpt.data.transforms import TrainAugment, eval_transform, train_transform
from vlpt.errors import ConfigError

Sampling = Literal["mixed", "per_task"]
SAMPLINGS = ("mixed", "per_task")


@dataclass
class Task:
    """One task of a multitask run: a name and the protocol data (train/val, classes, eval sets)."""

    name: str
    data: ProtocolData

    @property
    def classnames(self) -> list[str]:
        return self.data.classnames

    @property
    def templates(self) -> list[str]:
        return self.data.templates


class TaskImageDataset(Dataset):
    """A task's samples as ``(transform(image), label, task_id)``."""

    def __init__(self, samples: Sequence[Sample], transform, task_id: int):
        self.images = ImageDataset(samples, transform)
        self.task_id = task_id

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image, label = self.images[index]
        return image, label, self.task_id


class PerTaskBatchSampler(Sampler[list[int]]):
    """Batches of indices into a concatenation of tasks, each batch drawn from one task only.

    ``task_sizes[t]`` samples of task ``t`` occupy indices ``offset_t .. offset_t + size - 1``. Each
    pass shuffles every task's indices, cuts them into batches of ``batch_size`` (a task's last batch
    may be smaller), and shuffles the order of all batches, all with ``generator``: the same seed gives
    the same sequence of epochs.
    """

    def __init__(self, task_sizes: Sequence[int], batch_size: int, generator: torch.Generator | None = None):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.task_sizes = list(task_sizes)
        self.batch_size = batch_size
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.offsets = [0]
        for size in self.task_sizes[:-1]:
            self.offsets.append(self.offsets[-1] + size)

    def __len__(self) -> int:
        return sum(math.ceil(size / self.batch_size) for size in self.task_sizes)

    def __iter__(self) -> Iterator[list[int]]:
        batches = []
        for offset, size in zip(self.offsets, self.task_sizes):
            order = (torch.randperm(size, generator=self.generator) + offset).tolist()
            batches += [order[i:i + self.batch_size] for i in range(0, size, self.batch_size)]
        for index in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[index]


class MultitaskDataModule(L.LightningDataModule):
    """Training batches ``(images, labels, task_ids)`` over several tasks; loaders per task for evaluation.

    ``train_augment`` is one augmentation for all tasks or one per task.
    """

    def __init__(self, tasks: Sequence[Task], image_size: int, mean, std, batch_size: int = 32,
                 eval_batch_size: int = 256, train_augment: TrainAugment | Sequence[TrainAugment] = "crop_flip",
                 seed: int = 0, sampling: Sampling = "mixed", num_workers: int = 0):
        super().__init__()
        self.tasks = list(tasks)
        if not self.tasks:
            raise ConfigError("a multitask run needs at least one task")
        names = [task.name for task in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"multitask task names must be distinct, got {', '.join(names)}")
        if sampling not in SAMPLINGS:
            raise ConfigError(f"unknown multitask sampling {sampling!r}; valid: {', '.join(SAMPLINGS)}")
        augments = [train_augment] * len(self.tasks) if isinstance(train_augment, str) else list(train_augment)
        if len(augments) != len(self.tasks):
            raise ConfigError(f"train_augment lists {len(augments)} augmentations for {len(self.tasks)} tasks")
        self.sampling = sampling
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.train_tfs = [train_transform(image_size, mean, std, augment) for augment in augments]
        self.eval_tf = eval_transform(image_size, mean, std)

    @property
    def task_names(self) -> list[str]:
        return [task.name for task in self.tasks]

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def _task(self, task_index: int) -> Task:
        if not 0 <= task_index < len(self.tasks):
            raise ConfigError(f"task index {task_index} out of range: this run has tasks 0..{len(self.tasks) - 1} "
                              f"({', '.join(self.task_names)})")
        return self.tasks[task_index]

    def _concat(self, split: str, transforms) -> ConcatDataset:
        return ConcatDataset([TaskImageDataset(getattr(task.data, split), tf, index)
                              for index, (task, tf) in enumerate(zip(self.tasks, transforms))])

    def _kwargs(self) -> dict:
        return {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0}

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches ``(images, labels, task_ids)``; a fresh call restarts the seeded sequence."""
        empty = [task.name for task in self.tasks if not task.data.train]
        if empty:
            raise ConfigError(f"multitask task(s) without training samples: {', '.join(empty)}")
        dataset = self._concat("train", self.train_tfs)
        if self.sampling == "per_task":
            sampler = PerTaskBatchSampler([len(task.data.train) for task in self.tasks], self.batch_size,
                                          self._generator())
            return DataLoader(dataset, batch_sampler=sampler, **self._kwargs())
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, generator=self._generator(),
                          **self._kwargs())

    def val_dataloader(self, task_index: int | None = None) -> DataLoader:
        """Validation samples without augmentation: one task's ``(images, labels)``, or with
        ``task_index=None`` every task's ``(images, labels, task_ids)``."""
        if task_index is None:
            dataset = self._concat("val", [self.eval_tf] * len(self.tasks))
        else:
            dataset = ImageDataset(self._task(task_index).data.val, self.eval_tf)
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, **self._kwargs())

    def eval_dataloader(self, task_index: int, eval_set: EvalSet | str) -> DataLoader:
        """``(images, labels)`` of one of a task's evaluation sets (an EvalSet or its name)."""
        eval_set = self.eval_set(task_index, eval_set) if isinstance(eval_set, str) else eval_set
        self._task(task_index)
        return DataLoader(ImageDataset(eval_set.samples, self.eval_tf), batch_size=self.eval_batch_size,
                          shuffle=False, **self._kwargs())

    def eval_set(self, task_index: int, name: str) -> EvalSet:
        """A task's evaluation set by name ("test", "base", "novel", a target dataset)."""
        task = self._task(task_index)
        for eval_set in task.data.eval_sets:
            if eval_set.name == name:
                return eval_set
        raise ConfigError(f"task {task.name} has no evaluation set {name!r}; it has "
                          f"{', '.join(e.name for e in task.data.eval_sets) or 'none'}")

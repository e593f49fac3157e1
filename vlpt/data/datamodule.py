"""A Lightning DataModule over the samples a protocol produced."""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, TensorDataset

from vlpt.data.image_dataset import ImageDataset
from vlpt.data.protocols import EvalSet, ProtocolData
from vlpt.data.transforms import TrainAugment, eval_transform, train_transform
from vlpt.errors import ConfigError


class GlobalBatchSampler(Sampler[list[int]]):
    """Shuffled batches of ``batch_size`` indices drawn from ``generator``, split across processes.

    Alone it yields exactly the batches of a shuffling DataLoader with that generator. Under
    ``torch.distributed`` (DDP) every process draws the same global batches and takes its contiguous
    ``batch_size / world_size`` slice, so gradients averaged over processes equal one process's for the
    same global batch (a last batch that cannot be split evenly is dropped). World size and rank are
    read when iteration starts, after the trainer has joined its processes.
    """

    def __init__(self, size: int, batch_size: int, generator: torch.Generator):
        self.batches = BatchSampler(RandomSampler(range(size), generator=generator), batch_size, drop_last=False)
        self.batch_size = batch_size

    @staticmethod
    def world() -> tuple[int, int]:
        """(rank, world size) of this process: (0, 1) outside ``torch.distributed``."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        rank, world = self.world()
        if world == 1:
            yield from self.batches
            return
        if self.batch_size % world:
            raise ConfigError(f"batch_size {self.batch_size} (the global batch) cannot be split evenly across "
                              f"{world} processes; use a multiple of {world}")
        for batch in self.batches:
            if len(batch) % world:
                return
            share = len(batch) // world
            yield batch[rank * share:(rank + 1) * share]


def seeded_loader(dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0) -> DataLoader:
    """A DataLoader whose shuffling order depends on ``seed`` only; a shuffled (training) loader splits
    each global batch across DDP processes (``GlobalBatchSampler``)."""
    if not shuffle:
        return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, persistent_workers=num_workers > 0)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_sampler=GlobalBatchSampler(len(dataset), batch_size, generator),
                      generator=generator, num_workers=num_workers, persistent_workers=num_workers > 0)


class PromptDataModule(L.LightningDataModule):
    """Train/val loaders over a protocol's few-shot samples and one loader per evaluation set."""

    def __init__(self, data: ProtocolData, image_size: int, mean, std, batch_size: int = 32,
                 eval_batch_size: int = 256, train_augment: TrainAugment = "crop_flip", num_workers: int = 0,
                 seed: int = 0):
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_tf = train_transform(image_size, mean, std, train_augment)
        self.eval_tf = eval_transform(image_size, mean, std)

    def _loader(self, dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return seeded_loader(dataset, batch_size, shuffle, self.seed, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(ImageDataset(self.data.train, self.train_tf), self.batch_size, shuffle=True)

    def train_eval_dataloader(self) -> DataLoader:
        """Training samples without augmentation (for feature extraction)."""
        return self._loader(ImageDataset(self.data.train, self.eval_tf), self.eval_batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader(ImageDataset(self.data.val, self.eval_tf), self.eval_batch_size, shuffle=False)

    def eval_dataloader(self, eval_set: EvalSet) -> DataLoader:
        return self._loader(ImageDataset(eval_set.samples, self.eval_tf), self.eval_batch_size, shuffle=False)


#: evaluation sets drawn from the source dataset (others are named after their target dataset)
SOURCE_EVAL_SETS = ("test", "base", "novel")


class FeatureViewsDataset(Dataset):
    """Stored features of ``V`` views per image ``[V, N, D]``: item i is one view of image i, drawn at
    random (from the global generator, which the run's seed sets), and its label."""

    def __init__(self, views: torch.Tensor, labels: torch.Tensor):
        self.views, self.labels = views, labels

    def __len__(self) -> int:
        return self.views.shape[1]

    def __getitem__(self, index: int):
        view = int(torch.randint(self.views.shape[0], ())) if self.views.shape[0] > 1 else 0
        return self.views[view, index], self.labels[index]


class CachedFeatureDataModule(PromptDataModule):
    """PromptDataModule whose loaders give frozen image features ``[B, D]`` from a FeatureCache instead of
    images, for methods with ``frozen_image_features``. Batches have the same composition and order as
    the image loaders'; training draws one of ``train_views`` stored augmented views of each image
    (one view when the training transform is deterministic, the centre view when ``train_views`` is 0)."""

    def __init__(self, data: ProtocolData, image_size: int, mean, std, cache, dataset: str, train_views: int = 8,
                 train_augment: TrainAugment = "crop_flip", **kwargs):
        super().__init__(data, image_size, mean, std, train_augment=train_augment, **kwargs)
        self.cache = cache
        self.dataset = dataset
        deterministic = train_augment == "none" or train_views == 0
        self.train_views = 1 if deterministic else train_views
        if train_views == 0:
            self.train_tf = self.eval_tf

    def _features(self, samples, transform, split: str, views: int = 1) -> torch.Tensor:
        return torch.stack([self.cache.image_features(samples, transform, self.dataset, split, view)
                            for view in range(views)])

    def _labels(self, samples) -> torch.Tensor:
        return torch.tensor([s.label for s in samples], dtype=torch.long)

    def train_dataloader(self) -> DataLoader:
        views = self._features(self.data.train, self.train_tf, "train", self.train_views)
        return self._loader(FeatureViewsDataset(views, self._labels(self.data.train)), self.batch_size, shuffle=True)

    def train_eval_dataloader(self) -> DataLoader:
        return self._stored(self.data.train, "train")

    def val_dataloader(self) -> DataLoader:
        return self._stored(self.data.val, "val")

    def eval_dataloader(self, eval_set: EvalSet) -> DataLoader:
        """Features of an evaluation set: a split of the source dataset, or a target dataset's test split."""
        if eval_set.name in SOURCE_EVAL_SETS:
            return self._stored(eval_set.samples, eval_set.name)
        return self._stored(eval_set.samples, "test", dataset=eval_set.name)

    def _stored(self, samples, split: str, dataset: str | None = None) -> DataLoader:
        features = self.cache.image_features(samples, self.eval_tf, dataset or self.dataset, split)
        return self._loader(TensorDataset(features, self._labels(samples)), self.eval_batch_size, shuffle=False)

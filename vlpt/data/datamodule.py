"""A Lightning DataModule over the samples a protocol produced."""
from __future__ import annotations

from typing import Callable, Literal, Union

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, TensorDataset

from vlpt.data.feature_cache import ViewDataset
from vlpt.data.image_dataset import ImageDataset
from vlpt.data.run_data import EvalSet, ProtocolData
from vlpt.data.transforms import TrainAugment, eval_transform, train_transform
from vlpt.errors import ConfigError

#: ``train_views`` of the feature cache: one stored crop per image and epoch (the default), or a number of
#: stored views per image, one of which each epoch draws (0: the centre view only)
PER_EPOCH = "per_epoch"
TrainViews = Union[int, Literal["per_epoch"]]


class EpochRandomSampler(RandomSampler):
    """A RandomSampler that knows the training epoch it draws for. Lightning calls ``set_epoch`` at the start
    of every training epoch (as for a DistributedSampler), a resumed run included; without it each pass over
    the sampler counts one epoch on from 0 (``GlobalBatchSampler`` counts)."""

    def __init__(self, size: int, generator: torch.Generator):
        super().__init__(range(size), generator=generator)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class GlobalBatchSampler(Sampler[list[int]]):
    """Shuffled batches of ``batch_size`` indices drawn from ``generator``, split across processes.

    Alone it yields exactly the batches of a shuffling DataLoader with that generator. Under
    ``torch.distributed`` (DDP) every process draws the same global batches and takes its contiguous
    ``batch_size / world_size`` slice, so gradients averaged over processes equal one process's for the
    same global batch (a last batch that cannot be split evenly is dropped). World size and rank are
    read when iteration starts, after the trainer has joined its processes. With ``with_epoch`` each
    index is an ``(epoch, index)`` pair, the epoch of ``sampler`` (``EpochRandomSampler``).
    """

    def __init__(self, size: int, batch_size: int, generator: torch.Generator, with_epoch: bool = False):
        self.sampler = EpochRandomSampler(size, generator)
        self.batches = BatchSampler(self.sampler, batch_size, drop_last=False)
        self.batch_size = batch_size
        self.with_epoch = with_epoch

    @staticmethod
    def world() -> tuple[int, int]:
        """(rank, world size) of this process: (0, 1) outside ``torch.distributed``."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        epoch = self.sampler.epoch
        self.sampler.epoch += 1  # the next pass's, unless set_epoch says otherwise
        for batch in self._split():
            yield [(epoch, index) for index in batch] if self.with_epoch else batch

    def _split(self):
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


def seeded_loader(dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0,
                  with_epoch: bool = False) -> DataLoader:
    """A DataLoader whose shuffling order depends on ``seed`` only; a shuffled (training) loader splits
    each global batch across DDP processes (``GlobalBatchSampler``), and with ``with_epoch`` asks the
    dataset for ``(epoch, index)`` items."""
    if not shuffle:
        return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, persistent_workers=num_workers > 0)
    generator = torch.Generator().manual_seed(seed)
    sampler = GlobalBatchSampler(len(dataset), batch_size, generator, with_epoch=with_epoch)
    return DataLoader(dataset, batch_sampler=sampler, generator=generator, num_workers=num_workers,
                      persistent_workers=num_workers > 0)


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

    def train_view_dataloader(self, transform: Callable, view: int) -> DataLoader:
        """The training samples under a random ``transform`` of a method's own (Tip-Adapter's cache passes), its
        view ``view``: drawn per image and view index, the same in every run (``ViewDataset``), in sample order."""
        return self._loader(ViewDataset(self.data.train, transform, view), self.eval_batch_size, shuffle=False)

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


class EpochFeaturesDataset(Dataset):
    """Item ``(epoch, i)``: the stored features of image i's training view for ``epoch`` and its label. An
    epoch's features ``[N, D]`` come from ``features_of(epoch)`` when its first item is asked for (in the
    process that iterates the loader: ``seeded_loader(..., with_epoch=True)`` without workers)."""

    def __init__(self, features_of: Callable[[int], torch.Tensor], labels: torch.Tensor):
        self.features_of, self.labels = features_of, labels
        self._epoch: int | None = None
        self._features: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: tuple[int, int]):
        epoch, index = item
        if epoch != self._epoch:
            self._features, self._epoch = self.features_of(epoch), epoch
        return self._features[index], self.labels[index]


def describe_train_views(train_views: TrainViews) -> str:
    """What a CachedFeatureDataModule's ``train_views`` means, in words."""
    if train_views == PER_EPOCH:
        return "stored features, a new view per epoch"
    if train_views == 0:
        return "stored features, the centre view"
    return f"stored features, {train_views} view(s)"


class CachedFeatureDataModule(PromptDataModule):
    """PromptDataModule whose loaders give frozen image features ``[B, D]`` from a FeatureCache instead of
    images, for methods with ``frozen_image_features``. Batches have the same composition and order as
    the image loaders'.

    ``train_views`` (the feature cache's setting): ``per_epoch`` (default) gives image i in epoch e the
    features of its view e for the run's seed (``FeatureCache.image_features(..., view=e, seed=seed)``),
    stored once and read by every method trained on the same images with the same seed: a fresh random
    crop every epoch, as the reference's loader draws. A number N > 0 stores N views per image and each
    epoch draws one of them at random (faster, not the reference computation); 0 trains on the centre
    view. The attribute holds what ran: 1 when the training transform is deterministic (one view);
    ``views_drawn`` says whether a training loader was made (not for zero-shot, nor the linear probe, which
    fits on the centre view)."""

    def __init__(self, data: ProtocolData, image_size: int, mean, std, cache, dataset: str,
                 train_views: TrainViews = PER_EPOCH, train_augment: TrainAugment = "crop_flip", **kwargs):
        super().__init__(data, image_size, mean, std, train_augment=train_augment, **kwargs)
        if not (train_views == PER_EPOCH or (isinstance(train_views, int) and train_views >= 0)):
            raise ConfigError(f"train_views must be {PER_EPOCH!r} or a number of views (0 or more), "
                              f"got {train_views!r}")
        self.cache = cache
        self.dataset = dataset
        self.train_views = 1 if train_augment == "none" else train_views
        self.views_drawn = False
        if train_views == 0:
            self.train_tf = self.eval_tf

    def _features(self, samples, transform, split: str, views: int = 1) -> torch.Tensor:
        return torch.stack([self.cache.image_features(samples, transform, self.dataset, split, view)
                            for view in range(views)])

    def _labels(self, samples) -> torch.Tensor:
        return torch.tensor([s.label for s in samples], dtype=torch.long)

    def epoch_features(self, epoch: int) -> torch.Tensor:
        """The training images' features ``[N, D]`` in ``epoch`` with ``train_views: per_epoch``."""
        return self.cache.image_features(self.data.train, self.train_tf, self.dataset, "train", view=epoch,
                                         seed=self.seed)

    def train_dataloader(self) -> DataLoader:
        labels = self._labels(self.data.train)
        self.views_drawn = True
        if self.train_views == PER_EPOCH:  # features in memory: no loader workers, items know their epoch
            return seeded_loader(EpochFeaturesDataset(self.epoch_features, labels), self.batch_size, shuffle=True,
                                 seed=self.seed, num_workers=0, with_epoch=True)
        views = self._features(self.data.train, self.train_tf, "train", max(self.train_views, 1))
        return self._loader(FeatureViewsDataset(views, labels), self.batch_size, shuffle=True)

    def train_eval_dataloader(self) -> DataLoader:
        return self._stored(self.data.train, "train")

    def val_dataloader(self) -> DataLoader:
        return self._stored(self.data.val, "val")

    def eval_dataloader(self, eval_set: EvalSet) -> DataLoader:
        """Features of an evaluation set: a split of the source dataset, or a target dataset's test split."""
        if eval_set.name in SOURCE_EVAL_SETS:
            return self._stored(eval_set.samples, eval_set.name)
        return self._stored(eval_set.samples, "test", dataset=eval_set.name)

    def train_view_dataloader(self, transform: Callable, view: int) -> DataLoader:
        features = self.cache.image_features(self.data.train, transform, self.dataset, "train", view)
        return self._loader(TensorDataset(features, self._labels(self.data.train)), self.eval_batch_size, shuffle=False)

    def _stored(self, samples, split: str, dataset: str | None = None) -> DataLoader:
        features = self.cache.image_features(samples, self.eval_tf, dataset or self.dataset, split)
        return self._loader(TensorDataset(features, self._labels(samples)), self.eval_batch_size, shuffle=False)

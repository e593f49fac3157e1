"""A Lightning DataModule over the samples a protocol produced."""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from vlpt.data.image_dataset import ImageDataset
from vlpt.data.protocols import EvalSet, ProtocolData
from vlpt.data.transforms import TrainAugment, eval_transform, train_transform


def seeded_loader(dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0) -> DataLoader:
    """A DataLoader whose shuffling order depends on ``seed`` only."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, persistent_workers=num_workers > 0)


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

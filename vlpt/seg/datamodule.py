"""The data loaders of a segmentation run: its K training images and one loader per evaluation set."""
from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from vlpt.data.datamodule import seeded_loader
from vlpt.seg.data import SegAugment, SegEvalSet, SegmentationDataset, SegProtocolData


class SegmentationDataModule(L.LightningDataModule):
    """A training loader over the protocol's K images and one loader per evaluation set, at the VLSM's
    input size and normalization."""

    def __init__(self, data: SegProtocolData, image_size: int, mean, std, batch_size: int = 8,
                 eval_batch_size: int = 32, train_augment: SegAugment = "flip", num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.data = data
        self.image_args = (image_size, mean, std)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.train_augment = train_augment
        self.num_workers = num_workers
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        dataset = SegmentationDataset(self.data.train, self.data.source, *self.image_args, augment=self.train_augment)
        return seeded_loader(dataset, self.batch_size, True, self.seed, self.num_workers)

    def eval_dataloader(self, eval_set: SegEvalSet) -> DataLoader:
        return seeded_loader(SegmentationDataset(eval_set.samples, eval_set.splits, *self.image_args),
                             self.eval_batch_size, False, self.seed, self.num_workers)

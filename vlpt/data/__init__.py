"""The data layer: dataset loaders, seeded few-shot sampling, a run's data and the image Dataset."""
from vlpt.data.catalog import load_dataset
from vlpt.data.fewshot import base_novel_split, sample_few_shot, split_rng
from vlpt.data.image_dataset import ImageDataset
from vlpt.data.run_data import EvalSet, ProtocolData
from vlpt.data.samples import DatasetSplits, Sample

__all__ = [
    "DatasetSplits", "EvalSet", "ImageDataset", "ProtocolData", "Sample",
    "base_novel_split", "load_dataset", "sample_few_shot", "split_rng",
]

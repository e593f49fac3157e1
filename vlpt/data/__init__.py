"""The data layer: dataset loaders, seeded few-shot sampling, protocols and the image Dataset."""
from vlpt.data.catalog import load_dataset
from vlpt.data.fewshot import base_novel_split, sample_few_shot, split_rng
from vlpt.data.image_dataset import ImageDataset
from vlpt.data.protocols import PROTOCOLS, EvalSet, ProtocolData, build_protocol
from vlpt.data.samples import DatasetSplits, Sample

__all__ = [
    "PROTOCOLS", "DatasetSplits", "EvalSet", "ImageDataset", "ProtocolData", "Sample",
    "base_novel_split", "build_protocol", "load_dataset", "sample_few_shot", "split_rng",
]

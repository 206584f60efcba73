"""Data: loaders per format, sources (local dir, cache, shipped wheels, download), preprocessing."""

from lmrec.data.datasets import dataset_names
from lmrec.data.interactions import Dataset, IdMap, Interactions
from lmrec.data.load import load_dataset, load_raw
from lmrec.data.preprocess import PreprocessConfig, preprocess

__all__ = [
    "Dataset",
    "IdMap",
    "Interactions",
    "PreprocessConfig",
    "dataset_names",
    "load_dataset",
    "load_raw",
    "preprocess",
]

"""Data sets: ``create_dataset(name, root, split)``, ``list_datasets()``."""

from ..media import read_image
from .base import FERDataset, Sample
from .registry import create_dataset, dataset_info, list_datasets

__all__ = ["FERDataset", "Sample", "create_dataset", "dataset_info", "list_datasets", "read_image"]

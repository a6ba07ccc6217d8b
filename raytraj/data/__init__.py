"""Offline datasets with fixed, seeded train/val/test splits."""

from .config import DataConfig, parse_data
from .dataset import SPLITS, Dataset, dataset_from_splits, epoch_batches, fingerprint, load_data, sample_batches

__all__ = ["DataConfig", "Dataset", "SPLITS", "dataset_from_splits", "epoch_batches", "fingerprint", "load_data", "parse_data",
           "sample_batches"]

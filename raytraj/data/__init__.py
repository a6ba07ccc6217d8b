"""Offline datasets with fixed, seeded train/val/test splits."""

from .config import DataConfig, parse_data
from .dataset import SPLITS, Dataset, epoch_batches, load_data, sample_batches

__all__ = ["DataConfig", "Dataset", "SPLITS", "epoch_batches", "load_data", "parse_data", "sample_batches"]

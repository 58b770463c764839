"""Datasets and augmentations over st-gcn format files."""

from .augment import Augment, build_augment
from .dataset import (SkeletonDataset, classification_window, inspect_npy, load_class_names, load_labels,
                      next_frame_window)

__all__ = ["Augment", "SkeletonDataset", "build_augment", "classification_window", "inspect_npy",
           "load_class_names", "load_labels", "next_frame_window"]

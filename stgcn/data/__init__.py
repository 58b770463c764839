"""Datasets, augmentations and loaders over st-gcn format files."""

from .augment import Augment, build_augment
from .dataset import (SkeletonDataset, classification_window, inspect_npy, load_class_names, load_labels,
                      next_frame_window)
from .loaders import available_cpus, build_datasets, make_loader, resolve_workers

__all__ = ["Augment", "SkeletonDataset", "available_cpus", "build_augment", "build_datasets", "classification_window",
           "inspect_npy", "load_class_names", "load_labels", "make_loader", "next_frame_window", "resolve_workers"]

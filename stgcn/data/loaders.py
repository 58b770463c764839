"""Datasets and DataLoaders as a training config describes them (training and ``stgcn.eval`` share them)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler

from .dataset import SkeletonDataset


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the platform has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def resolve_workers(value: Any = "auto") -> int:
    """DataLoader workers from a config value: an integer (>= 0) as given, ``auto`` (or unset)
    the CPUs available to this process."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return available_cpus()
    try:
        workers = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"num_workers: {value!r} is neither an integer nor 'auto'") from None
    if workers < 0:
        raise ValueError(f"num_workers: {workers} is negative")
    return workers


def build_datasets(cfg: dict, splits: tuple[str, ...] = ("train", "val"), seed: int = 0) -> dict[str, Any]:
    """Classification datasets per split, plus ``<split>_next`` next-frame datasets when predicting."""
    data = cfg["data"]
    task = cfg.get("train", {}).get("task", "classify")
    predictor = cfg["model"].get("predictor", False) or task in ("joint", "predict")
    out = {}
    for split in splits:
        if split not in data:
            continue
        common = dict(window=data.get("window"), transform=data.get("normalisation"),
                      layout=data.get("layout", cfg["model"].get("graph_args", {}).get("layout", "openpose")),
                      seed=seed, class_names=cfg.get("class_names"), source_format=data.get("source_format", "raw"))
        augment = data.get("augment") if split == "train" else None
        if task != "predict":
            out[split] = SkeletonDataset(data[split]["data"], data[split]["label"], augment=augment, **common)
        if predictor:
            aug_next = data.get("augment_next", augment) if split == "train" else None
            out[f"{split}_next"] = SkeletonDataset(data[split]["data"], data[split]["label"], augment=aug_next,
                                                   next_frame=True, horizon=cfg["model"].get("predictor_horizon", 1),
                                                   history=cfg["model"].get("predictor_history", 2), **common)
    return out


def make_loader(ds, batch_size: int, shuffle: bool, workers: int, sampler=None, seed: int = 0,
                drop_last: bool = False) -> DataLoader:
    if sampler is None and shuffle:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(seed))
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), drop_last=drop_last,
                      persistent_workers=False)

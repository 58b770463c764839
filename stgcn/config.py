"""YAML configs for training and evaluation, with paths resolved against the config's folder, and
the part of a training config that a checkpoint carries for serving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.settings import merge, read_yaml

from .graph import get_layout


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config; a ``base:`` key names another config (relative path) to start from."""
    path = Path(path)
    cfg = read_yaml(path)
    base = cfg.pop("base", None)
    if base:
        cfg = merge(load_config(path.parent / base), cfg)
    return cfg


def checkpoint_training_config(model_config: dict[str, Any], weights: str | Path, path: str | Path | None = None
                               ) -> dict[str, Any]:
    """The training config to rebuild a checkpoint's data with: the YAML at ``path``, else the one
    the checkpoint carries, its task set to what the checkpoint does (a decoder trained on a fixed
    classifier both classifies and predicts). ValueError when there is none."""
    cfg = load_config(path) if path else dict(model_config.get("train_config") or {})
    if not cfg:
        raise ValueError(f"{weights}: carries no training config; pass a config")
    if model_config.get("task"):
        cfg["train"] = {**cfg.get("train", {}), "task": model_config["task"]}
    return cfg


def class_names(spec: Any, num_class: int) -> list[str]:
    """Class names from a list, a JSON/text file path, or ``None`` (numbered)."""
    if spec is None:
        return [str(i) for i in range(num_class)]
    if isinstance(spec, (list, tuple)):
        names = [str(s) for s in spec]
    else:
        text = Path(spec).read_text()
        names = json.loads(text) if str(spec).endswith(".json") else [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(names) != num_class:
        raise ValueError(f"{spec}: {len(names)} class names for {num_class} classes")
    return names


def serving_config(cfg: dict, num_class: int | None = None) -> dict[str, Any]:
    """What a checkpoint must carry to be served: model args (the layout in ``graph_args``), classes,
    normalisation, window and task."""
    data = cfg.get("data", {})
    model = dict(cfg["model"])
    layout = model.setdefault("graph_args", {}).setdefault("layout", data.get("layout", "openpose"))
    model.setdefault("coords", get_layout(layout).dims)
    if num_class is not None:
        model["num_class"] = num_class
    task = cfg.get("train", {}).get("task", "classify")
    if task in ("joint", "predict"):
        model["predictor"] = True
    return {
        "model": model,
        "class_names": class_names(cfg.get("class_names"), model["num_class"]),
        "normalisation": data.get("normalisation", {"name": "none"}),
        "window": data.get("window"),
        "task": task,
    }

"""YAML configs for training and evaluation, with paths resolved against the config's folder."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config; a ``base:`` key names another config (relative path) to start from."""
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ValueError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a config must be a mapping")
    base = cfg.pop("base", None)
    if base:
        cfg = merge(load_config(path.parent / base), cfg)
    return cfg


def merge(base: dict, override: dict) -> dict:
    """Deep-merge ``override`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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

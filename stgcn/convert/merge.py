"""Merging several converted datasets into one (the description files are written and read by
``stgcn.convert.common``).

A converted dataset folder holds ``{train,val}_data.npy`` + ``{train,val}_label.pkl`` and, from
the 2D real-video converters on:

- ``class_names.txt``: one class name a line, in label order;
- ``meta.json``: ``dataset`` (its name, e.g. ``penn-action``), ``layout``, ``fps`` (the frame
  rate of the source videos), ``frames`` and ``persons``, and notes of the converter;
- ``sources.json`` (merged datasets only): ``{"datasets": [...], "train": [name per sample],
  "val": [...]}``, the dataset each sample came from.

:func:`merge_datasets` joins converted datasets under a merged class list (a YAML file, see
``configs/classes/real_video.yaml``): each entry gives a merged ``name`` and, per dataset, the
source class name(s) it takes; classes in no entry keep their names, which must then be unique.
Each source keeps its own train/val split.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from .common import (AtomicNpyWriter, ConversionError, fit_sample, read_class_names, read_meta, write_dataset_info,
                     write_pickle_atomic, write_text_atomic)

log = logging.getLogger("stgcn.convert.merge")

SPLITS = ("train", "val")


# --------------------------------------------------------------------------- merging

@dataclass
class Source:
    """One converted dataset to merge."""

    path: Path
    name: str
    classes: list[str]
    meta: dict[str, Any]

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Source":
        path = Path(path)
        if not path.is_dir():
            raise ConversionError(f"{path}: no such folder")
        meta = read_meta(path)
        return cls(path, str(meta.get("dataset") or path.name), read_class_names(path), meta)

    def labels(self, split: str) -> tuple[list[str], list[int]]:
        path = self.path / f"{split}_label.pkl"
        try:
            with open(path, "rb") as f:
                names, labels = pickle.load(f)
        except FileNotFoundError:
            raise ConversionError(f"{path}: no such file") from None
        except Exception as e:
            raise ConversionError(f"{path}: not an st-gcn label file ({type(e).__name__}: {e})") from None
        return [str(n) for n in names], [int(v) for v in labels]

    def data(self, split: str) -> np.ndarray:
        path = self.path / f"{split}_data.npy"
        if not path.is_file():
            raise ConversionError(f"{path}: no such file")
        arr = np.load(path, mmap_mode="r")
        if arr.ndim != 5:
            raise ConversionError(f"{path}: shape {arr.shape}, expected (N, C, T, V, M)")
        return arr


def load_class_spec(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The ``classes`` entries of a merged class list: ``{"name": str, dataset: [source names]}``."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such file") from None
    except yaml.YAMLError as e:
        raise ConversionError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    entries = (spec or {}).get("classes") if isinstance(spec, dict) else None
    if not isinstance(entries, list):
        raise ConversionError(f"{path}: expected a 'classes' list")
    out = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConversionError(f"{path}: classes[{k}] needs a 'name'")
        parts: dict[str, Any] = {"name": entry["name"]}
        for dataset, names in entry.items():
            if dataset == "name":
                continue
            names = [names] if isinstance(names, str) else names
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ConversionError(f"{path}: classes[{k}] ({entry['name']}): {dataset} must be a name or a list")
            parts[str(dataset)] = names
        out.append(parts)
    return out


def merged_classes(sources: Sequence[Source], spec: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[int]]]:
    """The merged class list and, per source, the merged label of each of its classes.

    Merged entries come first (in the spec's order, those that take from at least one of the
    sources), then every other class under its own name, source by source.
    """
    by_name = {s.name: s for s in sources}
    if len(by_name) != len(sources):
        raise ConversionError(f"two sources share a dataset name: {[s.name for s in sources]}")
    maps: list[list[int | None]] = [[None] * len(s.classes) for s in sources]
    index = {s.name: i for i, s in enumerate(sources)}
    names: list[str] = []
    for entry in spec:
        taken = False
        for dataset, src_names in entry.items():
            if dataset == "name" or dataset not in by_name:
                continue
            src = by_name[dataset]
            for n in src_names:
                if n not in src.classes:
                    raise ConversionError(f"class {n!r} of {entry['name']!r} is not a class of {dataset} "
                                          f"({src.path / 'class_names.txt'})")
                k = src.classes.index(n)
                if maps[index[dataset]][k] is not None:
                    raise ConversionError(f"class {n!r} of {dataset} is in two merged entries")
                maps[index[dataset]][k] = len(names)
                taken = True
        if taken:
            names.append(entry["name"])
    for i, src in enumerate(sources):
        for k, n in enumerate(src.classes):
            if maps[i][k] is None:
                maps[i][k] = len(names)
                names.append(n)
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ConversionError(f"class name {n!r} occurs twice in the merged list: merge those classes in the "
                                  "class list or rename one")
        seen.add(n)
    return names, [[int(v) for v in m] for m in maps]


def merge_datasets(out: str | os.PathLike, srcs: Sequence[str | os.PathLike], classes: str | os.PathLike,
                   frames: int | None = None, progress: bool = True) -> dict[str, int]:
    """Merge converted datasets into ``out`` (data, labels, class_names.txt, sources.json, meta.json).

    ``frames``: T of the output (default: the largest T of the sources); clips are cut or
    zero-padded at the end. Sample names become ``dataset/name``.
    """
    from tqdm import tqdm

    if not srcs:
        raise ConversionError("no datasets to merge")
    sources = [Source.open(p) for p in srcs]
    names, maps = merged_classes(sources, load_class_spec(classes))
    shapes = {s.name: {split: s.data(split).shape for split in SPLITS} for s in sources}
    cv = {(shape[1], shape[3]) for per in shapes.values() for shape in per.values()}
    if len(cv) != 1:
        raise ConversionError(f"the sources differ in channels or joints: {shapes}")
    layouts = {s.meta.get("layout") for s in sources} - {None}
    if len(layouts) > 1:
        raise ConversionError(f"the sources have different layouts: {sorted(layouts)}")
    t_out = int(frames or max(shape[2] for per in shapes.values() for shape in per.values()))
    m_out = max(shape[4] for per in shapes.values() for shape in per.values())
    (c, v), = cv
    result: dict[str, int] = {"classes": len(names)}
    sources_json: dict[str, Any] = {"datasets": [s.name for s in sources]}
    for split in SPLITS:
        parts = [(s, m, *s.labels(split)) for s, m in zip(sources, maps)]
        for s, _, n, lab in parts:
            if len(n) != shapes[s.name][split][0]:
                raise ConversionError(f"{s.path}: {split} has {len(n)} labels for {shapes[s.name][split][0]} samples")
        total = sum(len(n) for *_, n, _ in parts)
        out_names: list[str] = []
        out_labels: list[int] = []
        out_sources: list[str] = []
        with AtomicNpyWriter(Path(out) / f"{split}_data.npy", (total, c, t_out, v, m_out)) as w:
            bar = tqdm(total=total, desc=f"merge {split}", unit="sample", disable=not progress, leave=False)
            for s, label_map, n, lab in parts:
                data = s.data(split)
                for j in range(len(n)):
                    w.array[len(out_names)] = fit_sample(np.asarray(data[j]), t_out, m_out)
                    out_names.append(f"{s.name}/{n[j]}")
                    out_labels.append(label_map[lab[j]])
                    out_sources.append(s.name)
                    bar.update()
            bar.close()
        write_pickle_atomic(Path(out) / f"{split}_label.pkl", (out_names, out_labels))
        sources_json[split] = out_sources
        result[split] = total
        for s in sources:
            result[f"{split}_{s.name}"] = out_sources.count(s.name)
    fps = {s.name: s.meta.get("fps") for s in sources}
    meta = {"dataset": "merged", "layout": layouts.pop() if layouts else None, "frames": t_out, "persons": m_out,
            "fps": fps, "class_list": str(classes)}
    write_dataset_info(out, names, meta)
    write_text_atomic(Path(out) / "sources.json", json.dumps(sources_json) + "\n")
    log.info("merged %s into %s: %d classes", ", ".join(s.name for s in sources), out, len(names))
    return result

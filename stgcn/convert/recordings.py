"""The live pipeline's recordings (``*.skel``) to the st-gcn format, labelled by folder or CSV.

Each recording is read with ``pipeline.recording.read_recording`` and its persons are put
in stable slots with ``pipeline.tracker.SlotAssigner`` exactly as the live pipeline does,
so a model trained on the result sees what it sees in a stream. Frames are laid out by
``pipeline.windows.training_clip``, the live worker's own window rules: duplicates and late
frames are dropped, gaps of up to ``max_gap`` frames hold the previous frame, and a longer gap
starts a new segment (the sample is the longest one).

Labels: by default the folder a take lies in names its class (``SRC/<label>/*.skel``, what
``run_pipeline.py --record SRC --label NAME`` writes); a take directly in SRC takes the
``label`` of its metadata. Or a label CSV with columns ``file`` (path relative to SRC, or a
bare file name) and ``label`` (a class name). The class list is the sorted unique names or
``classes``. The validation split is either a second folder laid out the same way (``val_src``,
e.g. takes of other people) or a seeded, per-class (stratified) random ``val_fraction``.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..graph import get_layout
from .common import BadInputError, ConversionError, Sample, counts, write_split, write_text_atomic

log = logging.getLogger("stgcn.convert.recordings")


def _pipeline():
    try:
        from pipeline.recording import read_recording
        from pipeline.tracker import SlotAssigner
        from pipeline.windows import training_clip
    except ImportError as e:  # imported lazily: the converter's other parts do not need it
        raise ConversionError(f"the recordings converter needs the pipeline package ({e})") from None
    return read_recording, SlotAssigner, training_clip


def read_recording_sample(path: str | os.PathLike, layout: str | None = "openpose", frames: int = 300,
                          persons: int = 2, max_gap: int = 10) -> np.ndarray:
    """One recording as a raw st-gcn sample ``(3, frames, V, persons)`` float32."""
    read_recording, SlotAssigner, training_clip = _pipeline()
    try:
        _start, recs, _end = read_recording(path)
    except (OSError, ValueError, EOFError) as e:
        raise BadInputError(path, f"cannot read the recording ({type(e).__name__}: {e})") from None
    if not recs:
        raise BadInputError(path, "empty take: no frames")
    names = {getattr(f, "layout", None) for f in recs}
    if layout is not None:
        want = get_layout(layout)
        bad = {n for n in names if n is not None and get_layout(n).name != want.name} if names else set()
        if bad:
            raise BadInputError(path, f"layout {sorted(bad)} is not {want.name!r}")
        v = want.num_node
    else:
        v = get_layout(next(iter(names))).num_node
    assigner = SlotAssigner(num_slots=persons)
    frames_in, seqs = [], []
    for f in recs:
        frame = assigner.assign(list(f.persons), joints=v)
        if not np.all(np.isfinite(frame)):
            raise BadInputError(path, f"frame seq {getattr(f, 'seq', None)}: NaN or inf")
        frames_in.append(frame)
        seqs.append(getattr(f, "seq", None))
    sample = training_clip(frames_in, seqs, frames, max_gap)
    if not sample.any():
        raise BadInputError(path, f"empty take: nobody seen in its {len(recs)} frames")
    return sample


class _Reader:
    def __init__(self, layout, frames, persons, max_gap):
        self.layout, self.frames, self.persons, self.max_gap = layout, frames, persons, max_gap

    def __call__(self, path: str) -> np.ndarray:
        return read_recording_sample(path, self.layout, self.frames, self.persons, self.max_gap)


def load_label_csv(src: Path, csv_path: Path) -> list[tuple[str, str]]:
    """``(path, class name)`` rows of the label CSV, paths resolved against ``src``."""
    rows = []
    try:
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
                raise ConversionError(f"{csv_path}: needs the columns 'file' and 'label'")
            for k, r in enumerate(reader, start=2):
                file, label = (r.get("file") or "").strip(), (r.get("label") or "").strip()
                if not file or not label:
                    raise ConversionError(f"{csv_path}: line {k}: empty file or label")
                p = Path(file)
                if not p.is_absolute():
                    p = src / p
                rows.append((str(p), label))
    except OSError as e:
        raise ConversionError(f"{csv_path}: cannot read ({e})") from None
    return rows


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of the validation samples: per class, ``round(n * val_fraction)`` random ones
    (at least one when the class has two or more samples and the fraction is positive)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(len(idx) * val_fraction))
        if val_fraction > 0 and len(idx) >= 2:
            k = max(k, 1)
        k = min(k, len(idx) - 1) if len(idx) >= 2 else (k if val_fraction >= 1 else 0)
        val[rng.permutation(idx)[:k]] = True
    return val


def recording_label(path: str | os.PathLike) -> str | None:
    """The ``label`` in a recording's start metadata (None without one)."""
    read_recording, _, _ = _pipeline()
    try:
        start = read_recording(path).start
    except (OSError, ValueError, EOFError) as e:
        raise ConversionError(f"{path}: cannot read the recording ({e})") from None
    label = start.meta.get("label") if start is not None else None
    return str(label) if label else None


def labels_from_folders(src: Path) -> list[tuple[str, str]]:
    """``(path, class name)`` of every take under ``src``: ``src/<label>/*.skel`` by folder name,
    ``src/*.skel`` by the label in its metadata (a take without one is an error)."""
    if not src.is_dir():
        raise ConversionError(f"{src}: no such folder")
    rows = [(str(p), p.parent.name) for p in sorted(src.glob("*/*.skel"))]
    for p in sorted(src.glob("*.skel")):
        label = recording_label(p)
        if label is None:
            raise ConversionError(f"{p}: no label (put it in a folder named after its class, or pass --labels CSV)")
        rows.append((str(p), label))
    if not rows:
        raise ConversionError(f"{src}: no labelled takes (expected {src}/<label>/*.skel, "
                              "e.g. from run_pipeline.py --record DIR --label NAME, or --labels CSV)")
    return rows


def _read_class_list(classes: Sequence[str] | str | os.PathLike | None, labels: Sequence[str]) -> list[str]:
    if isinstance(classes, (str, os.PathLike)):
        with open(classes) as f:
            return [ln.strip() for ln in f if ln.strip()]
    return list(classes) if classes is not None else sorted(set(labels))


def convert_recordings(src: str | os.PathLike, out: str | os.PathLike, labels_csv: str | os.PathLike | None = None,
                       *, val_src: str | os.PathLike | None = None,
                       classes: Sequence[str] | str | os.PathLike | None = None, layout: str = "openpose",
                       frames: int = 300, persons: int = 1, val_fraction: float = 0.2, seed: int = 0,
                       max_gap: int = 10, skip_bad: bool = False, workers: int = 1,
                       progress: bool = True) -> dict[str, int]:
    """Convert labelled recordings to ``out/{train,val}_*`` and ``out/class_names.txt``.

    Labels come from ``labels_csv`` when given, else from the folders (:func:`labels_from_folders`);
    with ``val_src`` (labelled the same way) that folder is the validation split and
    ``val_fraction`` is not used.
    """
    _pipeline()
    src = Path(src)
    where = labels_csv or src

    def labelled(folder: Path) -> list[tuple[str, str]]:
        return load_label_csv(folder, Path(labels_csv)) if labels_csv else labels_from_folders(folder)

    rows = labelled(src)
    if not rows:
        raise ConversionError(f"{labels_csv}: no rows")
    val_rows = labelled(Path(val_src)) if val_src is not None else []
    class_list = _read_class_list(classes, [lab for _, lab in rows])
    if len(class_list) < 2:
        raise ConversionError(f"{where}: only one class ({class_list[0]!r}); a classifier needs takes of "
                              "at least two actions")
    index = {c: i for i, c in enumerate(class_list)}
    for group, origin in ((rows, where), (val_rows, val_src)):
        unknown = sorted({lab for _, lab in group if lab not in index})
        if unknown:
            raise ConversionError(f"{origin}: labels not in the class list {class_list}: {unknown[:5]}")
    missing = [p for p, _ in rows + val_rows if not Path(p).is_file()]
    if missing and not skip_bad:
        raise ConversionError(f"{missing[0]}: listed in {labels_csv} but missing ({len(missing)} missing)")
    rows = [r for r in rows if r[0] not in set(missing)]
    val_rows = [r for r in val_rows if r[0] not in set(missing)]
    labels = [index[lab] for _, lab in rows]
    if val_src is not None:
        split_rows = {"train": rows, "val": val_rows}
    else:
        is_val = stratified_split(labels, val_fraction, seed)
        split_rows = {"train": [r for r, sv in zip(rows, is_val) if not sv],
                      "val": [r for r, sv in zip(rows, is_val) if sv]}
    v = get_layout(layout).num_node
    results = {}
    for split, group in split_rows.items():
        base = Path(val_src) if split == "val" and val_src is not None else src
        samples = [Sample(os.path.relpath(p, base) if Path(p).is_relative_to(base) else p, index[lab], p)
                   for p, lab in group]
        results[split] = write_split(out, split, samples, _Reader(layout, frames, persons, max_gap),
                                     (3, frames, v, persons), skip_bad=skip_bad, workers=workers,
                                     progress=progress, desc=f"recordings {split}")
    write_text_atomic(Path(out) / "class_names.txt", "".join(c + "\n" for c in class_list))
    return counts(results, missing=len(missing), classes=len(class_list))

"""UTD-MHAD 2D pose-estimator output (OpenPose COCO-18 on the RGB videos) to the st-gcn format.

SRC (``utd-mhad-openpose2d``) holds ``manifest.csv`` (file, label0, action, subject, trial,
frames, xsub_split) and ``csv/aA_sS_tT_coco.csv`` with one row per frame:
``frame, rgb_x_0..rgb_x_17, rgb_y_0..rgb_y_17``, integer pixels of the 640x480 video.

Checked on the data: the RGB videos are MIRRORED. In every sequence the joint OpenPose calls
"r_shoulder" is on the image's left of "l_shoulder" (a frontal person), yet in the right-hand
actions (a1-a3, a5, a8-a12, a15, a19-a21) OpenPose's "l_wrist" moves most, and its x runs
opposite to the right wrist of the Kinect skeleton of the same take (projected to a
non-mirrored image) while its y follows it. The converter therefore un-mirrors: ``x = 1 - px / 640``
and swaps every left/right joint pair, which is what the estimator would give on the
non-mirrored video (the person's right on the image's left, as the live pipeline sees a
camera and as the Kinect projection of :mod:`.utd_mhad` does).

The source has no confidence (a per-joint argmax with no threshold): every joint gets 1.0; a
joint at pixel (0, 0), which would mean "not found", gets 0. Cross-subject split from the
manifest (subjects 1,3,5,7 train, 2,4,6,8 val); the 3 sequences UTD dropped are absent.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from .common import BadInputError, ConversionError, Sample, counts, fit_sample, write_dataset_info, write_split

DATASET = "utd-mhad-2d"
FPS = 15  # the RGB video headers
SIZE = (640, 480)
NUM_JOINTS = 18
# OpenPose-18 left/right pairs: shoulders, elbows, wrists, hips, knees, ankles, eyes, ears.
LR_PAIRS = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17))


def swapped_sides() -> np.ndarray:
    """Joint index permutation that exchanges every left/right pair."""
    perm = np.arange(NUM_JOINTS)
    for a, b in LR_PAIRS:
        perm[a], perm[b] = b, a
    return perm


UNMIRROR = swapped_sides()


def read_openpose_csv(path: str | os.PathLike) -> np.ndarray:
    """One sequence as float32 ``(T, 18, 2)`` pixels (x, y) in file order, as the file has them."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise BadInputError(path, f"cannot read ({e.strerror or e})") from None
    if len(rows) < 2:
        raise BadInputError(path, "no frames")
    header = rows[0]
    want = ["frame"] + [f"rgb_x_{j}" for j in range(NUM_JOINTS)] + [f"rgb_y_{j}" for j in range(NUM_JOINTS)]
    if header != want:
        raise BadInputError(path, f"unexpected header {header[:3]}..., expected frame, rgb_x_0..17, rgb_y_0..17")
    try:
        a = np.array(rows[1:], dtype=np.float32)
    except ValueError as e:
        raise BadInputError(path, f"non-numeric value ({e})") from None
    if a.ndim != 2 or a.shape[1] != len(want):
        raise BadInputError(path, f"rows of {a.shape[1:] or 'uneven'} values, expected {len(want)}")
    if not np.all(np.isfinite(a)):
        raise BadInputError(path, "NaN or inf")
    return np.stack([a[:, 1:1 + NUM_JOINTS], a[:, 1 + NUM_JOINTS:]], axis=-1)


def to_openpose(px: np.ndarray, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Mirrored pixels ``(T, 18, 2)`` to un-mirrored image-normalised ``(T, 18, 3)`` (x, y, conf)."""
    w, h = size
    present = np.any(px != 0, axis=-1)
    out = np.stack([1.0 - px[..., 0] / w, px[..., 1] / h, np.ones(px.shape[:2])], axis=-1)
    out = np.where(present[..., None], out, 0.0).astype(np.float32)
    return out[:, UNMIRROR]


def read_utd_mhad_2d(path: str | os.PathLike, frames: int = 300, persons: int = 2) -> np.ndarray:
    """One CSV file as an st-gcn sample ``(3, frames, 18, persons)`` (the person in slot 0)."""
    seq = to_openpose(read_openpose_csv(path))
    return fit_sample(seq.transpose(2, 0, 1)[..., None], frames, persons)


class _Reader:  # picklable reader for worker pools
    def __init__(self, frames: int, persons: int) -> None:
        self.frames, self.persons = frames, persons

    def __call__(self, path: str) -> np.ndarray:
        return read_utd_mhad_2d(path, self.frames, self.persons)


def read_manifest(src: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """Rows of ``manifest.csv`` (``file``, ``name``, ``label``, ``subject``, ``split``) and the class names
    (``action`` by ``label0``)."""
    src = Path(src)
    if not src.is_dir():
        raise ConversionError(f"{src}: no such folder")
    manifest = src / "manifest.csv"
    if not manifest.is_file():
        raise ConversionError(f"{manifest}: no such file (expected the utd-mhad-openpose2d folder)")
    rows, names = [], {}
    with open(manifest, newline="") as f:
        for r in csv.DictReader(f):
            label = int(r["label0"])
            if names.setdefault(label, r["action"]) != r["action"]:
                raise ConversionError(f"{manifest}: label {label} is both {names[label]!r} and {r['action']!r}")
            split = r["xsub_split"].strip().lower()
            rows.append(dict(file=str(src / r["file"]), name=Path(r["file"]).stem, label=label,
                             subject=int(r["subject"]), split="train" if split == "train" else "val"))
    if sorted(names) != list(range(len(names))):
        raise ConversionError(f"{manifest}: labels are not 0..{len(names) - 1}")
    return rows, [names[k] for k in range(len(names))]


def convert_utd_mhad_2d(src: str | os.PathLike, out: str | os.PathLike, frames: int = 300, persons: int = 2,
                        limit: int | None = None, skip_bad: bool = False, workers: int = 1,
                        progress: bool = True) -> dict[str, int]:
    """Convert to ``out/{train,val}_*``, ``class_names.txt`` and ``meta.json``; ``limit``: the first
    ``limit`` sequences of each split. Returns counts (``train``, ``val``, ``bad``...)."""
    rows, class_names = read_manifest(src)
    results = {}
    for split in ("train", "val"):
        part = [r for r in rows if r["split"] == split][:limit]
        samples = [Sample(r["name"], r["label"], r["file"]) for r in part]
        results[split] = write_split(out, split, samples, _Reader(frames, persons),
                                     (3, frames, NUM_JOINTS, persons), skip_bad=skip_bad, workers=workers,
                                     progress=progress, desc=f"{DATASET} {split}")
    write_dataset_info(out, class_names, {
        "dataset": DATASET, "layout": "openpose", "fps": FPS, "frames": frames, "persons": persons,
        "coordinates": "x / width, y / height of the un-mirrored 640x480 video, y down; confidence 1 (none given)",
    })
    return counts(results, classes=len(class_names))

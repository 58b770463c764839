"""UTD-MHAD skeletons (Kinect v1, ``.mat`` files) to the st-gcn format.

``d_skel`` is ``(20, 3, T)`` in metres, Kinect camera space. Checked on the data: y points up
(the head has a larger y than the feet), z is the distance from the sensor (about 2.9 m), and
the person's right side has the LARGER x (right shoulder/wrist x > left ones for a person
facing the sensor); in a "right hand wave" (a3) Kinect joints 11 and 12 (one-based, the right
wrist and hand) move the most, so the joint names of the dataset are the person's own sides.
A right-handed camera frame with y up and z forward has +x on the camera's left, so the
person's right shows on the LEFT of a non-mirrored image: the openpose projection is
``u = cx - f * x / z``, ``v = cy - f * y / z`` (image y down).

Layouts: ``kinect-v1`` (native, 3D), ``openpose`` (pinhole projection to image-normalised 2D
keypoints with confidence 1; eyes and ears absent) and ``ntu-rgb+d`` (3D, the mapping of
REFERENCE section 8: UTD joints 1..20 fill NTU joints 4,3,2,1,5..20; NTU 21 from the shoulder
center, the hand tips and thumbs from the hands).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..graph import get_layout
from .common import BadInputError, ConversionError, Sample, counts, write_dataset_info, write_split

log = logging.getLogger("stgcn.convert.utd_mhad")

TRAIN_SUBJECTS = (1, 3, 5, 7)
NUM_CLASSES = 27
_NAME_RE = re.compile(r"a(\d+)_s(\d+)_t(\d+)", re.IGNORECASE)

# Kinect v1 depth camera intrinsics (approximate): focal length in pixels, image size.
KINECT_F = 531.0
KINECT_SIZE = (640, 480)

# openpose joint <- Kinect v1 joint (zero-based); eyes and ears (14..17) stay absent.
OPENPOSE_FROM_KINECT = {
    0: 0,  # nose <- head
    1: 1,  # neck <- shoulder_center
    2: 8, 3: 9, 4: 10,  # r shoulder, elbow, wrist
    5: 4, 6: 5, 7: 6,  # l shoulder, elbow, wrist
    8: 16, 9: 17, 10: 18,  # r hip, knee, ankle
    11: 12, 12: 13, 13: 14,  # l hip, knee, ankle
}
# ntu-rgb+d joint (zero-based) <- Kinect v1 joint (zero-based).
NTU_FROM_KINECT = {3: 0, 2: 1, 1: 2, 0: 3, **{i: i for i in range(4, 20)},
                   20: 1, 21: 7, 22: 7, 23: 11, 24: 11}

LAYOUTS = ("kinect-v1", "openpose", "ntu-rgb+d")
FPS = 30  # the Kinect skeleton stream
COORDINATES = {"kinect-v1": "Kinect camera space, metres", "ntu-rgb+d": "Kinect camera space, metres",
               "openpose": "x / width, y / height of a 640x480 image (f = 531 px), y down; eyes and ears absent"}


def read_utd_mhad_mat(path: str | os.PathLike) -> np.ndarray:
    """``d_skel`` of one ``.mat`` file as float32 ``(T, 20, 3)`` metres (x, y, z)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several types for malformed/truncated files
        raise BadInputError(path, f"not a readable .mat file ({type(e).__name__}: {e})") from None
    if "d_skel" not in mat:
        raise BadInputError(path, "no 'd_skel' variable")
    d = np.asarray(mat["d_skel"])
    if d.ndim != 3 or d.shape[0] != 20 or d.shape[1] != 3 or d.shape[2] < 1:
        raise BadInputError(path, f"d_skel has shape {d.shape}, expected (20, 3, T)")
    if not np.issubdtype(d.dtype, np.number):
        raise BadInputError(path, f"d_skel has dtype {d.dtype}")
    d = d.astype(np.float32).transpose(2, 0, 1)
    if not np.all(np.isfinite(d)):
        raise BadInputError(path, "d_skel holds NaN or inf")
    return d


def project_openpose(xyz: np.ndarray, f: float = KINECT_F, size: tuple[int, int] = KINECT_SIZE) -> np.ndarray:
    """Kinect ``(T, 20, 3)`` metres to openpose ``(T, 18, 3)`` (x, y in 0..1 of a non-mirrored
    image, y down, confidence 1; eyes and ears zero)."""
    w, h = size
    t = xyz.shape[0]
    out = np.zeros((t, 18, 3), np.float32)
    src = np.array(list(OPENPOSE_FROM_KINECT.values()))
    dst = np.array(list(OPENPOSE_FROM_KINECT.keys()))
    p = xyz[:, src, :].astype(np.float64)
    z = p[..., 2]
    ok = (z > 1e-3) & np.any(p != 0, axis=-1)
    zs = np.where(ok, z, 1.0)
    u = (w / 2.0 - f * p[..., 0] / zs) / w
    v = (h / 2.0 - f * p[..., 1] / zs) / h
    out[:, dst, 0] = np.where(ok, u, 0.0)
    out[:, dst, 1] = np.where(ok, v, 0.0)
    out[:, dst, 2] = ok.astype(np.float32)
    return out


def to_layout(xyz: np.ndarray, layout: str) -> np.ndarray:
    """Kinect ``(T, 20, 3)`` to ``(T, V, C)`` of ``layout``."""
    name = get_layout(layout).name
    if name == "kinect-v1":
        return xyz.astype(np.float32)
    if name == "openpose":
        return project_openpose(xyz)
    if name == "ntu-rgb+d":
        out = np.zeros((xyz.shape[0], 25, 3), np.float32)
        for dst, src in NTU_FROM_KINECT.items():
            out[:, dst] = xyz[:, src]
        return out
    raise ValueError(f"UTD-MHAD converts to {LAYOUTS}, not {layout!r}")


def read_utd_mhad(path: str | os.PathLike, layout: str = "kinect-v1", frames: int = 300,
                  persons: int = 2) -> np.ndarray:
    """One ``.mat`` file as a raw st-gcn sample ``(C, frames, V, persons)`` (person 0 only)."""
    seq = to_layout(read_utd_mhad_mat(path), layout)[:frames]  # (T, V, C)
    v, c = seq.shape[1], seq.shape[2]
    out = np.zeros((c, frames, v, persons), np.float32)
    out[:, : seq.shape[0], :, 0] = seq.transpose(2, 0, 1)
    return out


class _Reader:  # picklable reader for worker pools
    def __init__(self, layout: str, frames: int, persons: int) -> None:
        self.layout, self.frames, self.persons = layout, frames, persons

    def __call__(self, path: str) -> np.ndarray:
        return read_utd_mhad(path, self.layout, self.frames, self.persons)


def parse_name(name: str) -> tuple[int, int, int]:
    """``a3_s1_t2_skeleton.mat`` -> (action, subject, trial), one-based."""
    m = _NAME_RE.search(Path(name).name)
    if not m:
        raise ValueError(f"not a UTD-MHAD file name: {name!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def list_utd_mhad(src: str | os.PathLike) -> list[dict]:
    """Index of the dataset: ``file`` (path), ``name``, ``label`` (0-based), ``subject``,
    ``trial``, ``split`` ("train"/"val") and ``action`` (the class name, where the manifest has
    it), from ``manifest.csv`` or else the file names."""
    src = Path(src)
    rows = []
    manifest = src / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="") as f:
            for r in csv.DictReader(f):
                split = r.get("xsub_split", "").strip().lower()
                rows.append(dict(file=str(src / r["file"]), name=Path(r["file"]).stem, label=int(r["label0"]),
                                 subject=int(r["subject"]), trial=int(r["trial"]), action=r.get("action"),
                                 split="train" if split == "train" else "val"))
    else:
        folder = src / "Skeleton" if (src / "Skeleton").is_dir() else src
        for p in sorted(folder.glob("*.mat")):
            try:
                a, s, t = parse_name(p.name)
            except ValueError:
                continue
            rows.append(dict(file=str(p), name=p.stem, label=a - 1, subject=s, trial=t,
                             split="train" if s in TRAIN_SUBJECTS else "val"))
    if not rows:
        raise ConversionError(f"{src}: no UTD-MHAD files (expected manifest.csv or Skeleton/*.mat)")
    return rows


def convert_utd_mhad(src: str | os.PathLike, out: str | os.PathLike, layout: str = "kinect-v1",
                     frames: int = 300, persons: int = 2, subjects: Sequence[int] | None = None,
                     limit: int | None = None, skip_bad: bool = False, workers: int = 1,
                     progress: bool = True) -> dict[str, int]:
    """Convert UTD-MHAD to ``out/{train,val}_{data.npy,label.pkl}`` (cross-subject split), and
    ``class_names.txt`` and ``meta.json`` where the manifest names the classes (so that
    ``stgcn.convert merge`` can take it).

    ``subjects`` keeps only those subjects; ``limit`` keeps the first ``limit`` files of each
    split. Returns counts: ``train``, ``val``, ``bad`` (and per split ``*_bad``).
    """
    if get_layout(layout).name not in LAYOUTS:
        raise ConversionError(f"UTD-MHAD converts to {LAYOUTS}, not {layout!r}")
    layout = get_layout(layout).name
    rows = list_utd_mhad(src)
    names = {r["label"]: r.get("action") for r in rows}
    if subjects:
        keep = {int(s) for s in subjects}
        rows = [r for r in rows if r["subject"] in keep]
    v = get_layout(layout).num_node
    results = {}
    for split in ("train", "val"):
        part = [r for r in rows if r["split"] == split]
        if limit is not None:
            part = part[: int(limit)]
        samples = [Sample(r["name"], r["label"], r["file"]) for r in part]
        results[split] = write_split(out, split, samples, _Reader(layout, frames, persons), (3, frames, v, persons),
                                     skip_bad=skip_bad, workers=workers, progress=progress,
                                     desc=f"utd-mhad {split}")
    if sorted(names) == list(range(NUM_CLASSES)) and all(names.values()):
        write_dataset_info(out, [names[k] for k in range(NUM_CLASSES)], {
            "dataset": "utd-mhad", "layout": layout, "fps": FPS, "frames": frames, "persons": persons,
            "coordinates": COORDINATES[layout]})
    return counts(results)

"""What the converter tests on the real data sets share: where the data is, reading a split back,
and how far a joint travels."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from stgcn.graph import get_layout

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
OP = get_layout("openpose").joints


def load(out: Path, split: str) -> tuple[np.ndarray, list[str], list[int]]:
    """A converted split: data (memory-mapped), sample names and labels."""
    data = np.load(out / f"{split}_data.npy", mmap_mode="r")
    with open(out / f"{split}_label.pkl", "rb") as f:
        names, labels = pickle.load(f)
    return data, names, labels


def motion(sample: np.ndarray, joint: str) -> float:
    """Path length of one OpenPose joint of slot 0 over the frames where it is present."""
    j = OP.index(joint)
    xy = sample[:2, sample[2, :, j, 0] > 0, j, 0]
    return float(np.linalg.norm(np.diff(xy, axis=1), axis=0).sum())

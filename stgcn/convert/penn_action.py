"""Penn Action hand-annotated 2D joints (``labels/NNNN.mat``) to the st-gcn format.

Each ``.mat`` holds ``action``, ``x``, ``y``, ``visibility`` (frames x 13, pixels),
``dimensions`` (H, W, frames) and ``train`` (1 train, -1 test: the official split).

The joint order is documented as head, left/right shoulder, left/right elbow, ... but the data
says the FIRST joint of each pair is the person's RIGHT: in the clips labelled with a "front"
view (the person faces the camera, so their right is on the image's left) joint 2 (one-based)
is left of joint 3 in 89 % of the frames, and in "back" views right of it in 75 % (in all 202
back-view bowling clips, filmed from behind the bowler); the wrist of joint 6 moves more than
that of joint 7 in 80 % of the bowling clips and 78 % of the guitar-strumming ones (mostly
right-handed). So: 1 head, 2 r_shoulder, 3 l_shoulder,
4 r_elbow, 5 l_elbow, 6 r_wrist, 7 l_wrist, 8 r_hip, 9 l_hip, 10 r_knee, 11 l_knee,
12 r_ankle, 13 l_ankle (the person's own sides).

OpenPose-18: head -> nose; neck = midpoint of the shoulders (confidence the smaller of the
two); limbs to their joints; eyes and ears absent. ``x / W``, ``y / H`` (y down); a joint
with visibility 0 is absent (x = y = confidence = 0, as the live pipeline drops what it does
not see), a visible one has confidence 1.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .common import BadInputError, ConversionError, Sample, counts, fit_sample, write_dataset_info, write_split

log = logging.getLogger("stgcn.convert.penn_action")

DATASET = "penn-action"
FPS = 30
CLASSES = ("baseball_pitch", "baseball_swing", "bench_press", "bowl", "clean_and_jerk", "golf_swing", "jump_rope",
           "jumping_jacks", "pullup", "pushup", "situp", "squat", "strum_guitar", "tennis_forehand", "tennis_serve")
NUM_JOINTS = 13
# OpenPose-18 joint <- Penn joint (zero-based; the first of each pair is the person's right).
OPENPOSE_FROM_PENN = {
    0: 0,  # nose <- head
    2: 1, 3: 3, 4: 5,  # r shoulder, elbow, wrist
    5: 2, 6: 4, 7: 6,  # l shoulder, elbow, wrist
    8: 7, 9: 9, 10: 11,  # r hip, knee, ankle
    11: 8, 12: 10, 13: 12,  # l hip, knee, ankle
}
R_SHOULDER, L_SHOULDER, NECK = 2, 5, 1


def _scalar(mat: dict, key: str, path) -> object:
    if key not in mat:
        raise BadInputError(path, f"no {key!r} variable")
    return np.asarray(mat[key]).ravel()[0]


def read_penn_mat(path: str | os.PathLike) -> dict:
    """One label file: ``action``, ``train`` (bool), ``size`` (W, H) and ``x``, ``y``, ``visible``
    ``(T, 13)``."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several types for malformed/truncated files
        raise BadInputError(path, f"not a readable .mat file ({type(e).__name__}: {e})") from None
    arrays = {}
    for key in ("x", "y", "visibility"):
        if key not in mat:
            raise BadInputError(path, f"no {key!r} variable")
        a = np.asarray(mat[key])
        if a.ndim != 2 or a.shape[1] != NUM_JOINTS or a.shape[0] < 1 or not np.issubdtype(a.dtype, np.number):
            raise BadInputError(path, f"{key} has shape {a.shape} ({a.dtype}), expected (frames, {NUM_JOINTS})")
        arrays[key] = a.astype(np.float64)
    if not arrays["x"].shape == arrays["y"].shape == arrays["visibility"].shape:
        raise BadInputError(path, "x, y and visibility differ in shape")
    dims = np.asarray(mat.get("dimensions", [])).ravel()
    if dims.size != 3 or dims[0] <= 0 or dims[1] <= 0:
        raise BadInputError(path, f"dimensions {dims.tolist()}, expected (H, W, frames)")
    visible = arrays["visibility"] > 0
    if not (np.all(np.isfinite(arrays["x"][visible])) and np.all(np.isfinite(arrays["y"][visible]))):
        raise BadInputError(path, "NaN or inf in a visible joint")
    return dict(action=str(_scalar(mat, "action", path)), train=int(_scalar(mat, "train", path)) == 1,
                size=(int(dims[1]), int(dims[0])), x=arrays["x"], y=arrays["y"], visible=visible)


def to_openpose(clip: dict) -> np.ndarray:
    """A read clip as image-normalised OpenPose-18 ``(T, 18, 3)`` (x, y, confidence)."""
    w, h = clip["size"]
    t = clip["x"].shape[0]
    out = np.zeros((t, 18, 3), np.float32)
    src = np.array(list(OPENPOSE_FROM_PENN.values()))
    dst = np.array(list(OPENPOSE_FROM_PENN.keys()))
    vis = clip["visible"][:, src]
    out[:, dst, 0] = np.where(vis, clip["x"][:, src] / w, 0.0)
    out[:, dst, 1] = np.where(vis, clip["y"][:, src] / h, 0.0)
    out[:, dst, 2] = vis
    both = (out[:, R_SHOULDER, 2] > 0) & (out[:, L_SHOULDER, 2] > 0)
    out[:, NECK, :2] = np.where(both[:, None], (out[:, R_SHOULDER, :2] + out[:, L_SHOULDER, :2]) / 2, 0.0)
    out[:, NECK, 2] = np.minimum(out[:, R_SHOULDER, 2], out[:, L_SHOULDER, 2])
    return out


def read_penn_action(path: str | os.PathLike, frames: int = 300, persons: int = 2) -> np.ndarray:
    """One label file as an st-gcn sample ``(3, frames, 18, persons)`` (the person in slot 0)."""
    seq = to_openpose(read_penn_mat(path))
    return fit_sample(seq.transpose(2, 0, 1)[..., None], frames, persons)


class _Reader:  # picklable reader for worker pools
    def __init__(self, frames: int, persons: int) -> None:
        self.frames, self.persons = frames, persons

    def __call__(self, path: str) -> np.ndarray:
        return read_penn_action(path, self.frames, self.persons)


def list_penn_action(src: str | os.PathLike, limit: int | None = None,
                     skip_bad: bool = False) -> dict[str, list[Sample]]:
    """The samples of each split (``train``/``val`` = the official train/test), file order; with
    ``limit`` the listing stops once both splits have that many; ``skip_bad`` leaves out (with a
    warning) files whose action or split cannot be read."""
    import scipy.io

    src = Path(src)
    if not src.is_dir():
        raise ConversionError(f"{src}: no such folder")
    folder = src / "labels" if (src / "labels").is_dir() else src
    files = sorted(folder.glob("*.mat"))
    if not files:
        raise ConversionError(f"{src}: no Penn Action label files (expected labels/NNNN.mat)")
    splits: dict[str, list[Sample]] = {"train": [], "val": []}
    for path in files:
        if limit is not None and all(len(v) >= limit for v in splits.values()):
            break
        try:
            mat = scipy.io.loadmat(str(path), variable_names=["action", "train"])
            action, train = str(_scalar(mat, "action", path)), int(_scalar(mat, "train", path))
            if action not in CLASSES:
                raise BadInputError(path, f"unknown action {action!r}")
        except Exception as e:
            err = str(e) if isinstance(e, BadInputError) else f"{path}: {type(e).__name__}: {e}"
            if not skip_bad:
                raise ConversionError(f"bad input file {err} (use --skip-bad to skip such files)") from None
            log.warning("skipping bad file %s", err)
            continue
        split = splits["train" if train == 1 else "val"]
        if limit is None or len(split) < limit:
            split.append(Sample(path.stem, CLASSES.index(action), str(path)))
    return splits


def convert_penn_action(src: str | os.PathLike, out: str | os.PathLike, frames: int = 300, persons: int = 2,
                        limit: int | None = None, skip_bad: bool = False, workers: int = 1,
                        progress: bool = True) -> dict[str, int]:
    """Convert to ``out/{train,val}_*``, ``class_names.txt`` and ``meta.json``; ``limit``: the first
    ``limit`` clips of each split. Returns counts (``train``, ``val``, ``bad``...)."""
    results = {}
    for split, samples in list_penn_action(src, limit, skip_bad).items():
        results[split] = write_split(out, split, samples, _Reader(frames, persons), (3, frames, 18, persons),
                                     skip_bad=skip_bad, workers=workers, progress=progress, desc=f"{DATASET} {split}")
    write_dataset_info(out, CLASSES, {
        "dataset": DATASET, "layout": "openpose", "fps": FPS, "frames": frames, "persons": persons,
        "coordinates": "x / width, y / height of the video, y down; invisible joints zero; neck = shoulder midpoint",
    })
    return counts(results, classes=len(CLASSES))

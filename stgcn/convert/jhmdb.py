"""JHMDB hand-annotated 2D joints (``GT_{train,test}_1.pkl``, split 1) to the st-gcn format.

Each pickle is ``{"pose": list of (T, 15, 2) float arrays, "label": list of class names}``.
The coordinates are JHMDB's ``pos_world``: image coordinates centred on the image and divided
by a per-clip scale. Checked on the data: y points DOWN (the face is above the belly, the
ankles below it, in every class); the joint order is neck, belly, face, r_shoulder,
l_shoulder, r_hip, l_hip, r_elbow, l_elbow, r_knee, l_knee, r_wrist, l_wrist, r_ankle,
l_ankle with the person's own sides: in clap, pour, stand and wave clips (people facing the
camera) r_shoulder is on the image's left in 91-100 % of the frames, and in throw clips the
r_wrist moves more than the l_wrist in 91 % (train).

To an image-like frame, as x / width and y / height of JHMDB's 320x240 videos would be:
``y' = 0.5 + SCALE * y`` and ``x' = 0.5 + SCALE * x * 240 / 320`` (``pos_world`` has one scale for
both axes, while image-normalised coordinates divide x by the larger width: a frontal person's
shoulder width over the shoulder-to-hip height is 0.70 here, 0.46 in the 640x480 UTD-MHAD
2D set, 0.53 after the factor). One SCALE for the dataset: the median face-to-ankle height of
the stand and walk clips is 0.86 units, so 0.55 makes a standing person (head to feet, about 1
unit) span about half the image height.
OpenPose-18: neck, face -> nose, shoulders, elbows, wrists, hips, knees, ankles (confidence 1);
belly has no OpenPose joint and is dropped; eyes and ears absent.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from .common import BadInputError, ConversionError, Sample, counts, fit_sample, write_dataset_info, write_split

DATASET = "jhmdb"
FPS = 30
SCALE = 0.55
FRAME = (320, 240)  # the JHMDB videos' width and height
CLASSES = ("catch", "clap", "golf", "jump", "pick", "pour", "pullup", "push", "run", "sit", "stand", "throw",
           "walk", "wave")
NUM_JOINTS = 15
FILES = {"train": "GT_train_1.pkl", "val": "GT_test_1.pkl"}
# OpenPose-18 joint <- JHMDB joint (zero-based); JHMDB 1 (belly) is dropped.
OPENPOSE_FROM_JHMDB = {
    0: 2,  # nose <- face
    1: 0,  # neck
    2: 3, 3: 7, 4: 11,  # r shoulder, elbow, wrist
    5: 4, 6: 8, 7: 12,  # l shoulder, elbow, wrist
    8: 5, 9: 9, 10: 13,  # r hip, knee, ankle
    11: 6, 12: 10, 13: 14,  # l hip, knee, ankle
}


def load_jhmdb_pickle(path: str | os.PathLike) -> tuple[list[np.ndarray], list[str]]:
    """``(poses, labels)`` of one split file, each pose checked to be finite ``(T, 15, 2)``."""
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f)
    except OSError as e:
        raise ConversionError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception as e:
        raise ConversionError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or "pose" not in obj or "label" not in obj:
        raise ConversionError(f"{path}: expected a dict with 'pose' and 'label'")
    poses, labels = list(obj["pose"]), [str(v) for v in obj["label"]]
    if len(poses) != len(labels):
        raise ConversionError(f"{path}: {len(poses)} poses but {len(labels)} labels")
    return poses, labels


def to_openpose(pose: np.ndarray, scale: float = SCALE, frame: tuple[int, int] = FRAME) -> np.ndarray:
    """JHMDB ``(T, 15, 2)`` to image-like OpenPose-18 ``(T, 18, 3)`` (x, y, confidence)."""
    out = np.zeros((pose.shape[0], 18, 3), np.float32)
    src = np.array(list(OPENPOSE_FROM_JHMDB.values()))
    dst = np.array(list(OPENPOSE_FROM_JHMDB.keys()))
    out[:, dst, :2] = 0.5 + scale * pose[:, src] * np.array([frame[1] / frame[0], 1.0])
    out[:, dst, 2] = 1.0
    return out


class _Reader:  # picklable reader over the poses of one split file; a path is "FILE:INDEX"
    def __init__(self, poses: list[np.ndarray], frames: int, persons: int) -> None:
        self.poses, self.frames, self.persons = poses, frames, persons

    def __call__(self, key: str) -> np.ndarray:
        pose = np.asarray(self.poses[int(key.rsplit(":", 1)[1])])
        if pose.ndim != 3 or pose.shape[1:] != (NUM_JOINTS, 2) or pose.shape[0] < 1:
            raise BadInputError(key, f"pose of shape {pose.shape}, expected (T, {NUM_JOINTS}, 2)")
        if not np.issubdtype(pose.dtype, np.number) or not np.all(np.isfinite(pose)):
            raise BadInputError(key, "non-numeric, NaN or inf coordinates")
        seq = to_openpose(pose.astype(np.float64))
        return fit_sample(seq.transpose(2, 0, 1)[..., None], self.frames, self.persons)


def convert_jhmdb(src: str | os.PathLike, out: str | os.PathLike, frames: int = 300, persons: int = 2,
                  limit: int | None = None, skip_bad: bool = False, workers: int = 1,
                  progress: bool = True) -> dict[str, int]:
    """Convert split 1 to ``out/{train,val}_*``, ``class_names.txt`` and ``meta.json``; ``limit``: the
    first ``limit`` clips of each split. Sample names are ``{split}_{index:03d}_{label}``."""
    src = Path(src)
    if not src.is_dir():
        raise ConversionError(f"{src}: no such folder")
    results = {}
    for split, name in FILES.items():
        path = src / name
        if not path.is_file():
            raise ConversionError(f"{path}: no such file (expected JHMDB's {', '.join(FILES.values())})")
        poses, labels = load_jhmdb_pickle(path)
        unknown = sorted(set(labels) - set(CLASSES))
        if unknown:
            raise ConversionError(f"{path}: unknown classes {unknown[:5]}")
        samples = [Sample(f"{split}_{i:03d}_{lab}", CLASSES.index(lab), f"{path}:{i}")
                   for i, lab in enumerate(labels)][:limit]
        results[split] = write_split(out, split, samples, _Reader(poses, frames, persons), (3, frames, 18, persons),
                                     skip_bad=skip_bad, workers=workers, progress=progress, desc=f"{DATASET} {split}")
    write_dataset_info(out, CLASSES, {
        "dataset": DATASET, "layout": "openpose", "fps": FPS, "frames": frames, "persons": persons, "scale": SCALE,
        "coordinates": f"x = 0.5 + {SCALE} * 0.75 * x, y = 0.5 + {SCALE} * y of pos_world (centred, per-clip "
                       "scaled image coordinates) as in a 320x240 frame, y down; confidence 1",
    })
    return counts(results, classes=len(CLASSES))

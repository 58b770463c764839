"""Kinetics-skeleton per-clip JSON to the st-gcn format, with the original semantics.

A clip JSON is ``{"data": [{"frame_index": i, "skeleton": [{"pose": [x0, y0, ...],
"score": [...]}, ...]}, ...], "label": name, "label_index": k}`` with x, y divided by the
image width and height. The converter reproduces the published preprocessing:

- frame ``frame_index`` goes to array index ``frame_index`` (the published JSONs count from
  1, so frame 0 of the array stays empty exactly as in the published data); indices
  ``>= frames`` are dropped;
- the first ``num_person_in`` (5) skeletons of a frame are read;
- x, y minus 0.5, and x = y = 0 where the score is 0;
- per frame, the persons are sorted by their score summed over the joints and the
  ``persons`` (2) highest are kept (REFERENCE section 3: per frame, not per clip);
- clips whose label entry has ``has_skeleton`` false are skipped.

:func:`load_kinetics_clip` gives the raw per-frame keypoints (0..1 image coordinates, before
the minus 0.5) for replaying a clip through the live pipeline.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from .common import BadInputError, ConversionError, Sample, counts, write_split

log = logging.getLogger("stgcn.convert.kinetics")

NUM_JOINTS = 18


def _load_json(path: str | os.PathLike) -> dict:
    try:
        with open(path, "rb") as f:
            info = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInputError(path, f"malformed JSON ({e})") from None
    except OSError as e:
        raise BadInputError(path, f"cannot read ({e.strerror or e})") from None
    if not isinstance(info, dict) or not isinstance(info.get("data"), list):
        raise BadInputError(path, "not a Kinetics-skeleton clip (no 'data' list)")
    return info


def _frames(path, info: dict):
    """Yield ``(frame_index, [(pose (36,), score (18,)), ...])`` with every field checked."""
    for k, frame in enumerate(info["data"]):
        if not isinstance(frame, dict) or "frame_index" not in frame or not isinstance(frame.get("skeleton"), list):
            raise BadInputError(path, f"frame {k}: expected frame_index and a skeleton list")
        idx = frame["frame_index"]
        if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
            raise BadInputError(path, f"frame {k}: bad frame_index {idx!r}")
        people = []
        for m, sk in enumerate(frame["skeleton"]):
            try:
                pose = np.asarray(sk["pose"], dtype=np.float32)
                score = np.asarray(sk["score"], dtype=np.float32)
            except (KeyError, TypeError, ValueError) as e:
                raise BadInputError(path, f"frame {k} person {m}: bad pose/score ({e})") from None
            if pose.shape != (2 * NUM_JOINTS,) or score.shape != (NUM_JOINTS,):
                raise BadInputError(path, f"frame {k} person {m}: pose/score of shape {pose.shape}/{score.shape}, "
                                          f"expected ({2 * NUM_JOINTS},)/({NUM_JOINTS},)")
            if not (np.all(np.isfinite(pose)) and np.all(np.isfinite(score))):
                raise BadInputError(path, f"frame {k} person {m}: NaN or inf")
            people.append((pose, score))
        yield idx, people


def load_kinetics_clip(path: str | os.PathLike, with_meta: bool = False):
    """Raw keypoints of one clip: a list over the JSON's frames (in file order), each a list
    of ``(18, 3)`` float32 arrays ``(x, y, score)`` with x, y in 0..1 image coordinates
    (before the minus 0.5); joints with score 0 are all-zero (the raw convention).

    With ``with_meta`` returns ``(frames, meta)``, meta holding ``frame_index`` (list),
    ``label`` and ``label_index`` from the clip.
    """
    info = _load_json(path)
    frames, index = [], []
    for idx, people in _frames(path, info):
        persons = []
        for pose, score in people:
            kp = np.stack([pose[0::2], pose[1::2], score], axis=1)
            kp[score == 0] = 0.0
            persons.append(kp)
        frames.append(persons)
        index.append(idx)
    if with_meta:
        return frames, dict(frame_index=index, label=info.get("label"), label_index=info.get("label_index"))
    return frames


def read_kinetics_json(path: str | os.PathLike, frames: int = 300, persons: int = 2,
                       num_person_in: int = 5) -> tuple[np.ndarray, int | None]:
    """One clip as the published st-gcn sample ``(3, frames, 18, persons)`` float32 (x, y minus
    0.5, zeros where the score is 0, the ``persons`` most confident per frame) and the clip's
    ``label_index`` (None when absent)."""
    info = _load_json(path)
    data = np.zeros((3, frames, NUM_JOINTS, max(num_person_in, persons)), np.float32)
    slots, poses, scores = [], [], []
    for k, frame in enumerate(info["data"]):  # checked field by field, converted to numbers once
        try:
            idx = frame["frame_index"]
            people = frame["skeleton"]
        except (KeyError, TypeError):
            raise BadInputError(path, f"frame {k}: expected frame_index and a skeleton list") from None
        if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0 or not isinstance(people, list):
            raise BadInputError(path, f"frame {k}: bad frame_index {idx!r} or skeleton list")
        for m, sk in enumerate(people):
            try:
                pose, score = sk["pose"], sk["score"]
                ok = len(pose) == 2 * NUM_JOINTS and len(score) == NUM_JOINTS
            except (KeyError, TypeError):
                ok = False
            if not ok:
                raise BadInputError(path, f"frame {k} person {m}: expected 'pose' ({2 * NUM_JOINTS} numbers) "
                                          f"and 'score' ({NUM_JOINTS})")
            if idx < frames and m < num_person_in:
                slots.append((idx, m))
                poses.append(pose)
                scores.append(score)
    if slots:
        try:
            pose_arr = np.array(poses, dtype=np.float32).reshape(-1, NUM_JOINTS, 2)
            score_arr = np.array(scores, dtype=np.float32)
        except (TypeError, ValueError):
            raise BadInputError(path, "non-numeric pose or score values") from None
        if not (np.all(np.isfinite(pose_arr)) and np.all(np.isfinite(score_arr))):
            raise BadInputError(path, "NaN or inf in pose or score")
        t_idx, m_idx = np.array(slots).T
        data[0, t_idx, :, m_idx] = pose_arr[..., 0]
        data[1, t_idx, :, m_idx] = pose_arr[..., 1]
        data[2, t_idx, :, m_idx] = score_arr
    data[0:2] -= 0.5
    absent = data[2] == 0
    data[0][absent] = 0.0
    data[1][absent] = 0.0
    # Per frame, persons by their summed score, highest first (stable: ties keep file order).
    order = np.argsort(-data[2].sum(axis=1), axis=1, kind="stable")  # (T, M)
    data = np.take_along_axis(data, order[None, :, None, :], axis=3)[..., :persons]
    label = info.get("label_index")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
        raise BadInputError(path, f"bad label_index {label!r}")
    return np.ascontiguousarray(data), label


class _Reader:
    def __init__(self, frames: int, persons: int, labels: dict[str, int]) -> None:
        self.frames, self.persons, self.labels = frames, persons, labels

    def __call__(self, path: str) -> np.ndarray:
        data, label = read_kinetics_json(path, self.frames, self.persons)
        want = self.labels[Path(path).stem]
        if label is not None and label != want:
            raise BadInputError(path, f"label_index {label} differs from the label file's {want}")
        return data


def _load_label_json(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            info = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: cannot read the label JSON ({e})") from None
    if not isinstance(info, dict):
        raise ConversionError(f"{path}: label JSON must map clip ids to {{has_skeleton, label, label_index}}")
    return info


def _split_samples(folder: Path, label_json: Path, res: dict) -> list[Sample]:
    labels = _load_label_json(label_json)
    samples = []
    for p in sorted(folder.glob("*.json")):
        entry = labels.get(p.stem)
        if not isinstance(entry, dict) or not isinstance(entry.get("label_index"), int):
            res["unlabelled"] += 1
            log.warning("%s: no entry in %s, skipped", p, label_json)
            continue
        if not entry.get("has_skeleton", True):
            res["no_skeleton"] += 1
            continue
        samples.append(Sample(p.name, int(entry["label_index"]), str(p)))
    return samples


def _find(src: Path, *names: str) -> Path | None:
    for n in names:
        if (src / n).exists():
            return src / n
    return None


def convert_kinetics(src: str | os.PathLike, out: str | os.PathLike, *, label_json: str | os.PathLike | None = None,
                     split: str = "train", frames: int = 300, persons: int = 2, skip_bad: bool = False,
                     workers: int = 1, limit: int | None = None, progress: bool = True) -> dict[str, int]:
    """Convert Kinetics-skeleton clips to ``out/{split}_{data.npy,label.pkl}``.

    Either ``src`` holds ``train/`` and ``val/`` (or ``kinetics_train/``, ``kinetics_val/``)
    folders of clip JSONs with ``kinetics_train_label.json`` / ``kinetics_val_label.json``
    beside them (the published layout), or ``src`` is one folder of JSONs and ``label_json``
    its label file, written as ``split``. Sample names are the JSON file names.
    """
    src = Path(src)
    if not src.is_dir():
        raise ConversionError(f"{src}: not a folder")
    plan: list[tuple[str, Path, Path]] = []
    if label_json is not None:
        plan.append((split, src, Path(label_json)))
    else:
        for s in ("train", "val"):
            folder = _find(src, s, f"kinetics_{s}")
            lab = _find(src, f"kinetics_{s}_label.json", f"{s}_label.json")
            if folder is None and lab is None:
                continue
            if folder is None or lab is None:
                raise ConversionError(f"{src}: split {s!r} needs both a folder ({s}/) and kinetics_{s}_label.json")
            plan.append((s, folder, lab))
        if not plan:
            raise ConversionError(f"{src}: expected train/ and val/ folders with kinetics_{{train,val}}_label.json, "
                                  f"or pass --label-json for a single folder")
    extra = dict(no_skeleton=0, unlabelled=0)
    results = {}
    for s, folder, lab in plan:
        samples = _split_samples(folder, lab, extra)
        if limit is not None:
            samples = samples[: int(limit)]
        reader = _Reader(frames, persons, {Path(x.path).stem: x.label for x in samples})
        results[s] = write_split(out, s, samples, reader, (3, frames, NUM_JOINTS, persons), skip_bad=skip_bad,
                                 workers=workers, progress=progress, desc=f"kinetics {s}")
    return counts(results, **extra)

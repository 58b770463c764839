"""Knowing when the model does not know: the "unknown" answer for a person's window.

A closed-set classifier gives some class to any motion, also to motion that is none of its
actions and to a person standing still. Two scores, both calibrated on training data only
(:func:`calibrate`, run by ``stgcn.train`` at the end of training and stored in the
checkpoint's ``open_set``), decide when a person's label is ``"unknown"``:

- the top class's softmax probability (maximum softmax probability, the standard baseline of
  out-of-distribution detection, Hendrycks & Gimpel 2017) below ``score_threshold``: the
  lowest that ``keep`` of the training windows the model classifies correctly reach;
  ``python -m stgcn.calibrate`` sets it anew for a checkpoint and its training data;
- the person's motion (:func:`motion`: mean joint speed over the window's last frames, in
  body sizes per frame) below ``motion_threshold``: a fraction of what the slowest training
  windows show, so an idle person is not given an action.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

MOTION_FRAMES = 15  # the window's last frames the motion is measured over (0.5 s at 30 fps)


@dataclass(frozen=True)
class OpenSet:
    """Thresholds below which a person's label is ``"unknown"``."""

    score_threshold: float
    motion_threshold: float

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> OpenSet | None:
        return None if not cfg else cls(float(cfg["score_threshold"]), float(cfg["motion_threshold"]))

    def to_config(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in asdict(self).items()}

    def known(self, probs: np.ndarray, motions: np.ndarray) -> np.ndarray:
        """Per sample whether its top class stands: ``probs`` ``(N, classes)`` and the samples'
        :func:`motion`."""
        return (probs.max(axis=1) >= self.score_threshold) & (motions >= self.motion_threshold)


def motion(raw: np.ndarray, frames: int = MOTION_FRAMES) -> np.ndarray:
    """Per sample of raw ``(N, C, T, V, M)`` 2D windows (x, y, confidence): the mean speed of the
    joints seen in consecutive frames over the last ``frames`` frames, divided by the size of
    the body (the diagonal of its joints' bounding box, median over those frames). 0 without
    two frames with joints."""
    x = raw[:, :, -(frames + 1):].astype(np.float32)  # (N, C, F+1, V, M)
    xy, seen = x[:, :2], x[:, 2] > 0
    both = seen[:, 1:] & seen[:, :-1]  # (N, F, V, M)
    step = np.linalg.norm(xy[:, :, 1:] - xy[:, :, :-1], axis=1)  # (N, F, V, M)
    moved = (step * both).sum(axis=(1, 2, 3)) / np.maximum(both.sum(axis=(1, 2, 3)), 1)
    lo = np.where(seen[:, None], xy, np.inf).min(axis=3)  # (N, 2, F+1, M)
    hi = np.where(seen[:, None], xy, -np.inf).max(axis=3)
    diag = np.linalg.norm(hi - lo, axis=1)  # (N, F+1, M): inf where nobody was seen
    diag = np.where(np.isfinite(diag), diag, np.nan)
    size = np.array([np.median(d[np.isfinite(d)]) if np.isfinite(d).any() else np.inf for d in diag])
    size = np.where(size > 0, size, np.inf)
    return np.where(both.any(axis=(1, 2, 3)), moved / size, 0.0).astype(np.float32)


def calibrate(probs: np.ndarray, labels: np.ndarray, raw_motion: np.ndarray, keep: float = 0.99,
              idle_fraction: float = 0.1) -> OpenSet:
    """Thresholds from training windows: ``probs`` ``(N, classes)``, their ``labels`` and
    :func:`motion` values. ``keep`` of the correctly classified windows keep their label;
    a person moving less than ``idle_fraction`` of the slowest 2 % of training windows is idle.

    The defaults were set on the shipped model's training data, then checked once on its test
    splits (docs/benchmarks.md): training windows are more confident than unseen ones, so a
    keep of 0.95 on them kept only 79 % of the right test answers, 0.99 keeps 96 %."""
    top = probs.argmax(axis=1)
    right = probs.max(axis=1)[top == labels]
    if not len(right):
        raise ValueError("no training window is classified correctly: nothing to calibrate on")
    score = float(np.quantile(right, 1 - keep))
    moving = raw_motion[raw_motion > 0]
    idle = float(idle_fraction * np.quantile(moving, 0.02)) if len(moving) else 0.0
    return OpenSet(score, idle)


def auroc(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """Area under the ROC curve of telling known (high score) from unknown (low score) samples:
    the Mann-Whitney U statistic over the product of the two counts."""
    if not len(known_scores) or not len(unknown_scores):
        return float("nan")
    u = mannwhitneyu(known_scores, unknown_scores, alternative="greater").statistic
    return float(u / (len(known_scores) * len(unknown_scores)))

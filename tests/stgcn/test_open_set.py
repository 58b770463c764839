"""The "unknown" answer: motion of real skeletons, calibration, AUROC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from stgcn.open_set import OpenSet, auroc, calibrate, motion

CLIP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "skeleton" / "kinetics_skeleton_--33Lscn6sk.json"


@pytest.fixture(scope="module")
def real_window() -> np.ndarray:
    """30 frames of the first person of a real Kinetics-skeleton clip, raw ``(1, 3, T, 18, 1)``."""
    from stgcn.convert.kinetics import read_kinetics_json

    if not CLIP.exists():
        pytest.skip("no shared data")
    clip, _ = read_kinetics_json(CLIP, frames=300, persons=1)
    return clip[None, :, 60:90]


def test_a_moving_person_moves_and_a_still_one_does_not(real_window) -> None:
    still = np.repeat(real_window[:, :, -1:], 30, axis=2)  # the last frame held: an idle person
    moving, idle = motion(real_window)[0], motion(still)[0]
    assert moving > 0.005 and idle == 0
    shifted = real_window.copy()
    shifted[:, :2] = shifted[:, :2] * 2 + 0.3  # the same motion, twice as large on the image
    assert motion(shifted)[0] == pytest.approx(moving, rel=1e-4), "in body sizes, not image units"
    assert motion(np.zeros_like(real_window))[0] == 0, "nobody: no motion"


def test_calibration_keeps_the_asked_share_of_right_answers() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.3, size=1000)
    labels = probs.argmax(1)
    labels[:100] = (labels[:100] + 1) % 4  # a tenth wrong
    moves = rng.uniform(0.01, 0.05, 1000)
    open_set = calibrate(probs, labels, moves, keep=0.9)
    right = probs.argmax(1) == labels
    kept = open_set.known(probs[right], moves[right]).mean()
    assert kept == pytest.approx(0.9, abs=0.03)
    assert 0 < open_set.motion_threshold < moves.min()
    assert OpenSet.from_config(open_set.to_config()) == OpenSet(*(round(v, 6) for v in
                                                                 (open_set.score_threshold, open_set.motion_threshold)))


def test_auroc_is_the_mann_whitney_statistic() -> None:
    assert auroc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert auroc(np.array([0.1]), np.array([0.9])) == 0.0
    a, b = np.random.default_rng(1).normal(size=(2, 50))
    assert auroc(a + 1, b) == pytest.approx(mannwhitneyu(a + 1, b).statistic / 2500)

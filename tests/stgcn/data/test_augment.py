"""Augmentations: hand-checked cases, absent joints stay zero, mirror only for listed classes."""

from __future__ import annotations

import numpy as np
import pytest

from stgcn.data import augment as A
from stgcn.data.augment import build_augment
from stgcn.graph import get_layout

OP = get_layout("openpose")
KIN = get_layout("kinect-v1")
J = {n: i for i, n in enumerate(OP.joints)}


def sample2d(t: int = 30, frames: int = 50, seed: int = 0) -> np.ndarray:
    """Raw openpose sample: person 0 for t frames with ears absent, person 1 absent."""
    rng = np.random.default_rng(seed)
    x = np.zeros((3, frames, 18, 2), np.float32)
    x[0, :t, :, 0] = rng.uniform(0.3, 0.7, size=(t, 18))
    x[1, :t, :, 0] = rng.uniform(0.2, 0.8, size=(t, 18))
    x[2, :t, :, 0] = rng.uniform(0.3, 1.0, size=(t, 18))
    x[:, :, [J["r_ear"], J["l_ear"]], 0] = 0
    return x


def sample3d(t: int = 30, frames: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((3, frames, 20, 2), np.float32)
    x[0, :t, :, 0] = rng.uniform(-0.4, 0.4, size=(t, 20))
    x[1, :t, :, 0] = rng.uniform(-1.0, 0.6, size=(t, 20))
    x[2, :t, :, 0] = rng.uniform(2.5, 3.2, size=(t, 20))
    x[:, :t, 7, 0] = 0  # one absent joint
    return x


def absent(x: np.ndarray, dims: int) -> np.ndarray:
    return ~A.present_mask(x, dims)


ALL_CFG = {
    "mirror": {"p": 1.0, "classes": "all"},
    "random_shift": True,
    "random_choose": {"size": 40},
    "idle_pad": {"window": 45, "sigma": 0.01},
    "random_move": True,
    "random_rotate": 20,
    "random_scale": [0.8, 1.2],
    "noise": 0.01,
    "joint_dropout": {"p": 1.0, "max_joints": 4},
    "drop_face": {"p": 1.0, "nose_p": 1.0},
}


@pytest.mark.parametrize("name", list(ALL_CFG))
@pytest.mark.parametrize("layout", ["openpose", "kinect-v1"])
def test_absent_joints_stay_zero(name, layout):
    lay = get_layout(layout)
    x = sample2d() if lay.dims == 2 else sample3d()
    mask_absent = absent(x, lay.dims)
    aug = build_augment({name: ALL_CFG[name]}, lay, num_classes=3, window=40)
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = aug(x, 0, rng)
        assert y.dtype == np.float32
        # every joint absent in the output is all-zero, and no absent input joint became present
        ab = absent(y, lay.dims)
        assert np.all(y[:, ab] == 0) and not np.signbit(y[:, ab]).any()
        if y.shape == x.shape and name not in ("random_shift", "mirror"):
            assert np.all(ab[mask_absent])
    # the whole composition too
    aug = build_augment(ALL_CFG, lay, num_classes=3, window=40)
    y = aug(x, 1, np.random.default_rng(1))
    assert y.shape[1] == 45 and np.all(y[:, absent(y, lay.dims)] == 0)
    assert np.array_equal(x, sample2d() if lay.dims == 2 else sample3d())  # input untouched


def test_mirror_2d_hand_checked():
    x = np.zeros((3, 2, 18, 1), np.float32)
    x[:, 0, J["r_wrist"], 0] = (0.3, 0.4, 0.9)
    x[:, 0, J["l_wrist"], 0] = (0.6, 0.5, 0.8)
    x[:, 0, J["nose"], 0] = (0.45, 0.2, 1.0)
    y = A.mirror(x, OP)
    np.testing.assert_allclose(y[:, 0, J["l_wrist"], 0], (0.7, 0.4, 0.9), atol=1e-6)
    np.testing.assert_allclose(y[:, 0, J["r_wrist"], 0], (0.4, 0.5, 0.8), atol=1e-6)
    np.testing.assert_allclose(y[:, 0, J["nose"], 0], (0.55, 0.2, 1.0), atol=1e-6)
    assert not y[:, 1].any() and not y[:, 0, J["l_ear"]].any()
    assert ("l_hand_tip" in get_layout("ntu-rgb+d").joints
            and (21, 23) in A.lr_pairs(get_layout("ntu-rgb+d")))


def test_mirror_3d():
    x = sample3d()
    y = A.mirror(x, KIN)
    names = KIN.joints
    li, ri = names.index("l_wrist"), names.index("r_wrist")
    np.testing.assert_allclose(y[0, :30, li, 0], -x[0, :30, ri, 0])
    np.testing.assert_allclose(y[1:, :30, li, 0], x[1:, :30, ri, 0])
    np.testing.assert_allclose(y[:, :30, 0, 0] * [[-1], [1], [1]], x[:, :30, 0, 0])  # head: x flipped


def test_mirror_only_listed_classes():
    names = ["right hand wave", "two hand front clap", "jumping"]
    aug = build_augment({"mirror": {"p": 1.0, "classes": ["two hand front clap", 2]}}, OP, 3, names)
    x = sample2d()
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(aug(x, 0, rng), x)  # "right hand wave" keeps its meaning
    np.testing.assert_allclose(aug(x, 1, rng), A.mirror(x, OP))
    np.testing.assert_allclose(aug(x, 2, rng), A.mirror(x, OP))
    with pytest.raises(ValueError, match="not a known class"):
        build_augment({"mirror": {"classes": ["nope"]}}, OP, 3, names)
    with pytest.raises(ValueError, match="needs 'classes'"):
        build_augment({"mirror": True}, OP, 3, names)


def test_random_shift_and_choose():
    x = sample2d(t=10, frames=50)
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(20):
        y = A.random_shift(x, rng)
        b, e = A.valid_range(y)
        assert e - b == 10 and y.shape == x.shape
        np.testing.assert_array_equal(y[:, b:e], x[:, :10])
        starts.add(b)
    assert len(starts) > 5
    y = A.random_choose(x, rng, 20)
    assert y.shape[1] == 20
    y = A.random_choose(x[:, :10], rng, 20)  # shorter: zero-padded at a random place
    b, e = A.valid_range(y)
    np.testing.assert_array_equal(y[:, b:e], x[:, :10])
    assert A.random_choose(x[:, :10], rng, 20, auto_pad=False).shape[1] == 10


def test_idle_pad():
    x = sample2d(t=10, frames=50)
    rng = np.random.default_rng(0)
    y = A.idle_pad(x, rng, OP, window=30, sigma=0.0, zero_prob=0.0)
    assert y.shape[1] == 30
    ids = [next((k for k in range(10) if np.array_equal(y[:, t], x[:, k])), None) for t in range(30)]
    assert None not in ids
    s = ids.index(1) - 1
    assert ids[:s + 1] == [0] * (s + 1) and ids[s:s + 10] == list(range(10)) and set(ids[s + 10:]) <= {9}
    # jitter on held frames, never on absent joints or confidence
    y = A.idle_pad(x, np.random.default_rng(3), OP, window=30, sigma=0.01, zero_prob=0.0)
    held_first = [t for t in range(30) if np.array_equal(y[2, t], x[2, 0]) and not np.array_equal(y[:, t], x[:, 0])]
    held_last = [t for t in range(30) if np.array_equal(y[2, t], x[2, 9]) and not np.array_equal(y[:, t], x[:, 9])]
    assert len(held_first) + len(held_last) == 20  # 20 held frames: same confidence, jittered x, y
    for t, k in [(t, 0) for t in held_first] + [(t, 9) for t in held_last]:
        d = y[:2, t, :16, 0] - x[:2, k, :16, 0]
        assert 0 < np.abs(d).max() < 0.06
    assert not y[:, :, J["r_ear"]].any() and not y[:, :, :, 1].any()
    # zeros instead of held frames
    y = A.idle_pad(x, np.random.default_rng(1), OP, window=30, sigma=0.01, zero_prob=1.0)
    b, e = A.valid_range(y)
    assert e - b == 10 and not y[:, :b].any() and not y[:, e:].any()
    # positions vary
    firsts = {A.valid_range(A.idle_pad(x, rng, OP, 30, 0.0, 1.0))[0] for _ in range(30)}
    assert len(firsts) > 5


def test_random_move_original_semantics():
    x = np.zeros((3, 4, 18, 1), np.float32)
    x[:, :, 0, 0] = np.array([0.7, 0.5, 1.0])[:, None]  # 0.2 right of the centre
    x[:, :, 1, 0] = np.array([0.5, 0.5, 1.0])[:, None]
    y = A.random_move(x, np.random.default_rng(0), OP, angle_candidate=[90], scale_candidate=[1.0],
                      transform_candidate=[0.1])
    # rotate +90 deg about (0.5, 0.5): (0.2, 0) -> (0, 0.2); then translate by 0.1
    np.testing.assert_allclose(y[:2, :, 0, 0].T, [[0.6, 0.8]] * 4, atol=1e-6)
    np.testing.assert_allclose(y[:2, :, 1, 0].T, [[0.6, 0.6]] * 4, atol=1e-6)
    assert not y[:, :, 2:].any()
    # interpolation over time between key frames: angles vary smoothly
    z = A.random_move(sample2d(t=50), np.random.default_rng(5), OP, move_time_candidate=[2])
    assert z.shape == (3, 50, 18, 2)


def test_rotate_and_scale_hand_checked():
    x = np.zeros((3, 1, 18, 1), np.float32)
    x[:, 0, 0, 0] = (0.6, 0.5, 1.0)
    x[:, 0, 1, 0] = (0.4, 0.5, 1.0)
    y = A.rotate(x, OP, 90.0)  # about the mean (0.5, 0.5)
    np.testing.assert_allclose(y[:2, 0, 0, 0], (0.5, 0.6), atol=1e-6)
    np.testing.assert_allclose(y[:2, 0, 1, 0], (0.5, 0.4), atol=1e-6)
    y = A.scale(x, OP, 2.0)
    np.testing.assert_allclose(y[:2, 0, 0, 0], (0.7, 0.5), atol=1e-6)
    assert not y[:, :, 2:].any()
    # 3D: about the vertical axis, y untouched
    x3 = sample3d()
    y3 = A.rotate(x3, KIN, 30.0)
    pres = A.present_mask(x3, 3)
    np.testing.assert_allclose(y3[1][pres], x3[1][pres], atol=1e-6)
    ctr = x3[[0, 2]][:, pres].mean(axis=1)
    r0 = np.hypot(x3[0][pres] - ctr[0], x3[2][pres] - ctr[1])
    r1 = np.hypot(y3[0][pres] - ctr[0], y3[2][pres] - ctr[1])
    np.testing.assert_allclose(r0, r1, atol=1e-5)
    assert not np.allclose(y3[0][pres], x3[0][pres])


def test_dropout_face_noise():
    x = sample2d()
    rng = np.random.default_rng(0)
    y = A.joint_dropout(x, rng, OP, max_joints=3)
    dropped = [j for j in range(18) if not y[:, :, j, 0].any() and x[:, :, j, 0].any()]
    assert 1 <= len(dropped) <= 3
    aug = build_augment({"drop_face": {"p": 1.0, "nose_p": 0.0}}, OP)
    y = aug(x, 0, rng)
    assert not y[:, :, 14:].any() and y[:, :, J["nose"], 0].any()
    aug = build_augment({"drop_face": {"p": 1.0, "nose_p": 1.0}}, OP)
    assert not aug(x, 0, rng)[:, :, J["nose"]].any()
    y = A.noise(x, rng, OP, 0.01)
    pres = A.present_mask(x, 2)
    d = (y - x)[:2][:, pres]
    assert 0.005 < d.std() < 0.015
    np.testing.assert_array_equal(y[2], x[2])


def test_build_errors_and_order():
    with pytest.raises(ValueError, match="unknown augmentation"):
        build_augment({"flip": True}, OP)
    with pytest.raises(ValueError, match="unknown option"):
        build_augment({"noise": {"sigmaa": 1}}, OP)
    with pytest.raises(ValueError, match="needs 'size'"):
        build_augment({"random_choose": True}, OP)
    assert build_augment({}, OP) is None and build_augment(None, OP) is None
    aug = build_augment({"noise": 0.01, "mirror": {"classes": [0]}, "random_move": True, "idle_pad": False}, OP)
    assert aug.names == ["mirror", "random_move", "noise"]
    y, placed = build_augment({"random_choose": {"size": 20}}, OP).apply(sample2d(), 0, np.random.default_rng(0))
    assert placed and y.shape[1] == 20


def test_frame_step_keeps_every_kth_real_frame():
    x = np.zeros((3, 50, 18, 1), np.float32)
    x[0, 5:35, :, 0] = np.arange(5, 35, dtype=np.float32)[:, None] / 100  # frame index as x
    x[1:, 5:35, :, 0] = 1.0
    aug = build_augment({"frame_step": {"steps": [3], "p": 1.0}}, "openpose")
    seen = set()
    for seed in range(12):
        y = aug(x, 0, np.random.default_rng(seed))
        frames = np.round(y[0, :, 0, 0] * 100).astype(int)
        kept = frames[y[2, :, 0, 0] > 0]
        assert len(kept) == 10 and np.all(np.diff(kept) == 3), kept  # real frames, 3 apart, none made up
        assert kept[0] in (5, 6, 7) and np.all(y[:, len(kept):] == 0)
        seen.add(int(kept[0]))
    assert seen == {5, 6, 7}  # each phase of the step is drawn
    with pytest.raises(ValueError, match="frame_step"):
        build_augment({"frame_step": {"steps": [0]}}, "openpose")

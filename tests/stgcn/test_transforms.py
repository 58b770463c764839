"""The shared normalisation: person-centric and Kinetics transforms, and their inverses."""

import numpy as np
import pytest

from stgcn.transforms import build_transform


def _person(t=12, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((3, t, 18, 2), np.float32)
    x[:2, :, :, 0] = rng.uniform(0.3, 0.7, (2, t, 18))
    x[2, :, :, 0] = 0.9
    x[:, :, 16:, 0] = 0  # ears absent
    return x


def test_person_centric_invariant_to_translation_and_scale():
    t = build_transform("person_centric", "openpose")
    x = _person()
    moved = x.copy()
    present = moved[2] > 0
    moved[0] = np.where(present, 0.5 * moved[0] + 0.2, 0)
    moved[1] = np.where(present, 0.5 * moved[1] - 0.1, 0)
    np.testing.assert_allclose(t(x), t(moved), atol=1e-5)
    y = t(x)
    assert np.all(y[:, :, 16:] == 0) and np.all(y[..., 1] == 0), "absent joints and people stay zero"
    np.testing.assert_allclose(y[:2, :, 1, 0], 0, atol=1e-6), "the neck is the origin of every frame"


def test_prepare_and_inverse_round_trip():
    t = build_transform({"name": "person_centric"}, "openpose")
    x = _person(t=20)
    xn, recent, params, target = t.prepare(x[:, :19], next_frame=x[:, 19])
    assert xn.shape == (3, 19, 18, 2) and recent.shape == (3, 2, 18, 2) and target.shape == (3, 18, 2)
    back = t.inverse_frame(target, params.center[:, -1], params.scale)
    np.testing.assert_allclose(back, x[:, 19], atol=1e-6)
    # local coordinates share one translation: the neck moves in them
    assert not np.allclose(recent[:2, 0, 1, 0], recent[:2, 1, 1, 0])


def test_batched_equals_single():
    t = build_transform("person_centric", "openpose")
    a, b = _person(seed=1), _person(seed=2)
    batched = t(np.stack([a, b]))
    np.testing.assert_allclose(batched[1], t(b), atol=1e-6)


def test_kinetics_transform_is_the_original_minus_half():
    t = build_transform("kinetics", "openpose")
    x = _person()
    y = t(x)
    present = x[2] > 0
    np.testing.assert_allclose(y[:2][:, present], x[:2][:, present] - 0.5)
    assert np.all(y[:2][:, ~present] == 0)


def test_3d_layout_uses_spine_base_and_no_confidence():
    t = build_transform("person_centric", "kinect-v1")
    x = np.random.default_rng(0).normal(size=(3, 10, 20, 2)).astype(np.float32)
    x[..., 1] = 0
    y = t(x)
    np.testing.assert_allclose(y[:, :, 3, 0], 0, atol=1e-6)
    assert np.all(y[..., 1] == 0)


def test_drop_joints_and_unknown_name():
    t = build_transform({"name": "person_centric", "drop_joints": [0, 14, 15]}, "openpose")
    assert np.all(t(_person())[:, :, [0, 14, 15]] == 0)
    with pytest.raises(ValueError, match="unknown normalisation"):
        build_transform("zscore")


def test_nanmedian_is_numpys():
    import warnings

    import torch

    from stgcn.transforms import nanmedian

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (7, 13, 2)).astype(np.float32)
    x[rng.uniform(0, 1, x.shape) < 0.4] = np.nan
    x[3, :, 1] = np.nan  # never visible
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(x, axis=-2)
    got = nanmedian(torch.from_numpy(x), dim=-2).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-6)

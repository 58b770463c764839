"""JHMDB split 1 (shared/data/jhmdb) to the st-gcn format, on the real files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from stgcn.convert.__main__ import main
from stgcn.convert.jhmdb import CLASSES, SCALE, convert_jhmdb
from tests.stgcn.convert.real_data import OP, SHARED_DATA, load, motion

SRC = SHARED_DATA / "jhmdb"
pytestmark = pytest.mark.skipif(not (SRC / "GT_train_1.pkl").is_file(), reason="JHMDB data not available")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("jhmdb")
    return out, convert_jhmdb(SRC, out, progress=False)


def test_counts_and_class_names(converted):
    out, res = converted
    assert res["train"] == 433 and res["val"] == 176 and res["bad"] == 0
    for split in ("train", "val"):
        data, names, labels = load(out, split)
        assert data.shape == (len(names), 3, 300, 18, 2) and data.dtype == np.float32
        assert sorted(set(labels)) == list(range(14))
        assert all(n.endswith("_" + CLASSES[lab]) for n, lab in zip(names, labels))
    assert (out / "class_names.txt").read_text().splitlines() == list(CLASSES)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["fps"] == 30 and meta["layout"] == "openpose" and meta["dataset"] == "jhmdb"


def test_values_and_absent_joints(converted):
    out, _ = converted
    data, names, _ = load(out, "train")
    with open(SRC / "GT_train_1.pkl", "rb") as f:
        pose = pickle.load(f)["pose"][0]  # (T, 15, 2)
    t = pose.shape[0]
    s = data[0, :, :t, :, 0]
    to_frame = np.array([0.75, 1.0])  # x as a fraction of the 320 pixels width, y of the 240 height
    np.testing.assert_allclose(s[:2, :, OP.index("nose")], (0.5 + SCALE * pose[:, 2] * to_frame).T, atol=1e-6)  # face
    np.testing.assert_allclose(s[:2, :, OP.index("r_wrist")], (0.5 + SCALE * pose[:, 11] * to_frame).T, atol=1e-6)
    assert np.all(s[2, :, :14] == 1)
    assert not data[:, :, :, 14:].any()  # eyes and ears absent
    assert not data[0, :, t:].any() and not data[..., 1].any()  # zero-padded tail, empty second slot


def test_image_like_frame(converted):
    """Mostly in 0..1, y down, a standing person about half the image high."""
    out, _ = converted
    data, _, labels = load(out, "train")
    s = data[..., 0]
    present = s[:, 2] > 0
    xy = np.stack([s[:, 0][present], s[:, 1][present]], -1)
    assert np.mean((xy >= 0) & (xy <= 1)) > 0.95
    nose, ankle = OP.index("nose"), OP.index("r_ankle")
    frames = s[:, 2, :, nose] > 0
    assert np.mean(s[:, 1, :, nose][frames] < s[:, 1, :, ankle][frames]) > 0.95
    stand = [i for i, lab in enumerate(labels) if CLASSES[lab] in ("stand", "walk")]
    heights = [np.median(s[i, 1, :, ankle][frames[i]] - s[i, 1, :, nose][frames[i]]) for i in stand]
    assert 0.35 < np.median(heights) < 0.6


def test_left_and_right_are_the_persons(converted):
    """Throwers use the right arm; people clapping or waving face the camera (right shoulder on the image's left)."""
    out, _ = converted
    data, _, labels = load(out, "train")
    throws = [i for i, lab in enumerate(labels) if CLASSES[lab] == "throw"]
    assert np.mean([motion(data[i], "r_wrist") > motion(data[i], "l_wrist") for i in throws]) > 0.8
    facing = [i for i, lab in enumerate(labels) if CLASSES[lab] in ("clap", "wave", "pour")]
    rs, ls = OP.index("r_shoulder"), OP.index("l_shoulder")
    left = [np.mean(data[i, 0, :, rs, 0][data[i, 2, :, rs, 0] > 0] < data[i, 0, :, ls, 0][data[i, 2, :, ls, 0] > 0])
            for i in facing]
    assert np.mean(left) > 0.9


def test_limit_and_missing_src(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["jhmdb", str(SRC), str(out), "--limit", "5", "--frames", "20", "--no-progress"]) == 0
    assert load(out, "val")[0].shape == (5, 3, 20, 18, 2)
    capsys.readouterr()
    assert main(["jhmdb", str(tmp_path / "missing"), str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0] and "Traceback" not in err[0]

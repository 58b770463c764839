"""Penn Action (shared/data/penn-action) to the st-gcn format, on the real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from stgcn.convert.__main__ import main
from stgcn.convert.common import ConversionError
from stgcn.convert.penn_action import CLASSES, convert_penn_action
from tests.stgcn.convert.real_data import OP, SHARED_DATA, load, motion

SRC = SHARED_DATA / "penn-action"
pytestmark = pytest.mark.skipif(not (SRC / "labels" / "0001.mat").is_file(), reason="Penn Action data not available")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("penn")
    return out, convert_penn_action(SRC, out, progress=False)


def test_counts_split_and_class_names(converted):
    out, res = converted
    assert res["train"] == 1258 and res["val"] == 1068 and res["bad"] == 0
    for split in ("train", "val"):
        data, names, labels = load(out, split)
        assert data.shape == (len(names), 3, 300, 18, 2) and data.dtype == np.float32
        assert sorted(set(labels)) == list(range(15))
    assert (out / "class_names.txt").read_text().splitlines() == list(CLASSES)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["fps"] == 30 and meta["layout"] == "openpose" and meta["dataset"] == "penn-action"


def test_values_invisible_joints_and_neck(converted):
    out, _ = converted
    data, names, labels = load(out, "val")
    i = names.index("0001")
    mat = scipy.io.loadmat(str(SRC / "labels" / "0001.mat"))
    h, w, t = (int(v) for v in mat["dimensions"][0])
    assert CLASSES[labels[i]] == str(mat["action"][0]) and int(mat["train"][0, 0]) == -1
    s = data[i, :, :t, :, 0]  # (3, T, 18)
    vis = mat["visibility"] > 0
    # Penn joint 5 (zero-based) is the person's right wrist, 6 the left one
    for penn, op in ((0, "nose"), (5, "r_wrist"), (6, "l_wrist"), (11, "r_ankle"), (12, "l_ankle")):
        j = OP.index(op)
        np.testing.assert_allclose(s[0, :, j], np.where(vis[:, penn], mat["x"][:, penn] / w, 0), atol=1e-6)
        np.testing.assert_allclose(s[1, :, j], np.where(vis[:, penn], mat["y"][:, penn] / h, 0), atol=1e-6)
        assert np.array_equal(s[2, :, j], vis[:, penn].astype(np.float32))
    assert (~vis).any()  # this clip has invisible joints: all three channels zero there
    neck, rs, ls = (OP.index(n) for n in ("neck", "r_shoulder", "l_shoulder"))
    np.testing.assert_allclose(s[2, :, neck], np.minimum(s[2, :, rs], s[2, :, ls]))
    both = s[2, :, neck] > 0
    np.testing.assert_allclose(s[:2, both, neck], (s[:2, both, rs] + s[:2, both, ls]) / 2, atol=1e-6)
    assert not s[:2, ~both, neck].any()
    assert not data[:, :, :, 14:].any()  # eyes and ears absent
    assert not data[i, :, t:].any() and not data[..., 1].any()  # zero-padded tail, empty second slot


def test_absent_joints_are_zero_and_coordinates_in_the_image(converted):
    out, _ = converted
    data, _, _ = load(out, "train")
    s = data[..., 0]
    absent = s[:, 2] == 0
    assert absent[:, :, :14].any() and not s[:, 0][absent].any() and not s[:, 1][absent].any()
    xy = np.stack([s[:, 0][~absent], s[:, 1][~absent]], -1)
    assert np.mean((xy >= 0) & (xy <= 1)) > 0.999


def test_left_and_right_are_the_persons(converted):
    """Bowlers and guitarists are mostly right-handed: the right wrist moves more."""
    out, _ = converted
    for split in ("train", "val"):
        data, _, labels = load(out, split)
        for cls in ("bowl", "strum_guitar"):
            picks = [i for i, lab in enumerate(labels) if lab == CLASSES.index(cls)]
            right = np.mean([motion(data[i], "r_wrist") > motion(data[i], "l_wrist") for i in picks])
            assert right > 0.7, (split, cls, right)


def test_limit_and_missing_src(tmp_path, capsys):
    out = tmp_path / "out"
    res = convert_penn_action(SRC, out, limit=4, frames=32, progress=False)
    assert res["train"] == 4 and res["val"] == 4
    assert load(out, "train")[0].shape == (4, 3, 32, 18, 2)
    with pytest.raises(ConversionError, match="no such folder"):
        convert_penn_action(tmp_path / "missing", out, progress=False)
    capsys.readouterr()
    assert main(["penn-action", str(tmp_path / "missing"), str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0] and "Traceback" not in err[0]

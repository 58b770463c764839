"""UTD-MHAD OpenPose 2D (shared/data/utd-mhad-openpose2d) to the st-gcn format, on the real files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from stgcn.convert.__main__ import main
from stgcn.convert.utd_mhad_2d import convert_utd_mhad_2d, read_openpose_csv
from tests.stgcn.convert.real_data import OP, SHARED_DATA, load, motion

SRC = SHARED_DATA / "utd-mhad-openpose2d"
NAMES = SHARED_DATA / "utd-mhad" / "class_names.json"
pytestmark = pytest.mark.skipif(not (SRC / "manifest.csv").is_file(), reason="UTD-MHAD 2D data not available")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("utd2d")
    return out, convert_utd_mhad_2d(SRC, out, progress=False)


def test_counts_split_labels_and_class_names(converted):
    out, res = converted
    with open(SRC / "manifest.csv", newline="") as f:
        rows = {Path(r["file"]).stem: r for r in csv.DictReader(f)}
    expected = {s: sum(r["xsub_split"] == s for r in rows.values()) for s in ("train", "test")}
    assert res["train"] == expected["train"] == 431 and res["val"] == expected["test"] == 430 and res["bad"] == 0
    for split, subjects in (("train", {1, 3, 5, 7}), ("val", {2, 4, 6, 8})):
        data, names, labels = load(out, split)
        assert data.shape == (len(names), 3, 300, 18, 2) and data.dtype == np.float32
        assert all(int(rows[n]["subject"]) in subjects for n in names)
        assert labels == [int(rows[n]["label0"]) for n in names]
    assert (out / "class_names.txt").read_text().splitlines() == json.loads(NAMES.read_text())
    meta = json.loads((out / "meta.json").read_text())
    assert meta["fps"] == 15 and meta["layout"] == "openpose" and meta["dataset"] == "utd-mhad-2d"


def test_values_are_the_file_unmirrored(converted):
    out, _ = converted
    data, names, _ = load(out, "train")
    i = names.index("a3_s1_t1_coco")
    px = read_openpose_csv(SRC / "csv" / "a3_s1_t1_coco.csv")  # (T, 18, 2), mirrored video
    t = px.shape[0]
    np.testing.assert_allclose(data[i, 0, :t, OP.index("r_wrist"), 0], 1 - px[:, OP.index("l_wrist"), 0] / 640)
    np.testing.assert_allclose(data[i, 1, :t, OP.index("r_wrist"), 0], px[:, OP.index("l_wrist"), 1] / 480)
    assert np.all(data[i, 2, :t, :, 0] == 1)  # no confidence in the source
    assert not data[i, :, t:].any() and not data[i, ..., 1].any()  # zero-padded tail, empty second slot


def test_coordinates_in_the_image(converted):
    out, _ = converted
    data, _, _ = load(out, "val")
    xy = data[:, :2, :, :, 0][np.broadcast_to(data[:, 2:3, :, :, 0] > 0, data[:, :2, :, :, 0].shape)]
    assert xy.min() >= 0 and xy.max() <= 1


def test_left_and_right_are_the_persons(converted):
    """Right-hand actions move the right wrist; a frontal person's right shoulder is on the image's left."""
    out, _ = converted
    data, names, labels = load(out, "train")
    right_handed = [2, 4, 7, 11, 18]  # right hand wave, right arm throw, draw x, bowling, knock on door
    picks = [i for i, lab in enumerate(labels) if lab in right_handed]
    assert len(picks) >= 70
    assert all(motion(data[i], "r_wrist") > motion(data[i], "l_wrist") for i in picks)
    x = data[:, 0, :, :, 0]
    valid = data[:, 2, :, OP.index("neck"), 0] > 0
    assert np.mean(x[..., OP.index("r_shoulder")][valid] < x[..., OP.index("l_shoulder")][valid]) > 0.99


def test_limit_frames_and_missing_src(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["utd-mhad-2d", str(SRC), str(out), "--limit", "3", "--frames", "40", "--no-progress"]) == 0
    data, names, _ = load(out, "val")
    assert data.shape == (3, 3, 40, 18, 2)  # clips of 32-96 frames cut to 40
    assert (data[:, 2, :, 0, 0] == 1).all()
    capsys.readouterr()
    assert main(["utd-mhad-2d", str(tmp_path / "missing"), str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0] and "Traceback" not in err[0]

"""UTD-MHAD conversion on the real files (shared/data/utd-mhad)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from stgcn.convert.__main__ import main
from stgcn.convert.common import ConversionError
from stgcn.convert.utd_mhad import convert_utd_mhad, read_utd_mhad, read_utd_mhad_mat
from tests.stgcn.convert.real_data import OP, SHARED_DATA, load

UTD = SHARED_DATA / "utd-mhad"
pytestmark = pytest.mark.skipif(not (UTD / "manifest.csv").is_file(), reason="UTD-MHAD data not available")

R_WRIST, L_WRIST, NOSE = OP.index("r_wrist"), OP.index("l_wrist"), OP.index("nose")
R_ANKLE, L_ANKLE = OP.index("r_ankle"), OP.index("l_ankle")


def manifest() -> list[dict]:
    with open(UTD / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def full_kinect(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("utd_full")
    res = convert_utd_mhad(UTD, out, layout="kinect-v1", progress=False)
    return out, res


def test_full_conversion_counts_and_split(full_kinect):
    out, res = full_kinect
    assert res["train"] == 431 and res["val"] == 430 and res["bad"] == 0
    rows = {Path(r["file"]).stem: r for r in manifest()}
    for split, subjects in (("train", {1, 3, 5, 7}), ("val", {2, 4, 6, 8})):
        data, names, labels = load(out, split)
        assert data.shape == (len(names), 3, 300, 20, 2) and data.dtype == np.float32
        for n, lab in zip(names, labels):
            assert int(rows[n]["subject"]) in subjects
            assert int(rows[n]["label0"]) == lab
        assert sorted(set(labels)) == list(range(27))


def test_kinect_values_are_the_file(full_kinect):
    out, _ = full_kinect
    data, names, labels = load(out, "train")
    i = names.index("a3_s1_t1_skeleton")
    d = read_utd_mhad_mat(UTD / "Skeleton" / "a3_s1_t1_skeleton.mat")  # (T, 20, 3)
    t = d.shape[0]
    np.testing.assert_array_equal(data[i, :, :t, :, 0], d.transpose(2, 0, 1))
    assert not data[i, :, t:].any()  # zero-padded tail
    assert not data[i, ..., 1].any()  # no second person
    assert labels[i] == 2


def test_subset_both_layouts(tmp_path):
    for layout, v in (("kinect-v1", 20), ("openpose", 18), ("ntu-rgb+d", 25)):
        out = tmp_path / layout
        res = convert_utd_mhad(UTD, out, layout=layout, subjects=[1, 2], limit=5, frames=128, progress=False)
        assert res["train"] == 5 and res["val"] == 5
        for split, subj in (("train", "_s1_"), ("val", "_s2_")):
            data, names, labels = load(out, split)
            assert data.shape == (5, 3, 128, v, 2)
            assert all(subj in n for n in names)
            assert labels == [int(n.split("_")[0][1:]) - 1 for n in names]
    data, _, _ = load(tmp_path / "openpose", "train")
    conf = data[:, 2, :, :, 0]
    valid = conf.any(axis=-1)  # frames holding the person
    assert np.all(conf[..., 14:][valid] == 0)  # eyes, ears absent
    assert np.all(conf[..., :14][valid] == 1)
    assert np.all(data[:, :2, :, 14:, 0] == 0)
    x = data[:, 0, :, :14, 0][valid]
    assert 0.2 < x.min() and x.max() < 0.8


def test_right_hand_wave_axes_on_real_files():
    """a3 = right hand wave: Kinect joint 11 (one-based, right wrist) moves most; in the openpose
    projection (a non-mirrored camera image) the right wrist is LEFT of the left wrist and the
    head is above the feet."""
    files = sorted((UTD / "Skeleton").glob("a3_s*_t1_skeleton.mat"))
    assert len(files) == 8
    for f in files:
        d = read_utd_mhad_mat(f)
        motion = np.linalg.norm(np.diff(d, axis=0), axis=-1).sum(axis=0)
        assert set(np.argsort(-motion)[:2]) == {10, 11}  # r_wrist, r_hand (zero-based)
        op = read_utd_mhad(f, layout="openpose")[..., 0]  # (3, T, 18)
        t = d.shape[0]
        x, y = op[0, :t], op[1, :t]
        # a frontal person: right wrist left of the left wrist at rest (the waving hand may cross briefly)
        assert x[0, R_WRIST] < x[0, L_WRIST] and x[-1, R_WRIST] < x[-1, L_WRIST]
        assert np.mean(x[:, R_WRIST] < x[:, L_WRIST]) > 0.9
        assert np.all(x[:, OP.index("r_shoulder")] < x[:, OP.index("l_shoulder")])
        assert np.all(y[:, NOSE] < y[:, R_ANKLE]) and np.all(y[:, NOSE] < y[:, L_ANKLE])
        op_motion = np.linalg.norm(np.diff(op[:2, :t], axis=1), axis=0).sum(axis=0)
        assert int(np.argmax(op_motion)) == R_WRIST


def _small_copy(tmp_path: Path, n: int = 3) -> Path:
    src = tmp_path / "utd"
    (src / "Skeleton").mkdir(parents=True)
    rows = [r for r in manifest() if r["subject"] in ("1", "2")][:n]
    for r in rows:
        shutil.copy(UTD / r["file"], src / r["file"])
    with open(src / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return src


def test_bad_mat_file(tmp_path, capsys):
    src = _small_copy(tmp_path)
    bad = src / "Skeleton" / "a1_s1_t2_skeleton.mat"
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match="a1_s1_t2_skeleton.mat"):
        convert_utd_mhad(src, out, progress=False)
    assert not (out / "train_data.npy").exists()  # nothing half-written
    assert list(out.glob(".*tmp*")) == []

    assert main(["utd-mhad", str(src), str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a1_s1_t2_skeleton.mat" in err[0] and "Traceback" not in err[0]

    assert main(["utd-mhad", str(src), str(out), "--no-progress", "--skip-bad"]) == 0
    data, names, _ = load(out, "train")
    assert data.shape[0] == 2 and "a1_s1_t2_skeleton" not in names


def test_projected_training_subjects_merge_with_the_2d_keypoints(tmp_path):
    """The Kinect converter names its classes (from the manifest), so its 2D projection of the
    training subjects merges with the OpenPose keypoints of the videos under one class list
    (configs/train/utd_mhad_2d_kinect_4s.yaml); the test split stays the keypoints'."""
    from stgcn.convert.merge import merge_datasets
    from stgcn.convert.utd_mhad_2d import convert_utd_mhad_2d

    keypoints = UTD.parent / "utd-mhad-openpose2d"
    if not (keypoints / "manifest.csv").is_file():
        pytest.skip("UTD-MHAD OpenPose keypoints not available")
    kinect, video, merged = tmp_path / "kinect", tmp_path / "video", tmp_path / "merged"
    convert_utd_mhad(UTD, kinect, layout="openpose", subjects=[1], limit=6, frames=128, progress=False)
    assert (kinect / "class_names.txt").read_text().splitlines() == json.loads((UTD / "class_names.json").read_text())
    convert_utd_mhad_2d(keypoints, video, frames=128, limit=4, progress=False)
    classes = Path(__file__).resolve().parents[3] / "configs" / "classes" / "utd_mhad_2d_kinect.yaml"
    res = merge_datasets(merged, [video, kinect], classes=classes, progress=False)
    assert res["classes"] == 27 and res["train"] == 4 + 6 and res["val"] == 4 and res["val_utd-mhad"] == 0

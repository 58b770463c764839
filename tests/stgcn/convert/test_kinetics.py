"""Kinetics-skeleton conversion on the real clip (shared/data/skeleton)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from stgcn.convert.__main__ import main
from stgcn.convert.common import ConversionError
from stgcn.convert.kinetics import convert_kinetics, load_kinetics_clip, read_kinetics_json
from stgcn.data import SkeletonDataset

CLIP = Path("/work/shared/data/skeleton/kinetics_skeleton_--33Lscn6sk.json")
CLIP_ID = "--33Lscn6sk"
pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason="Kinetics clip not available")


def expected_from_json(path: Path, frames: int = 300) -> np.ndarray:
    """Independent computation of the published semantics, person by person."""
    info = json.loads(path.read_text())
    out = np.zeros((3, frames, 18, 2), np.float32)
    for fr in info["data"]:
        t = fr["frame_index"]
        if t >= frames:
            continue
        people = []
        for sk in fr["skeleton"][:5]:
            pose = np.asarray(sk["pose"], np.float32)
            score = np.asarray(sk["score"], np.float32)
            xy = np.stack([pose[0::2], pose[1::2]]) - 0.5
            xy[:, score == 0] = 0
            people.append((float(score.sum()), np.concatenate([xy, score[None]])))
        people.sort(key=lambda p: -p[0])
        for m, (_, arr) in enumerate(people[:2]):
            out[:, t, :, m] = arr
    return out


def make_src(tmp_path: Path) -> Path:
    src = tmp_path / "kin"
    for split in ("train", "val"):
        (src / split).mkdir(parents=True)
        shutil.copy(CLIP, src / split / f"{CLIP_ID}.json")
    shutil.copy(CLIP, src / "train" / "noskel.json")
    labels = {CLIP_ID: {"has_skeleton": True, "label": "flipping pancake", "label_index": 129},
              "noskel": {"has_skeleton": False, "label": "flipping pancake", "label_index": 129}}
    for split in ("train", "val"):
        (src / f"kinetics_{split}_label.json").write_text(json.dumps(labels))
    return src


def test_convert_real_clip(tmp_path):
    src = make_src(tmp_path)
    out = tmp_path / "out"
    res = convert_kinetics(src, out, progress=False)
    assert res["train"] == 1 and res["val"] == 1 and res["no_skeleton"] == 1
    data = np.load(out / "train_data.npy", mmap_mode="r")
    assert data.shape == (1, 3, 300, 18, 2) and data.dtype == np.float32
    with open(out / "train_label.pkl", "rb") as f:
        names, labels = pickle.load(f)
    assert names == [f"{CLIP_ID}.json"] and labels == [129]
    x = np.array(data[0])
    np.testing.assert_allclose(x, expected_from_json(CLIP), atol=1e-6)
    conf = x[2]
    assert np.all(x[:2][:, conf == 0] == 0)  # x = y = 0 where the score is 0
    present = conf > 0
    assert x[:2][:, present].min() >= -0.55 and x[:2][:, present].max() <= 0.55  # real data: a few y up to 1.01
    assert x[:2][:, present].min() < 0  # minus 0.5 applied
    assert not x[:, 190:].any() and not x[:, 0].any()  # frames 1..189 only (frame_index is one-based)
    # per frame the most confident person comes first
    s = conf.sum(axis=1)  # (T, M)
    assert np.all(s[:, 0] >= s[:, 1])


def test_keeps_the_two_most_confident_of_three(tmp_path):
    frames, meta = load_kinetics_clip(CLIP, with_meta=True)
    three = [k for k, f in enumerate(frames) if len(f) == 3]
    assert three, "the clip has frames with 3 people"
    x, label = read_kinetics_json(CLIP)
    assert label == 129
    for k in three:
        t = meta["frame_index"][k]
        scores = sorted((p[:, 2].sum() for p in frames[k]), reverse=True)
        np.testing.assert_allclose(x[2, t].sum(axis=0), scores[:2], rtol=1e-5)


def test_load_kinetics_clip_raw(tmp_path):
    frames, meta = load_kinetics_clip(CLIP, with_meta=True)
    assert len(frames) == 189 and meta["label_index"] == 129 and meta["frame_index"][0] == 1
    assert max(len(f) for f in frames) == 3
    allkp = np.concatenate([p for f in frames for p in f])
    assert allkp.shape[1] == 3 and allkp.dtype == np.float32
    present = allkp[:, 2] > 0
    assert allkp[present, :2].min() >= 0 and allkp[present, :2].max() <= 1.05
    assert np.all(allkp[~present] == 0)
    # the converter is these raw keypoints minus 0.5
    x, _ = read_kinetics_json(CLIP)
    k = 0
    t = meta["frame_index"][k]
    best = max(frames[k], key=lambda p: p[:, 2].sum())
    np.testing.assert_allclose(x[:2, t, :, 0].T, np.where(best[:, 2:] > 0, best[:, :2] - 0.5, 0), atol=1e-6)


def test_dataset_reads_kinetics_files(tmp_path):
    src = make_src(tmp_path)
    out = tmp_path / "out"
    convert_kinetics(src, out, progress=False)
    ds = SkeletonDataset(out / "val_data.npy", out / "val_label.pkl", window=300, transform="kinetics",
                         layout="openpose", source_format="kinetics")
    item = ds[0]
    stored = np.load(out / "val_data.npy")[0]
    # eval window right-aligns the valid frames; the kinetics transform gives back the stored values
    valid = np.flatnonzero(stored.any(axis=(0, 2, 3)))
    b, e = valid[0], valid[-1] + 1
    assert b == 1  # frame_index counts from 1
    x = item["x"].numpy()
    np.testing.assert_allclose(x[:, 300 - (e - b):], stored[:, b:e], atol=1e-6)
    assert not x[:, :300 - (e - b)].any()
    raw = ds.raw(0)
    present = raw[2] > 0
    assert raw[:2][:, present].min() >= 0  # back in 0..1 image coordinates


def test_single_folder_and_label_json(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    shutil.copy(CLIP, folder / f"{CLIP_ID}.json")
    lab = tmp_path / "labels.json"
    lab.write_text(json.dumps({CLIP_ID: {"has_skeleton": True, "label": "flipping pancake", "label_index": 129}}))
    out = tmp_path / "out"
    assert main(["kinetics", str(folder), str(out), "--label-json", str(lab), "--split", "val", "--no-progress",
                 "--frames", "150"]) == 0
    assert np.load(out / "val_data.npy").shape == (1, 3, 150, 18, 2)


def test_bad_json(tmp_path, capsys):
    src = make_src(tmp_path)
    text = CLIP.read_text()
    (src / "train" / "broken.json").write_text(text[: len(text) // 2])  # truncated
    labels = json.loads((src / "kinetics_train_label.json").read_text())
    labels["broken"] = {"has_skeleton": True, "label": "x", "label_index": 3}
    (src / "kinetics_train_label.json").write_text(json.dumps(labels))
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match="broken.json"):
        convert_kinetics(src, out, progress=False)
    assert not (out / "train_data.npy").exists()
    assert main(["kinetics", str(src), str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.json" in err[0]
    res = convert_kinetics(src, out, progress=False, skip_bad=True)
    assert res["train"] == 1 and res["train_bad"] == 1
    assert np.load(out / "train_data.npy").shape[0] == 1

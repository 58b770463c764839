"""SkeletonDataset: validation errors, windows, next-frame targets, DataLoader workers."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stgcn.data import SkeletonDataset
from stgcn.data.dataset import classification_window, next_frame_window
from stgcn.transforms import build_transform

T, V, M = 40, 18, 2


def make_sample(length: int, start: int = 0, seed: int = 0, frames: int = T) -> np.ndarray:
    """A raw 2D sample whose frame t (from ``start``) encodes t in x: x = 0.2 + 0.01 * t."""
    rng = np.random.default_rng(seed)
    x = np.zeros((3, frames, V, M), np.float32)
    base = rng.uniform(0.3, 0.7, size=(2, V)).astype(np.float32)
    for k in range(length):
        t = start + k
        x[0, t, :, 0] = 0.2 + 0.01 * k + 0.001 * base[0]
        x[1, t, :, 0] = base[1] + 0.002 * k
        x[2, t, :, 0] = 1.0
    x[:, :, 16:, 0] = 0  # absent ears
    return x


def write(tmp_path: Path, data: np.ndarray, labels=None, names=None, stem: str = "train"):
    d, lab = tmp_path / f"{stem}_data.npy", tmp_path / f"{stem}_label.pkl"
    np.save(d, data)
    labels = list(range(len(data))) if labels is None else labels
    names = [f"s{i}" for i in range(len(labels))] if names is None else names
    with open(lab, "wb") as f:
        pickle.dump((names, labels), f)
    return d, lab


@pytest.fixture
def files(tmp_path):
    data = np.stack([make_sample(10, 0, 0), make_sample(30, 0, 1), make_sample(40, 0, 2), make_sample(12, 5, 3)])
    return write(tmp_path, data, labels=[0, 1, 2, 1])


def frame_id(x: np.ndarray) -> np.ndarray:
    """The k encoded in each frame of a raw window (nan for empty frames)."""
    v = x[0, :, 0, 0]
    return np.where(x[2, :, 0, 0] > 0, np.round((v - 0.2) / 0.01), np.nan)


def test_attributes_and_eval_windows(files):
    ds = SkeletonDataset(*files, window=20)
    assert len(ds) == 4 and ds.num_classes == 3 and ds.names == ["s0", "s1", "s2", "s3"]
    assert ds.labels.tolist() == [0, 1, 2, 1]
    item = ds[0]
    assert set(item) == {"x", "label", "index", "motion"}
    assert item["x"].dtype == torch.float32 and item["x"].shape == (3, 20, V, M)
    assert item["label"].dtype == torch.int64 and int(item["label"]) == 0 and item["index"] == 0
    x = item["x"].numpy()
    # short clip (10 frames): right-aligned, zeros on the left
    assert not x[:, :10].any()
    np.testing.assert_array_equal(frame_id(x[:, 10:]), np.arange(10))
    # 30 frames in a 20-frame window: the centre 20
    np.testing.assert_array_equal(frame_id(ds[1]["x"].numpy()), np.arange(5, 25))
    # a clip starting at frame 5: its valid part, right-aligned
    x3 = ds[3]["x"].numpy()
    assert not x3[:, :8].any()
    np.testing.assert_array_equal(frame_id(x3[:, 8:]), np.arange(12))
    # window None: the whole T, right-aligned
    full = SkeletonDataset(*files)
    assert full[0]["x"].shape == (3, T, V, M)
    np.testing.assert_array_equal(frame_id(full[0]["x"].numpy()[:, -10:]), np.arange(10))


def test_transform_applied(files):
    ds = SkeletonDataset(*files, window=20, transform="person_centric", layout="openpose")
    tf = build_transform("person_centric", "openpose")
    raw = classification_window(ds.raw(2), 20)
    np.testing.assert_allclose(ds[2]["x"].numpy(), tf(raw), atol=1e-6)
    assert not ds[2]["x"].numpy()[:, :, 16:].any()  # absent joints stay zero


@pytest.mark.parametrize("transform", ["none", "person_centric"])
def test_next_frame(files, transform):
    ds = SkeletonDataset(*files, window=8, next_frame=True, transform=transform, seed=0)
    tf = build_transform(transform, "openpose")
    seen = set()
    for _ in range(3):
        for i in range(len(ds)):
            item = ds[i]
            assert item["recent"].shape == (3, 2, V, M) and item["target"].shape == (3, V, M)
            raw = ds.raw(i)
            begin = int(np.flatnonzero(raw.any(axis=(0, 2, 3)))[0])
            # the window's end frame t, found from the identity transform's x or by search
            win_ref = None
            for t in range(1, T - 1):
                w, after = next_frame_window(raw, 8, np.random.default_rng(), t=t)
                xn, recent, _, target = tf.prepare(w, next_frame=after)
                if np.allclose(xn, item["x"].numpy(), atol=1e-6) and np.allclose(target, item["target"].numpy(),
                                                                                    atol=1e-6):
                    win_ref = (t, w, recent)
                    break
            assert win_ref is not None, "x/target are transform.prepare of a window and its next frame"
            t, w, recent = win_ref
            np.testing.assert_allclose(recent, item["recent"].numpy(), atol=1e-6)
            assert t - 1 >= begin and raw[:, t + 1].any()  # a previous frame and a next frame exist
            ids = frame_id(w)
            assert ids[-1] == t - begin  # right-aligned: the last window frame is t
            if t < 7:
                assert not w[:, : 7 - t].any()  # zeros on the left
            seen.add((i, t))
    # eval mode draws the same t every time for a given index
    assert len({t for (i, t) in seen if i == 0}) == 1


def test_next_frame_train_draws_vary(files):
    ds = SkeletonDataset(*files, window=8, next_frame=True, augment={"noise": 0.0}, seed=1)
    targets = {float(ds[2]["target"][0, 0, 0]) for _ in range(30)}
    assert len(targets) > 5


def test_train_window_random_crop(files):
    ds = SkeletonDataset(*files, window=20, augment={"noise": {"sigma": 0.0}}, seed=0)
    starts = {frame_id(ds[2]["x"].numpy())[0] for _ in range(30)}
    assert len(starts) > 5 and all(0 <= s <= 20 for s in starts)
    ids = frame_id(ds[0]["x"].numpy())  # short clip: still right-aligned
    np.testing.assert_array_equal(ids[10:], np.arange(10))


def test_idle_pad_window(files):
    ds = SkeletonDataset(*files, window=20, augment={"idle_pad": {"sigma": 0.0, "zero_prob": 0.0}}, seed=0)
    x = ds[0]["x"].numpy()
    assert np.all(x[2, :, 0, 0] == 1)  # held frames fill the whole window
    ids = frame_id(x)
    assert ids[0] == 0 and ids[-1] == 9


def test_kinetics_source_format(tmp_path):
    raw = make_sample(10)
    stored = raw.copy()
    present = stored[2] > 0
    stored[0] = np.where(present, stored[0] - 0.5, 0)
    stored[1] = np.where(present, stored[1] - 0.5, 0)
    files = write(tmp_path, stored[None], labels=[0])
    ds = SkeletonDataset(*files, window=T, source_format="kinetics")
    np.testing.assert_allclose(ds.raw(0), raw, atol=1e-6)
    ds = SkeletonDataset(*files, window=10, source_format="kinetics", transform="kinetics")
    np.testing.assert_allclose(ds[0]["x"].numpy(), stored[:, :10], atol=1e-6)


def test_mmap_and_in_memory_agree(files):
    a = SkeletonDataset(*files, window=20, mmap=True)
    b = SkeletonDataset(*files, window=20, mmap=False)
    assert isinstance(a.data, np.memmap)
    for i in range(len(a)):
        assert torch.equal(a[i]["x"], b[i]["x"])


def test_dataloader_two_workers(files):
    torch.manual_seed(0)
    ds = SkeletonDataset(*files, window=16, augment={"random_rotate": 10, "noise": 0.001}, seed=0)
    dl = DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    batches = list(dl)
    assert [b["index"].tolist() for b in batches] == [[0, 1], [2, 3]]
    assert batches[0]["x"].shape == (2, 3, 16, V, M) and batches[0]["label"].dtype == torch.int64
    # different workers/epochs draw different augmentations
    again = list(dl)
    assert not torch.equal(batches[0]["x"], again[0]["x"])
    ds_eval = SkeletonDataset(*files, window=16)
    for b in DataLoader(ds_eval, batch_size=4, num_workers=2):
        for k, i in enumerate(b["index"].tolist()):
            assert torch.equal(b["x"][k], ds_eval[i]["x"])


# ----------------------------------------------------------------------------- bad files

def _expect(msg_part: str, path: Path, *args, **kw):
    with pytest.raises(ValueError) as e:
        SkeletonDataset(*args, **kw)
    text = str(e.value)
    assert str(path) in text and msg_part in text and "\n" not in text
    return text


def test_missing_and_not_npy(tmp_path):
    d, lab = write(tmp_path, np.zeros((2, 3, 5, V, M), np.float32))
    _expect("no such file", tmp_path / "nope.npy", tmp_path / "nope.npy", lab)
    _expect("no such file", tmp_path / "nope.pkl", d, tmp_path / "nope.pkl")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"hello world, not numpy")
    _expect("not an .npy", bad, bad, lab)


def test_truncated_npy(tmp_path):
    d, lab = write(tmp_path, np.ones((4, 3, 5, V, M), np.float32))
    blob = d.read_bytes()
    d.write_bytes(blob[: len(blob) - 1000])
    _expect("truncated", d, d, lab)


def test_wrong_ndim_dtype_count(tmp_path):
    d, lab = write(tmp_path, np.zeros((2, 3, 5, V), np.float32))
    _expect("5 dimensions", d, d, lab)
    d, lab = write(tmp_path, np.zeros((2, 3, 5, V, M), np.int32))
    _expect("not floating point", d, d, lab)
    d, lab = write(tmp_path, np.zeros((2, 3, 5, V, M), np.float32), labels=[0, 1, 1])
    _expect("3 labels but", lab, d, lab)
    d, lab = write(tmp_path, np.zeros((2, 3, 5, 25, M), np.float32))
    _expect("25 joints", d, d, lab, layout="openpose")


def test_bad_labels(tmp_path):
    d, lab = write(tmp_path, np.zeros((2, 3, 5, V, M), np.float32), labels=[0, 1.5])
    _expect("labels must be integers", lab, d, lab)
    d, lab = write(tmp_path, np.zeros((2, 3, 5, V, M), np.float32), labels=[0, "a"])
    _expect("labels must be integers", lab, d, lab)
    with open(lab, "wb") as f:
        pickle.dump({"names": [], "labels": []}, f)
    _expect("tuple (sample_names, labels)", lab, d, lab)
    with open(lab, "wb") as f:
        pickle.dump((["a", "b"], [0, 1], [2]), f)
    _expect("tuple (sample_names, labels)", lab, d, lab)
    with open(lab, "wb") as f:
        pickle.dump((["a"], [0, 1]), f)
    _expect("1 sample names but 2 labels", lab, d, lab)
    lab.write_bytes(b"\x80\x04garbage")
    _expect("not a readable pickle", lab, d, lab)
    # numpy int labels (as some published pickles hold) are fine
    with open(lab, "wb") as f:
        pickle.dump((["a", "b"], np.array([3, 1])), f)
    assert SkeletonDataset(d, lab).num_classes == 4

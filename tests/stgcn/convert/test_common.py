"""Atomic writers and the split driver."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from stgcn.convert.common import AtomicNpyWriter, BadInputError, ConversionError, Sample, write_split


def test_writer_full_and_shrunk(tmp_path):
    p = tmp_path / "a.npy"
    with AtomicNpyWriter(p, (5, 3, 4)) as w:
        assert not p.exists()
        for i in range(5):
            w.array[i] = i
    np.testing.assert_array_equal(np.load(p)[:, 0, 0], np.arange(5))
    with AtomicNpyWriter(p, (1000, 3, 4)) as w:  # a 4-digit N shrunk to 1 digit
        w.array[:3] = 7
        w.finish(3)
    a = np.load(p)
    assert a.shape == (3, 3, 4) and np.all(a == 7)
    assert np.load(p, mmap_mode="r").shape == (3, 3, 4)
    with AtomicNpyWriter(p, (4, 2)) as w:
        w.finish(0)
    assert np.load(p).shape == (0, 2)
    with AtomicNpyWriter(p, (0, 2)):
        pass
    assert np.load(p).shape == (0, 2)


def test_writer_crash_keeps_old_file(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.ones((2, 2), np.float32))
    with pytest.raises(RuntimeError):
        with AtomicNpyWriter(p, (3, 2)) as w:
            w.array[0] = 5
            raise RuntimeError("boom")
    np.testing.assert_array_equal(np.load(p), np.ones((2, 2)))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.npy"]


def _reader(path: str) -> np.ndarray:
    if "bad" in path:
        raise BadInputError(path, "broken")
    return np.full((2, 3), float(path[-1]), np.float32)


@pytest.mark.parametrize("workers", [1, 2])
def test_write_split(tmp_path, workers):
    samples = [Sample(f"s{i}", i % 2, f"/x/f{i}") for i in range(6)]
    samples.insert(2, Sample("bad", 0, "/x/bad"))
    with pytest.raises(ConversionError, match="/x/bad: broken"):
        write_split(tmp_path, "train", samples, _reader, (2, 3), progress=False, workers=workers)
    assert list(tmp_path.iterdir()) == []
    res = write_split(tmp_path, "train", samples, _reader, (2, 3), progress=False, workers=workers, skip_bad=True)
    assert res.written == 6 and res.bad == 1 and res.bad_files == ["/x/bad"]
    data = np.load(tmp_path / "train_data.npy")
    with open(tmp_path / "train_label.pkl", "rb") as f:
        names, labels = pickle.load(f)
    assert data.shape == (6, 2, 3) and names == [f"s{i}" for i in range(6)] and labels == [0, 1, 0, 1, 0, 1]
    np.testing.assert_array_equal(data[:, 0, 0], np.arange(6))

"""NTU .skeleton conversion on small synthetic files in the exact text format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from stgcn.convert.__main__ import main
from stgcn.convert.common import BadInputError, ConversionError
from stgcn.convert.ntu import convert_ntu, read_ntu_skeleton

IGNORE = Path("/work/shared/data/labels/ntu_samples_with_missing_skeletons.txt")


def body_xyz(seed: int, frames: int, bodies: int) -> np.ndarray:
    """(frames, bodies, 25, 3) distinct coordinates."""
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform(-1, 3, size=(frames, bodies, 25, 3)), 4).astype(np.float32)


def write_skeleton(path: Path, xyz: np.ndarray, bodies_per_frame: list[int] | None = None) -> None:
    frames, bodies = xyz.shape[:2]
    counts = bodies_per_frame or [bodies] * frames
    lines = [str(frames)]
    for t in range(frames):
        lines.append(str(counts[t]))
        for b in range(counts[t]):
            lines.append(f"7205759403792{b:04d} 0 1 1 1 1 0 -0.1 0.2 2")
            lines.append("25")
            for j in range(25):
                x, y, z = xyz[t, b, j]
                lines.append(f"{x:.4f} {y:.4f} {z:.4f} 250.1 180.2 1000.3 500.4 0.1 0.2 0.3 0.9 2")
    path.write_text("\r\n".join(lines) + "\r\n")


NAMES = [
    ("S001C001P001R001A001", 3),  # xsub train (P1), xview val (C1)
    ("S001C002P003R002A013", 2),  # xsub val (P3), xview train (C2)
    ("S002C003P002R001A060", 1),  # xsub train (P2), xview train (C3)
    ("S003C001P007R002A005", 2),  # xsub val, xview val
]


@pytest.fixture
def src(tmp_path) -> Path:
    d = tmp_path / "ntu"
    d.mkdir()
    for k, (name, bodies) in enumerate(NAMES):
        write_skeleton(d / f"{name}.skeleton", body_xyz(k, 5 + k, bodies))
    return d


def load(folder: Path, split: str):
    with open(folder / f"{split}_label.pkl", "rb") as f:
        names, labels = pickle.load(f)
    return np.load(folder / f"{split}_data.npy"), names, labels


def test_read_values_and_first_two_bodies(src):
    x = read_ntu_skeleton(src / "S001C001P001R001A001.skeleton", frames=300, persons=2)
    xyz = body_xyz(0, 5, 3)
    assert x.shape == (3, 300, 25, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, :5], xyz[:, :2].transpose(3, 0, 2, 1), atol=1e-6)  # bodies 0, 1 in file order
    assert not x[:, 5:].any()
    short = read_ntu_skeleton(src / "S001C001P001R001A001.skeleton", frames=3)
    assert short.shape[1] == 3
    np.testing.assert_allclose(short, x[:, :3], atol=1e-6)
    full = read_ntu_skeleton(src / "S001C001P001R001A001.skeleton", frames=None)
    assert full.shape[1] == 5


def test_variable_body_count(tmp_path):
    xyz = body_xyz(9, 4, 2)
    p = tmp_path / "S001C001P001R001A002.skeleton"
    write_skeleton(p, xyz, bodies_per_frame=[1, 2, 0, 1])
    x = read_ntu_skeleton(p, frames=10)
    np.testing.assert_allclose(x[:, 1, :, 1], xyz[1, 1].T, atol=1e-6)
    assert not x[:, 0, :, 1].any() and not x[:, 2].any()


def test_convert_splits_and_labels(src, tmp_path):
    out = tmp_path / "out"
    res = convert_ntu(src, out, progress=False)
    assert res["xsub_train"] == 2 and res["xsub_val"] == 2 and res["xview_train"] == 2 and res["xview_val"] == 2
    _, names, labels = load(out / "xsub", "train")
    assert names == ["S001C001P001R001A001.skeleton", "S002C003P002R001A060.skeleton"] and labels == [0, 59]
    _, names, labels = load(out / "xview", "train")
    assert names == ["S001C002P003R002A013.skeleton", "S002C003P002R001A060.skeleton"] and labels == [12, 59]
    # xview samples are identical to the parsed files
    data, names, _ = load(out / "xview", "val")
    for i, n in enumerate(names):
        np.testing.assert_array_equal(data[i], read_ntu_skeleton(src / n))


@pytest.mark.skipif(not IGNORE.is_file(), reason="ignore list not available")
def test_ignore_list(src, tmp_path):
    ignored = IGNORE.read_text().split()[0]
    write_skeleton(src / f"{ignored}.skeleton", body_xyz(5, 3, 1))
    out = tmp_path / "out"
    res = convert_ntu(src, out, ignore_list=IGNORE, progress=False)
    assert res["ignored"] == 1
    for bench in ("xsub", "xview"):
        for split in ("train", "val"):
            _, names, _ = load(out / bench, split)
            assert f"{ignored}.skeleton" not in names
    res = convert_ntu(src, tmp_path / "out2", progress=False)  # without the list it is converted
    assert res["ignored"] == 0 and res["xsub_train"] + res["xsub_val"] == 5


def test_truncated_file(src, tmp_path, capsys):
    bad = src / "S001C002P001R001A003.skeleton"
    write_skeleton(bad, body_xyz(7, 4, 1))
    text = bad.read_text()
    bad.write_text(text[: int(len(text) * 0.6)])
    with pytest.raises(BadInputError, match="S001C002P001R001A003.skeleton.*truncated"):
        read_ntu_skeleton(bad)
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match="S001C002P001R001A003"):
        convert_ntu(src, out, progress=False)
    assert not (out / "xsub" / "train_data.npy").exists()
    assert main(["ntu", str(src), str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "S001C002P001R001A003" in err[0] and "truncated" in err[0]
    assert main(["ntu", str(src), str(out), "--no-progress", "--skip-bad", "--benchmark", "xsub"]) == 0
    _, names, _ = load(out / "xsub", "train")
    assert "S001C002P001R001A003.skeleton" not in names and len(names) == 2


@pytest.mark.parametrize("mutate, message", [
    (lambda ls: ls.__setitem__(3, "abc"), "joint count"),
    (lambda ls: ls.__setitem__(2, "1 2 3"), "body info"),
    (lambda ls: ls.__setitem__(5, "0.1 0.2"), "joint values"),
])
def test_malformed(tmp_path, mutate, message):
    p = tmp_path / "S001C001P001R001A001.skeleton"
    write_skeleton(p, body_xyz(1, 2, 1))
    lines = p.read_text().split("\n")
    mutate(lines)
    p.write_text("\n".join(lines))
    with pytest.raises(BadInputError, match=message):
        read_ntu_skeleton(p)

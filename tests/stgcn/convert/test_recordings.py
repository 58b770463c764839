"""Recordings of the live pipeline (*.skel), labelled by folder, metadata or CSV, to the st-gcn format."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest

recording = pytest.importorskip("pipeline.recording")
from pipeline.messages import Person, StreamStart, encode, frame_from_arrays  # noqa: E402
from pipeline.ring_buffer import RingBuffer  # noqa: E402
from pipeline.tracker import SlotAssigner  # noqa: E402

from stgcn.convert.__main__ import main  # noqa: E402
from stgcn.convert.common import ConversionError  # noqa: E402
from stgcn.convert.recordings import (convert_recordings, read_recording_sample,  # noqa: E402
                                      stratified_split)

META = {"fps": 30.0, "source": "cam", "layout": "openpose", "width": 640, "height": 480, "joints": 18}


def person_kp(rng: np.random.Generator, conf: float) -> np.ndarray:
    kp = rng.uniform(0.2, 0.8, size=(18, 3)).astype(np.float32)
    kp[:, 2] = conf
    kp[15:] = 0  # some absent joints
    return kp


def write_rec(path: Path, seqs: list[int], people: list[list[tuple[int, np.ndarray]]], **meta) -> None:
    stream = path.stem
    layout = meta.pop("layout", "openpose")
    joints = 25 if layout == "ntu-rgb+d" else 18
    path.parent.mkdir(parents=True, exist_ok=True)
    with recording.RecordingWriter(path, StreamStart(stream, 0.0, {**META, **meta})) as w:
        for seq, ps in zip(seqs, people):
            w.write(encode(frame_from_arrays(stream, seq, seq / 30, 640, 480, layout,
                                             [kp for _, kp in ps], [t for t, _ in ps], joints=joints)))


def write_takes(folder: Path, labels: list[str], per_class: int, rng: np.random.Generator) -> None:
    """``folder/<label>/<stream>.skel`` takes as run_pipeline.py --record --label writes them."""
    for label in labels:
        for k in range(per_class):
            n = 12 + k
            write_rec(folder / label / f"camera0-{k + 1}.skel", list(range(n)),
                      [[(1, person_kp(rng, 0.8))] for _ in range(n)], label=label)


def test_read_sample_matches_slot_assigner_and_holds_gaps(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [0, 1, 2, 5, 6, 6, 30]  # a gap of 2 (held), a duplicate (dropped), a gap of 23 (new segment)
    people = [[(1, person_kp(rng, 0.9)), (2, person_kp(rng, 0.5)), (3, person_kp(rng, 0.1))] for _ in seqs]
    path = tmp_path / "a.skel"
    write_rec(path, seqs, people)
    x = read_recording_sample(path, "openpose", frames=40, persons=2, max_gap=10)
    assert x.shape == (3, 40, 18, 2)
    sa = SlotAssigner(num_slots=2)
    expect = [sa.assign([Person(t, kp) for t, kp in ps], joints=18) for ps in people]
    np.testing.assert_array_equal(x[:, 0], expect[0])
    np.testing.assert_array_equal(x[:, 2], expect[2])
    np.testing.assert_array_equal(x[:, 3], expect[2])  # held over the short gap
    np.testing.assert_array_equal(x[:, 4], expect[2])
    np.testing.assert_array_equal(x[:, 5], expect[3])
    np.testing.assert_array_equal(x[:, 6], expect[4])  # the duplicate seq 6 is dropped
    assert not x[:, 7:].any()  # after the long gap a new, shorter segment: not spliced in
    assert np.all(x[2, :7].sum(axis=1)[:, 0] > 0)  # the most confident person is slotted


def test_read_sample_keeps_the_longest_segment_as_the_live_worker_would(tmp_path):
    """After a gap beyond max_gap the live ring buffer starts over; the sample is the longer part."""
    rng = np.random.default_rng(2)
    seqs = [0, 1, 40, 41, 42, 44]
    people = [[(1, person_kp(rng, 0.9))] for _ in seqs]
    path = tmp_path / "b.skel"
    write_rec(path, seqs, people)
    x = read_recording_sample(path, "openpose", frames=8, persons=1, max_gap=10)
    live = RingBuffer(3, 8, 18, 1, max_gap=10)
    sa = SlotAssigner(num_slots=1)
    for seq, ps in zip(seqs, people):
        live.append(sa.assign([Person(t, kp) for t, kp in ps], joints=18), seq)
    assert live.valid == 5  # 40, 41, 42, 43 (held), 44
    np.testing.assert_array_equal(x[:, :5], live.window(5))
    assert not x[:, 5:].any()


def test_stratified_split():
    labels = [0] * 10 + [1] * 5 + [2] * 1
    val = stratified_split(labels, 0.2, seed=3)
    assert val[:10].sum() == 2 and val[10:15].sum() == 1 and val[15:].sum() == 0
    np.testing.assert_array_equal(val, stratified_split(labels, 0.2, seed=3))


def test_convert_recordings(tmp_path, capsys):
    rng = np.random.default_rng(1)
    src = tmp_path / "recs"
    src.mkdir()
    rows = []
    for k in range(9):
        label = ["wave", "clap", "jump"][k % 3]
        n = 10 + k
        write_rec(src / f"r{k}.skel", list(range(n)), [[(1, person_kp(rng, 0.8))] for _ in range(n)])
        rows.append((f"r{k}.skel", label))
    csv_path = tmp_path / "labels.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        w.writerows(rows)
    out = tmp_path / "out"
    res = convert_recordings(src, out, csv_path, frames=64, persons=2, val_fraction=0.34, progress=False)
    assert res["train"] == 6 and res["val"] == 3 and res["classes"] == 3
    assert (out / "class_names.txt").read_text().split() == ["clap", "jump", "wave"]
    names_all = []
    for split in ("train", "val"):
        data = np.load(out / f"{split}_data.npy")
        with open(out / f"{split}_label.pkl", "rb") as f:
            names, labels = pickle.load(f)
        assert data.shape == (len(names), 3, 64, 18, 2)
        for n, lab in zip(names, labels):
            k = int(n[1:].split(".")[0])
            assert lab == ["clap", "jump", "wave"].index(["wave", "clap", "jump"][k % 3])
        if split == "val":
            assert sorted(labels) == [0, 1, 2]  # stratified
        names_all += names
    assert sorted(names_all) == sorted(r for r, _ in rows)

    (src / "r0.skel").write_bytes(b"\x93not a recording")
    assert main(["recordings", str(src), str(out), "--labels", str(csv_path), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "r0.skel" in err[0]
    with pytest.raises(ConversionError, match="r0.skel"):
        convert_recordings(src, out, csv_path, frames=64, progress=False)
    res = convert_recordings(src, out, csv_path, frames=64, persons=2, progress=False, skip_bad=True)
    assert res["bad"] == 1 and res["train"] + res["val"] == 8


def test_folder_labels_and_a_validation_folder(tmp_path, capsys):
    """SRC/<label>/*.skel and --val DIR2 laid out the same way: classes from the folders, one person a sample."""
    rng = np.random.default_rng(4)
    write_takes(tmp_path / "rec", ["wave", "clap", "jump"], 3, rng)
    write_takes(tmp_path / "val", ["wave", "clap"], 1, rng)
    write_rec(tmp_path / "rec" / "loose.skel", list(range(15)), [[(1, person_kp(rng, 0.8))]] * 15, label="clap")
    out = tmp_path / "out"
    assert main(["recordings", str(tmp_path / "rec"), str(out), "--val", str(tmp_path / "val"), "--frames", "32",
                 "--no-progress"]) == 0
    assert (out / "class_names.txt").read_text().split() == ["clap", "jump", "wave"]
    with open(out / "train_label.pkl", "rb") as f:
        names, labels = pickle.load(f)
    assert len(names) == 10 and sorted(labels) == [0] * 4 + [1] * 3 + [2] * 3  # the loose take by its meta label
    assert "loose.skel" in names and "wave/camera0-1.skel" in names
    with open(out / "val_label.pkl", "rb") as f:
        names, labels = pickle.load(f)
    assert names == ["clap/camera0-1.skel", "wave/camera0-1.skel"] and labels == [0, 2]
    assert np.load(out / "train_data.npy").shape == (10, 3, 32, 18, 1)
    res = convert_recordings(tmp_path / "rec", tmp_path / "out2", frames=32, val_fraction=0.34, progress=False)
    assert res["train"] + res["val"] == 10 and res["val"] == 3


@pytest.mark.parametrize("case, message", [
    ("no labels", "no labelled takes"),
    ("unlabelled loose take", "loose.skel: no label"),
    ("one class", "only one class ('wave')"),
    ("empty take", "empty take: no frames"),
    ("nobody seen", "empty take: nobody seen"),
    ("layout", "layout ['ntu-rgb+d'] is not 'openpose'"),
    ("val class", "labels not in the class list"),
])
def test_one_line_errors(tmp_path, capsys, case, message):
    rng = np.random.default_rng(5)
    src, extra = tmp_path / "rec", []
    src.mkdir()
    if case != "no labels":
        write_takes(src, ["wave"] if case == "one class" else ["wave", "clap"], 2, rng)
    if case == "unlabelled loose take":
        write_rec(src / "loose.skel", [0, 1], [[(1, person_kp(rng, 0.8))]] * 2)
    if case == "empty take":
        write_rec(src / "clap" / "camera0-9.skel", [], [])
    if case == "nobody seen":
        write_rec(src / "clap" / "camera0-9.skel", [0, 1, 2], [[], [], []])
    if case == "layout":
        kp = rng.uniform(0.2, 0.8, size=(25, 3)).astype(np.float32)
        write_rec(src / "clap" / "camera0-9.skel", [0, 1], [[(1, kp)]] * 2, layout="ntu-rgb+d", joints=25)
    if case == "val class":
        write_takes(tmp_path / "val", ["jump"], 1, rng)
        extra = ["--val", str(tmp_path / "val")]
    assert main(["recordings", str(src), str(tmp_path / "out"), "--no-progress", *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err

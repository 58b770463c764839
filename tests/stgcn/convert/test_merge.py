"""Merging converted real-video sets (small subsets) under configs/classes/real_video.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from stgcn.convert.__main__ import main
from stgcn.convert.common import ConversionError
from stgcn.convert.jhmdb import convert_jhmdb
from stgcn.convert.merge import merge_datasets
from stgcn.convert.penn_action import convert_penn_action
from stgcn.convert.utd_mhad_2d import convert_utd_mhad_2d
from tests.stgcn.convert.real_data import SHARED_DATA, load

ROOT = Path(__file__).resolve().parents[3]
CLASSES = ROOT / "configs" / "classes" / "real_video.yaml"
DATA = SHARED_DATA
pytestmark = pytest.mark.skipif(
    not all((DATA / p).exists() for p in ("utd-mhad-openpose2d/manifest.csv", "penn-action/labels", "jhmdb")),
    reason="real-video 2D data not available")


@pytest.fixture(scope="module")
def subsets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sets")
    out = {"penn-action": root / "penn", "utd-mhad-2d": root / "utd", "jhmdb": root / "jhmdb"}
    convert_penn_action(DATA / "penn-action", out["penn-action"], frames=64, limit=6, progress=False)
    convert_utd_mhad_2d(DATA / "utd-mhad-openpose2d", out["utd-mhad-2d"], frames=64, limit=5, progress=False)
    convert_jhmdb(DATA / "jhmdb", out["jhmdb"], frames=40, limit=4, progress=False)
    return out


def test_merge_classes_labels_sources_and_frames(subsets, tmp_path):
    out = tmp_path / "merged"
    srcs = [subsets[k] for k in ("penn-action", "utd-mhad-2d", "jhmdb")]
    assert main(["merge", str(out), *map(str, srcs), "--classes", str(CLASSES), "--no-progress"]) == 0
    names = (out / "class_names.txt").read_text().splitlines()
    assert len(names) == len(set(names)) == 15 + 27 + 14 - 26 + 13
    spec = yaml.safe_load(CLASSES.read_text())["classes"]
    assert names[:len(spec)] == [e["name"] for e in spec]
    renamed = {(d, src): e["name"] for e in spec for d, src in e.items() if d != "name"}
    assert "squat (two arms stretch out)" not in names and "golf" not in names and "walking in place" in names
    sources = json.loads((out / "sources.json").read_text())
    assert sources["datasets"] == ["penn-action", "utd-mhad-2d", "jhmdb"]
    for split, counts in (("train", (6, 5, 4)), ("val", (6, 5, 4))):
        data, snames, labels = load(out, split)
        assert data.shape == (15, 3, 64, 18, 2)  # T: the largest of the sources
        assert [sources[split].count(d) for d in sources["datasets"]] == list(counts)
        for d, path in subsets.items():
            src_data, src_names, src_labels = load(path, split)
            src_classes = (path / "class_names.txt").read_text().splitlines()
            for j, (n, lab) in enumerate(zip(src_names, src_labels)):
                i = snames.index(f"{d}/{n}")
                assert sources[split][i] == d
                assert names[labels[i]] == renamed.get((d, src_classes[lab]), src_classes[lab])
                t = src_data.shape[2]
                np.testing.assert_array_equal(data[i, :, :t], src_data[j])
                assert not data[i, :, t:].any()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["fps"] == {"penn-action": 30, "utd-mhad-2d": 15, "jhmdb": 30} and meta["layout"] == "openpose"


def test_merge_frames_option_cuts(subsets, tmp_path):
    res = merge_datasets(tmp_path / "m", [subsets["jhmdb"], subsets["penn-action"]], CLASSES, frames=30,
                         progress=False)
    assert res["train_jhmdb"] == 4 and res["train_penn-action"] == 6
    assert load(tmp_path / "m", "val")[0].shape == (10, 3, 30, 18, 2)
    names = (tmp_path / "m" / "class_names.txt").read_text().splitlines()
    assert "pullup" in names and "golf_swing" in names and "golf" not in names


def test_merge_errors(subsets, tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("classes: []\n")
    with pytest.raises(ConversionError, match="'pullup' occurs twice"):  # Penn and JHMDB both have pullup
        merge_datasets(tmp_path / "m", [subsets["penn-action"], subsets["jhmdb"]], empty, progress=False)
    typo = tmp_path / "typo.yaml"
    typo.write_text("classes:\n  - {name: wave, jhmdb: waving}\n")
    with pytest.raises(ConversionError, match="'waving'.*not a class of jhmdb"):
        merge_datasets(tmp_path / "m", [subsets["jhmdb"]], typo, progress=False)
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "m"), str(tmp_path / "missing"), "--classes", str(CLASSES)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "m" / "train_data.npy").exists()

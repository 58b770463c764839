"""Pieces shared by training and ``stgcn.eval``: the serving config, loader workers, the weakest-classes line;
``stgcn.eval`` on data whose classes are matched to the model's by name."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stgcn import STGCN, save_checkpoint
from stgcn.config import serving_config
from stgcn.data import available_cpus, resolve_workers
from stgcn.eval import main, weakest_classes
from stgcn.evaluation import accuracy_by_source, load_synonyms, map_classes


def test_serving_config_keeps_the_layout_only_in_the_graph_args():
    cfg = {"model": {"in_channels": 3, "num_class": 4}, "data": {"layout": "ntu-rgb+d", "window": 50},
           "train": {"task": "joint"}}
    serve = serving_config(cfg, 4)
    assert "layout" not in serve
    assert serve["model"]["graph_args"]["layout"] == "ntu-rgb+d" and serve["model"]["coords"] == 3
    assert serve["model"]["predictor"] and serve["window"] == 50 and serve["class_names"] == ["0", "1", "2", "3"]


def test_num_workers_auto_is_the_cpus_available():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert available_cpus() == cpus
    assert resolve_workers("auto") == resolve_workers(None) == cpus
    assert resolve_workers(0) == 0 and resolve_workers(3) == 3 and resolve_workers("2") == 2
    for bad in (-1, "many"):
        with pytest.raises(ValueError, match="num_workers"):
            resolve_workers(bad)


def test_weakest_classes_leave_out_classes_without_samples():
    confusion = [[2, 0, 0], [1, 1, 0], [0, 0, 0]]  # class c has no validation sample
    assert weakest_classes(confusion, ["a", "b", "c"]) == "b 50 %, a 100 %; no samples: c"
    assert weakest_classes([[0, 0], [0, 0]], ["a", "b"]) == "none scored; no samples: a, b"
    many = [[0] * 8 for _ in range(8)]
    assert weakest_classes(many, list("abcdefgh"), n=5).endswith("no samples: a, b, c, d, e (+3 more)")


# --------------------------------------------------------------------------- classes matched by name

ROOT = Path(__file__).resolve().parents[2]
SYNONYMS = ROOT / "configs" / "classes" / "synonyms.yaml"
MODEL_CLASSES = ["tennis_serve", "wave", "clap", "squat", "jump"]


def test_map_classes_by_name_synonyms_and_missing():
    syn = load_synonyms(SYNONYMS)
    data = ["right hand wave", "Tennis Serve", "jump", "draw triangle", "squat (two arms stretch out)"]
    cmap = map_classes(data, MODEL_CLASSES, syn)
    assert cmap.index.tolist() == [1, 0, 4, -1, 3]
    assert cmap.missing == ["draw triangle"] and cmap.by_synonym == ["right hand wave", "squat (two arms stretch out)"]
    assert map_classes(data, MODEL_CLASSES).index.tolist() == [-1, 0, 4, -1, -1]  # no synonyms: names only
    both = map_classes(["wave"], ["right hand wave", "wave"], syn)
    assert both.index.tolist() == [1]  # the exact name wins over a synonym
    assert map_classes(["wave"], ["right hand wave", "Wave_"], syn).ambiguous == []
    amb = map_classes(["wave"], ["right hand wave", "waving"], {"wave": 0, "right hand wave": 0, "waving": 0})
    assert amb.index.tolist() == [-1] and amb.ambiguous == ["wave"]


def test_synonyms_cover_the_merged_class_list():
    """Every source class merged in configs/classes/real_video.yaml maps to its merged name."""
    syn = load_synonyms(SYNONYMS)
    spec = yaml.safe_load((ROOT / "configs" / "classes" / "real_video.yaml").read_text())["classes"]
    merged = [e["name"] for e in spec]
    for entry in spec:
        for dataset, names in entry.items():
            if dataset != "name":
                for n in [names] if isinstance(names, str) else names:
                    assert map_classes([n], merged, syn).as_dict() == {n: entry["name"]}, (dataset, n)


def test_accuracy_by_source():
    correct = np.array([1, 0, 1, 1, 0], bool)
    out = accuracy_by_source(correct, ["b", "a", "b", "b", "a"])
    assert list(out) == ["b", "a"] and out["b"] == {"top1": 1.0, "samples": 3} and out["a"]["top1"] == 0.0
    with pytest.raises(ValueError, match="sources name 2 samples"):
        accuracy_by_source(correct, ["a", "b"])


@pytest.fixture(scope="module")
def named_model(tmp_path_factory):
    """A tiny random checkpoint with named classes and the config that evaluates it."""
    root = tmp_path_factory.mktemp("named")
    cfg = {"in_channels": 3, "num_class": len(MODEL_CLASSES), "graph_args": {"layout": "openpose"}, "coords": 2}
    torch.manual_seed(0)
    save_checkpoint(root / "w.pt", STGCN(**cfg), {"model": cfg, "class_names": MODEL_CLASSES, "window": 16,
                                                  "normalisation": {"name": "person_centric"}})
    config = {"model": cfg, "data": {"layout": "openpose", "window": 16, "normalisation": {"name": "person_centric"}},
              "train": {"task": "classify"}}
    (root / "eval.yaml").write_text(yaml.safe_dump(config))
    return root / "w.pt", root / "eval.yaml"


def write_data(folder: Path, labels: list[int], class_names: list[str] | None = None,
               sources: list[str] | None = None) -> Path:
    rng = np.random.default_rng(1)
    data = np.zeros((len(labels), 3, 20, 18, 2), np.float32)
    data[:, :2, :, :14, 0] = 0.3 + 0.4 * rng.random((len(labels), 2, 20, 14))
    data[:, 2, :, :14, 0] = 1
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "val_data.npy", data)
    with open(folder / "val_label.pkl", "wb") as f:
        pickle.dump(([f"s{i}" for i in range(len(labels))], labels), f)
    if class_names is not None:
        (folder / "class_names.txt").write_text("".join(f"{c}\n" for c in class_names))
    if sources is not None:
        (folder / "sources.json").write_text(json.dumps({"datasets": sorted(set(sources)), "val": sources}))
    return folder


def run_eval(weights, config, data: Path, out: Path, *extra: str) -> dict:
    assert main([str(config), "--weights", str(weights), "--data-dir", str(data), "--device", "cpu",
                 "--workers", "0", "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_eval_on_a_subset_of_the_model_classes(named_model, tmp_path, capsys):
    weights, config = named_model
    data_classes = ["draw triangle", "right hand wave", "tennis serve", "jump"]  # UTD-like names, one the model lacks
    labels = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    sources = ["utd"] * 6 + ["jhmdb"] * 4
    m = run_eval(weights, config, write_data(tmp_path / "d", labels, data_classes, sources), tmp_path / "m.json")
    out = capsys.readouterr().out
    assert m["samples"] == 10 and m["missing_samples"] == 3
    assert m["class_map"] == {"draw triangle": None, "right hand wave": "wave", "tennis serve": "tennis_serve",
                              "jump": "jump"}
    assert "3 samples of 1 class the model lacks count as errors: draw triangle" in out
    assert "3 of the data's 4 matched by name" in out and "(1 through synonyms)" in out  # tennis serve: by name
    assert m["top1"] == pytest.approx(m["top1_known"] * 7 / 10)
    confusion = np.array(m["confusion"])
    assert confusion.shape == (5, 5) and confusion.sum() == 7  # the 3 unmatched samples are in no row
    assert confusion.sum(1).tolist() == [2, 3, 0, 0, 2]  # tennis_serve, wave, clap, squat, jump
    per = m["per_dataset"]
    assert per["utd"]["samples"] == 6 and per["jhmdb"]["samples"] == 4
    assert (per["utd"]["top1"] * 6 + per["jhmdb"]["top1"] * 4) / 10 == pytest.approx(m["top1"])
    assert "per dataset: utd" in out

    # the same data under the model's own names and order gives the same predictions
    same = [MODEL_CLASSES.index(n) for n in ("squat", "wave", "tennis_serve", "jump")]
    m2 = run_eval(weights, config, write_data(tmp_path / "d2", [same[v] for v in labels], MODEL_CLASSES),
                  tmp_path / "m2.json")
    assert m2["missing_samples"] == 0 and m2["top1_known"] == m2["top1"]
    assert np.array(m2["confusion"])[[1, 0, 4]].tolist() == confusion[[1, 0, 4]].tolist()


def test_eval_same_classes_without_class_names(named_model, tmp_path, capsys):
    weights, config = named_model
    m = run_eval(weights, config, write_data(tmp_path / "d", [0, 1, 2, 3, 4, 0]), tmp_path / "m.json")
    out = capsys.readouterr().out
    assert m["samples"] == 6 and "class_map" not in m and "per_dataset" not in m
    assert np.array(m["confusion"]).sum() == 6 and "top-1" in out and "lacks" not in out

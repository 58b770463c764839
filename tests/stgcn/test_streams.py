"""Input streams and the multi-stream model: the math on small tensors, then training, saving,
evaluating and serving a multi-stream model on real UTD-MHAD data."""

import json

import numpy as np
import pytest
import torch
import yaml

from stgcn import load_model
from stgcn.checkpoint import CheckpointError, build_model, save_checkpoint
from stgcn.engine import Engine
from stgcn.graph import get_layout
from stgcn.streams import MultiStream, bone, motion, parents, select_streams, stream_input

from .test_train import rows, run, utd_subset, write_config  # noqa: F401  (the module's real-data fixture)


def test_parents_point_one_edge_towards_the_center():
    lay = get_layout("openpose")
    parent = parents("openpose")
    names = lay.joints
    assert parent[lay.center] == lay.center
    assert names[parent[names.index("r_wrist")]] == "r_elbow"
    assert names[parent[names.index("r_elbow")]] == "r_shoulder"
    assert names[parent[names.index("r_shoulder")]] == "neck"
    assert names[parent[names.index("l_ear")]] == "l_eye"
    edges = {frozenset(e) for e in lay.edges}
    assert all(frozenset((v, p)) in edges for v, p in enumerate(parent) if v != p), "every bone is an edge"


def test_bone_and_motion_keep_values_only_where_both_ends_are_present():
    x = torch.zeros(1, 3, 3, 3, 1)  # (N, C=x,y,conf, T, V, M); joint 0 is the parent of 1 and 2
    x[0, 0, :, :, 0] = torch.tensor([[1.0, 3.0, 6.0], [2.0, 5.0, 9.0], [4.0, 8.0, 13.0]])
    x[0, 2] = 0.9
    x[0, 2, 1, 2, 0] = 0.0  # joint 2 absent in frame 1
    x[0, :2, 1, 2, 0] = 0.0
    b = bone(x, [0, 0, 0], coords=2)
    assert b[0, 0, 0, :, 0].tolist() == [0.0, 2.0, 5.0]
    assert b[0, 0, 1, 2, 0] == 0 and b[0, 2, 1, 2, 0] == 0, "a bone to an absent joint is absent"
    assert torch.allclose(b[0, 2, 0, :, 0], torch.full((3,), 0.9))
    m = motion(x, coords=2)
    assert m[0, :, 0].abs().sum() == 0, "the first frame has no motion"
    assert m[0, 0, 1, :2, 0].tolist() == [1.0, 2.0] and m[0, 0, 2, :2, 0].tolist() == [2.0, 3.0]
    assert m[0, 0, 1, 2, 0] == 0 and m[0, 0, 2, 2, 0] == 0, "motion into or out of an absent frame is absent"
    bm = stream_input(x, "bone_motion", [0, 0, 0], 2)
    assert bm[0, 0, 1, 1, 0] == pytest.approx((5 - 2) - (3 - 1))
    with pytest.raises(ValueError, match="unknown input stream 'bones'"):
        stream_input(x, "bones", [0, 0, 0], 2)


def _model(streams, weights=None):
    torch.manual_seed(0)
    cfg = {"in_channels": 3, "num_class": 5, "graph_args": {"layout": "openpose", "strategy": "spatial"},
           "predictor": True, "coords": 2, "streams": streams}
    if weights:
        cfg["stream_weights"] = weights
    return build_model(cfg), cfg


def test_multistream_fuses_the_streams_mean_probability_and_trains_each_on_its_own():
    model, _ = _model(["joint", "bone", "joint_motion", "bone_motion"], weights=[2, 2, 1, 1])
    assert isinstance(model, MultiStream) and model.predictor is not None
    assert all(model.nets[n].predictor is None for n in model.names[1:]), "one predictor head, on the joint stream"
    x = torch.randn(2, 3, 12, 18, 2)
    x[:, 2] = 1.0
    model.train()
    assert model(x).shape == (4, 2, 5)
    model.eval()
    with torch.no_grad():
        each = [torch.softmax(model.nets[n](stream_input(x, n, model.parent_index, 2)), 1) for n in model.names]
        expected = (2 * each[0] + 2 * each[1] + each[2] + each[3]) / 6
        fused, nxt = model(x, x[:, :, -2:])
    assert torch.allclose(torch.softmax(fused, 1), expected, atol=1e-6)
    assert nxt.shape == (2, 3, 18, 2)
    pair = model.mapped(lambda net: net, ["bone", "joint"])
    with torch.no_grad():
        assert torch.allclose(torch.softmax(pair(x), 1), (each[0] + each[1]) / 2, atol=1e-6)
    assert pair.predictor is None, "the predictor comes with the joint stream only when it is first"
    with pytest.raises(ValueError, match="not in this model"):
        _model(["joint", "bone"])[0].mapped(lambda net: net, ["joint_motion"])
    assert not isinstance(_model(["joint"])[0], MultiStream), "one joint stream is the original network"


def test_engine_serves_a_saved_multistream_checkpoint_and_a_cheaper_subset(tmp_path):
    model, cfg = _model(["joint", "bone"])
    path = save_checkpoint(tmp_path / "ms.pt", model, {"model": cfg, "window": 12, "persons": 1,
                                                         "normalisation": {"name": "person_centric"}})
    raw = np.random.default_rng(0).uniform(0.2, 0.8, (3, 3, 12, 18, 1)).astype(np.float32)
    raw[:, 2] = 0.9
    both = Engine(path, "cpu")
    assert both.streams == ["joint", "bone"]
    probs, nxt = both(raw)
    assert probs.shape == (3, 5) and np.allclose(probs.sum(1), 1, atol=1e-5) and nxt.shape == (3, 3, 18, 1)
    joint = Engine(path, "cpu", streams=["joint"])
    p_joint, _ = joint(raw)
    bone_only = Engine(path, "cpu", streams=["bone"])
    p_bone, n_bone = bone_only(raw)
    assert n_bone is None and not bone_only.predicts
    assert np.allclose(probs, (p_joint + p_bone) / 2, atol=1e-5)
    loaded = load_model(path)
    assert isinstance(loaded, MultiStream) and loaded.config["model"]["streams"] == ["joint", "bone"]


def test_a_single_stream_checkpoint_refuses_other_streams(tmp_path):
    model, cfg = _model(["joint"])
    path = save_checkpoint(tmp_path / "j.pt", model, {"model": cfg, "window": 12, "persons": 1})
    with pytest.raises(ValueError, match="single-stream"):
        Engine(path, "cpu", streams=["joint", "bone"])


def test_one_config_trains_and_evaluates_a_four_stream_model(utd_subset, tmp_path):  # noqa: F811
    cfg_path = write_config(tmp_path / "tiny.yaml", utd_subset, epochs=1)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["model"]["streams"] = ["joint", "bone", "joint_motion", "bone_motion"]
    cfg_path.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    run("-m", "stgcn.train", str(cfg_path), "--work-dir", str(work), "--device", "cpu")
    model = load_model(work / "final.pt")
    assert isinstance(model, MultiStream) and model.names == cfg["model"]["streams"]
    assert 0 < model.config["open_set"]["score_threshold"] < 1
    out = tmp_path / "eval.json"
    run("-m", "stgcn.eval", "--weights", str(work / "final.pt"), "--json", str(out), "--device", "cpu",
        "--workers", "0")
    metrics = json.loads(out.read_text())
    assert float(rows(work)[-1]["val_top1"]) == pytest.approx(metrics["top1"], abs=1e-6)
    assert metrics["mpjpe"] > 0, "the joint stream's predictor head is trained and evaluated"


def test_calibrate_writes_a_half_size_checkpoint_of_fewer_streams(utd_subset, tmp_path):  # noqa: F811
    cfg_path = write_config(tmp_path / "tiny.yaml", utd_subset, epochs=1)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["model"]["streams"] = ["joint", "bone", "joint_motion"]
    cfg_path.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    run("-m", "stgcn.train", str(cfg_path), "--work-dir", str(work), "--device", "cpu")
    out = tmp_path / "pair.pt"
    run("-m", "stgcn.calibrate", "--weights", str(work / "final.pt"), "--streams", "joint", "bone", "--half",
        "--out", str(out), "--device", "cpu")
    state = torch.load(out, weights_only=True)["state_dict"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    assert not any(k.startswith("nets.joint_motion.") for k in state)
    pair = load_model(out)
    assert pair.names == ["joint", "bone"] and pair.config["model"]["streams"] == ["joint", "bone"]
    assert 0 < pair.config["open_set"]["score_threshold"] < 1
    assert out.stat().st_size < 0.6 * 2 / 3 * (work / "final.pt").stat().st_size
    full = select_streams(load_model(work / "final.pt"), ["joint", "bone"])
    x = torch.from_numpy(np.load(utd_subset / "val_data.npy")[:4, :, :16]).float()
    with torch.no_grad():
        assert torch.allclose(torch.softmax(pair(x), 1), torch.softmax(full(x), 1), atol=2e-3), \
            "float16 storage changes the probabilities by rounding only"


def test_a_checkpoint_naming_an_unknown_stream_or_missing_one_is_refused_in_one_line(tmp_path):
    model, cfg = _model(["joint", "bone"])
    bad = save_checkpoint(tmp_path / "bad.pt", model, {"model": {**cfg, "streams": ["joint", "bones"]}, "window": 12})
    with pytest.raises(CheckpointError, match="bad model config .*unknown input stream 'bones'"):
        load_model(bad)
    three = {**cfg, "streams": ["joint", "bone", "joint_motion"]}
    short = save_checkpoint(tmp_path / "short.pt", model, {"model": three, "window": 12})
    with pytest.raises(CheckpointError, match="does not match the model: missing keys .*nets.joint_motion"):
        load_model(short)

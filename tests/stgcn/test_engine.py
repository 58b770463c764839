"""The serving engine: the checkpoint's own window, layout and normalisation; the CUDA path (FastSTGCN
per stream, fp16, CUDA graphs) computes what the original module does."""

import numpy as np
import pytest
import torch

from stgcn import DEFAULT_WEIGHTS, STGCN, save_checkpoint
from stgcn.engine import Engine
from stgcn.fast import FastSTGCN, fold


def _windows(n: int = 4, t: int = 128) -> np.ndarray:
    rng = np.random.default_rng(0)
    windows = np.zeros((n, 3, t, 18, 2), np.float32)
    windows[:, :2, :, :, 0] = rng.uniform(0.3, 0.7, (n, 2, t, 18))
    windows[:, 2, :, :14, 0] = 0.9
    windows[1, :, :40] = 0  # a stream that started 40 frames ago
    return windows


def test_cpu_engine_runs_the_original_module_on_the_checkpoints_window():
    engine = Engine(DEFAULT_WEIGHTS, "cpu", persons=2)
    assert engine.net is engine.model and engine.runner is None
    assert engine.window == engine.config["window"] and engine.sample_shape == (3, engine.window, 18, 2)
    assert engine.layout == "openpose" and engine.persons == 2
    assert Engine(DEFAULT_WEIGHTS, "cpu", persons=1, window=32).sample_shape == (3, 32, 18, 1)
    assert Engine(DEFAULT_WEIGHTS, "cpu").persons == 2, "by default the person slots the model was trained with"


def test_engine_layout_is_the_canonical_name(tmp_path):
    cfg = {"in_channels": 3, "num_class": 3, "graph_args": {"layout": "kinetics"}, "coords": 2}  # an alias
    path = save_checkpoint(tmp_path / "alias.pt", STGCN(**cfg), {"model": cfg, "window": 8})
    engine = Engine(path, "cpu", persons=1)
    assert engine.layout == "openpose" and engine.window == 8
    custom = {"in_channels": 3, "num_class": 3, "coords": 2, "graph_args": {"layout": {
        "name": "kinetics", "num_node": 18, "center": 1, "edges": [[i, i + 1] for i in range(17)]}}}
    path = save_checkpoint(tmp_path / "custom.pt", STGCN(**custom), {"model": custom, "window": 8})
    assert Engine(path, "cpu", persons=1).layout == "openpose"  # a custom graph over the openpose joints


def test_fast_network_in_the_engine_matches_the_original_module():
    windows = _windows()
    engine = Engine(DEFAULT_WEIGHTS, "cpu", persons=2)
    p2, n2 = engine(windows)
    engine.net = fold(engine.model, torch.float32)  # what the CUDA path runs (each stream folded), in float32
    p1, n1 = engine(windows)
    assert np.abs(p1 - p2).max() < 1e-5
    assert np.abs(n1 - n2).max() < 1e-5
    assert n1.shape == (4, 3, engine.horizon, 18, 2)  # the shipped decoder: frames t+1..t+10
    assert (n1[:, 2] == windows[:, 2, -1][:, None]).all()  # confidences carried over, absent joints stay absent


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_replay_the_eager_step():
    engine = Engine(DEFAULT_WEIGHTS, "cuda", persons=2)
    assert engine.runner is not None, "the multi-stream step is captured in CUDA graphs too"
    assert all(isinstance(net, FastSTGCN) for net in engine.net.nets.values())
    rng = np.random.default_rng(1)
    for b in (1, 3, 17):
        windows = rng.uniform(0.2, 0.8, (b, 3, engine.window, 18, 2)).astype(np.float32)
        probs, nxt = engine(windows)
        ref = engine.step(torch.from_numpy(windows).cuda())
        # fp16 at another batch size (graphs run padded batches): rounding, not a different function
        assert np.abs(probs - ref[0].cpu().numpy()).max() < 5e-3
        assert np.abs(nxt - ref[1].cpu().numpy()).max() < 5e-3

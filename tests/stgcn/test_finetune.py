"""Starting training from a checkpoint: the backbone copied, new classifier heads, the predictor kept."""

from __future__ import annotations

import torch

import stgcn
from stgcn.checkpoint import build_model, load_model, save_checkpoint
from stgcn.config import serving_config
from stgcn.finetune import adopt_architecture, init_from_checkpoint


def fresh_model(init_from: str, names: list[str]) -> tuple[torch.nn.Module, dict]:
    cfg = adopt_architecture({"model": {"dropout": 0.3, "num_class": 99}, "data": {"normalisation": {"name": "none"}},
                              "class_names": names, "train": {"init_from": init_from}})
    return build_model(serving_config(cfg, len(names))["model"]), cfg


def test_the_shipped_multi_stream_model_gives_its_backbone_and_predictor_to_a_new_head():
    source = load_model(stgcn.DEFAULT_WEIGHTS)
    model, cfg = fresh_model("default", ["a", "b", "c"])
    assert cfg["data"]["normalisation"] == source.config["normalisation"]
    assert cfg["model"]["streams"] == source.config["model"]["streams"] and cfg["model"]["dropout"] == 0.3
    summary = init_from_checkpoint(model, "default", ["a", "b", "c"], freeze_blocks=6)
    names = source.config["model"]["streams"]
    assert summary["fresh"] == [f"nets.{n}.fcn" for n in sorted(names)]
    src, dst = source.state_dict(), model.state_dict()
    for key, value in dst.items():
        if ".fcn." in key:
            assert value.shape[0] == 3
        else:
            assert torch.equal(value, src[key]), key
    assert any(k.startswith(f"nets.{names[0]}.predictor.") for k in dst)

    net = model.nets[names[0]]
    fixed = [p for m in (net.data_bn, *net.st_gcn_networks[:6]) for p in m.parameters()]
    assert fixed and not any(p.requires_grad for p in fixed)
    assert all(p.requires_grad for p in net.st_gcn_networks[6].parameters())
    before = {k: v.clone() for k, v in net.data_bn.state_dict().items()}
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(4, 3, 32, 18, 1)
    torch.nn.functional.cross_entropy(model(x).flatten(0, 1), torch.tensor([0, 1, 2, 0] * 2)).backward()
    optimizer.step()
    assert all(torch.equal(v, net.data_bn.state_dict()[k]) for k, v in before.items())  # running stats too
    assert all(torch.equal(p, src[k]) for k, p in model.state_dict().items() if ".st_gcn_networks.0." in k)


def test_a_single_stream_checkpoint_keeps_its_head_only_for_the_same_classes(tmp_path):
    torch.manual_seed(0)
    net = build_model({"in_channels": 3, "num_class": 3, "graph_args": {"layout": "openpose", "strategy": "spatial"},
                       "predictor": True, "coords": 2})
    config = {"model": {"in_channels": 3, "num_class": 3, "graph_args": {"layout": "openpose", "strategy": "spatial"},
                        "predictor": True, "coords": 2},
              "class_names": ["a", "b", "c"], "normalisation": {"name": "person_centric"}, "window": 64}
    path = save_checkpoint(tmp_path / "one.pt", net, config)
    same, _ = fresh_model(str(path), ["a", "b", "c"])
    assert init_from_checkpoint(same, path, ["a", "b", "c"])["fresh"] == []
    assert torch.equal(same.fcn.weight, net.fcn.weight) and torch.equal(same.predictor.net[0].weight,
                                                                         net.predictor.net[0].weight)
    other, cfg = fresh_model(str(path), ["x", "y", "z"])
    assert cfg["data"]["normalisation"] == {"name": "person_centric"}
    assert init_from_checkpoint(other, path, ["x", "y", "z"])["fresh"] == ["fcn"]
    assert not torch.equal(other.fcn.weight, net.fcn.weight)
    assert torch.equal(other.st_gcn_networks[9].tcn[2].weight, net.st_gcn_networks[9].tcn[2].weight)


def test_a_fine_tune_may_give_the_decoder_a_linear_base(tmp_path):
    """How the shipped decoder was made: a `last`-base checkpoint, `predictor_base: linear` in a
    config that trains the decoder; its hidden layers are kept, its output layer (now with gates)
    and filter are new. A run that only classifies keeps the checkpoint's decoder as it is."""
    torch.manual_seed(0)
    model_cfg = {"in_channels": 3, "num_class": 3, "graph_args": {"layout": "openpose", "strategy": "spatial"},
                 "predictor": True, "coords": 2, "predictor_horizon": 4, "predictor_history": 5}
    net = build_model(model_cfg)
    path = save_checkpoint(tmp_path / "last.pt", net, {"model": model_cfg, "class_names": ["a", "b", "c"],
                                                       "normalisation": {"name": "person_centric"}, "window": 64})
    kept = adopt_architecture({"model": {"predictor_base": "linear", "predictor_horizon": 10},
                               "class_names": ["a", "b", "c"], "train": {"init_from": str(path)}})
    assert "predictor_base" not in kept["model"] and kept["model"]["predictor_horizon"] == 4, \
        "a run that only classifies keeps the checkpoint's decoder, whatever its base config says"
    cfg = adopt_architecture({"model": {"predictor_base": "linear"}, "class_names": ["a", "b", "c"],
                              "train": {"init_from": str(path), "task": "predict"}})
    assert cfg["model"]["predictor_base"] == "linear" and cfg["model"]["predictor_horizon"] == 4
    model = build_model(serving_config(cfg, 3)["model"])
    summary = init_from_checkpoint(model, path, ["a", "b", "c"])
    assert set(summary["fresh"]) == {"predictor.net.5", "predictor.filter"}, summary
    assert torch.equal(model.predictor.net[1].weight, net.predictor.net[1].weight)
    assert model.predictor.net[5].out_channels == 4 * 3 and not model.predictor.filter.any()

"""Checkpoint round trip and clear errors for bad checkpoint files."""

import pytest
import torch

from stgcn import STGCN, CheckpointError, load_model, save_checkpoint
from stgcn.model import BLOCKS


def _project_model():
    cfg = {"in_channels": 3, "num_class": 5, "graph_args": {"layout": "openpose", "strategy": "spatial"},
           "predictor": True, "coords": 2}
    model = STGCN(**cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return cfg, model


def test_project_checkpoint_round_trip_keeps_config_and_outputs(tmp_path):
    cfg, model = _project_model()
    config = {"model": cfg, "class_names": list("abcde"), "normalisation": {"name": "person_centric"},
              "window": 48}
    path = save_checkpoint(tmp_path / "m.pt", model, config, meta={"epoch": 3})
    assert not list(tmp_path.glob("*.tmp")), "no temporary file is left behind"
    loaded = load_model(path)
    assert loaded.config["class_names"] == list("abcde") and loaded.config["window"] == 48
    x, recent = torch.randn(2, 3, 48, 18, 2), torch.randn(2, 3, 2, 18, 2).abs()
    with torch.no_grad():
        a, b = model(x, recent), loaded(x, recent)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_original_state_dict_has_the_published_172_keys():
    keys = STGCN(3, 400).state_dict().keys()
    assert len(keys) == 172
    assert {"A", "data_bn.weight", "fcn.weight", "edge_importance.9", "st_gcn_networks.4.residual.1.running_var",
            "st_gcn_networks.0.tcn.3.weight", "st_gcn_networks.9.gcn.conv.bias"} <= set(keys)
    assert not any(k.startswith("st_gcn_networks.0.residual") for k in keys)
    assert len(BLOCKS) == 10


def test_state_dict_without_num_batches_tracked_loads(tmp_path):
    sd = {k: v for k, v in STGCN(3, 400).state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").config["model"]["num_class"] == 400


@pytest.mark.parametrize("case,match", [
    ("missing", "no such checkpoint"),
    ("garbage", "not a readable PyTorch checkpoint"),
    ("truncated", "not a readable PyTorch checkpoint"),
    ("not_stgcn", "missing key"),
    ("extra_key", "unexpected keys"),
    ("bad_shape", "shape mismatch"),
    ("nan", "non-finite"),
    ("wrong_classes", "400 classes"),
    ("wrong_layout", "25 joints"),
    ("list", "neither an ST-GCN state dict"),
])
def test_bad_checkpoints_give_one_clear_error_naming_the_file(tmp_path, case, match):
    path = tmp_path / f"{case}.pt"
    sd = STGCN(3, 400).state_dict()
    kwargs = {}
    if case == "garbage":
        path.write_bytes(b"this is not a checkpoint")
    elif case == "truncated":
        torch.save(sd, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "not_stgcn":
        torch.save({"weight": torch.zeros(3)}, path)
    elif case == "extra_key":
        torch.save({**sd, "head.weight": torch.zeros(2)}, path)
    elif case == "bad_shape":
        torch.save({**sd, "st_gcn_networks.3.gcn.conv.weight": torch.zeros(192, 64, 1, 2)}, path)
    elif case == "nan":
        torch.save({**sd, "fcn.bias": torch.full((400,), float("nan"))}, path)
    elif case == "wrong_classes":
        torch.save(sd, path)
        kwargs = {"num_class": 60}
    elif case == "wrong_layout":
        torch.save(STGCN(3, 60, {"layout": "ntu-rgb+d"}).state_dict(), path)
        kwargs = {"layout": "openpose"}
    elif case == "list":
        torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match=match) as info:
        load_model(path, **kwargs)
    message = str(info.value)
    assert str(path) in message and "\n" not in message

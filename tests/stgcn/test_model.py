"""Parity of the model with an independent float64 re-implementation of the original forward.

The reference below is written from the published description (REFERENCE.md section 1) with
plain tensor ops on a state dict: it shares no code with ``stgcn.model``. Original-format
checkpoints (plain state dicts) go through ``stgcn.load_model`` and must give its logits.
"""

import copy

import numpy as np
import pytest
import torch

from stgcn import STGCN, load_model
from stgcn.graph import Graph

EPS = 1e-5
STRIDES = (1, 1, 1, 1, 2, 1, 1, 2, 1, 1)


def _bn(x, sd, prefix, channel_dim=1):
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    mean, var = sd[prefix + ".running_mean"].view(shape), sd[prefix + ".running_var"].view(shape)
    w, b = sd[prefix + ".weight"].view(shape), sd[prefix + ".bias"].view(shape)
    return (x - mean) / torch.sqrt(var + EPS) * w + b


def _conv1x1(x, w, b, stride=1):
    x = x[:, :, ::stride]
    return torch.einsum("oc,nctv->notv", w[:, :, 0, 0], x) + b.view(1, -1, 1, 1)


def _temporal_conv(x, w, b, stride):
    """(9, 1) convolution, padding 4, stride along time, as shifted sums."""
    k = w.shape[2]
    pad = (k - 1) // 2
    t = x.shape[2]
    xp = torch.nn.functional.pad(x, (0, 0, pad, pad))
    out = sum(torch.einsum("oc,nctv->notv", w[:, :, i, 0], xp[:, :, i:i + t]) for i in range(k))
    return out[:, :, ::stride] + b.view(1, -1, 1, 1)


def reference_forward(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """The original ST-GCN forward in float64 from its state dict alone."""
    sd = {k: v.double() for k, v in sd.items()}
    x = x.double()
    n, c, t, v, m = x.shape
    a = sd["A"]
    k = a.shape[0]
    # data_bn over (V*C) with V the outer index, then back to (N*M, C, T, V)
    h = x.permute(0, 4, 3, 1, 2).reshape(n * m, v * c, t)
    h = _bn(h, sd, "data_bn")
    h = h.reshape(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)
    for i, stride in enumerate(STRIDES):
        p = f"st_gcn_networks.{i}."
        if i == 0:
            res = 0
        elif p + "residual.0.weight" in sd:
            res = _bn(_conv1x1(h, sd[p + "residual.0.weight"], sd[p + "residual.0.bias"], stride), sd, p + "residual.1")
        else:
            res = h
        g = _conv1x1(h, sd[p + "gcn.conv.weight"], sd[p + "gcn.conv.bias"])
        g = g.reshape(g.shape[0], k, -1, g.shape[2], v)
        adj = a * sd[f"edge_importance.{i}"]
        g = (g.unsqueeze(-1) * adj.view(1, k, 1, 1, v, v)).sum(dim=(1, 4))  # sum over k and v
        g = torch.relu(_bn(g, sd, p + "tcn.0"))
        g = _temporal_conv(g, sd[p + "tcn.2.weight"], sd[p + "tcn.2.bias"], stride)
        h = torch.relu(_bn(g, sd, p + "tcn.3") + res)
    pooled = h.mean(dim=(2, 3)).reshape(n, m, -1).mean(dim=1)
    return pooled @ sd["fcn.weight"][:, :, 0, 0].T + sd["fcn.bias"]


def randomized_state(layout: str, num_class: int, seed: int) -> dict:
    """A state dict with every tensor random (BN statistics included), as a trained one would be."""
    g = torch.Generator().manual_seed(seed)
    model = STGCN(3, num_class, {"layout": layout, "strategy": "spatial"})
    sd = {}
    for key, value in model.state_dict().items():
        if key == "A" or key.endswith("num_batches_tracked"):
            sd[key] = value.clone()
        elif key.endswith("running_var"):
            sd[key] = torch.rand(value.shape, generator=g) + 0.5
        elif key.startswith("edge_importance"):
            sd[key] = 1 + 0.3 * torch.randn(value.shape, generator=g)
        elif key.endswith("weight") and value.dim() > 1:
            sd[key] = torch.randn(value.shape, generator=g) * (2.0 / value[0].numel()) ** 0.5
        else:
            sd[key] = 0.2 * torch.randn(value.shape, generator=g)
    return sd


def realistic_batch(layout_joints: int, t: int, seed: int) -> torch.Tensor:
    """Batch of 3: a full two-person sample, one with an absent second person, one zero-padded tail."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 3, t, layout_joints, 2, generator=g)
    x[1, ..., 1] = 0
    x[2, :, t // 3:] = 0
    return x


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("layout,joints,num_class,t", [
    ("openpose", 18, 400, 300), ("ntu-rgb+d", 25, 60, 150)])
def test_original_checkpoint_reproduces_reference_logits(tmp_path, layout, joints, num_class, t):
    sd = randomized_state(layout, num_class, seed=joints)
    path = tmp_path / "st_gcn.original.pt"
    torch.save({"module." + k: v for k, v in sd.items()}, path)  # as saved from DataParallel
    model = load_model(path)
    assert model.config["model"]["graph_args"]["layout"] == layout
    assert model.config["model"]["num_class"] == num_class
    assert not model.training
    x = realistic_batch(joints, t, seed=1)
    with torch.no_grad():
        got = model(x)
    ref = reference_forward(sd, x)
    assert got.shape == (3, num_class) and got.dtype == torch.float32
    assert rel_err(got, ref) < 1e-4
    assert got.argmax(1).tolist() == ref.argmax(1).tolist()


def test_float16_checkpoint_loads_and_matches_its_values(tmp_path):
    sd = randomized_state("openpose", 10, seed=3)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    path = tmp_path / "half.pt"
    torch.save(half, path)
    model = load_model(path, layout="openpose", num_class=10)
    x = realistic_batch(18, 64, seed=2)
    ref = reference_forward({k: v.float() for k, v in half.items()}, x)
    with torch.no_grad():
        assert rel_err(model(x), ref) < 1e-4


def test_model_matches_reference_in_training_mode_shapes_and_grad():
    model = STGCN(3, 7, {"layout": "kinect-v1"}, dropout=0.5)
    x = torch.randn(2, 3, 32, 20, 2, requires_grad=True)
    out = model(x)
    out.sum().backward()
    assert out.shape == (2, 7) and x.grad is not None and torch.isfinite(x.grad).all()


def test_original_graph_matches_checkpoint_buffer():
    sd = randomized_state("ntu-rgb+d", 60, seed=0)
    np.testing.assert_allclose(sd["A"].numpy(), Graph("ntu-rgb+d", "spatial").A)


def test_channels_last_network_is_the_same_function_forward_and_backward():
    """``model.to(memory_format=torch.channels_last)`` (training on GPUs) runs the NHWC graph convolution."""
    torch.manual_seed(0)
    ref = STGCN(3, 10, predictor=True).double().train()
    nhwc = copy.deepcopy(ref).to(memory_format=torch.channels_last)
    assert not ref.channels_last and nhwc.channels_last
    x, recent = torch.randn(3, 3, 40, 18, 2, dtype=torch.double), torch.randn(3, 3, 2, 18, 2, dtype=torch.double)
    outs = [model(x, recent) for model in (ref, nhwc)]
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for (logits, pred), model in zip(outs, (ref, nhwc)):
        (logits.square().sum() + pred.sum()).backward()
    for (name, p), q in zip(ref.named_parameters(), nhwc.parameters()):
        # biases right before a BatchNorm have zero gradient: compare on the largest gradient's scale
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-9 * float(p.grad.abs().max()) + 1e-12,
                                   msg=name)
    for a, b in zip(ref.buffers(), nhwc.buffers()):
        torch.testing.assert_close(a, b)

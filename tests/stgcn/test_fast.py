"""The serving network (BN folded, joint-major, reduced precision) computes the original's function."""

import pytest
import torch

from stgcn import STGCN
from stgcn.fast import FastSTGCN
from tests.stgcn.test_model import randomized_state, realistic_batch, rel_err


def _model(layout: str, num_class: int, seed: int, predictor: bool = False, padding: str = "centred") -> STGCN:
    model = STGCN(3, num_class, {"layout": layout, "strategy": "spatial"}, predictor=predictor, coords=2,
                  temporal_padding=padding)
    state = randomized_state(layout, num_class, seed)
    if predictor:
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("predictor")})
        torch.nn.init.normal_(model.predictor.net[-1].weight, std=0.1)
        state["predictor.net.5.weight"] = model.predictor.net[-1].weight.detach().clone()
    model.load_state_dict(state)
    return model.eval()


@pytest.mark.parametrize("layout,joints,num_class,t,padding", [("openpose", 18, 400, 64, "centred"),
                                                               ("ntu-rgb+d", 25, 60, 45, "centred"),
                                                               ("openpose", 18, 10, 45, "causal")])
def test_float32_matches_the_original_with_trained_statistics(layout, joints, num_class, t, padding):
    model = _model(layout, num_class, seed=3, padding=padding)
    x = realistic_batch(joints, t, seed=4)
    fast = FastSTGCN(model, torch.float32)
    with torch.no_grad():
        assert rel_err(fast(x), model(x)) < 1e-5
        assert rel_err(fast(x[:1]), model(x[:1])) < 1e-5  # batch 1: no copy hides a stride mix-up


def test_predictor_head_and_bf16_within_1e_2():
    model = _model("openpose", 27, seed=5, predictor=True)
    x = realistic_batch(18, 48, seed=6)
    recent = torch.randn(3, 3, 2, 18, 2)
    with torch.no_grad():
        ref_logits, ref_next = model(x, recent)
        logits, nxt = FastSTGCN(model, torch.float32)(x, recent)
        assert rel_err(logits, ref_logits) < 1e-5 and rel_err(nxt, ref_next) < 1e-5
        logits, nxt = FastSTGCN(model, torch.bfloat16)(x, recent)
    assert logits.dtype == torch.float32 and nxt.dtype == torch.float32
    assert rel_err(logits, ref_logits) < 1e-2 and rel_err(nxt, ref_next) < 1e-2
    with pytest.raises(RuntimeError, match="no next-frame predictor"):
        FastSTGCN(_model("openpose", 27, seed=5))(x, recent)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("w,k,c,rows", [(18, 3, 64, 1000), (25, 3, 256, 333), (18, 3, 3, 7)])
def test_triton_aggregation_matches_torch(w, k, c, rows):
    from stgcn.aggregate import aggregate, aggregate_reference

    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(w, k * w, device="cuda", generator=g).half()
    y = torch.randn(w * rows, k * c, device="cuda", generator=g).half()
    bias = torch.randn(w, c, device="cuda", generator=g)
    ref = aggregate_reference(a.double(), y.double(), bias.double(), k)
    assert rel_err(aggregate(a, y, bias, k), ref) < 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_aggregation_writes_a_causal_convolutions_zero_frames_before_each_sequence():
    from stgcn.aggregate import aggregate, aggregate_reference

    g = torch.Generator(device="cuda").manual_seed(0)
    w, k, c, frames, sequences = 18, 3, 64, 75, 6
    a = torch.randn(w, k * w, device="cuda", generator=g).half()
    y = torch.randn(w * frames * sequences, k * c, device="cuda", generator=g).half()
    bias = torch.randn(w, c, device="cuda", generator=g)
    out = aggregate(a, y, bias, k, frames, 8).view(w, sequences, frames + 8, c)
    ref = aggregate_reference(a.double(), y.double(), bias.double(), k, frames, 8).view(w, sequences, frames + 8, c)
    assert torch.equal(out[:, :, :8], torch.zeros_like(out[:, :, :8]))
    assert rel_err(out, ref) < 1e-2

"""The continual form of ST-GCN: frame by frame, exact where the formulation is (zero state as the
left padding, the flush as the right), each state row at its own phase of the strides."""

import pytest
import torch

from stgcn.checkpoint import build_model
from stgcn.continual import Continual
from stgcn.model import STGCN, first_frames, pool_since_start


def _randomise_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so a misplaced norm or offset cannot pass unnoticed."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _clips(n: int, t: int, m: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, t, 18, m, generator=g)
    x[:, 2] = torch.rand(n, t, 18, m, generator=g) + 0.1  # a confidence channel
    x[:, 2, :, 14:] = 0  # joints never seen
    if n > 1 and m > 1:
        x[1, :, :, :, 1] = 0  # an empty person slot
    return x


@pytest.mark.parametrize("t", [40, 5])
def test_stepped_and_flushed_clips_equal_the_regular_model(t):
    torch.manual_seed(0)
    net = _randomise_norms(STGCN(3, 10))
    x = _clips(3, t)
    scores, answered = Continual(net, window=t).clip(x)["flushed"]
    assert torch.allclose(scores, net(x), atol=1e-4, rtol=1e-4)
    assert answered.all()


def test_one_person_scores_as_in_a_window_whose_other_slot_is_empty():
    torch.manual_seed(0)
    net = _randomise_norms(STGCN(3, 10))
    x = _clips(2, 50)
    x[..., 1] = 0
    scores, _ = Continual(net, window=50).clip(x[..., :1], empty_slots=1)["flushed"]
    assert torch.allclose(scores, net(x), atol=1e-4, rtol=1e-4)


def test_multi_stream_model_steps_each_view_and_fuses_as_the_regular_one():
    torch.manual_seed(0)
    model = _randomise_norms(build_model({"in_channels": 3, "num_class": 7, "coords": 2,
                                          "graph_args": {"layout": "openpose", "strategy": "spatial"},
                                          "streams": ["joint", "bone", "joint_motion", "bone_motion"],
                                          "stream_weights": [1, 2, 1, 1]}))
    x = _clips(2, 40)
    scores, _ = Continual(model, window=40).clip(x)["flushed"]
    assert torch.allclose(scores, model(x), atol=1e-4, rtol=1e-4)


def test_rows_at_different_phases_step_in_one_batch():
    torch.manual_seed(0)
    net = _randomise_norms(STGCN(3, 10))  # the joint stream reads the newest of the two frames only
    x = _clips(2, 90, m=1)[..., 0]  # (N, C, T, V)
    x = torch.cat([torch.zeros_like(x[:, :, :1]), x], dim=2)  # a frame before the first: two frames a step
    alone = []
    for i in range(2):
        co = Continual(net, window=96, slots=1)
        for t in range(90):
            co.step(x[i:i + 1, :, t:t + 2], torch.tensor([0]))
        alone.append(co.logits(torch.tensor([0])))
    co = Continual(net, window=96, slots=2)
    starts = (0, 3)  # row 1 starts 3 frames later: its strides fall on other steps
    for t in range(93):
        rows = [r for r in (0, 1) if 0 <= t - starts[r] < 90]
        frames = torch.cat([x[r:r + 1, :, t - starts[r]:t - starts[r] + 2] for r in rows])
        co.step(frames, torch.tensor(rows))
    assert torch.allclose(co.logits(torch.tensor([0, 1])), torch.cat(alone), atol=1e-4)


def test_a_live_row_answers_once_its_last_block_has_an_output_and_reset_forgets_it():
    torch.manual_seed(0)
    net = _randomise_norms(STGCN(3, 10))
    co = Continual(net, window=96, slots=1)
    rows = torch.tensor([0])
    x = _clips(1, co.delay + 1, m=1)[..., 0]
    for t in range(co.delay):
        co.step(x[:, :, max(0, t - 1):t + 1], rows)
    assert not co.ready(rows).any(), "no output before the delay"
    co.step(x[:, :, -2:], rows)
    assert co.ready(rows).all()
    co.reset(rows)
    assert not co.ready(rows).any()


def test_fixed_shape_steps_equal_subsetting_for_rows_at_different_phases():
    torch.manual_seed(0)
    model = _randomise_norms(build_model({"in_channels": 3, "num_class": 7, "coords": 2,
                                          "graph_args": {"layout": "openpose", "strategy": "spatial"},
                                          "streams": ["joint", "joint_motion"]}))
    x = _clips(3, 125, m=1)[..., 0]  # (N, C, T, V)
    starts = (0, 1, 6)  # each row at its own phase of the strides
    out = {}
    for fixed in (False, True):
        co = Continual(model, window=96, slots=3, fixed=fixed)
        assert co.fixed is fixed
        for t in range(131):
            rows = [r for r in range(3) if 0 <= t - starts[r] < 125]
            if rows:
                i = [t - starts[r] for r in rows]
                frames = torch.stack([torch.stack([x[r, :, max(j - 1, 0)], x[r, :, j]], dim=1) for r, j in zip(rows, i)])
                co.step(frames, torch.tensor(rows), first=torch.tensor([j == 0 for j in i]))
        rows = torch.arange(3)
        out[fixed] = (co.logits(rows), co.ready(rows, 12))
        assert co.ready(rows, 12).tolist() == [co.outputs_after(125) >= 12] * 3 == [True] * 3
    assert torch.allclose(out[True][0], out[False][0], atol=1e-5)
    assert (out[True][1] == out[False][1]).all()


def test_a_first_frame_marked_in_a_two_frame_batch_is_a_one_frame_step():
    torch.manual_seed(0)
    model = _randomise_norms(build_model({"in_channels": 3, "num_class": 7, "coords": 2,
                                          "graph_args": {"layout": "openpose", "strategy": "spatial"},
                                          "streams": ["joint", "joint_motion"]}))
    x = _clips(1, 3, m=1)[..., 0]
    one, two = Continual(model, window=96, slots=1), Continual(model, window=96, slots=1)
    rows = torch.tensor([0])
    one.step(x[:, :, :1], rows)
    two.step(torch.cat([x[:, :, 2:3], x[:, :, :1]], dim=2), rows, first=torch.tensor([True]))
    for t in (1, 2):
        for co in (one, two):
            co.step(x[:, :, t - 1:t + 1], rows)
    for a, b in zip(one.nets, two.nets):
        assert all(torch.equal(s, u) for s, u in zip(a._state["tcn"], b._state["tcn"]))


@pytest.mark.parametrize("fixed", [False, True])
def test_a_causal_network_answers_live_as_the_regular_one_on_the_frames_so_far(fixed):
    torch.manual_seed(0)
    model = _randomise_norms(build_model({"in_channels": 3, "num_class": 7, "coords": 2,
                                          "graph_args": {"layout": "openpose", "strategy": "spatial"},
                                          "streams": ["joint", "joint_motion"], "temporal_padding": "causal",
                                          "predictor": True, "predictor_history": 3}))
    x = _clips(1, 24, m=1)
    co = Continual(model, window=24, slots=1, fixed=fixed)
    assert co.delay == 0
    rows = torch.tensor([0])
    for t in range(24):
        co.step(x[:, :, max(0, t - 1):t + 1, :, 0], rows)
        assert co.ready(rows).all(), "a causal state answers from its first frame"
        if t in (0, 5, 23):  # the regular model's answer on the frames so far: no delay, no flush
            assert torch.allclose(co.logits(rows), model(x[:, :, :t + 1]), atol=1e-4, rtol=1e-4)
    recent = x[:, :, -3:]
    _, ahead = model.nets["joint"](x, recent)
    assert torch.allclose(co.next_frame(rows, recent[..., 0:1]), ahead, atol=1e-4)
    flushed = co.logits(rows)
    co.flush(rows)
    assert torch.equal(co.logits(rows), flushed), "a causal network has no right padding to flush"


def test_causal_padding_keeps_the_keys_and_shapes_and_reads_no_later_frame():
    torch.manual_seed(0)
    centred, causal = STGCN(3, 5), STGCN(3, 5, temporal_padding="causal")
    assert causal.load_state_dict(centred.state_dict()) is not None  # strict: the same keys and shapes
    causal.eval()
    x = _clips(1, 32, m=1)
    later = x.clone()
    later[:, :, 20:] += 1.0
    a, b = causal.features(x), causal.features(later)
    assert a.shape == centred.eval().features(x).shape
    assert torch.equal(a[:, :, :5], b[:, :, :5]), "outputs before frame 20 (strided by 4) do not read it"
    assert not torch.equal(a[:, :, 5:], b[:, :, 5:])
    with pytest.raises(ValueError, match="temporal_padding"):
        STGCN(3, 5, temporal_padding="future")


def test_a_causal_network_pools_a_short_clip_from_its_first_frame_and_an_empty_window_whole():
    per_time = torch.arange(6.0).view(1, 1, 1, 6).repeat(1, 2, 3, 1)  # (N, M, C, T'): output i is i
    first = torch.tensor([[9, 24]])  # slot 0 from frame 9 (outputs 3, 4, 5 end at 12, 16, 20); slot 1 empty
    pooled = pool_since_start(per_time, first, stride=4)
    assert torch.equal(pooled[0, 0], torch.full((3,), 4.0)) and torch.equal(pooled[0, 1], torch.full((3,), 2.5))
    x = torch.zeros(1, 3, 24, 18, 2)
    x[:, :, 9:, :, 0] = 1.0
    assert first_frames(x).tolist() == [[9, 24]]

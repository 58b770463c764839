"""Next-frame predictor head, baselines and MPJPE on hand-computed cases."""

import numpy as np
import pytest
import torch

from stgcn import STGCN
from stgcn.predictor import constant_velocity, mpjpe, zero_velocity


def _frames():
    # (C=3: x, y, conf; 2 frames; V=3; M=1)
    recent = torch.zeros(1, 3, 2, 3, 1)
    recent[0, :, 0, :, 0] = torch.tensor([[0.0, 1.0, 5.0], [0.0, 1.0, 5.0], [1.0, 1.0, 0.0]])
    recent[0, :, 1, :, 0] = torch.tensor([[1.0, 1.0, 2.0], [2.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    return recent


def test_baselines_by_hand():
    recent = _frames()
    zv = zero_velocity(recent)
    assert zv[0, :, :, 0].tolist() == [[1.0, 1.0, 2.0], [2.0, 1.0, 2.0], [1.0, 1.0, 1.0]]
    cv = constant_velocity(recent, coords=2)
    # joint 0 moved (+1, +2): continues; joint 1 still; joint 2 absent before: zero velocity
    assert cv[0, :, :, 0].tolist() == [[2.0, 1.0, 2.0], [4.0, 1.0, 2.0], [1.0, 1.0, 1.0]]
    np.testing.assert_allclose(constant_velocity(recent.numpy(), coords=2), cv.numpy())


def test_mpjpe_counts_only_joints_present_in_both():
    target = torch.zeros(3, 3, 1)
    target[:, :, 0] = torch.tensor([[0.0, 3.0, 9.0], [0.0, 4.0, 9.0], [1.0, 1.0, 0.0]])
    pred = torch.zeros(3, 3, 1)
    pred[:, :, 0] = torch.tensor([[3.0, 3.0, 0.0], [4.0, 4.0, 0.0], [1.0, 0.0, 1.0]])
    # joint 0: error 5; joint 1: absent in pred; joint 2: absent in target
    assert float(mpjpe(pred, target, coords=2)) == pytest.approx(5.0)
    total, count = mpjpe(pred.numpy(), target.numpy(), coords=2, reduce=False)
    assert (float(total), int(count)) == (5.0, 1)
    # 3D layout: presence is any non-zero coordinate
    a, b = torch.tensor([[[1.0]], [[2.0]], [[2.0]]]), torch.tensor([[[1.0]], [[2.0]], [[0.0]]])
    assert float(mpjpe(a, b)) == pytest.approx(2.0)
    assert torch.isnan(mpjpe(torch.zeros(3, 2, 1), b))


def test_predictor_head_shapes_and_zero_velocity_start():
    model = STGCN(3, 6, {"layout": "openpose"}, predictor=True, coords=2).eval()
    x = torch.randn(4, 3, 40, 18, 2)
    recent = torch.rand(4, 3, 2, 18, 2)
    recent[:, 2, :, 5] = 0  # an absent joint
    with torch.no_grad():
        logits, nxt = model(x, recent)
    assert logits.shape == (4, 6) and nxt.shape == (4, 3, 18, 2)
    # freshly initialised, the residual is zero: the prediction is the last frame
    torch.testing.assert_close(nxt, recent[:, :, -1])
    with torch.no_grad():
        model.predictor.net[-1].bias.fill_(0.1)
        _, moved = model(x, recent)
    assert torch.allclose(moved[:, :2, 5], recent[:, :2, -1, 5]), "absent joints are not moved"
    assert torch.allclose(moved[:, :2, 0], recent[:, :2, -1, 0] + 0.1 * model.predictor.step)
    torch.testing.assert_close(moved[:, 2], recent[:, 2, -1]), "confidence is carried over"
    with pytest.raises(RuntimeError, match="no next-frame predictor"):
        STGCN(3, 6)(x, recent)

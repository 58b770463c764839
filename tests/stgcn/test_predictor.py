"""Next-frame predictor head, baselines and MPJPE on hand-computed cases."""

import numpy as np
import pytest
import torch

from stgcn import STGCN
from stgcn.model import FILTER_GAIN
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


def test_predictor_head_over_several_frames_ahead():
    model = STGCN(3, 6, {"layout": "openpose"}, predictor=True, coords=2, predictor_horizon=4,
                  predictor_history=5).eval()
    x = torch.randn(2, 3, 40, 18, 1)
    recent = torch.rand(2, 3, 7, 18, 1)  # more frames than the head reads: the last 5 count
    recent[:, 2, :, 5] = 0
    with torch.no_grad():
        _, ahead = model(x, recent)
        assert ahead.shape == (2, 3, 4, 18, 1)
        torch.testing.assert_close(ahead, recent[:, :, -1:].expand(-1, -1, 4, -1, -1))
        model.predictor.net[-1].bias.fill_(0.1)
        _, moved = model(x, recent)
    for h in range(4):  # offsets grow with the frames ahead
        torch.testing.assert_close(moved[:, :2, h, 0], recent[:, :2, -1, 0] + 0.1 * 0.02 * (h + 1))
    torch.testing.assert_close(moved[:, :2, :, 5], recent[:, :2, -1:, 5].expand(-1, -1, 4, -1))
    with pytest.raises(ValueError, match="history"):
        STGCN(3, 6, predictor=True, predictor_history=1)


def _linear_motion_set(tmp_path, frames: int = 40, clips: int = 2, varied: bool = False):
    """Clips of one person translating at a constant pixel speed (image fractions): the same
    velocity in every clip, or (``varied``) a random one per clip."""
    rng = np.random.default_rng(0)
    data = np.zeros((clips, 3, 60, 18, 1), np.float32)
    for i in range(clips):
        base = rng.uniform(0.3, 0.7, (2, 18))
        base[:, 1] = [0.5, 0.3]  # neck
        base[:, 8], base[:, 11] = [0.45, 0.6], [0.55, 0.6]  # hips: a torso to scale by
        t = np.arange(frames)
        velocity = rng.uniform(-0.005, 0.005, 2) if varied else np.array([0.004, -0.002])
        data[i, :2, :frames, :, 0] = base[:, None, :] + velocity[:, None, None] * t[None, :, None]
        data[i, 2, :frames, :, 0] = 1.0
    np.save(tmp_path / "val_data.npy", data)
    import pickle
    with open(tmp_path / "val_label.pkl", "wb") as f:
        pickle.dump(([f"c{i}" for i in range(clips)], [i % 2 for i in range(clips)]), f)


def test_targets_and_baselines_several_frames_ahead(tmp_path):
    from stgcn.data import SkeletonDataset, make_loader
    from stgcn.evaluation import evaluate_prediction

    _linear_motion_set(tmp_path)
    ds = SkeletonDataset(tmp_path / "val_data.npy", tmp_path / "val_label.pkl", window=16,
                         transform="person_centric", next_frame=True, horizon=5, history=4, seed=0)
    item = ds[0]
    assert item["recent"].shape == (3, 4, 18, 1) and item["target"].shape == (3, 5, 18, 1)
    step = item["recent"][:2, -1] - item["recent"][:2, -2]
    for h in range(5):  # local coordinates keep the constant motion
        torch.testing.assert_close(item["target"][:2, h] - item["recent"][:2, -1], (h + 1) * step, atol=1e-5, rtol=0)
    model = STGCN(3, 2, {"layout": "openpose"}, predictor=True, coords=2, predictor_horizon=5,
                  predictor_history=4).eval()
    per_sample: dict = {}
    m = evaluate_prediction(model, make_loader(ds, 2, False, 0), torch.device("cpu"), 2, per_sample=per_sample)
    h = m["horizons"]
    assert h["frames"] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(h["mpjpe_constant_velocity"], 0, atol=1e-5)  # exact on straight lines
    np.testing.assert_allclose(h["mpjpe"], h["mpjpe_zero_velocity"], rtol=1e-6)  # a fresh head repeats frame t
    zv = np.asarray(h["mpjpe_zero_velocity"])
    np.testing.assert_allclose(zv / zv[0], np.arange(1, 6), rtol=1e-4)  # error grows with the frames ahead
    # in the data's units: 0.004 and -0.002 per frame
    np.testing.assert_allclose(m["horizons_data_units"]["mpjpe_zero_velocity"][0], np.hypot(0.004, 0.002), rtol=1e-4)
    assert per_sample["joints"].shape == (2, 5) and per_sample["joints"][:, 0].sum() == m["joints"]


def test_linear_base_starts_at_zero_velocity_extrapolates_present_steps_and_is_gated():
    model = STGCN(3, 6, {"layout": "openpose"}, predictor=True, coords=2, predictor_horizon=3,
                  predictor_history=4, predictor_base="linear").eval()
    x = torch.randn(2, 3, 40, 18, 1)
    recent = torch.rand(2, 3, 4, 18, 1) + 0.1
    recent[:, 2] = 1.0
    recent[:, 2, -2, 7] = 0  # joint 7 absent the frame before the last: its newest step counts as still
    with torch.no_grad():
        _, ahead = model(x, recent)
        torch.testing.assert_close(ahead, recent[:, :, -1:].expand(-1, -1, 3, -1, -1))
        model.predictor.filter.zero_()
        model.predictor.filter[:, 0] = torch.arange(1.0, 4.0) / FILTER_GAIN  # constant velocity
        _, ahead = model(x, recent)
    step = recent[:, :2, -1] - recent[:, :2, -2]
    for h in range(3):
        torch.testing.assert_close(ahead[:, :2, h, :7], recent[:, :2, -1, :7] + (h + 1) * step[:, :, :7])
        torch.testing.assert_close(ahead[:, :2, h, 7], recent[:, :2, -1, 7])
    with torch.no_grad():  # the gates (the MLP's third output per frame ahead) can switch the filter off
        model.predictor.net[-1].bias.view(3, 3)[:, 2] = -30.0
        _, gated = model(x, recent)
    torch.testing.assert_close(gated, recent[:, :, -1:].expand(-1, -1, 3, -1, -1))
    with pytest.raises(ValueError, match="predictor base"):
        STGCN(3, 6, predictor=True, predictor_base="cubic")


def test_linear_base_learns_constant_motion_at_the_recipes_learning_rate(tmp_path):
    """The filter's gain lets SGD at the backbone's rate (0.1) find each clip's own velocity in a
    few dozen steps, where the MLP alone is still far from it."""
    from stgcn.data import SkeletonDataset
    from stgcn.train import predictor_loss

    _linear_motion_set(tmp_path, clips=8, varied=True)
    ds = SkeletonDataset(tmp_path / "val_data.npy", tmp_path / "val_label.pkl", window=16,
                         transform="person_centric", next_frame=True, horizon=3, history=4, seed=0)
    batch = {k: torch.stack([ds[i][k] for i in range(8)]) for k in ("x", "recent", "target")}
    errors = {}
    for base in ("last", "linear"):
        torch.manual_seed(0)
        model = STGCN(3, 2, {"layout": "openpose"}, predictor=True, coords=2, predictor_horizon=3,
                      predictor_history=4, predictor_base=base, predictor_detach=True)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        for _ in range(40):
            _, pred = model(batch["x"], batch["recent"])
            loss = predictor_loss(pred, batch["target"], batch["recent"][:, :, -1], 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            _, pred = model(batch["x"], batch["recent"])
        errors[base] = float(predictor_loss(pred, batch["target"], batch["recent"][:, :, -1], 2))
    zero = float(predictor_loss(batch["recent"][:, :, -1:].expand(-1, -1, 3, -1, -1), batch["target"],
                                batch["recent"][:, :, -1], 2))
    assert errors["linear"] < 0.2 * zero, (errors, zero)
    assert errors["linear"] < 0.5 * errors["last"], (errors, zero)

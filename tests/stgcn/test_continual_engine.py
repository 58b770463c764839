"""The continual serving engine on a real skeleton clip (the Kinetics clip, both people): it answers
as the window engine does, keeps each person's state apart, and re-synchronises from the window."""

from pathlib import Path

import numpy as np
import pytest

from stgcn import DEFAULT_WEIGHTS
from stgcn.continual_engine import ContinualEngine, RowKey
from stgcn.convert.kinetics import read_kinetics_json
from stgcn.engine import Engine

CLIP = Path(__file__).resolve().parents[3] / "shared" / "data" / "skeleton" / "kinetics_skeleton_--33Lscn6sk.json"


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    x, _ = read_kinetics_json(CLIP)
    return x[..., :190, :, :]  # (C, T, V, M): the clip's frames


def window(clip: np.ndarray, person: int, t: int, w: int) -> np.ndarray:
    """The live window of one person ending at frame t: right-aligned, zeros before, other slot empty."""
    out = np.zeros((3, w, 18, 2), np.float32)
    seg = clip[:, max(0, t + 1 - w):t + 1, :, person]
    out[:, w - seg.shape[1]:, :, 0] = seg
    return out


def test_the_continual_engine_answers_as_the_window_engine(clip):
    regular, engine = Engine(DEFAULT_WEIGHTS, "cpu"), ContinualEngine(DEFAULT_WEIGHTS, "cpu")
    assert engine.mode == "continual" and engine.continual.delay == 0  # the shipped networks are causal
    agree, late = [], []
    for t in range(30, 190, 4):  # stride 4: one new frame stepped, the ones between from the window
        rows = [RowKey("clip", m, m, t) for m in (0, 1)]
        windows = np.stack([window(clip, m, t, engine.window) for m in (0, 1)])
        probs, nxt = engine.submit(windows, rows)()
        ref, _ = regular(windows)
        caught_up = [engine.people[("clip", m)].seq == t for m in (0, 1)]  # every frame so far stepped
        if all(caught_up):
            agree += list(probs.argmax(1) == ref.argmax(1))
            late.append(np.abs(probs - ref).max())
        assert nxt.shape == (2, 3, engine.horizon, 18, 1) and np.isfinite(nxt).all()  # frames t+1..t+10
    assert np.mean(agree) >= 0.8, f"best class as the window engine's in {np.mean(agree):.0%} of windows"
    assert len(late) >= 5 and min(late) > 1e-4, "once caught up, the answers are the state's own"
    assert max(late) < 0.5, "and close to the window's"


def test_a_batch_with_several_windows_of_one_person_equals_them_one_by_one(clip):
    one, many = ContinualEngine(DEFAULT_WEIGHTS, "cpu"), ContinualEngine(DEFAULT_WEIGHTS, "cpu")
    ts = list(range(100, 116))
    windows = np.stack([window(clip, 0, t, one.window) for t in ts])
    rows = [RowKey("clip", 0, 0, t) for t in ts]
    first = np.stack([window(clip, 0, 99, one.window)])
    for engine in (one, many):
        engine.submit(first, [RowKey("clip", 0, 0, 99)])()  # warm from the window
    alone = np.concatenate([one.submit(windows[i:i + 1], rows[i:i + 1])()[0] for i in range(len(ts))])
    together, _ = many.submit(windows, rows)()  # a file stream's windows, queued in one batch
    assert np.abs(alone - together).max() < 1e-5


def test_a_new_track_in_the_slot_restarts_the_state_from_the_window(clip):
    engine, fresh = ContinualEngine(DEFAULT_WEIGHTS, "cpu"), ContinualEngine(DEFAULT_WEIGHTS, "cpu")
    for t in range(60, 150):
        engine.submit(window(clip, 0, t, engine.window)[None], [RowKey("s", 0, 7, t)])()
    w = window(clip, 1, 150, engine.window)[None]  # another person takes the slot
    switched, _ = engine.submit(w, [RowKey("s", 0, 8, 150)])()
    new, _ = fresh.submit(w, [RowKey("s", 0, 8, 150)])()
    assert np.abs(switched - new).max() < 1e-5, "nothing of the person before is left"
    engine.release("s")
    assert not engine.people


def test_fixed_shape_serving_answers_as_subsetting(clip):
    plain, fixed = ContinualEngine(DEFAULT_WEIGHTS, "cpu"), ContinualEngine(DEFAULT_WEIGHTS, "cpu", fixed=True)
    assert not plain.continual.fixed and fixed.continual.fixed
    for t in range(100, 140, 3):  # person 1 joins later: the two states at different phases
        ms = (0, 1) if t >= 110 else (0,)
        rows = [RowKey("clip", m, m, t) for m in ms]
        windows = np.stack([window(clip, m, t, plain.window) for m in ms])
        a, fa = plain.submit(windows, rows)()
        b, fb = fixed.submit(windows, rows)()
        assert np.abs(a - b).max() < 1e-5 and np.abs(fa - fb).max() < 1e-4


def test_a_state_far_behind_catches_up_over_batches(clip):
    engine, regular = ContinualEngine(DEFAULT_WEIGHTS, "cpu", catch_up=8), Engine(DEFAULT_WEIGHTS, "cpu")
    full = ContinualEngine(DEFAULT_WEIGHTS, "cpu", catch_up=engine.window)
    person, lagged = engine._person(RowKey("s", 0, 0, 0)), 0
    for t in range(100, 190):
        w = window(clip, 0, t, engine.window)[None]
        before = person.seq
        probs, _ = engine.submit(w, [RowKey("s", 0, 0, t)])()
        ref, _ = full.submit(w, [RowKey("s", 0, 0, t)])()
        assert person.seq - max(before, t - engine.window) <= 8, "at most catch_up frames a batch"
        lagged += person.seq < t
        if person.answered_at == t:  # not ready: the window form's own answer
            assert np.abs(probs - regular(w)[0]).max() < 1e-5
    assert lagged and person.seq == 189 and person.stepped == full.people[("s", 0)].stepped
    # each frame is normalised by the window it is stepped from (later windows, catching up)
    assert np.abs(probs - ref).max() < 0.02, "caught up: the state answers as one stepped at once"


def test_warm_up_answers_from_the_person_slot_alone_equal_the_window_engine(clip):
    """Until a state is ready the window form answers; on the CPU it runs on the person's slot only
    (half the work) and must give the two-slot window's probabilities and coming frames."""
    import torch

    regular, engine = Engine(DEFAULT_WEIGHTS, "cpu"), ContinualEngine(DEFAULT_WEIGHTS, "cpu")
    windows = np.stack([window(clip, m, t, engine.window) for m, t in ((0, 60), (1, 120), (0, 189))])
    probs, frames = engine._window(torch.from_numpy(windows))
    ref_probs, ref_frames = regular(windows)
    assert np.abs(probs.numpy() - ref_probs).max() < 1e-5
    assert np.abs(frames.numpy() - ref_frames[..., :1]).max() < 1e-4

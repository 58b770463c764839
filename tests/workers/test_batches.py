"""The batch in flight: one sample per person present at a window's last frame, on a real engine."""

from __future__ import annotations

import numpy as np

from pipeline.scheduler import Job
from stgcn.engine import Engine
from workers.batches import BatchInFlight


def job(stream: str, window: np.ndarray, tracks: list[int | None]) -> Job:
    return Job(stream, 40, 1.0, 1.1, 5.0, window, tracks, sum(t is not None for t in tracks))


def test_each_present_person_is_one_sample_and_nobody_gets_no_label(tiny_weights) -> None:
    engine = Engine(tiny_weights, "cpu")
    rng = np.random.default_rng(0)
    two = np.zeros((3, engine.window, 18, 5), np.float32)
    two[:, :, :, [0, 3]] = rng.uniform(0.2, 0.8, (3, engine.window, 18, 2))
    two[2] = np.where(two[2] > 0, 0.9, 0)
    left = two.copy()
    left[:, -1, :, 3] = 0  # person 3 left before the last frame
    nobody = np.zeros_like(two)
    inflight = BatchInFlight(engine, "w")
    inflight.start([job("a", two, [7, None, None, 9, None]), job("b", left, [7, None, None, 9, None]),
                    job("c", nobody, [None] * 5)])
    assert inflight.busy
    results, ran = inflight.finish()
    assert ran and not inflight.busy and [r.stream for r in results] == ["a", "b", "c"]
    assert [p.id for p in results[0].people] == [7, 9] and [p.id for p in results[1].people] == [7]
    assert results[2].people == [], "nobody at the last frame: no label"
    alone = engine(np.concatenate([two[None, ..., :1], np.zeros_like(two[None, ..., :1])], axis=-1))[0][0]
    np.testing.assert_allclose([t.score for t in results[0].people[0].top],
                               np.sort(alone)[::-1][:5], atol=1e-5, err_msg="person 7 classified on their own")
    inflight.start([job("c", nobody, [None] * 5)])
    results, ran = inflight.finish()
    assert not ran and results[0].people == [], "a batch of empty windows runs no model"

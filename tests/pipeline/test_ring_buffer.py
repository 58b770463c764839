"""RingBuffer against a plain list model: order, wraparound, gaps, stale frames, resets."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.ring_buffer import RingBuffer

C, V, M = 3, 5, 2


def frame(value: float) -> np.ndarray:
    """A frame whose every element is ``value``, so windows can be read as sequences."""
    return np.full((C, V, M), value, np.float32)


def values(window: np.ndarray) -> list[float]:
    """The per-time-step value of a window built from :func:`frame`."""
    assert np.all(window == window[:1, :, :1, :1]), "frames must stay intact"
    return window[0, :, 0, 0].tolist()


class ListModel:
    """The obvious reference: a Python list of the current segment's frames."""

    def __init__(self, capacity: int, max_gap: int) -> None:
        self.capacity = capacity
        self.max_gap = max_gap
        self.frames: list[float] = []
        self.last: int | None = None

    def append(self, value: float, seq: int | None) -> int:
        if seq is None:
            seq = None if self.last is None else self.last + 1
        elif self.last is not None:
            if seq <= self.last:
                return 0
            gap = seq - self.last - 1
            if gap > self.max_gap:
                self.frames = []
            else:
                self.frames += [self.frames[-1]] * gap
                self.frames.append(value)
                self.last = seq
                return gap + 1
        self.frames.append(value)
        self.last = seq
        return 1

    def window(self, length: int) -> list[float]:
        tail = self.frames[-min(length, self.capacity):]
        return [0.0] * (length - len(tail)) + tail


def test_window_is_time_ordered_right_aligned_and_zero_padded_on_the_left() -> None:
    buf = RingBuffer(C, length=6, joints=V, persons=M)
    assert values(buf.window()) == [0.0] * 6 and len(buf) == 0 and buf.latest() is None
    for i in range(1, 4):
        assert buf.append(frame(i), seq=i) == 1
    assert values(buf.window()) == [0, 0, 0, 1, 2, 3]
    assert values(buf.window(2)) == [2, 3]
    assert values(buf.window(8)) == [0, 0, 0, 0, 0, 1, 2, 3]
    assert len(buf) == buf.valid == 3 and buf.last_seq == 3 and buf.total == 3
    np.testing.assert_array_equal(buf.latest(), frame(3))


def test_wraparound_keeps_only_the_latest_frames_in_order() -> None:
    buf = RingBuffer(C, length=4, joints=V, persons=M)
    for i in range(1, 11):
        buf.append(frame(i), seq=i)
    assert values(buf.window()) == [7, 8, 9, 10]
    assert values(buf.window(3)) == [8, 9, 10]
    assert len(buf) == 4 and buf.total == 10


def test_window_is_a_new_contiguous_array_not_a_view() -> None:
    buf = RingBuffer(C, length=4, joints=V, persons=M)
    buf.append(frame(1))
    win = buf.window()
    assert win.flags.c_contiguous and win.dtype == np.float32 and win.shape == (C, 4, V, M)
    win[:] = 99
    assert values(buf.window()) == [0, 0, 0, 1]


def test_small_gap_is_filled_by_holding_the_last_frame() -> None:
    buf = RingBuffer(C, length=8, joints=V, persons=M, max_gap=3)
    buf.append(frame(1), seq=10)
    assert buf.append(frame(2), seq=13) == 3
    assert values(buf.window()) == [0, 0, 0, 0, 1, 1, 1, 2]
    assert (buf.filled, buf.total, buf.resets, buf.last_seq) == (2, 4, 0, 13)


def test_gap_fill_wrapping_around_the_end_of_the_array() -> None:
    buf = RingBuffer(C, length=5, joints=V, persons=M, max_gap=10)
    for i in range(4):
        buf.append(frame(i + 1), seq=i)
    buf.append(frame(9), seq=7)  # three held frames: the write wraps past the array's end
    assert values(buf.window()) == [4, 4, 4, 4, 9]


def test_gap_longer_than_the_buffer_leaves_only_held_frames_and_the_new_one() -> None:
    buf = RingBuffer(C, length=4, joints=V, persons=M, max_gap=20)
    buf.append(frame(1), seq=0)
    assert buf.append(frame(2), seq=10) == 10
    assert values(buf.window()) == [1, 1, 1, 2]
    assert buf.filled == 9


def test_large_gap_starts_a_new_segment() -> None:
    buf = RingBuffer(C, length=6, joints=V, persons=M, max_gap=2)
    for i in range(5):
        buf.append(frame(i + 1), seq=i)
    assert buf.append(frame(7), seq=8) == 1
    assert values(buf.window()) == [0, 0, 0, 0, 0, 7]
    assert (buf.resets, len(buf), buf.last_seq) == (1, 1, 8)


def test_duplicate_and_late_frames_are_dropped_and_counted() -> None:
    buf = RingBuffer(C, length=4, joints=V, persons=M)
    buf.append(frame(1), seq=5)
    assert buf.append(frame(2), seq=5) == 0
    assert buf.append(frame(3), seq=4) == 0
    assert buf.stale == 2 and values(buf.window()) == [0, 0, 0, 1] and buf.total == 1


def test_reset_clears_the_window_and_sequence() -> None:
    buf = RingBuffer(C, length=4, joints=V, persons=M)
    buf.append(frame(1), seq=100)
    buf.reset()
    assert len(buf) == 0 and buf.last_seq is None and values(buf.window()) == [0, 0, 0, 0]
    assert buf.append(frame(2), seq=1) == 1  # an earlier seq is fine after a reset
    assert values(buf.window()) == [0, 0, 0, 2]


@pytest.mark.parametrize("bad", [
    np.zeros((C, V, M + 1), np.float32),
    np.zeros((C, V), np.float32),
    np.zeros((V, M, C), np.float32),
    np.full((C, V, M), np.nan, np.float32),
    np.full((C, V, M), np.inf),
    np.full((C, V, M), "x"),
])
def test_bad_frames_raise_value_error_and_change_nothing(bad: np.ndarray) -> None:
    buf = RingBuffer(C, length=4, joints=V, persons=M)
    buf.append(frame(1), seq=0)
    with pytest.raises(ValueError):
        buf.append(bad, seq=1)
    assert buf.total == 1 and buf.last_seq == 0 and values(buf.window()) == [0, 0, 0, 1]


def test_integer_frames_are_stored_as_float32() -> None:
    buf = RingBuffer(C, length=2, joints=V, persons=M)
    buf.append(np.ones((C, V, M), np.int64))
    assert values(buf.window()) == [0, 1]


@pytest.mark.parametrize("seed", range(5))
def test_random_sequences_match_the_list_model(seed: int) -> None:
    rng = np.random.default_rng(seed)
    length, max_gap = int(rng.integers(3, 12)), int(rng.integers(0, 15))
    buf, model = RingBuffer(C, length, V, M, max_gap=max_gap), ListModel(length, max_gap)
    seq = 0
    for step in range(400):
        op = rng.random()
        if op < 0.55:
            seq += 1
        elif op < 0.75:
            seq += int(rng.integers(2, 20))
        elif op < 0.85:
            seq -= int(rng.integers(0, 3))
        elif op < 0.9:
            buf.reset()
            model.frames, model.last = [], None
        use_seq = None if rng.random() < 0.05 else seq
        value = float(step + 1)
        assert buf.append(frame(value), use_seq) == model.append(value, use_seq)
        if use_seq is None and model.last is not None:
            seq = model.last
        n = int(rng.integers(1, 2 * length))
        assert values(buf.window(n)) == model.window(n)
        assert len(buf) == min(len(model.frames), length)
        assert buf.last_seq == model.last


def clip(values_: list[float]) -> np.ndarray:
    """A ``(C, N, V, M)`` clip of :func:`frame` frames."""
    return np.stack([frame(v) for v in values_], axis=1)


def test_append_many_writes_a_clip_in_order_across_the_wraparound() -> None:
    buf = RingBuffer(C, length=5, joints=V, persons=M)
    buf.append(frame(1), seq=0)
    assert buf.append_many(clip([2, 3, 4, 5, 6, 7]), np.arange(1, 7)).tolist() == [1] * 6
    assert values(buf.window()) == [3, 4, 5, 6, 7] and buf.last_seq == 6 and buf.total == 7
    assert buf.append_many(clip([8, 9]), None).tolist() == [1, 1]  # no seqs: the next frames
    assert values(buf.window()) == [5, 6, 7, 8, 9] and buf.last_seq == 8


def test_append_many_longer_than_the_buffer_keeps_the_newest_frames() -> None:
    buf = RingBuffer(C, length=4, joints=V, persons=M)
    buf.append_many(clip([1, 2]), [0, 1])
    buf.append_many(clip(list(range(3, 14))), np.arange(2, 13))
    assert values(buf.window()) == [10, 11, 12, 13] and len(buf) == 4


def test_append_many_holds_gaps_starts_segments_and_drops_stale_frames_like_append() -> None:
    buf = RingBuffer(C, length=8, joints=V, persons=M, max_gap=2)
    buf.append(frame(1), seq=10)
    written = buf.append_many(clip([2, 3, 4, 5, 6]), [9, 12, 12, 13, 20])
    assert written.tolist() == [0, 2, 0, 1, 1]  # stale, gap of 1 held, duplicate, next, new segment
    assert values(buf.window()) == [0, 0, 0, 0, 0, 0, 0, 6]
    assert (buf.stale, buf.filled, buf.resets, buf.last_seq, buf.total) == (2, 1, 1, 20, 5)


def test_plan_predicts_append_many_without_changing_anything() -> None:
    buf = RingBuffer(C, length=4, joints=V, persons=M, max_gap=1)
    buf.append_many(clip([1, 2, 3]), [0, 1, 2])
    written, reset, valid = buf.plan(np.array([3, 5, 5, 9, 10]))
    assert written.tolist() == [1, 2, 0, 1, 1] and reset.tolist() == [False, False, False, True, False]
    assert valid.tolist() == [4, 4, 4, 1, 2]
    assert buf.last_seq == 2 and len(buf) == 3
    assert buf.append_many(clip([4, 5, 6, 7, 8]), [3, 5, 5, 9, 10]).tolist() == written.tolist()
    assert buf.follows([11, 12, 13]) and not buf.follows([12, 13]) and not buf.follows([11, 13, 13])


def test_append_many_refuses_bad_clips_and_changes_nothing() -> None:
    buf = RingBuffer(C, length=4, joints=V, persons=M)
    buf.append(frame(1), seq=0)
    bad = clip([2, 3])
    bad[0, 1, 0, 0] = np.nan
    for wrong, seqs in ((bad, [1, 2]), (clip([2, 3])[:, :, :, :1], [1, 2]), (clip([2, 3]), [1])):
        with pytest.raises(ValueError):
            buf.append_many(wrong, seqs)
    assert buf.total == 1 and buf.last_seq == 0 and values(buf.window()) == [0, 0, 0, 1]


@pytest.mark.parametrize("seed", range(5))
def test_append_many_matches_append_frame_by_frame(seed: int) -> None:
    rng = np.random.default_rng(seed)
    length, max_gap = int(rng.integers(2, 12)), int(rng.integers(0, 5))
    one, many = RingBuffer(C, length, V, M, max_gap=max_gap), RingBuffer(C, length, V, M, max_gap=max_gap)
    seq, value = 0, 0.0
    for _ in range(60):
        n = int(rng.integers(0, 3 * length))
        seqs = []
        for _ in range(n):
            seq = max(0, seq + int(rng.choice([1, 1, 1, 1, 2, 3, 0, -2, max_gap + 2])))
            seqs.append(seq)
        vals = [value + i + 1 for i in range(n)]
        value += n
        use_seqs = rng.random() < 0.9
        expected = [one.append(frame(v), s if use_seqs else None) for v, s in zip(vals, seqs)]
        got = many.append_many(clip(vals) if n else np.zeros((C, 0, V, M), np.float32), seqs if use_seqs else None)
        assert got.tolist() == expected
        assert values(many.window()) == values(one.window())
        assert (many.valid, many.last_seq, many.total, many.stale, many.filled, many.resets) == \
            (one.valid, one.last_seq, one.total, one.stale, one.filled, one.resets)

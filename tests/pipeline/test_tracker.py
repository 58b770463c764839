"""Person slot assignment: stability, confidence ranking, hysteresis, release."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.messages import Person
from pipeline.tracker import SlotAssigner

V = 4


def person(track: int, conf: float, x: float | None = None) -> Person:
    """A person whose joints all have confidence ``conf`` and x equal to ``x`` (default: track)."""
    kp = np.zeros((V, 3), np.float32)
    kp[:, 0] = track if x is None else x
    kp[:, 1] = 0.5
    kp[:, 2] = conf
    return Person(track, kp)


def slot_x(out: np.ndarray) -> list[float]:
    """The x value each slot holds (0 for an empty slot)."""
    return out[0, 0, :].tolist()


def test_output_is_channels_joints_slots_with_x_y_confidence() -> None:
    kp = np.arange(V * 3, dtype=np.float32).reshape(V, 3)
    out = SlotAssigner(2).assign([Person(7, kp)])
    assert out.shape == (3, V, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :, 0], kp.T)
    assert not out[:, :, 1].any()


def test_three_people_the_two_most_confident_keep_their_slots_across_frames() -> None:
    sa = SlotAssigner(num_slots=2)
    sa.assign([person(1, 0.9), person(2, 0.3), person(3, 0.8)])
    assert sa.slots == [1, 3]
    rng = np.random.default_rng(0)
    for _ in range(50):
        people = [person(1, 0.9), person(2, 0.3), person(3, 0.8)]
        rng.shuffle(people)
        out = sa.assign(people)
        assert sa.slots == [1, 3] and slot_x(out) == [1.0, 3.0]


def test_similar_newcomer_does_not_displace_a_slotted_person() -> None:
    sa = SlotAssigner(num_slots=2, margin=0.10)
    sa.assign([person(1, 0.9), person(2, 0.50)])
    # Track 3 is more confident than track 2, but by less than the 10 % margin.
    for conf in (0.52, 0.54, 0.51, 0.53):
        sa.assign([person(1, 0.9), person(2, 0.50), person(3, conf)])
        assert sa.slots == [1, 2]
    out = sa.assign([person(1, 0.9), person(2, 0.50), person(3, 0.60)])
    assert sa.slots == [1, 3] and slot_x(out) == [1.0, 3.0]


def test_free_slots_fill_lowest_index_first() -> None:
    sa = SlotAssigner(num_slots=3)
    sa.assign([person(5, 0.2)])
    assert sa.slots == [5, None, None]
    sa.assign([person(5, 0.2), person(6, 0.9)])
    assert sa.slots == [5, 6, None]


def test_missing_track_keeps_its_slot_until_max_missing_then_releases_it() -> None:
    sa = SlotAssigner(num_slots=2, max_missing=3)
    sa.assign([person(1, 0.9), person(2, 0.8)])
    for _ in range(3):
        out = sa.assign([person(2, 0.8)])
        assert sa.slots == [1, 2] and slot_x(out) == [0.0, 2.0]
    out = sa.assign([person(1, 0.9), person(2, 0.8)])  # back within max_missing: same slot
    assert sa.slots == [1, 2] and slot_x(out) == [1.0, 2.0]
    for _ in range(4):
        sa.assign([person(2, 0.8)])
    assert sa.slots == [None, 2]


def test_a_visible_newcomer_takes_the_slot_of_an_absent_track() -> None:
    sa = SlotAssigner(num_slots=2, max_missing=15)
    sa.assign([person(1, 0.9), person(2, 0.8)])
    out = sa.assign([person(2, 0.8), person(3, 0.4)])
    assert sa.slots == [3, 2] and slot_x(out) == [3.0, 2.0]


def test_duplicate_track_ids_keep_the_more_confident_detection() -> None:
    out = SlotAssigner(2).assign([person(1, 0.2, x=0.1), person(1, 0.9, x=0.7)])
    assert slot_x(out) == pytest.approx([0.7, 0.0])


def test_joint_count_must_be_known_and_consistent() -> None:
    sa = SlotAssigner(2)
    with pytest.raises(ValueError, match="joint count"):
        sa.assign([])
    assert sa.assign([], joints=V).shape == (3, V, 2)
    with pytest.raises(ValueError):
        sa.assign([Person(1, np.zeros((V + 1, 3)))])


def test_reset_releases_every_slot() -> None:
    sa = SlotAssigner(2)
    sa.assign([person(1, 0.9)])
    sa.reset()
    assert sa.slots == [None, None]


def columns(frames: list[list[Person]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames of persons as the (counts, tracks, keypoints) columns of a frame batch."""
    persons = [p for f in frames for p in f]
    kp = np.stack([p.keypoints for p in persons]) if persons else np.zeros((0, V, 3), np.float32)
    return np.array([len(f) for f in frames]), np.array([p.track for p in persons], np.int64), kp


def test_assign_many_gives_the_clip_of_assign_frame_by_frame() -> None:
    frames = [[person(1, 0.9), person(2, 0.5)]] * 5 + [[person(2, 0.5), person(3, 0.8)]] * 3 + [[]] * 2
    one, many = SlotAssigner(2, max_missing=1), SlotAssigner(2, max_missing=1)
    expected = np.stack([one.assign(f, joints=V) for f in frames], axis=1)
    got = many.assign_many(*columns(frames), joints=V)
    assert got.shape == (3, len(frames), V, 2) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)
    assert many.slots == one.slots


def test_assign_many_keeps_the_hysteresis_of_single_frames() -> None:
    sa = SlotAssigner(2, margin=0.10)
    frames = [[person(1, 0.9), person(2, 0.5)]] * 3 + [[person(1, 0.9), person(2, 0.5), person(3, 0.52)]] * 4 + \
        [[person(1, 0.9), person(2, 0.5), person(3, 0.7)]]
    clip = sa.assign_many(*columns(frames), joints=V)
    assert [clip[0, t, 0, :].tolist() for t in (0, 6, 7)] == [[1.0, 2.0], [1.0, 2.0], [1.0, 3.0]]
    assert sa.slots == [1, 3]


@pytest.mark.parametrize("seed", range(4))
def test_assign_many_matches_assign_on_random_streams(seed: int) -> None:
    rng = np.random.default_rng(seed)
    one, many = SlotAssigner(2, max_missing=2), SlotAssigner(2, max_missing=2)
    tracks = [1, 2]
    for _ in range(20):
        frames = []
        for _ in range(int(rng.integers(1, 12))):
            if rng.random() < 0.2:
                tracks = [int(t) for t in rng.choice(6, int(rng.integers(0, 4)), replace=False)]
            frames.append([person(t, float(rng.uniform(0.1, 1.0)), x=float(rng.random())) for t in tracks])
        expected = np.stack([one.assign(f, joints=V) for f in frames], axis=1)
        np.testing.assert_array_equal(many.assign_many(*columns(frames), joints=V), expected)
        assert many.slots == one.slots


def test_assign_many_refuses_inconsistent_columns() -> None:
    sa = SlotAssigner(2, joints=V)
    counts, tracks, kp = columns([[person(1, 0.9)], [person(1, 0.9)]])
    with pytest.raises(ValueError):
        sa.assign_many(counts, tracks[:1], kp)
    with pytest.raises(ValueError):
        sa.assign_many(counts, tracks, np.zeros((2, V + 1, 3), np.float32))
    assert sa.assign_many(np.zeros(0, int), np.zeros(0, np.int64), np.zeros((0, V, 3))).shape == (3, 0, V, 2)

"""The window rules shared by the live worker and the recordings converter."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.settings import load_settings
from pipeline.windows import WindowRules, training_clip

C, V, M = 3, 4, 1


def frame(value: float) -> np.ndarray:
    return np.full((C, V, M), value, np.float32)


def test_serving_rules_cap_min_frames_at_the_window_and_refuse_a_short_buffer() -> None:
    settings = load_settings().inference
    rules = WindowRules.serving(16, settings, "cpu")
    assert (rules.window, rules.stride, rules.min_frames) == (16, 1, 16)
    assert WindowRules.serving(128, settings, "cuda").min_frames == 30
    with pytest.raises(ValueError, match="longer than inference.buffer_frames"):
        WindowRules.serving(400, settings, "cpu")


@pytest.mark.parametrize("seqs", [list(range(40)), [0, 1, 2, 5, 6, 6, 7, 30, 31, 32, 33, 50] + list(range(51, 80)),
                                  [3, 2, 1] + list(range(4, 30))])
def test_windows_due_in_a_clip_are_those_due_frame_by_frame(seqs: list[int]) -> None:
    rules = WindowRules(window=8, stride=3, min_frames=5, buffer_frames=10, max_gap=4)
    one = rules.buffer(V, M)
    since, expected = 0, []
    for i, seq in enumerate(seqs):
        since += one.append(frame(seq), seq)
        if rules.due(since, one.valid):
            expected.append(i)
            since = 0
    clip = rules.buffer(V, M)
    _, due = rules.due_in_clip(clip, np.asarray(seqs), 0)
    assert due == expected


def test_training_clip_holds_short_gaps_and_keeps_the_longest_segment() -> None:
    seqs = [0, 1, 3, 20, 21, 22, 23, 24]  # a gap of 1 held; a gap of 16 > max_gap starts a new segment
    sample = training_clip([frame(s) for s in seqs], seqs, length=6, max_gap=4)
    assert sample.shape == (C, 6, V, M)
    assert sample[0, :, 0, 0].tolist() == [20, 21, 22, 23, 24, 0], "the longer, later segment, left-aligned"
    sample = training_clip([frame(s) for s in seqs[:3]], seqs[:3], length=6, max_gap=4)
    assert sample[0, :, 0, 0].tolist() == [0, 1, 1, 3, 0, 0], "seq 2 held from seq 1"

"""Steady per-person labels and action events."""

from __future__ import annotations

from pipeline.results import UNKNOWN, ActionEvent
from pipeline.smoothing import LabelSmoother


def run(smoother: LabelSmoother, labels: list[dict[int, str]]) -> tuple[list[dict[int, str]], list[ActionEvent]]:
    shown, events = [], []
    for i, window in enumerate(labels):
        s, e = smoother.update(10 * i, float(i), window)
        shown.append(s)
        events += e
    return shown, events + smoother.close()


def test_a_single_flicker_does_not_change_the_label_and_events_close_on_change() -> None:
    windows = [{1: "wave"}] * 4 + [{1: "clap"}] + [{1: "wave"}] * 3 + [{1: "clap"}] * 5
    shown, events = run(LabelSmoother("cam"), windows)
    assert [s[1] for s in shown][:10] == ["wave"] * 10, "a new person's label at once; one stray 'clap' is ignored"
    assert [s[1] for s in shown][-1] == "clap", "a lasting change comes through"
    wave, clap = events
    assert (wave.label, wave.person, wave.start_seq) == ("wave", 1, 0) and wave.end_seq < clap.start_seq
    assert clap.label == "clap" and clap.end_seq == 120, "the stream's end closes the open event"


def test_people_are_smoothed_apart_and_leaving_closes_their_event() -> None:
    windows = [{1: "wave", 2: "clap"}] * 4 + [{2: "clap"}] * 2
    shown, events = run(LabelSmoother("cam"), windows)
    assert shown[3] == {1: "wave", 2: "clap"} and shown[-1] == {2: "clap"}
    assert [(e.person, e.label, e.end_seq) for e in events] == [(1, "wave", 30), (2, "clap", 50)]


def test_unknown_is_shown_but_makes_no_event() -> None:
    shown, events = run(LabelSmoother("cam"), [{4: UNKNOWN}] * 6)
    assert all(s[4] == UNKNOWN for s in shown) and events == []

"""Steady labels and action events per person, from the window-by-window labels.

Window labels flicker: a window that straddles two actions, or a noisy pose, can change the
top class for one window. :class:`LabelSmoother` gives each person the majority label of their
last ``k`` windows with hysteresis: the shown label changes only when another label has more
votes than it and at least ``min_votes`` of the ``k`` (of the windows so far, for a person seen
in fewer: a new person's first window is shown at once, so short clips are labelled too). When a person's shown label leaves an
action (to another action, to "unknown", or because the person left or the stream ended), an
:class:`~pipeline.results.ActionEvent` closes: who, what, from which frame to which.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from .results import UNKNOWN, ActionEvent


@dataclass
class _Person:
    recent: deque
    shown: str = UNKNOWN
    start_seq: int = 0
    t_start: float = 0.0
    last_seq: int = 0
    t_last: float = 0.0
    windows: int = 0


@dataclass
class LabelSmoother:
    """Smoothed labels and closed events of the people of one stream."""

    stream: str
    k: int = 5
    min_votes: int = 3
    people: dict[int, _Person] = field(default_factory=dict)

    def update(self, seq: int, t: float, labels: dict[int, str]) -> tuple[dict[int, str], list[ActionEvent]]:
        """The window ending at ``seq`` (capture time ``t``) labelled each present person
        (``labels``: track id -> window label); returns the shown labels and the events that
        closed (the people no longer present close theirs)."""
        events = [e for pid in set(self.people) - set(labels) if (e := self._close(self.people.pop(pid), pid))]
        shown = {}
        for pid, label in labels.items():
            person = self.people.get(pid)
            if person is None:
                person = self.people[pid] = _Person(deque(maxlen=self.k))
            person.recent.append(label)
            votes = Counter(person.recent)
            best, n = votes.most_common(1)[0]
            if best != person.shown and n >= min(self.min_votes, len(person.recent)) and n > votes[person.shown]:
                event = self._close(person, pid)
                if event:
                    events.append(event)
                person.shown, person.start_seq, person.t_start, person.windows = best, seq, t, 0
            person.last_seq, person.t_last = seq, t
            person.windows += 1
            shown[pid] = person.shown
        return shown, events

    def close(self) -> list[ActionEvent]:
        """The stream ended: every open event closes."""
        events = [e for pid, person in self.people.items() if (e := self._close(person, pid))]
        self.people.clear()
        return events

    def _close(self, person: _Person, pid: int) -> ActionEvent | None:
        if person.shown == UNKNOWN or not person.windows:
            return None
        return ActionEvent(self.stream, pid, person.shown, person.start_seq, person.last_seq, person.t_start,
                           person.t_last, person.windows)

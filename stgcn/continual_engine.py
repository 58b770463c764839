"""Serving the continual form of a checkpoint: one state per person of each stream.

The worker hands the same batches as to :class:`~stgcn.engine.Engine` (each person's raw window,
the newest frame last) and says whose each row is: stream, person slot, track id, frame number.
Each person keeps a row of :class:`~stgcn.continual.Continual` state; only the frames that are
new since the person's last batch are stepped (one at stride 1), so a result costs a fraction of
a window. The ring-buffer window re-synchronises a state: a new person, a new track id in the
slot, or frames skipped under load are stepped from the window (a new person from their first
frame in it). Until a person's last block has produced ``ready_outputs`` outputs (the first
after :attr:`Continual.delay` frames, then one every 4), the regular model answers from the
window, at most every ``warmup_stride`` frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from .continual import Continual
from .engine import Engine


class RowKey(NamedTuple):
    """Whose a batch row is: a person slot of a stream, its track id, the window's last frame."""

    stream: str
    slot: int
    track: int | None
    seq: int


@dataclass
class _Person:
    row: int  # state row in the continual model
    track: int | None
    seq: int  # last frame stepped
    answer: tuple[torch.Tensor, torch.Tensor | None] | None = None  # regular answer in warm-up
    answered_at: int = -1


# Outputs of the last block a person's state needs before it answers: the first few outputs are
# mostly the zero state's edge (measured on the test splits: docs/continual.md).
READY_OUTPUTS = 12


class ContinualEngine(Engine):
    """An :class:`Engine` whose results come from per-person continual state."""

    def __init__(self, weights: str | Path, device: str = "auto", *, streams: Sequence[str] | None = None,
                 warmup_stride: int = 4, ready_outputs: int = READY_OUTPUTS) -> None:
        super().__init__(weights, device, streams=streams)
        self.continual = Continual(self.model, self.window)
        self.warmup_stride = int(warmup_stride)
        self.ready_outputs = int(ready_outputs)
        self.people: dict[tuple[str, int], _Person] = {}
        self._free: list[int] = []

    @property
    def mode(self) -> str:
        return "continual"

    def release(self, stream: str) -> None:
        """Forget a stream's people (it ended): their rows are reused."""
        for key in [k for k in self.people if k[0] == stream]:
            self._free.append(self.people.pop(key).row)

    def _person(self, key: RowKey) -> _Person:
        person = self.people.get((key.stream, key.slot))
        if person is None:
            row = self._free.pop() if self._free else len(self.people) + len(self._free)
            self.continual.ensure(row + 1)
            person = self.people[(key.stream, key.slot)] = _Person(row, key.track, seq=-1 << 62)  # nothing stepped
        return person

    def _plan(self, windows: np.ndarray, rows: Sequence[RowKey]) -> tuple[list[_Person], list[int]]:
        """Each row's person and how many of its window's newest frames to step."""
        people, steps, w = [], [], self.window
        for i, key in enumerate(rows):
            person = self._person(key)
            new = key.seq - person.seq
            if person.track != key.track or not 0 <= new <= w:  # a new person, a restarted stream, or more
                # frames missed than the window holds: from the person's first frame in the window
                present = np.flatnonzero(np.abs(windows[i, ..., 0]).max(axis=(0, 2)) > 0)
                new = w - int(present[0]) if len(present) else 1
                self.continual.reset(torch.tensor([person.row], device=self.device))
                person.answer, person.answered_at = None, -1
            people.append(person)
            steps.append(max(new, 0))
            person.track, person.seq = key.track, key.seq
        return people, steps

    def submit(self, windows: np.ndarray, rows: Sequence[RowKey] | None = None
               ) -> Callable[[], tuple[np.ndarray, np.ndarray | None]]:
        """Steps each row's new frames and answers from its state; ``rows`` says whose each is."""
        if rows is None or len(rows) != len(windows):
            raise ValueError("the continual engine needs the person of each row")
        raw = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(self.device)
        probs = torch.empty(len(rows), self.num_class, device=self.device)
        frames = torch.empty(len(rows), self.channels, self.joints, 1, device=self.device) if self.predicts else None
        for part in _rounds(rows):  # a person's windows in one batch (a file stream's), oldest first
            p, f = self._answer(raw[part], windows[part], [rows[i] for i in part])
            probs[part] = p
            if frames is not None:
                frames[part] = f
        probs, frames = probs.cpu().numpy(), None if frames is None else frames.cpu().numpy()
        return lambda: (probs, frames)

    @torch.no_grad()
    def _answer(self, raw: torch.Tensor, windows: np.ndarray, rows: Sequence[RowKey]
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows of distinct people: their new frames stepped, then their answers."""
        people, steps = self._plan(windows, rows)
        state = torch.tensor([p.row for p in people], device=self.device)
        x, recent, center, scale = self.prepare(raw)
        w = self.window
        for back in range(max(steps, default=0), 0, -1):
            active = [i for i, k in enumerate(steps) if k >= back]
            t = w - back
            self.continual.step(x[active, :, max(0, t - 1):t + 1, :, 0], state[active])
        logits = self.continual.logits(state, empty_slots=self.persons - 1)  # as the window engine
        # each row's person is in slot 0 of the window (the others are empty)
        nxt = self.continual.next_frame(state, recent[..., :1]) if self.predicts else None
        out = self.finish(logits, nxt, center[..., :1], scale[..., :1])
        probs, frames = out[0], (out[1] if self.predicts else None)
        self._warm_up(raw, people, rows, probs, frames)
        return probs, frames

    def _warm_up(self, raw: torch.Tensor, people: list[_Person], rows: Sequence[RowKey], probs: torch.Tensor,
                 frames: torch.Tensor | None) -> None:
        """Rows whose state cannot answer yet get the window form's answer (in place)."""
        state = torch.tensor([p.row for p in people], device=self.device)
        waiting = [i for i, ok in enumerate(self.continual.ready(state, self.ready_outputs).tolist()) if not ok]
        due = [i for i in waiting if people[i].answer is None
               or rows[i].seq - people[i].answered_at >= self.warmup_stride]
        if due:
            out = self.step(raw[due])
            for j, i in enumerate(due):
                people[i].answer = (out[0][j], out[1][j, ..., :1] if self.predicts else None)
                people[i].answered_at = rows[i].seq
        for i in waiting:
            probs[i] = people[i].answer[0]
            if frames is not None:
                frames[i] = people[i].answer[1]


def _rounds(rows: Sequence[RowKey]) -> list[list[int]]:
    """Row indices in rounds where each person appears at most once, in batch order."""
    seen: dict[tuple[str, int], int] = {}
    rounds: list[list[int]] = []
    for i, key in enumerate(rows):
        k = seen.get((key.stream, key.slot), 0)
        seen[(key.stream, key.slot)] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(i)
    return rounds

"""Serving the continual form of a checkpoint: one state per person of each stream.

The worker hands the same batches as to :class:`~stgcn.engine.Engine` (each person's raw window,
the newest frame last) and says whose each row is: stream, person slot, track id, frame number.
Each person keeps a row of :class:`~stgcn.continual.Continual` state; only the frames that are
new since the person's last batch are stepped (one at stride 1), so a result costs a fraction of
a window. The ring-buffer window re-synchronises a state: a new person, a new track id in the
slot, or frames skipped under load are stepped from the window (a new person from their first
frame in it). Until a person's last block has produced ``ready_outputs`` outputs
(:attr:`Continual.ready_outputs`: for a centred network the first comes after
:attr:`Continual.delay` frames, then one every 4), the regular model answers from the window, at
most every ``warmup_stride`` frames. A causal network's state answers from its first output: the
regular model's answer on the frames it has stepped (while it catches up with a new person's
window, the oldest of them).

A batch never steps a state more than ``catch_up`` frames (or one more than came since its last
batch, where more came): a state further behind its window (a new person stepped from the
window, or frames skipped under load) takes its oldest frames now and the rest in the next
batches (at stride s it gains ``catch_up - s`` frames a batch, at least one). So one slow person
never holds up a whole batch for a 96-frame sweep, which made the next batches skip frames and
sweep again (a death spiral). In a batch where the window form answers a person (warm-up) and
batches came since its last answer (a stride below ``warmup_stride``), their state steps only
the frames that came since their last batch, and its backlog waits for the batches between, so
that no batch pays for a sweep and a window (on the CPU a new person's 16 steps and a window
made a batch of about 90 ms).
Meanwhile a state that cannot answer yet (a re-synchronised one) is answered by the window
form, as in warm-up, and a state that could answer before it
fell behind answers as of its last frame stepped (on the CPU a window costs about 9 steps of a
person; under load the window form for every lagging person would be the spiral again).

On CUDA (:attr:`Continual.fixed`) the sweep and the answers run on rows padded to bucket sizes
with the scratch state row, so cuDNN plans once per bucket, and nothing inside a batch waits
for the GPU: readiness is counted on the host. The window form's answers replay the CUDA graphs
of :class:`~stgcn.fast.GraphedEngine` from the device batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from .continual import Continual, bucket
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
    stepped: int = 0  # frames stepped since the state was reset
    answered_at: int | None = None  # frame of the window form's answer held for it (in warm-up)
    seen: int = -1  # the last frame of its previous batch's window


# Frames a batch steps a state at most, per device type (where more frames came: one more); a state
# further behind catches up over the next batches. A step costs ~4 ms on the
# 2-core CPU, a graph replay ~2 ms on the H200 whatever the rows.
CATCH_UP = {"cpu": 6, "cuda": 16}
# State rows a CUDA engine starts with (its step graphs captured for up to as many people).
PEOPLE = 256


class ContinualEngine(Engine):
    """An :class:`Engine` whose results come from per-person continual state."""

    def __init__(self, weights: str | Path, device: str = "auto", *, streams: Sequence[str] | None = None,
                 warmup_stride: int = 4, ready_outputs: int | None = None, catch_up: int | None = None,
                 fixed: bool | None = None, people: int = PEOPLE) -> None:
        """``ready_outputs``: outputs a state needs before it answers (default
        :attr:`Continual.ready_outputs`); ``catch_up``: frames a batch steps a state at most (module docstring; default
        :data:`CATCH_UP` of the device type); ``fixed``: fixed-shape
        steps (default: on CUDA, :class:`~stgcn.continual.ContinualSTGCN`); ``people``: on CUDA,
        state rows made at the start (more are added as people come) and the step graphs of every
        batch size up to them captured, so that the first batches do not wait for that."""
        super().__init__(weights, device, streams=streams)
        self.continual = Continual(self.model, self.window, fixed=fixed)
        if self.continual.graphed:
            self.continual.ensure(people)
            self.continual.capture(self.channels, self.joints, people)
        self.warmup_stride = int(warmup_stride)
        self.ready_outputs = int(ready_outputs or self.continual.ready_outputs)
        self.catch_up = max(1, int(catch_up or CATCH_UP.get(self.device.type, CATCH_UP["cuda"])))
        self.people: dict[tuple[str, int], _Person] = {}
        self._free: list[int] = []
        # the window form's last answer for each state row in warm-up: probabilities, frames
        self._held: tuple[torch.Tensor, torch.Tensor | None] = self._answers(self.continual.scratch + 1)
        if not self.continual.graphed:
            self._rehearse()

    def _rehearse(self) -> None:
        """A made-up person through a window answer and a catch-up, then forgotten: the first real
        person's batches then do not pay for the kernels' first use on their shapes (the CPU
        library prepares each once) or for the empty person slot's scores."""
        window = np.random.default_rng(0).random((1, self.channels, self.window, self.joints, self.persons),
                                                 dtype=np.float32)
        window[..., 1:] = 0
        for seq in range(3):
            self.submit(window, [RowKey("", 0, 0, seq)])()
        self.release("")

    def _answers(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Zeroed answers for ``n`` rows: probabilities and, with a predictor, frames ``(n, C, V, 1)``
        (``(n, C, H, V, 1)`` for a predictor of H frames)."""
        probs = torch.zeros(n, self.num_class, device=self.device)
        ahead = (self.horizon,) if self.horizon > 1 else ()
        frames = torch.zeros((n, self.channels, *ahead, self.joints, 1), device=self.device) if self.predicts else None
        return probs, frames

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
            if len(self._held[0]) < self.continual.scratch + 1:  # the state grew: so do the held answers
                held = self._answers(self.continual.scratch + 1)
                for new, old in zip(held, self._held):
                    if old is not None:
                        new[:len(old)] = old
                self._held = held
            person = self.people[(key.stream, key.slot)] = _Person(row, key.track, seq=-1 << 62)  # nothing stepped
        return person

    def _plan(self, windows: np.ndarray, rows: Sequence[RowKey]) -> tuple[list[_Person], list[int], list[int]]:
        """Each row's person, the window position of the first frame to step, and how many to step
        (at most ``catch_up``, module docstring: the oldest frames the state has not taken)."""
        people, starts, steps, w = [], [], [], self.window
        resets = []
        for i, key in enumerate(rows):
            person = self._person(key)
            behind = key.seq - person.seq
            if person.track != key.track or not 0 <= behind <= w:  # a new person, a restarted stream, or
                # more frames missed than the window holds: from the person's first frame in the window
                present = np.flatnonzero(np.abs(windows[i, ..., 0]).max(axis=(0, 2)) > 0)
                behind = w - int(present[0]) if len(present) else 1
                resets.append(person.row)
                person.answered_at, person.stepped, person.seen = None, 0, key.seq - 1
            new = max(1, key.seq - person.seen)  # frames since the person's last batch
            k = min(behind, max(self.catch_up, new + 1))
            if (self._window_due(person, key.seq) and person.answered_at != person.seen
                    and self.continual.outputs_after(person.stepped + k) < self.ready_outputs):
                k = min(k, new)  # answered by the window form: the batches since its last answer sweep the backlog
            person.seen = key.seq
            people.append(person)
            starts.append(w - behind)
            steps.append(k)
            person.track, person.seq = key.track, key.seq - behind + k
            person.stepped += k
        if resets:
            self.continual.reset(torch.tensor(resets).to(self.device, non_blocking=True))
        return people, starts, steps

    def submit(self, windows: np.ndarray, rows: Sequence[RowKey] | None = None
               ) -> Callable[[], tuple[np.ndarray, np.ndarray | None]]:
        """Steps each row's new frames and answers from its state; ``rows`` says whose each is. On
        CUDA it returns once the work is queued: calling the result waits for the answers."""
        if rows is None or len(rows) != len(windows):
            raise ValueError("the continual engine needs the person of each row")
        raw = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(self.device)
        probs, frames = self._answers(len(rows))
        for part in _rounds(rows):  # a person's windows in one batch (a file stream's), oldest first
            p, f = self._answer(raw[part], windows[part], [rows[i] for i in part])
            probs[part] = p
            if frames is not None:
                frames[part] = f
        if self.device.type != "cuda":
            return lambda: (probs.numpy(), None if frames is None else frames.numpy())
        host = [torch.empty(t.shape, pin_memory=True).copy_(t, non_blocking=True) for t in (probs, frames)
                if t is not None]  # the caller reads on while the GPU finishes
        done = torch.cuda.Event()
        done.record()

        def collect() -> tuple[np.ndarray, np.ndarray | None]:
            done.synchronize()
            return host[0].numpy(), host[1].numpy() if frames is not None else None
        return collect

    def _padded(self, idx: list[int], extra: int) -> tuple[list[int], int]:
        """``idx`` and the size a step of it runs on: on fixed shapes padded with ``extra`` to a bucket."""
        if not self.continual.fixed:
            return idx, len(idx)
        size = bucket(len(idx))
        return idx + [extra] * (size - len(idx)), size

    @torch.no_grad()
    def _sweep(self, x: torch.Tensor, state: list[int], starts: list[int], steps: list[int]) -> None:
        """Steps row i's frames ``starts[i] .. starts[i] + steps[i] - 1`` of the normalised windows
        ``x`` into state row ``state[i]``: one sweep, step j on the rows with more than j frames."""
        n = len(state)
        order = sorted(range(n), key=lambda i: -steps[i])  # stable: the rows of step j are a prefix
        xs = torch.cat([x[..., 0], x.new_zeros((1,) + tuple(x.shape[1:4]))])  # row n: a padding row's zeros
        idx, _ = self._padded(order, n)
        dev = torch.tensor([idx, [state[i] if i < n else self.continual.scratch for i in idx],
                            [starts[i] if i < n else 0 for i in idx]]).to(self.device, non_blocking=True)
        ranks = torch.arange(dev.shape[1], device=self.device)
        for j in range(max(steps, default=0)):
            due = sum(k > j for k in steps)
            size = bucket(due) if self.continual.fixed else due
            sel, rows, pos = dev[:, :size]
            if size > due:  # rows past the due ones are not stepped now: the padding row instead
                pad = ranks[:size] >= due
                sel = torch.where(pad, n, sel)
                rows = torch.where(pad, self.continual.scratch, rows)
            pos = torch.where(sel == n, 0, pos + j)
            frames = torch.stack([xs[sel, :, (pos - 1).clamp(min=0)], xs[sel, :, pos]], dim=2)  # (size, C, 2, V)
            self.continual.step(frames, rows, first=pos == 0)

    @torch.no_grad()
    def _answer(self, raw: torch.Tensor, windows: np.ndarray, rows: Sequence[RowKey]
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows of distinct people: their new frames stepped, then their answers."""
        people, starts, steps = self._plan(windows, rows)
        x, recent, center, scale = self.prepare(raw)
        self._sweep(x, [p.row for p in people], starts, steps)
        n = len(people)
        idx, size = self._padded([p.row for p in people], self.continual.scratch)
        state = torch.tensor(idx).to(self.device, non_blocking=True)
        logits = self.continual.logits(state, empty_slots=self.persons - 1)[:n]  # as the window engine
        # each row's person is in slot 0 of the window (the others are empty)
        nxt = None
        if self.predicts:
            last = recent[..., :1]
            if size > n:
                last = torch.cat([last, last.new_zeros((size - n,) + tuple(last.shape[1:]))])
            nxt = self.continual.next_frame(state, last)[:n]
        out = self.finish(logits, nxt, center[..., :1], scale[..., :1])
        probs, frames = out[0], (out[1] if self.predicts else None)
        self._warm_up(raw, people, rows, probs, frames)
        return probs, frames

    def _window(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The window form's answers on device windows (each person in slot 0, the others empty):
        from the CUDA graphs where captured, else on the person's slot alone (on the CPU, half the
        work of the two-slot window, with the same answer)."""
        runner = self.runner
        if runner is None or tuple(raw.shape[1:]) != self.sample_shape:
            x, recent, center, scale = self.prepare(raw[..., :1])
            logits, nxt = self.continual.window(x, recent if self.predicts else None, raw.shape[-1] - 1)
            return self.finish(logits, nxt, center, scale)
        parts = []
        for i in range(0, len(raw), runner.batches[-1]):
            part = raw[i:i + runner.batches[-1]]
            graph, dev_in, dev_out = runner.graphs[runner.size_for(len(part))][:3]
            dev_in[:len(part)].copy_(part)
            graph.replay()
            parts.append(tuple(o[:len(part)].clone() for o in dev_out))
        return tuple(torch.cat(p) for p in zip(*parts))

    def _warm_up(self, raw: torch.Tensor, people: list[_Person], rows: Sequence[RowKey], probs: torch.Tensor,
                 frames: torch.Tensor | None) -> None:
        """Rows whose state cannot answer yet (too few outputs) get the window form's answer (in
        place). Readiness is counted on the host: no wait for the device."""
        waiting = [i for i, p in enumerate(people) if self.waiting(p)]
        if not waiting:
            return
        due = [i for i in waiting if self._window_due(people[i], rows[i].seq)]
        held_probs, held_frames = self._held
        if due:
            out = self._window(raw[due])
            state = self._index([people[i].row for i in due])
            held_probs[state] = out[0]
            if held_frames is not None:
                held_frames[state] = out[1][..., :1]
            for i in due:
                people[i].answered_at = rows[i].seq
        at, state = self._index(waiting), self._index([people[i].row for i in waiting])
        probs[at] = held_probs[state]
        if frames is not None:
            frames[at] = held_frames[state]

    def waiting(self, person: _Person) -> bool:
        """Whether the person's state cannot answer yet: its last block has fewer than
        ``ready_outputs`` outputs."""
        return self.continual.outputs_after(person.stepped) < self.ready_outputs

    def _window_due(self, person: _Person, seq: int) -> bool:
        """Whether the window form answers the person at ``seq``: their state is not ready and its
        last window answer is ``warmup_stride`` frames old."""
        return self.waiting(person) and (person.answered_at is None or seq - person.answered_at >= self.warmup_stride)

    def _index(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values).to(self.device, non_blocking=True)


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

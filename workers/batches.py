"""The batch the engine is running: one sample per person present at the last frame of each due
window, started while the worker's loop goes on reading frames, finished into result records.

Each person is one sample, in the first of the person slots the model was trained with, the
other slots empty, as in training; a window with nobody at its last frame is answered without a
model call (``people == []``). With a calibrated open set, each person's motion is measured on
the raw sample before the engine runs, and a person whose top class or motion falls short is
labelled unknown (:mod:`stgcn.open_set`).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from pipeline.results import Result, batch_results
from pipeline.scheduler import Job
from stgcn.continual_engine import RowKey
from stgcn.open_set import motion


class BatchInFlight:
    """At most one batch on ``engine`` at a time, its results named after worker ``name`` (with
    ``future``: each person's predicted frames up to the model's horizon)."""

    def __init__(self, engine: Any, name: str, future: bool = False) -> None:
        self.engine, self.name, self.future = engine, name, future
        self._batch: tuple[list[Job], list[list[int]], float, Callable | None, np.ndarray | None] | None = None

    @property
    def busy(self) -> bool:
        return self._batch is not None

    def start(self, jobs: list[Job]) -> None:
        """Start classifying ``jobs`` (after :meth:`finish` of the batch before)."""
        t0 = time.time()
        slots = [np.flatnonzero(job.window[2, -1].max(axis=0) > 0) for job in jobs]  # present at the last frame
        people = [[job.tracks[m] for m in ms] for job, ms in zip(jobs, slots)]
        rows = sum(len(ms) for ms in slots)
        if rows == 0:
            self._batch = (jobs, people, t0, None, None)
            return
        batch = self.engine.input_buffer(rows)  # on CUDA, the pinned memory the GPU reads
        np.concatenate([job.window[..., ms].transpose(3, 0, 1, 2) for job, ms in zip(jobs, slots) if len(ms)],
                       out=batch[..., 0])
        batch[..., 1:] = 0
        moving = None if self.engine.open_set is None else motion(batch)
        if self.engine.mode == "continual":  # it keeps each person's state: say whose each row is
            keys = [RowKey(job.stream, int(m), job.tracks[m], job.seq) for job, ms in zip(jobs, slots) for m in ms]
            pending = self.engine.submit(batch, keys)
        else:
            pending = self.engine.submit(batch)
        self._batch = (jobs, people, t0, pending, moving)

    def finish(self) -> tuple[list[Result], bool]:
        """Wait for the batch in flight, if any: its results and whether the model ran."""
        if self._batch is None:
            return [], False
        jobs, people, t0, collect, moving = self._batch
        self._batch = None
        probs, nxt, known = np.zeros((0, self.engine.num_class), np.float32), None, None
        if collect is not None:
            probs, nxt = collect()
            known = None if moving is None else self.engine.open_set.known(probs, moving)
        return batch_results(jobs, people, probs, nxt, known, self.engine.class_names, self.name, t0,
                             future=self.future), collect is not None

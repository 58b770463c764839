"""Which windows to classify, and when: per-stream stride, live/file policies, dynamic batching.

A :class:`Job` is a snapshot of one stream's latest window, taken when the stream has
received ``stride`` new frames. Live streams keep only their newest pending job (a newer
window supersedes an older one, counted as skipped), so results stay current when the
model is slower than the camera. File streams (videos, replays) keep every job in order;
when too many are pending the worker stops reading its socket, which fills ZeroMQ's
high-water mark and slows the senders down (backpressure), so nothing is lost.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Job:
    """One window to classify."""

    stream: str
    seq: int
    t_capture: float
    t_recv: float
    pose_ms: float
    window: np.ndarray  # raw (C, W, V, M)
    tracks: list[int | None]
    persons: int
    t_queued: float = field(default_factory=time.time)


class Scheduler:
    """Pending jobs across streams, handed out in batches of at most ``max_batch``."""

    def __init__(self, max_batch: int = 64, max_wait_ms: float = 5.0, max_pending: int = 256) -> None:
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_pending = max_pending
        self._live: OrderedDict[str, Job] = OrderedDict()
        self._file: deque[Job] = deque()
        self.skipped = 0  # live windows superseded before they were classified

    def __len__(self) -> int:
        return len(self._live) + len(self._file)

    def add(self, job: Job, live: bool) -> None:
        if live:
            if self._live.pop(job.stream, None) is not None:
                self.skipped += 1
            self._live[job.stream] = job
        else:
            self._file.append(job)

    @property
    def full(self) -> bool:
        """Stop reading input while true (backpressure for file sources)."""
        return len(self) >= self.max_pending

    def ready(self, now: float | None = None) -> bool:
        """A batch is due: enough jobs, or the oldest has waited ``max_wait``."""
        if not len(self):
            return False
        if len(self) >= self.max_batch:
            return True
        now = time.time() if now is None else now
        oldest = min([j.t_queued for j in self._live.values()][:1] + [j.t_queued for j in list(self._file)[:1]])
        return now - oldest >= self.max_wait

    def take(self) -> list[Job]:
        """Up to ``max_batch`` jobs: live streams first, then file jobs in arrival order."""
        batch: list[Job] = []
        while self._live and len(batch) < self.max_batch:
            batch.append(self._live.popitem(last=False)[1])
        while self._file and len(batch) < self.max_batch:
            batch.append(self._file.popleft())
        return batch

    def has(self, stream: str) -> bool:
        """Whether a job of ``stream`` is still pending."""
        return stream in self._live or any(j.stream == stream for j in self._file)

    def drop_stream(self, stream: str) -> None:
        self._live.pop(stream, None)
        self._file = deque(j for j in self._file if j.stream != stream)

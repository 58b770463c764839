"""Which frames make a window and when a window is due: one definition for the live worker
and for the recordings converter, so training data is cut the way live windows are.

- Frames go into a :class:`~pipeline.ring_buffer.RingBuffer` of ``buffer_frames`` time steps,
  which owns the sequence rules: a stale frame (not after the last one) is dropped, a gap of
  up to ``max_gap`` frames holds the last frame, a longer gap starts a new segment.
- A window is the latest ``window`` time steps of the current segment, right-aligned, zeros
  before the segment's first frame.
- A window is due once the segment holds ``min_frames`` time steps and ``stride`` time steps
  were written since the last window of the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .ring_buffer import RingBuffer
from .settings import InferenceSettings


@dataclass(frozen=True)
class WindowRules:
    """The window settings of one model served on one device."""

    window: int
    stride: int
    min_frames: int
    buffer_frames: int
    max_gap: int

    def __post_init__(self) -> None:
        if self.window > self.buffer_frames:
            raise ValueError(f"the model's window of {self.window} frames is longer than "
                             f"inference.buffer_frames ({self.buffer_frames}); raise buffer_frames")
        if not 2 <= self.min_frames <= self.window:
            raise ValueError(f"min_frames {self.min_frames} must be between 2 and the window ({self.window})")
        if self.stride < 1 or self.max_gap < 0:
            raise ValueError(f"stride must be >= 1 and max_gap >= 0 (got {self.stride}, {self.max_gap})")

    @classmethod
    def serving(cls, window: int, settings: InferenceSettings, device_type: str) -> WindowRules:
        """The rules for a model with this window on this device; ``min_frames`` is capped at the
        window (a short-window model answers once its window is full)."""
        return cls(window, settings.stride.on(device_type), max(2, min(settings.min_frames, window)),
                   settings.buffer_frames, settings.max_gap)

    def buffer(self, joints: int, persons: int, channels: int = 3) -> RingBuffer:
        """A stream's ring buffer under these rules."""
        return RingBuffer(channels, self.buffer_frames, joints, persons, max_gap=self.max_gap)

    def due(self, since: int, valid: int) -> bool:
        """Whether a window is due with ``since`` steps written since the last one and ``valid`` held."""
        return valid >= self.min_frames and since >= self.stride

    def due_in_clip(self, buffer: RingBuffer, seqs: np.ndarray, since: int) -> tuple[np.ndarray | None, list[int]]:
        """For a clip about to be appended: the time steps each frame writes (None: one each)
        and the frames after which a window is due, exactly as frame by frame."""
        n = len(seqs)
        if buffer.follows(seqs):  # consecutive frames: the windows fall at fixed offsets
            first = max(self.min_frames - buffer.valid, self.stride - since, 1) - 1
            return None, list(range(first, n, self.stride))
        written, _, valid = buffer.plan(seqs)
        total = np.cumsum(written)
        can = (written > 0) & (valid >= self.min_frames)
        windows: list[int] = []
        lo = 0
        while lo < n:
            done = int(total[lo - 1]) if lo else 0
            hits = np.flatnonzero(can[lo:] & (total[lo:] - done >= self.stride - since))
            if not len(hits):
                break
            windows.append(lo + int(hits[0]))
            lo, since = windows[-1] + 1, 0
        return written, windows


def training_clip(frames: Sequence[np.ndarray], seqs: Sequence[int | None], length: int, max_gap: int) -> np.ndarray:
    """A recording's ``(C, V, M)`` frames as one left-aligned ``(C, length, V, M)`` sample.

    The frames go through a ring buffer with the live rules (stale frames dropped, short
    gaps held, a long gap starts a new segment); the sample is the first ``length`` time
    steps of the longest segment (the first of equals), zeros after it, so no sample splices
    two moments that the live worker would keep apart.
    """
    c, v, m = np.shape(frames[0])
    buffer = RingBuffer(c, length, v, m, max_gap=max_gap)
    best = np.zeros((c, 0, v, m), np.float32)
    for frame, seq in zip(frames, seqs):
        if buffer.valid >= length:
            break
        if seq is not None and buffer.valid and bool(buffer.plan(np.array([seq]))[1][0]):
            if buffer.valid > best.shape[1]:
                best = buffer.window(buffer.valid)
        buffer.append(frame, seq)
    if buffer.valid > best.shape[1]:
        best = buffer.window(buffer.valid)
    out = np.zeros((c, length, v, m), np.float32)
    out[:, :best.shape[1]] = best
    return out

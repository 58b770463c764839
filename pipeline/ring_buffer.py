"""Per-stream sliding window of skeleton frames in ST-GCN layout.

A :class:`RingBuffer` owns one float32 array of shape ``(C, T, V, M)`` allocated once;
appending writes one time step in place and :meth:`RingBuffer.window` copies the latest
frames out in time order with at most two slice copies, so neither depends on T.

Sequence numbers keep the time axis honest: duplicates and late frames are dropped, short
gaps are bridged by holding the last frame, and a long gap starts a new segment, since
splicing two distant moments into one window would show motion that never happened.

:meth:`RingBuffer.append_many` takes a whole clip (a frame batch) with the same rules, as
one or two slice copies per run of consecutive frames instead of one call per frame.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)


class RingBuffer:
    """Fixed-size circular buffer of frames shaped ``(C, V, M)``."""

    def __init__(self, channels: int, length: int, joints: int, persons: int, max_gap: int = 10) -> None:
        if min(channels, length, joints, persons) < 1:
            raise ValueError("channels, length, joints and persons must all be >= 1")
        if max_gap < 0:
            raise ValueError("max_gap must be >= 0")
        self._data = np.zeros((channels, length, joints, persons), np.float32)
        self._frame_shape = (channels, joints, persons)
        self.max_gap = max_gap
        self._head = 0
        self._valid = 0
        self.last_seq: int | None = None
        self.total = 0
        self.stale = 0
        self.filled = 0
        self.resets = 0

    @property
    def length(self) -> int:
        """Capacity along T."""
        return self._data.shape[1]

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """The ``(C, V, M)`` shape :meth:`append` expects."""
        return self._frame_shape

    @property
    def valid(self) -> int:
        """Frames held since the last reset (at most :attr:`length`)."""
        return self._valid

    def __len__(self) -> int:
        return self._valid

    def reset(self) -> None:
        """Forget the current segment; the next append starts a new one."""
        self._valid = 0
        self.last_seq = None

    def append(self, frame: np.ndarray, seq: int | None = None, *, check_finite: bool = True) -> int:
        """Write one ``(C, V, M)`` frame; returns how many time steps were written.

        0 means the frame was stale (``seq`` not after the last one); more than 1 means a
        gap of up to ``max_gap`` frames was filled by repeating the previous frame. A larger
        gap resets the buffer first. Without ``seq`` the frame is taken as the next one.
        Raises ValueError for a wrong shape or (unless ``check_finite`` is False, for input
        already validated) non-finite values.
        """
        frame = np.asarray(frame)
        if frame.shape != self._frame_shape:
            raise ValueError(f"frame shape {frame.shape} != expected {self._frame_shape}")
        if frame.dtype.kind not in "fiu":
            raise ValueError(f"frame dtype {frame.dtype} is not a real number type")
        if check_finite and frame.dtype.kind == "f" and not np.isfinite(frame).all():
            raise ValueError("frame contains NaN or inf")
        gap = 0
        if seq is not None and self.last_seq is not None:
            if seq <= self.last_seq:
                self.stale += 1
                return 0
            gap = seq - self.last_seq - 1
            if gap > self.max_gap:
                log.debug("gap of %d frames > max_gap %d: new segment", gap, self.max_gap)
                self.resets += 1
                self.reset()
                gap = 0
        if gap:
            self._fill(gap)
        self._data[:, self._head] = frame
        self._head = (self._head + 1) % self.length
        self._valid = min(self._valid + 1, self.length)
        self.total += gap + 1
        if seq is not None:
            self.last_seq = seq
        elif self.last_seq is not None:
            self.last_seq += 1
        return gap + 1

    def follows(self, seqs: np.ndarray | Sequence[int]) -> bool:
        """Whether ``seqs`` are consecutive and continue this buffer's (nothing stale, no gap)."""
        n = len(seqs)
        if n == 0:
            return False
        first = int(seqs[0])
        if (self.last_seq is not None and first != self.last_seq + 1) or int(seqs[-1]) - first != n - 1:
            return False
        if n < 3:
            return n == 1 or int(seqs[1]) == first + 1
        return bool(np.logical_and.reduce(np.asarray(seqs) == np.arange(first, first + n)))

    def plan(self, seqs: np.ndarray | None, n: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What appending frames with these sequence numbers would do, without doing it.

        Returns per frame: the time steps written (as :meth:`append` returns them), whether
        the frame starts a new segment (a gap beyond ``max_gap``), and :attr:`valid` right
        after it. ``seqs=None`` means ``n`` frames without sequence numbers.
        """
        if seqs is None or self.follows(seqs):
            count = int(n or 0) if seqs is None else len(seqs)
            steps = np.arange(1, count + 1)
            return np.ones(count, np.int64), np.zeros(count, bool), np.minimum(self._valid + steps, self.length)
        seqs = np.asarray(seqs, dtype=np.int64)
        if seqs.ndim != 1:
            raise ValueError("seqs must be 1-D")
        if len(seqs) == 0:
            return np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int64)
        # each frame against the highest sequence number before it: not above it is stale
        first = self.last_seq if self.last_seq is not None else int(seqs[0]) - 1
        prev = np.empty(len(seqs), np.int64)
        prev[0] = first
        np.maximum.accumulate(np.maximum(seqs[:-1], first), out=prev[1:])
        stale = seqs <= prev
        gap = seqs - prev - 1
        reset = ~stale & (gap > self.max_gap)
        written = np.where(stale, 0, np.where(reset, 1, gap + 1))
        # valid: frames since the last reset (or the current count plus this batch's), capped
        total = np.cumsum(written)
        last_reset = np.maximum.accumulate(np.where(reset, np.arange(len(written)), -1))
        base = np.where(last_reset >= 0, total[last_reset] - 1, -self._valid)
        valid = np.minimum(total - base, self.length)
        return written, reset, valid

    def append_many(self, clip: np.ndarray, seqs: np.ndarray | Sequence[int] | None = None, *,
                    check_finite: bool = True) -> np.ndarray:
        """Write a ``(C, N, V, M)`` clip of N frames; returns the time steps written per frame.

        Exactly what N calls of :meth:`append` would do (stale frames dropped, gaps held or
        starting a new segment), with one or two slice copies per run of consecutive frames.
        """
        clip = np.asarray(clip)
        c, v, m = self._frame_shape
        if clip.ndim != 4 or (clip.shape[0], clip.shape[2], clip.shape[3]) != (c, v, m):
            raise ValueError(f"clip shape {clip.shape} != expected ({c}, N, {v}, {m})")
        if clip.dtype.kind not in "fiu":
            raise ValueError(f"clip dtype {clip.dtype} is not a real number type")
        if check_finite and clip.dtype.kind == "f" and not np.isfinite(clip).all():
            raise ValueError("clip contains NaN or inf")
        n = clip.shape[1]
        if seqs is not None and len(seqs) != n:
            raise ValueError(f"{len(seqs)} sequence numbers for {n} frames")
        if n and (seqs is None or self.follows(seqs)):  # the common case: one run, no gap
            self._write(clip)
            self.total += n
            if seqs is not None:
                self.last_seq = int(seqs[-1])
            elif self.last_seq is not None:
                self.last_seq += n
            return np.ones(n, np.int64)
        written, reset, _ = self.plan(seqs, n)
        accepted = np.flatnonzero(written)
        if len(accepted) == 0:
            self.stale += n
            return written
        # a run is consecutive frames that follow each other without a gap or a reset
        jumps = (written[accepted] != 1) | reset[accepted]
        starts = np.flatnonzero(jumps).tolist()
        if not starts or starts[0] != 0:
            starts.insert(0, 0)
        bounds = starts + [len(accepted)]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            first = int(accepted[lo])
            if reset[first]:
                log.debug("gap > max_gap %d: new segment", self.max_gap)
                self.resets += 1
                self.reset()
            elif written[first] > 1:
                self._fill(int(written[first]) - 1)
            idx = accepted[lo:hi]
            if idx[-1] - idx[0] == hi - lo - 1:
                self._write(clip[:, int(idx[0]):int(idx[-1]) + 1])
            else:
                self._write(clip[:, idx])
        self.stale += n - len(accepted)
        self.total += int(written.sum())
        if seqs is not None:
            self.last_seq = int(np.asarray(seqs)[accepted[-1]])
        elif self.last_seq is not None:
            self.last_seq += n
        return written

    def _write(self, frames: np.ndarray) -> None:
        """Write ``(C, n, V, M)`` consecutive frames at the head, as at most two slice copies."""
        n = frames.shape[1]
        length = self.length
        if n > length:
            self._head = (self._head + n - length) % length
            frames = frames[:, n - length:]
            self._valid = length
            n = length
        first = min(n, length - self._head)
        self._data[:, self._head:self._head + first] = frames[:, :first]
        if n > first:
            self._data[:, :n - first] = frames[:, first:]
        self._head = (self._head + n) % length
        self._valid = min(self._valid + n, length)

    def _fill(self, gap: int) -> None:
        """Repeat the latest frame ``gap`` times, as at most two slice assignments."""
        length = self.length
        last = self._data[:, (self._head - 1) % length].copy()
        steps = min(gap, length - 1)
        first = min(steps, length - self._head)
        self._data[:, self._head:self._head + first] = last[:, None]
        if steps > first:
            self._data[:, :steps - first] = last[:, None]
        self._head = (self._head + steps) % length
        self._valid = min(self._valid + gap, length)
        self.filled += gap

    def window(self, length: int | None = None) -> np.ndarray:
        """A new ``(C, length, V, M)`` array of the latest frames, oldest first.

        Right-aligned: the last time step is the newest frame; positions before the first
        valid frame of the current segment are zeros.
        """
        length = self.length if length is None else int(length)
        if length < 1:
            raise ValueError(f"window length must be >= 1, got {length}")
        c, v, m = self._frame_shape
        out = np.empty((c, length, v, m), np.float32)
        n = min(length, self._valid)
        out[:, :length - n] = 0.0  # only the padding is zeroed: the rest is written below
        if n == 0:
            return out
        start = (self._head - n) % self.length
        first = min(n, self.length - start)
        out[:, length - n:length - n + first] = self._data[:, start:start + first]
        if n > first:
            out[:, length - n + first:] = self._data[:, :n - first]
        return out

    def latest(self) -> np.ndarray | None:
        """A copy of the newest frame ``(C, V, M)``, or None when the buffer is empty."""
        if self._valid == 0:
            return None
        return self._data[:, (self._head - 1) % self.length].copy()

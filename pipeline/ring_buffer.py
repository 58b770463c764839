"""Per-stream sliding window of skeleton frames in ST-GCN layout.

A :class:`RingBuffer` owns one float32 array of shape ``(C, T, V, M)`` allocated once;
appending writes one time step in place and :meth:`RingBuffer.window` copies the latest
frames out in time order with at most two slice copies, so neither depends on T.

Sequence numbers keep the time axis honest: duplicates and late frames are dropped, short
gaps are bridged by holding the last frame, and a long gap starts a new segment, since
splicing two distant moments into one window would show motion that never happened.
"""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np

log = logging.getLogger(__name__)


class RingBuffer:
    """Fixed-size circular buffer of frames shaped ``(C, V, M)``."""

    def __init__(self, channels: int = 3, length: int = 300, joints: int = 18, persons: int = 2,
                 max_gap: int = 10) -> None:
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

    def append(self, frame: np.ndarray, seq: int | None = None) -> int:
        """Write one ``(C, V, M)`` frame; returns how many time steps were written.

        0 means the frame was stale (``seq`` not after the last one); more than 1 means a
        gap of up to ``max_gap`` frames was filled by repeating the previous frame. A larger
        gap resets the buffer first. Without ``seq`` the frame is taken as the next one.
        Raises ValueError for a wrong shape or non-finite values.
        """
        frame = np.asarray(frame)
        if frame.shape != self._frame_shape:
            raise ValueError(f"frame shape {frame.shape} != expected {self._frame_shape}")
        if frame.dtype.kind not in "fiu":
            raise ValueError(f"frame dtype {frame.dtype} is not a real number type")
        if frame.dtype.kind == "f" and not np.isfinite(frame).all():
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
        out = np.zeros((c, length, v, m), np.float32)
        n = min(length, self._valid)
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


class StreamBuffers:
    """RingBuffers keyed by stream id, created on first use with one shared shape.

    ``max_streams`` bounds memory when stream ids come from the network.
    """

    def __init__(self, channels: int = 3, length: int = 300, joints: int = 18, persons: int = 2,
                 max_gap: int = 10, max_streams: int = 64) -> None:
        self._shape = dict(channels=channels, length=length, joints=joints, persons=persons, max_gap=max_gap)
        self.max_streams = max_streams
        self._buffers: dict[str, RingBuffer] = {}

    def get(self, stream: str) -> RingBuffer:
        """The stream's buffer, created if new; ValueError beyond ``max_streams``."""
        buf = self._buffers.get(stream)
        if buf is None:
            if len(self._buffers) >= self.max_streams:
                raise ValueError(f"too many streams ({self.max_streams}); not creating {stream!r}")
            buf = self._buffers[stream] = RingBuffer(**self._shape)
        return buf

    __getitem__ = get

    def remove(self, stream: str) -> bool:
        """Drop a stream's buffer; False if there was none."""
        return self._buffers.pop(stream, None) is not None

    def __contains__(self, stream: object) -> bool:
        return stream in self._buffers

    def __len__(self) -> int:
        return len(self._buffers)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._buffers))

    def items(self) -> list[tuple[str, RingBuffer]]:
        """(stream, buffer) pairs, a snapshot safe to iterate while removing."""
        return list(self._buffers.items())

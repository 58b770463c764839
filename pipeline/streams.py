"""Per-stream state of an inference worker: a stream's ring buffer, person slots and window clock.

Frames enter through :meth:`StreamState.add_frame` or, for a frame batch,
:meth:`StreamState.add_batch` (the same steps as its frames one by one, in bulk between the
frames where a window falls due); :meth:`StreamState.job` snapshots the window to classify.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .messages import Frame, FrameBatch, StreamStart
from .recording import RecordingWriter, recording_path
from .results import ActionEvent, Result
from .scheduler import Job
from .smoothing import LabelSmoother
from .tracker import SlotAssigner
from .windows import WindowRules

log = logging.getLogger(__name__)


@dataclass
class StreamState:
    """Everything a worker keeps for one stream."""

    rules: WindowRules
    joints: int
    persons: int
    live: bool
    meta: dict[str, Any] = field(default_factory=dict)
    started: bool = False
    recorder: RecordingWriter | None = None
    since: int = 0  # time steps written since the stream's last window
    last: Frame | None = None
    t_recv: float = 0.0
    read: int = -1  # the worker's socket read that brought the last frame

    def __post_init__(self) -> None:
        self.buffer = self.rules.buffer(self.joints, self.persons)
        self.slots = SlotAssigner(self.persons, joints=self.joints)
        self.smoother: LabelSmoother | None = None

    def smooth(self, result: Result) -> tuple[Result, list[ActionEvent]]:
        """``result`` with each person's steady label (see :mod:`pipeline.smoothing`) and the
        action events that closed with this window."""
        if self.smoother is None:
            self.smoother = LabelSmoother(result.stream)
        shown, events = self.smoother.update(result.seq, result.t_capture, {p.id: p.label for p in result.people})
        return replace(result, people=[replace(p, label=shown[p.id]) for p in result.people]), events

    def close_events(self) -> list[ActionEvent]:
        """The stream ended: its open action events close."""
        return self.smoother.close() if self.smoother is not None else []

    @property
    def due(self) -> bool:
        return self.rules.due(self.since, self.buffer.valid)

    @property
    def delivered_through(self) -> int:
        """The last frame whose window's result was already delivered (a restarted worker's
        sender says so in its start message; -1: none), so it need not be classified again."""
        return int(self.meta.get("delivered_through", -1))

    @property
    def has_tail(self) -> bool:
        """Frames after the last window, enough for one more (a stream's end classifies them)."""
        return self.since > 0 and self.buffer.valid >= self.rules.min_frames and self.last is not None

    def start(self, msg: StreamStart) -> bool:
        """The stream's start message; False for a repeat (lossless senders repeat their start,
        see workers/emitter.py). A restarted sender continues the stream's buffer."""
        live = bool(msg.meta.get("live", False))
        if self.started and self.meta == msg.meta:
            return False
        if self.started:
            log.info("stream %s restarted (%s); continuing its buffer", msg.stream, msg.meta.get("source"))
        elif self.last is not None:
            log.info("stream %s: start message after its first frames (the worker was restarted); now %s",
                     msg.stream, "live" if live else "lossless")
        else:
            log.info("stream %s started (%s, %s)", msg.stream, msg.meta.get("source"), "live" if live else "lossless")
        self.live, self.started, self.meta = live, True, dict(msg.meta)
        return True

    def record_to(self, folder: Path, start: StreamStart, layout: str) -> None:
        """Record the stream's accepted frames from now on (a recording's file is never overwritten;
        a refusal is logged and the stream goes on unrecorded)."""
        if self.recorder is not None:
            return
        try:
            meta = {"joints": self.joints, "layout": layout, **start.meta}
            self.recorder = RecordingWriter(recording_path(folder, start.stream), StreamStart(start.stream, start.t, meta))
        except (OSError, ValueError) as exc:
            log.error("cannot record stream %s: %s", start.stream, exc)

    def record(self, data: bytes) -> None:
        """Append a message to the stream's recording; a write the disk refuses (full) stops the
        recording with one error line, and the stream goes on unrecorded."""
        if self.recorder is None:
            return
        try:
            self.recorder.write(data)
        except OSError as exc:
            self._recording_failed(exc)

    def stop_recording(self, reason: str) -> None:
        """End the recording (its end message, then the final name)."""
        if self.recorder is None:
            return
        try:
            self.recorder.close(reason)
        except OSError as exc:
            self._recording_failed(exc)
        self.recorder = None

    def _recording_failed(self, exc: OSError) -> None:
        rec, self.recorder = self.recorder, None
        assert rec is not None
        rec.abandon()
        log.error("stream %s: recording stopped (%s); %s keeps what was written before, readable as a recording",
                  rec.stream or rec.path.stem, exc.strerror or exc, rec.part_path)

    def add_frame(self, msg: Frame, t_recv: float) -> int:
        """Slot and append one frame; the time steps written (0: stale). ValueError: dropped."""
        frame = self.slots.assign(msg.persons, joints=self.joints)
        written = self.buffer.append(frame, msg.seq, check_finite=False)  # the decoder refused NaN/inf
        if written:
            self.last, self.t_recv = msg, t_recv
            self.since += written
        return written

    def add_batch(self, msg: FrameBatch, t_recv: float,
                  on_due: Callable[[], None]) -> tuple[np.ndarray, int, str | None]:
        """Append a batch, calling ``on_due`` where a window falls due. Returns the indices of
        the frames kept (not stale), how many frames were taken (kept or stale) and, if a chunk
        was refused, why (the frames from there on are dropped)."""
        n = len(msg)
        written, windows = self.rules.due_in_clip(self.buffer, msg.seq, self.since)
        ends = windows if windows and windows[-1] == n - 1 else windows + [n - 1]
        due = set(windows)
        offsets = msg.offsets() if len(ends) > 1 else None
        lo, error = 0, None
        for hi in ends:
            try:
                if hi == lo:
                    self.buffer.append(self.slots.assign(msg.frame(lo).persons, joints=self.joints), int(msg.seq[lo]),
                                       check_finite=False)
                elif offsets is None:
                    clip = self.slots.assign_many(msg.counts, msg.tracks, msg.keypoints, self.joints)
                    self.buffer.append_many(clip, msg.seq, check_finite=False)
                else:
                    a, b = int(offsets[lo]), int(offsets[hi + 1])
                    clip = self.slots.assign_many(msg.counts[lo:hi + 1], msg.tracks[a:b], msg.keypoints[a:b],
                                                  self.joints)
                    self.buffer.append_many(clip, msg.seq[lo:hi + 1], check_finite=False)
            except ValueError as exc:
                error = str(exc)
                break
            steps = hi - lo + 1 if written is None else int(written[lo:hi + 1].sum())
            if steps:
                last = hi if written is None else lo + int(np.flatnonzero(written[lo:hi + 1])[-1])
                self.last, self.t_recv = msg.frame(last), t_recv
                self.since += steps
            if hi in due:
                on_due()
            lo = hi + 1
        return (np.arange(lo) if written is None else np.flatnonzero(written[:lo])), lo, error

    def job(self) -> Job:
        """The window ending at the latest frame, to classify; the window clock starts over."""
        last = self.last
        self.since = 0
        return Job(last.stream, last.seq, last.t_capture, self.t_recv, last.pose_ms,
                   self.buffer.window(self.rules.window), list(self.slots.slots), len(last.persons))

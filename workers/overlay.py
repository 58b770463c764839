"""Annotated video sink: skeletons, track ids, top-3 labels and the predicted next frame.

Frames wait in a short queue until the result for their sequence number (or a later one)
has arrived, so each written frame shows the classification that covers it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from pipeline.messages import Frame
from pipeline.results import Result
from pipeline.transport import CurveKeyPair, ResultSubscriber
from stgcn.graph import get_layout

log = logging.getLogger(__name__)
COLORS = [(0, 200, 255), (255, 120, 0), (0, 220, 0), (220, 0, 220)]
FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}


def draw_skeleton(image: np.ndarray, kp: np.ndarray, color: tuple[int, int, int], layout: str = "openpose",
                  thickness: int = 2, alpha: float = 1.0) -> None:
    """Draw one ``(V, 3)`` skeleton (x, y in 0..1, confidence) in place; ``alpha`` < 1 draws faintly."""
    h, w = image.shape[:2]
    pts = np.round(kp[:, :2] * (w, h)).astype(int)
    ok = kp[:, 2] > 0
    target = image.copy() if alpha < 1 else image
    for i, j in get_layout(layout).edges:
        if ok[i] and ok[j]:
            cv2.line(target, tuple(pts[i]), tuple(pts[j]), color, thickness, cv2.LINE_AA)
    for v in np.flatnonzero(ok):
        cv2.circle(target, tuple(pts[v]), thickness + 1, color, -1, cv2.LINE_AA)
    if alpha < 1:
        cv2.addWeighted(target, alpha, image, 1 - alpha, 0, dst=image)


def annotate(image: np.ndarray, frame: Frame, result: Result | None, previous: Result | None = None) -> np.ndarray:
    """A copy of ``image`` with the frame's skeletons, ``result``'s labels and, faintly, the
    skeleton that ``previous`` (a result from a few frames earlier) predicted."""
    out = image.copy()
    if previous is not None and previous.next_frame:
        for kp in previous.next_frame:
            draw_skeleton(out, np.asarray(kp, np.float32), (255, 255, 255), frame.layout, 1, alpha=0.45)
    for person in frame.persons:
        color = COLORS[person.track % len(COLORS)]
        draw_skeleton(out, person.keypoints, color, frame.layout)
        present = person.keypoints[:, 2] > 0
        if present.any():
            x, y = person.keypoints[present, :2].min(0) * (out.shape[1], out.shape[0])
            cv2.putText(out, f"id {person.track}", (int(x), max(12, int(y) - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        color, 1, cv2.LINE_AA)
    if result is not None:
        for k, top in enumerate(result.top[:3]):
            text = f"{top.label} {100 * top.score:.0f}%"
            cv2.putText(out, text, (8, 18 + 18 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(out, text, (8, 18 + 18 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class Overlay:
    """Subscribes to one stream's results and writes and/or shows annotated frames."""

    def __init__(self, results_endpoint: str | Sequence[str], stream: str, width: int, height: int, fps: float,
                 save_video: str | None = None, show: bool = False, max_delay_s: float = 2.0,
                 max_queue: int = 120, server_public: bytes | None = None,
                 client_keys: CurveKeyPair | None = None) -> None:
        self.sub = ResultSubscriber(results_endpoint, [stream], server_public=server_public, client_keys=client_keys)
        self.stream = stream
        self.max_delay, self.max_queue = max_delay_s, max_queue
        self.queue: deque[tuple[Frame, np.ndarray, float]] = deque()
        self.result: Result | None = None  # the newest result
        self.history: deque[Result] = deque(maxlen=256)
        self.writer = None
        self.show = show and bool(os.environ.get("DISPLAY") or os.name == "nt")
        if show and not self.show:
            log.warning("--show: no display available; not showing a window")
        if save_video:
            path = Path(save_video)
            path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*FOURCC.get(path.suffix.lower(), "mp4v"))
            self.writer = cv2.VideoWriter(str(path), fourcc, fps or 30.0, (width, height))
            if not self.writer.isOpened():
                raise ValueError(f"{path}: cannot write a video here (use .mp4 or .avi)")
            self.path = path

    def _poll(self) -> None:
        while (record := self.sub.recv(timeout_ms=0)) is not None:
            if isinstance(record, Result):
                self.result = record
                self.history.append(record)

    def _newest(self, seq: int, before: bool = False) -> Result | None:
        """The newest result computed from frames up to ``seq`` (before ``seq`` if asked)."""
        best = None
        for r in self.history:
            if (r.seq < seq if before else r.seq <= seq) and (best is None or r.seq > best.seq):
                best = r
        return best

    def add(self, frame: Frame, image: np.ndarray) -> None:
        self.queue.append((frame, image, time.time()))
        self._emit(final=False)

    def _emit(self, final: bool) -> None:
        self._poll()
        now = time.time()
        while self.queue:
            frame, image, t = self.queue[0]
            covered = self.result is not None and self.result.seq >= frame.seq
            if not (covered or final or now - t > self.max_delay or len(self.queue) > self.max_queue):
                break
            self.queue.popleft()
            previous = self._newest(frame.seq, before=True)
            if previous is not None and frame.seq - previous.seq > 5:
                previous = None  # a prediction is for the next frame: don't draw stale ones
            out = annotate(image, frame, self._newest(frame.seq) or self.result, previous)
            if self.writer is not None:
                self.writer.write(out)
            if self.show:
                cv2.imshow(self.stream, out)
                cv2.waitKey(1)

    def close(self, wait_s: float = 30.0) -> None:
        deadline = time.time() + wait_s
        while self.queue and time.time() < deadline:
            last_seq = self.queue[-1][0].seq
            if self.result is not None and self.result.seq >= last_seq:
                break
            time.sleep(0.05)
            self._poll()
        self._emit(final=True)
        if self.writer is not None:
            self.writer.release()
            log.info("annotated video written to %s", self.path)
        self.sub.close()

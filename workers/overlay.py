"""Annotated video and live window: each person's skeleton and action label, and the
skeleton the model predicted for the frame.

What a frame shows (:func:`annotate`):

- every tracked person's skeleton in a colour of their own (from the track id) and, above
  their head, their label in that colour (``"wave 87%"``); ``"unknown"`` in grey for a person
  the model does not recognise or has not classified yet; ``"no person"`` when the frame
  has nobody;
- where a result predicted this very frame (the result of frame ``seq - 1``), each person's
  predicted skeleton as white dashes over the live one, with a legend in the bottom-left
  corner; with results that carry several frames ahead (``--future``), also the skeleton the
  earliest result that reaches this frame predicted for it (up to ``H`` frames before, the
  farthest the model predicts), in yellow, so the video shows how far ahead the prediction holds.

Text is sized from the frame height and drawn once, on a mask whose dilation is its dark
outline, so fill and outline always match.

The written video ties labels to frames by sequence number: a frame waits until the first
result whose window ends at or after it has arrived (or the stream ended), however far the
inference worker lags, within ``max_delay_s`` and ``max_buffer_mb``; beyond those the oldest
frame goes out with the latest earlier label and a warning says so. The live window shows
the newest frame with the newest result at once.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from pipeline.messages import Frame
from pipeline.results import UNKNOWN, PersonResult, Result, StreamEnded
from pipeline.transport import CurveKeyPair, ResultSubscriber
from stgcn.graph import get_layout

log = logging.getLogger(__name__)

# BGR, bright and far apart; grey and white are kept for "unknown" and the prediction.
COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 200, 255), (255, 144, 30), (60, 220, 60), (230, 60, 230), (0, 100, 255),
    (255, 255, 0), (160, 120, 255), (0, 255, 190), (200, 80, 0), (80, 160, 255),
)
UNKNOWN_COLOR = (190, 190, 190)
PREDICTED_COLOR = (255, 255, 255)
FUTURE_COLOR = (0, 255, 255)
OUTLINE_COLOR = (0, 0, 0)
LABEL_BACKDROP = 0.5  # a label's box keeps this much of the frame's brightness behind it
NO_PERSON = "no person"
FONT = cv2.FONT_HERSHEY_SIMPLEX
FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}
LEGEND_TRACKED = "tracked skeleton"
LEGEND_PREDICTED = "predicted next frame"
LEGEND_FUTURE = "predicted {frames} frames before"
HEAD_CLEARANCE = 0.06  # of a person's height, between their top joint and their label

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def check_video_path(path: str | Path) -> Path:
    """``path`` as a Path when it names a video type the overlay writes, else ValueError."""
    path = Path(path)
    if path.suffix.lower() not in FOURCC:
        kind = f"'{path.suffix}'" if path.suffix else "no extension"
        raise ValueError(f"--save-video {path}: cannot write {kind} videos; use .mp4 or .avi")
    return path


def person_color(track: int) -> tuple[int, int, int]:
    """The colour of track ``track`` (skeleton and label)."""
    return COLORS[track % len(COLORS)]


@dataclass(frozen=True)
class TextStyle:
    """Font scale, stroke thickness and outline width (pixels) of drawn text."""

    scale: float
    thickness: int
    outline: int


def text_style(height: int, factor: float = 1.0) -> TextStyle:
    """Text for a frame ``height`` pixels high: about 3 % of it, never under 10 pixels."""
    scale = max(0.45, 0.8 * height / 720) * factor
    return TextStyle(scale, max(1, round(1.7 * scale)), max(1, round(1.4 * scale)))


def text_layers(text: str, style: TextStyle) -> tuple[np.ndarray, np.ndarray]:
    """The fill and outline coverage (uint8, 0-255, same shape) of ``text``.

    The fill is drawn once (anti-aliased); the outline is its dilation by ``style.outline``
    pixels, so every fill pixel lies inside the outline whatever the font's metrics.
    """
    (width, height), baseline = cv2.getTextSize(text, FONT, style.scale, style.thickness)
    pad = style.outline + style.thickness
    fill = np.zeros((height + baseline + 2 * pad, width + 2 * pad), np.uint8)
    cv2.putText(fill, text, (pad, pad + height), FONT, style.scale, 255, style.thickness, cv2.LINE_AA)
    size = 2 * style.outline + 1
    outline = cv2.dilate(fill, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    return fill, outline


def _blend(image: np.ndarray, x: int, y: int, alpha: np.ndarray, color: tuple[int, int, int]) -> None:
    """Paint ``color`` with coverage ``alpha`` (uint8) at ``(x, y)``, clipped to the image."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + alpha.shape[1], w), min(y + alpha.shape[0], h)
    if x0 >= x1 or y0 >= y1:
        return
    a = alpha[y0 - y:y1 - y, x0 - x:x1 - x, None].astype(np.float32) / 255.0
    roi = image[y0:y1, x0:x1]
    roi[:] = np.rint(roi * (1.0 - a) + np.asarray(color, np.float32) * a).astype(np.uint8)


def shade(image: np.ndarray, box: Box, keep: float) -> None:
    """Darken ``box`` (clipped to the image) to ``keep`` of its brightness, in place: a backdrop
    that keeps text legible over a busy or same-coloured background."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)
    image[y0:y1, x0:x1] = (image[y0:y1, x0:x1] * keep).astype(np.uint8)


def draw_text(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], style: TextStyle) -> Box:
    """Outlined ``text`` with its box's top-left corner at ``(x, y)``; returns the box."""
    fill, outline = text_layers(text, style)
    _blend(image, x, y, outline, OUTLINE_COLOR)
    _blend(image, x, y, fill, color)
    return x, y, x + fill.shape[1], y + fill.shape[0]


def text_box_size(text: str, style: TextStyle) -> tuple[int, int]:
    """Width and height of the box :func:`draw_text` fills for ``text``."""
    (width, height), baseline = cv2.getTextSize(text, FONT, style.scale, style.thickness)
    pad = style.outline + style.thickness
    return width + 2 * pad, height + baseline + 2 * pad


def skeleton_width(height: int) -> int:
    """Line width of a tracked skeleton on a frame ``height`` pixels high."""
    return max(2, round(height / 400))


def draw_skeleton(image: np.ndarray, kp: np.ndarray, color: tuple[int, int, int], layout: str = "openpose",
                  thickness: int = 2) -> None:
    """Draw one ``(V, 3)`` skeleton (x, y in 0..1, confidence > 0 where present) in place."""
    h, w = image.shape[:2]
    pts = np.round(kp[:, :2] * (w, h)).astype(int)
    ok = kp[:, 2] > 0
    for i, j in get_layout(layout).edges:
        if ok[i] and ok[j]:
            cv2.line(image, tuple(pts[i]), tuple(pts[j]), color, thickness, cv2.LINE_AA)
    for v in np.flatnonzero(ok):
        cv2.circle(image, tuple(pts[v]), thickness + 1, color, -1, cv2.LINE_AA)


def _dashed_line(image: np.ndarray, a: np.ndarray, b: np.ndarray, thickness: int, dash: int,
                 color: tuple[int, int, int] = PREDICTED_COLOR) -> None:
    length = float(np.hypot(*(b - a)))
    steps = max(1, int(length // (2 * dash)))
    for k in range(steps + 1):
        t0, t1 = 2 * k * dash / max(length, 1e-6), min(1.0, (2 * k + 1) * dash / max(length, 1e-6))
        if t0 >= 1.0:
            break
        p, q = tuple(np.round(a + (b - a) * t0).astype(int)), tuple(np.round(a + (b - a) * t1).astype(int))
        cv2.line(image, p, q, OUTLINE_COLOR, thickness + 2, cv2.LINE_AA)
        cv2.line(image, p, q, color, thickness, cv2.LINE_AA)


def draw_predicted(image: np.ndarray, kp: np.ndarray, layout: str = "openpose",
                   color: tuple[int, int, int] = PREDICTED_COLOR) -> None:
    """Draw a predicted ``(V, 3)`` skeleton as dark-edged dashes (white by default), in place."""
    h, w = image.shape[:2]
    thickness = max(1, round(h / 720))
    dash = max(3, round(h / 120))
    pts = kp[:, :2].astype(np.float64) * (w, h)
    ok = kp[:, 2] > 0
    for i, j in get_layout(layout).edges:
        if ok[i] and ok[j]:
            _dashed_line(image, pts[i], pts[j], thickness, dash, color)
    for v in np.flatnonzero(ok):
        center = tuple(np.round(pts[v]).astype(int))
        cv2.circle(image, center, thickness + 2, OUTLINE_COLOR, -1, cv2.LINE_AA)
        cv2.circle(image, center, thickness + 1, color, -1, cv2.LINE_AA)


def label_text(person: PersonResult | None) -> tuple[str, bool]:
    """The text shown for a person's classification and whether it is a known action."""
    if person is None or person.label == UNKNOWN:
        return UNKNOWN, False
    return f"{person.label} {100 * person.score:.0f}%", True


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _place(size: tuple[int, int], center_x: float, top: float, shape: tuple[int, ...], taken: list[Box],
           gap: int) -> Box:
    """A box of ``size`` centred over ``center_x`` just above ``top``, inside the image and
    clear of the ``taken`` boxes where it can be (moved up, else down, past the one it hits)."""
    w, h = size
    width, height = shape[1], shape[0]
    x = int(min(max(center_x - w / 2, 0), max(width - w, 0)))
    y = int(top - gap - h)
    for _ in range(2 * len(taken) + 1):
        y = int(min(max(y, 0), max(height - h, 0)))
        hit = next((b for b in taken if _overlaps((x, y, x + w, y + h), b)), None)
        if hit is None:
            break
        y = hit[1] - h if hit[1] - h >= 0 else hit[3]
    return x, y, x + w, y + h


@dataclass(frozen=True)
class DrawnLabel:
    """A label drawn on a frame: whose (track id, None for "no person"), what, where."""

    track: int | None
    text: str
    color: tuple[int, int, int]
    box: Box


def draw_labels(image: np.ndarray, frame: Frame, result: Result | None) -> list[DrawnLabel]:
    """Each person's label above their skeleton (``"no person"`` top left when nobody is in
    the frame), in place; returns what was drawn where."""
    style = text_style(image.shape[0])
    gap = max(2, style.outline)
    if not frame.persons:
        x = y = max(4, image.shape[0] // 60)
        return [DrawnLabel(None, NO_PERSON, UNKNOWN_COLOR, draw_text(image, NO_PERSON, x, y, UNKNOWN_COLOR, style))]
    by_id = {p.id: p for p in result.people} if result is not None else {}
    drawn: list[DrawnLabel] = []
    h, w = image.shape[:2]
    for person in sorted(frame.persons, key=lambda p: p.track):  # a stable order: labels do not swap places
        present = person.keypoints[:, 2] > 0
        if not present.any():
            continue
        xy = person.keypoints[present, :2] * (w, h)
        text, known = label_text(by_id.get(person.track))
        color = person_color(person.track) if known else UNKNOWN_COLOR
        head = HEAD_CLEARANCE * float(np.ptp(xy[:, 1]))  # the top joint is an eye or ear, not the crown
        box = _place(text_box_size(text, style), (xy[:, 0].min() + xy[:, 0].max()) / 2, xy[:, 1].min() - head,
                     image.shape, [d.box for d in drawn], gap)
        shade(image, box, LABEL_BACKDROP)  # e.g. a yellow label over a broadcast's yellow caption
        draw_text(image, text, box[0], box[1], color, style)
        drawn.append(DrawnLabel(person.track, text, color, box))
    return drawn


def draw_legend(image: np.ndarray, tracked_color: tuple[int, int, int], future_text: str | None = None) -> Box:
    """The legend (solid: tracked skeleton, dashes: predicted next frame, and yellow dashes:
    ``future_text``, the skeleton predicted several frames before) in the bottom-left corner, in
    place; returns its box."""
    h, w = image.shape[:2]
    style = text_style(h, 0.7)
    style = TextStyle(style.scale, max(1, style.thickness - 1), style.outline)
    sample = max(16, round(2.2 * text_box_size("xx", style)[0]))
    rows = [(LEGEND_TRACKED, tracked_color), (LEGEND_PREDICTED, PREDICTED_COLOR)]
    rows += [(future_text, FUTURE_COLOR)] if future_text else []
    (tw, th), base = max((cv2.getTextSize(text, FONT, style.scale, style.thickness) for text, _ in rows),
                         key=lambda size: size[0][0])
    pad, row = max(4, th // 2), th + base + max(4, th // 2)
    box = (pad, h - len(rows) * row - 3 * pad, min(w, 4 * pad + sample + tw), h - pad)
    x0, y0, x1, y1 = box
    shade(image, box, 0.35)
    lines_x = (x0 + pad, x0 + pad + sample)
    for k, (text, color) in enumerate(rows):
        baseline = y0 + pad + (k + 1) * row - base
        mid = baseline - th // 2
        if k == 0:
            cv2.line(image, (lines_x[0], mid), (lines_x[1], mid), color, skeleton_width(h), cv2.LINE_AA)
        else:
            _dashed_line(image, np.array([lines_x[0], mid], float), np.array([lines_x[1], mid], float),
                         max(1, round(h / 720)), max(3, round(h / 120)), color)
        cv2.putText(image, text, (lines_x[1] + pad, baseline), FONT, style.scale, (255, 255, 255), style.thickness,
                    cv2.LINE_AA)
    return box


def future_legend(frames: int, fps: float | None) -> str:
    """The legend line of the skeleton predicted ``frames`` frames before (and how long that is)."""
    text = LEGEND_FUTURE.format(frames=frames)
    return f"{text} ({1000 * frames / fps:.0f} ms)" if fps else text


def annotate(image: np.ndarray, frame: Frame, result: Result | None, prediction: Result | None = None,
             earlier: Result | None = None, fps: float | None = None) -> np.ndarray:
    """A copy of ``image`` with the frame's skeletons and ``result``'s labels; with
    ``prediction`` (the result of frame ``frame.seq - 1``), the skeletons it predicted for
    this frame as white dashes and the legend; with ``earlier`` (an earlier result whose people
    carry ``future`` frames that reach this frame, two or more frames before it), the skeletons it
    predicted for this frame in yellow (``fps``: the video's, to say how long ago that was)."""
    out = image.copy()
    thickness = skeleton_width(out.shape[0])
    for person in frame.persons:
        draw_skeleton(out, person.keypoints, person_color(person.track), frame.layout, thickness)
    predicted = []
    if prediction is not None and prediction.seq + 1 == frame.seq:
        predicted = [np.asarray(p.next_frame, np.float32) for p in prediction.people if p.next_frame]
    far, frames = [], frame.seq - earlier.seq if earlier is not None else 0
    if frames > 1:
        far = [np.asarray(p.future[frames - 1], np.float32) for p in earlier.people
               if p.future and len(p.future) >= frames]
    for kp in far:
        draw_predicted(out, kp, frame.layout, FUTURE_COLOR)
    for kp in predicted:
        draw_predicted(out, kp, frame.layout)
    draw_labels(out, frame, result)
    if predicted or far:
        draw_legend(out, person_color(frame.persons[0].track) if frame.persons else COLORS[0],
                    future_legend(frames, fps) if far else None)
    return out


class Overlay:
    """Subscribes to one stream's results and writes and/or shows annotated frames.

    Frames for the video wait for the result that covers them (see the module docstring) at
    most ``max_delay_s`` seconds and ``max_buffer_mb`` MiB of frames in all.
    """

    def __init__(self, results_endpoint: str | Sequence[str], stream: str, width: int, height: int, fps: float,
                 save_video: str | None = None, show: bool = False, max_delay_s: float = 30.0,
                 max_buffer_mb: float = 1024.0, server_public: bytes | None = None,
                 client_keys: CurveKeyPair | None = None) -> None:
        path = check_video_path(save_video) if save_video else None
        self.stream = stream
        self.max_delay_s, self.max_buffer_bytes = max_delay_s, int(max_buffer_mb * 2**20)
        self.pending: deque[tuple[Frame, np.ndarray, float]] = deque()
        self.pending_bytes = 0
        self.results: list[Result] = []  # sorted by seq
        self.horizon = 0  # frames ahead the results' ``future`` holds (0: none)
        self.fps = fps
        self.ended = False
        self.late_frames = 0
        self._last_warning = float("-inf")
        self.show = show and bool(os.environ.get("DISPLAY") or os.name == "nt")
        if show and not self.show:
            log.warning("--show: no display available; not showing a window")
        self.writer = None
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC[path.suffix.lower()]),
                                          fps or 30.0, (width, height))
            if not self.writer.isOpened():
                raise ValueError(f"--save-video {path}: cannot write a video there")
        self.sub = ResultSubscriber(results_endpoint, [stream], server_public=server_public, client_keys=client_keys)

    def _poll(self) -> None:
        while (record := self.sub.recv(timeout_ms=0)) is not None:
            if isinstance(record, Result):
                self.horizon = max((len(p.future) for p in record.people if p.future), default=self.horizon)
                seqs = [r.seq for r in self.results]
                i = bisect.bisect_left(seqs, record.seq)
                if i < len(seqs) and seqs[i] == record.seq:
                    self.results[i] = record
                else:
                    self.results.insert(i, record)
            elif isinstance(record, StreamEnded):
                self.ended = True

    def _covering(self, seq: int) -> Result | None:
        """The first result whose window ends at or after frame ``seq``."""
        i = bisect.bisect_left([r.seq for r in self.results], seq)
        return self.results[i] if i < len(self.results) else None

    def _at(self, seq: int) -> Result | None:
        i = bisect.bisect_left([r.seq for r in self.results], seq)
        return self.results[i] if i < len(self.results) and self.results[i].seq == seq else None

    def _latest_before(self, seq: int) -> Result | None:
        i = bisect.bisect_left([r.seq for r in self.results], seq)
        return self.results[i - 1] if i > 0 else None

    def add(self, frame: Frame, image: np.ndarray) -> None:
        """A captured frame: shown at once, written once its result is in."""
        self._poll()
        if self.show:
            newest = self.results[-1] if self.results else None
            cv2.imshow(self.stream, annotate(image, frame, newest, newest))
            cv2.waitKey(1)
        if self.writer is None:
            self._prune()
        else:
            self.pending.append((frame, image, time.monotonic()))
            self.pending_bytes += image.nbytes
            self._emit(final=False)

    def _emit(self, final: bool) -> None:
        """Write the waiting frames whose result is in, in order; give up on the oldest beyond
        the limits (or all of them, ``final``)."""
        now = time.monotonic()
        while self.pending:
            frame, image, t = self.pending[0]
            result = self._covering(frame.seq)
            if result is None:
                over = now - t > self.max_delay_s or self.pending_bytes > self.max_buffer_bytes
                if not (final or self.ended or over):
                    break
                if over or not self.ended:
                    self._late(frame, now - t)
                result = self._latest_before(frame.seq)
            self.pending.popleft()
            self.pending_bytes -= image.nbytes
            earlier = self._covering(frame.seq - self.horizon) if self.horizon > 1 else None
            self.writer.write(annotate(image, frame, result, self._at(frame.seq - 1), earlier, self.fps))
        self._prune()

    def _late(self, frame: Frame, waited: float) -> None:
        self.late_frames += 1
        now = time.monotonic()
        if now - self._last_warning >= 10.0:
            self._last_warning = now
            log.warning("overlay %s: no result for frame %d after %.1f s (%d frames, %.0f MiB waiting; limits "
                        "%.0f s, %.0f MiB): writing it with the latest earlier label (%d such frames so far)",
                        self.stream, frame.seq, waited, len(self.pending), self.pending_bytes / 2**20,
                        self.max_delay_s, self.max_buffer_bytes / 2**20, self.late_frames)

    def _prune(self) -> None:
        """Forget the results no waiting or future frame needs (keeps the latest before, and those
        whose ``future`` reaches a waiting frame)."""
        oldest = self.pending[0][0].seq if self.pending else (self.results[-1].seq + 1 if self.results else 0)
        i = bisect.bisect_left([r.seq for r in self.results], oldest - max(1, self.horizon))
        if i > 1:
            del self.results[:i - 1]

    def close(self, wait_s: float = 30.0) -> None:
        """Wait up to ``wait_s`` for the results of the waiting frames, write them and close."""
        deadline = time.monotonic() + wait_s
        while self.pending and not self.ended and time.monotonic() < deadline:
            self._poll()
            if self._covering(self.pending[-1][0].seq) is not None:
                break
            time.sleep(0.05)
        self._poll()
        if self.writer is not None:
            self._emit(final=True)
            self.writer.release()
            log.info("annotated video written to %s", self.path)
        if self.late_frames:
            log.warning("overlay %s: %d frame(s) written without the result that covers them",
                        self.stream, self.late_frames)
        self.sub.close()

"""Frames from a camera or a video file, with timestamps fit for MediaPipe's VIDEO mode.

:func:`open_source` wraps ``cv2.VideoCapture`` and turns its silent failures (a camera that
does not open, a missing or undecodable file) into one :class:`SourceError` line. Iterating a
:class:`VideoSource` yields ``(index, frame_bgr, timestamp_ms)``: file timestamps come from the
frame index and fps, so a re-run gives the same ones; camera timestamps come from the clock.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_FPS = 30.0


class SourceError(RuntimeError):
    """A camera or video file that cannot deliver frames."""


class VideoSource:
    """An opened camera or video file; iterate for ``(index, frame_bgr, timestamp_ms)``.

    Iteration is single-pass. A read failure before the container's frame count ends the
    iteration with a logged warning and counts in :attr:`decode_failures`.
    """

    def __init__(self, capture: cv2.VideoCapture, name: str, live: bool, realtime: bool = False) -> None:
        self._capture = capture
        self.name = name
        self.live = live or realtime
        self.realtime = realtime  # a file played at its frame rate as a camera delivers it
        self.late_frames = 0  # realtime: file frames passed over because the reader fell behind
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        if not math.isfinite(fps) or fps <= 0 or fps > 1000:
            logger.info("%s reports fps %r; using %.0f", name, fps, DEFAULT_FPS)
            fps = DEFAULT_FPS
        self.fps = fps
        self.width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = -1 if live or count <= 0 else count
        self.decode_failures = 0
        self._first: np.ndarray | None = None
        self._index = 0
        self._clock_start: float | None = None
        self._last_ts = -1
        self._file_index = 0

    def _prime(self) -> None:
        """Read the first frame now so that an unreadable source fails at open time."""
        ok, frame = self._capture.read()
        if not ok or frame is None:
            self.close()
            raise SourceError(f"{self.name}: no decodable video frames")
        self._first = frame
        if self.width <= 0 or self.height <= 0:
            self.height, self.width = frame.shape[:2]

    def _timestamp(self, index: int) -> int:
        if not self.live:
            return int(round(index * 1000.0 / self.fps))
        now = time.monotonic()
        if self._clock_start is None:
            self._clock_start = now
        ts = max(int((now - self._clock_start) * 1000.0), self._last_ts + 1)
        self._last_ts = ts
        return ts

    def _keep_time(self) -> None:
        """Realtime: wait for the next file frame's time, or pass over the frames already late
        (a camera hands over its newest frame, not a backlog)."""
        now = time.monotonic()
        if self._clock_start is None:
            self._clock_start = now
        due = int((now - self._clock_start) * self.fps)  # the file frame showing now
        if due < self._file_index:
            time.sleep((self._file_index / self.fps) - (now - self._clock_start))
        while self._file_index < due and self._capture.grab():
            self._file_index += 1
            self.late_frames += 1

    def read(self) -> tuple[int, np.ndarray, int] | None:
        """The next ``(index, frame_bgr, timestamp_ms)``, or None at the end of the source."""
        if self._first is not None:
            frame, self._first = self._first, None
            self._file_index = 1
        else:
            if not self._capture.isOpened():
                return None
            if self.realtime:
                self._keep_time()
            ok, frame = self._capture.read()
            self._file_index += 1
            if not ok or frame is None:
                self._end_of_stream()
                return None
        index = self._index
        self._index += 1
        return index, frame, self._timestamp(index)

    def _end_of_stream(self) -> None:
        if self.frame_count > 0 and self._index < self.frame_count:
            self.decode_failures += 1
            logger.warning(
                "%s: decoding stopped at frame %d of %d; ending the stream",
                self.name,
                self._index,
                self.frame_count,
            )
        elif self.live:
            logger.warning("%s: camera stopped delivering frames after %d", self.name, self._index)
        self.close()

    def seek(self, index: int) -> None:
        """Continue a file at frame ``index``; earlier frames are decoded and dropped (exact).

        Used to resume a stream after its last delivered frame. Seeking past the end ends the
        iteration; live cameras cannot seek.
        """
        if self.live:
            raise ValueError(f"{self.name}: a live camera cannot seek")
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        if index < self._index:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._first, self._index = None, 0
        if self._first is not None and index > self._index:
            self._first = None
            self._index += 1
        while self._index < index:
            if not self._capture.isOpened() or not self._capture.grab():
                logger.warning(
                    "%s: seek to frame %d passes the end (%d frames)", self.name, index, self._index
                )
                self.close()
                return
            self._index += 1

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, int]]:
        while (item := self.read()) is not None:
            yield item

    def close(self) -> None:
        """Release the capture device or file."""
        self._capture.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _open_camera(index: int) -> cv2.VideoCapture:
    """Open a camera with OpenCV's own warnings muted; our SourceError says what failed."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(index)
    finally:
        cv2.utils.logging.setLogLevel(level)


def open_source(camera: int | None = None, video: str | Path | None = None, realtime: bool = False) -> VideoSource:
    """Open camera ``camera`` or the file ``video`` (exactly one); raise SourceError if unusable.
    ``realtime``: play the file at its frame rate as a live source, as a camera would deliver it."""
    if (camera is None) == (video is None):
        raise ValueError("give exactly one of camera (an index) or video (a file path)")
    if camera is not None:
        capture = _open_camera(int(camera))
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"camera {camera} could not be opened (no device or permission)")
        source = VideoSource(capture, name=f"camera {camera}", live=True)
    else:
        path = Path(video)
        if not path.is_file():
            raise SourceError(f"video file not found: {path}")
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"video file could not be opened (unsupported or corrupt): {path}")
        source = VideoSource(capture, name=str(path), live=False, realtime=realtime)
    source._prime()
    return source

"""One stream's life on the wire: start, frames, end; shared by the capture and replay workers.

Live sources (cameras) never block (the oldest frames are dropped when the consumer is
behind); file sources block instead (backpressure). A small state file records the last
frame sent so that a restarted worker resumes its stream where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.messages import Frame, StreamEnd, StreamStart
from pipeline.transport import FrameSender, SenderStopped, SendTimeout

log = logging.getLogger(__name__)


def read_resume_seq(state_file: str | Path | None) -> int | None:
    """Last sequence number a previous run of this stream sent, if recorded."""
    if not state_file or not Path(state_file).is_file():
        return None
    try:
        return int(json.loads(Path(state_file).read_text())["seq"])
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None


class StreamEmitter:
    """Sends a stream's messages; ``frame()`` returns False once the worker must stop."""

    def __init__(self, endpoint: str, stream: str, meta: dict[str, Any], *, live: bool,
                 stop: threading.Event, state_file: str | Path | None = None, live_queue: int = 8) -> None:
        self.stream, self.meta, self.live, self.stop = stream, dict(meta, live=live), live, stop
        self.state_file = Path(state_file) if state_file else None
        self.sender = FrameSender(endpoint, live=live, queue_size=live_queue, stop=stop)
        self.sent = 0

    def start(self) -> None:
        self.sender.send_control(StreamStart(self.stream, time.time(), self.meta))

    def frame(self, frame: Frame) -> bool:
        try:
            self.sender.send(frame)
        except (SenderStopped, SendTimeout):
            return False
        self.sent += 1
        if self.state_file is not None and frame.seq % 10 == 0:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"seq": frame.seq}))
            os.replace(tmp, self.state_file)
        return not self.stop.is_set()

    def end(self, reason: str) -> None:
        try:
            self.sender.send_control(StreamEnd(self.stream, time.time(), reason))
        except SendTimeout:
            log.warning("stream %s: could not deliver its end message", self.stream)
        finally:
            self.sender.close()
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)
        log.info("stream %s: %d frames sent, %d dropped (%s)", self.stream, self.sent, self.sender.dropped, reason)

"""One stream's life on the wire: start, frames, end; shared by the capture and replay workers.

Live sources (cameras) never block (the oldest frames are dropped when the consumer is
behind); file sources block instead (backpressure). A small state file records the last
frame sent so that a restarted worker resumes its stream where it stopped.

A lossless stream that ends normally waits until ZeroMQ has handed its last frames and its end
message to the consumer, however long a slow, paused or restarting inference worker takes, and
logs every 10 s while it waits; only a stop (SIGINT/SIGTERM) ends the wait, with a warning. (It
used to give up after 20 s and exit 0: the tail of a stream whose consumer was further behind
was lost without a word.)
It also repeats its start message every ``START_RESEND_S`` seconds, so that a restarted
inference worker learns the stream's metadata (a file, not a live source) instead of guessing.

The state file holds the highest sequence number any run of the stream sent (it never goes
down, also while a restarted replay sends its frames again) and stays after a lossless end:
a replay restarted after the supervisor lost track of its frames (see ``workers/replay.py``)
sends them again at full speed up to there.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import zmq

from pipeline.messages import Frame, FrameBatch, StreamEnd, StreamStart
from pipeline.sharding import pick_endpoint
from pipeline.transport import DEFAULT_LINGER_MS, CurveKeyPair, FrameSender, SenderStopped, SendTimeout

log = logging.getLogger(__name__)

WAIT_LOG_S = 10.0  # a lossless stream's end says this often that it is still waiting for its consumer
START_RESEND_S = 2.0  # a lossless stream repeats its start message this often


def read_resume_seq(state_file: str | Path | None) -> int | None:
    """Last sequence number a previous run of this stream sent, if recorded."""
    if not state_file or not Path(state_file).is_file():
        return None
    try:
        return int(json.loads(Path(state_file).read_text())["seq"])
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None


def write_resume_seq(state_file: str | Path, seq: int) -> None:
    """Record ``seq`` as the last frame sent, atomically (a kill leaves the old or the new file)."""
    path = Path(state_file)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"seq": int(seq)}))
    os.replace(tmp, path)


class StreamEmitter:
    """Sends a stream's messages; ``frame()`` returns False once the worker must stop.

    ``endpoint`` may list several inference workers: the stream then goes to the one its
    stable hash picks (:func:`pipeline.sharding.pick_endpoint`), the same one on every run.
    """

    def __init__(self, endpoint: str | Sequence[str], stream: str, meta: dict[str, Any], *, live: bool,
                 stop: threading.Event, state_file: str | Path | None = None, live_queue: int = 8,
                 server_public: bytes | None = None, client_keys: CurveKeyPair | None = None) -> None:
        self.stream, self.meta, self.live, self.stop = stream, dict(meta, live=live), live, stop
        self.state_file = Path(state_file) if state_file else None
        # Its own context, so that end() can wait for delivery: exiting with Context.instance()
        # open does not honour the socket's linger and drops whatever is still queued.
        self._ctx = zmq.Context()
        self.endpoint = pick_endpoint(stream, endpoint)
        self.sender = FrameSender(self.endpoint, live=live, queue_size=live_queue, stop=stop, context=self._ctx,
                                  server_public=server_public, client_keys=client_keys)
        self.sent = 0
        self._next_start = 0.0
        self.last_seq = -1
        self._high = read_resume_seq(self.state_file)
        self._high = -1 if self._high is None else self._high

    def start(self) -> None:
        self.sender.send_control(StreamStart(self.stream, time.time(), self.meta))
        self._next_start = time.monotonic() + START_RESEND_S

    def frame(self, frame: Frame | FrameBatch) -> bool:
        """Send one frame or a batch of frames (see ``pipeline.messages.FrameBatch``)."""
        try:
            if not self.live and time.monotonic() >= self._next_start:
                # lossless, in order with the frames; a live source needs none (unknown means live)
                self.sender.send(StreamStart(self.stream, time.time(), self.meta))
                self._next_start = time.monotonic() + START_RESEND_S
            self.sender.send(frame)
        except (SenderStopped, SendTimeout):
            return False
        batch = isinstance(frame, FrameBatch)
        self.sent += len(frame) if batch else 1
        seq = self.last_seq = int(frame.seq[-1]) if batch else frame.seq
        if self.state_file is not None and seq > self._high and (batch or seq % 10 == 0):
            self._high = seq
            write_resume_seq(self.state_file, seq)
        return not self.stop.is_set()

    def end(self, reason: str) -> None:
        lossless = not self.live and reason == "eof"
        try:
            message = StreamEnd(self.stream, time.time(), reason)
            if lossless:
                self.sender.send(message)  # blocks like its frames, until the consumer takes it or a stop
            else:
                self.sender.send_control(message)
        except (SendTimeout, SenderStopped):
            log.warning("stream %s: could not deliver its end message", self.stream)
        finally:
            if lossless and not self.stop.is_set():
                self._deliver()
            else:
                self._close(DEFAULT_LINGER_MS)
        if self.state_file is not None and not lossless:
            self.state_file.unlink(missing_ok=True)
        elif self.state_file is not None and self.last_seq > self._high:
            write_resume_seq(self.state_file, self.last_seq)
        log.info("stream %s: %d frames sent, %d dropped, %d waited for the socket (%s)", self.stream, self.sent,
                 self.sender.dropped, self.sender.deferred, reason)

    def _deliver(self) -> None:
        """Close with no time limit: wait until the consumer has taken everything queued, or a stop."""
        if not self.sender.flush(None):
            log.warning("stream %s: %d unsent frame(s)", self.stream, self.sender.pending)
        closing = threading.Thread(target=self._ctx.destroy, kwargs={"linger": -1}, daemon=True)
        t0 = time.monotonic()
        closing.start()
        while closing.is_alive():
            closing.join(0.2)
            if self.stop.is_set() and closing.is_alive():
                log.warning("stream %s: stopped before the consumer took the end of the stream", self.stream)
                return
            waited = time.monotonic() - t0
            if closing.is_alive() and waited // WAIT_LOG_S > (waited - 0.2) // WAIT_LOG_S:
                log.info("stream %s: waiting %.0f s for the consumer to take the end of the stream",
                         self.stream, waited)
        if time.monotonic() - t0 > 1.0:
            log.info("stream %s: the consumer took the end of the stream after %.1f s", self.stream,
                     time.monotonic() - t0)

    def _close(self, linger_ms: int) -> None:
        """Hand queued frames to the socket, then close it and wait up to ``linger_ms`` for delivery."""
        if not self.sender.flush(DEFAULT_LINGER_MS):
            log.warning("stream %s: closing with %d unsent frame(s)", self.stream, self.sender.pending)
        self._ctx.destroy(linger=linger_ms)  # closes the socket with this linger and waits for it

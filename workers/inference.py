"""Inference worker: ring buffers per stream, batched ST-GCN classification and next-frame
prediction across streams, results on a PUB socket.

    python -m workers.inference [--listen tcp://127.0.0.1:5555] [--publish tcp://127.0.0.1:5556]
                                [--weights CKPT] [--device auto|cpu|cuda] [--stride N] [--record DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.messages import Decoder, Frame, FrameBatch, Heartbeat, StreamEnd, StreamStart, encode
from pipeline.recording import RecordingWriter, recording_path
from pipeline.ring_buffer import RingBuffer
from pipeline.scheduler import Job, Scheduler
from pipeline.tracker import SlotAssigner
from pipeline.transport import CurveKeyPair, FrameReceiver, ResultPublisher, start_authenticator
from workers.config import (add_common_args, add_curve_args, load_pipeline_config, server_curve, setup_logging,
                            stop_on_signals)
from workers.heap import GcPauses, freeze
from workers.schedstat import ThreadWait

log = logging.getLogger("workers.inference")

STAGES = ("pose", "transport", "queue", "inference", "total")


@dataclass
class StreamState:
    """Everything the worker keeps for one stream."""

    buffer: RingBuffer
    slots: SlotAssigner
    live: bool
    meta: dict[str, Any] = field(default_factory=dict)
    since: int = 0
    started: bool = False
    recorder: RecordingWriter | None = None
    last: Frame | None = None
    t_recv: float = 0.0
    read: int = -1  # the worker's socket read that brought the last frame


def _p50_p99(values: deque) -> dict[str, float]:
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": round(float(p50), 2), "p99": round(float(p99), 2)}


@dataclass
class Counters:
    frames_in: int = 0
    bad_frames: int = 0
    stale: int = 0
    windows: int = 0
    results: int = 0
    batches: int = 0
    latency: dict[str, deque] = field(default_factory=lambda: {s: deque(maxlen=2000) for s in STAGES})
    loop: deque = field(default_factory=lambda: deque(maxlen=2000))  # recent loop iterations, ms
    longest: dict[str, float] = field(default_factory=lambda: {"ms": 0.0})  # since the last stats line: a stall
    arrival: deque = field(default_factory=lambda: deque(maxlen=2000))  # every frame's capture -> receipt, ms
    bunched: int = 0  # frames read together with their stream's previous frame (a live window is superseded)

    def add_loop(self, read: float, finish: float, start: float, stats: float, end: float, messages: int,
                 cpu_wait_ms: float | None = None) -> None:
        """One loop iteration from its phase boundaries (perf_counter seconds) and its wait for a CPU."""
        ms = (end - read) * 1000
        self.loop.append(ms)
        if ms > self.longest["ms"]:
            self.longest = {"ms": round(ms, 2), "read_ms": round((finish - read) * 1000, 2), "messages": messages,
                            "finish_ms": round((start - finish) * 1000, 2),
                            "start_ms": round((stats - start) * 1000, 2), "stats_ms": round((end - stats) * 1000, 2),
                            "cpu_wait_ms": None if cpu_wait_ms is None else round(cpu_wait_ms, 2),
                            "at": round(time.time(), 3)}

    def summary(self, decoder: Decoder, skipped: int, cpu_wait_ms: float | None = None) -> dict[str, Any]:
        """``cpu_wait_ms``: the polling thread's wait for a CPU over the run (schedstat), when known."""
        lat = {s: _p50_p99(v) for s, v in self.latency.items() if v}
        loop = {**_p50_p99(self.loop), "longest": self.longest,
                "cpu_wait_ms": None if cpu_wait_ms is None else round(cpu_wait_ms, 1)} if self.loop else {}
        arrival = {**_p50_p99(self.arrival), "max": round(max(self.arrival), 2), "bunched": self.bunched} \
            if self.arrival else {}
        return {"frames_in": self.frames_in, "bad_messages": decoder.bad, "bad_frames": self.bad_frames,
                "stale_frames": self.stale, "skipped_windows": skipped, "windows": self.windows,
                "batches": self.batches, "latency_ms": lat, "arrival_ms": arrival, "loop_ms": loop}


class InferenceWorker:
    """Receives frames, keeps ring buffers, classifies windows every ``stride`` frames."""

    def __init__(self, engine, listen: str, publish: str, *, stride: int = 1, min_frames: int = 30,
                 buffer_len: int = 300, persons: int = 2, max_batch: int = 64, max_wait_ms: float = 5.0,
                 max_pending: int = 256, record_dir: str | Path | None = None, max_gap: int = 10,
                 stats_interval_s: float = 10.0, allow_remote: bool = False, server_keys: CurveKeyPair | None = None,
                 subscriber_grace_s: float = 0.5, name: str = "inference") -> None:
        self.engine = engine
        self.name = name  # in every result: which worker a stream is pinned to
        self.stride = max(1, int(stride))
        self.min_frames = max(2, min(int(min_frames), engine.window))
        self.buffer_len = max(buffer_len, engine.window)
        self.persons = persons
        self.max_gap = max_gap
        self.record_dir = Path(record_dir) if record_dir else None
        if self.record_dir is not None:
            self.record_dir.mkdir(parents=True, exist_ok=True)
        self.receiver = FrameReceiver(listen, allow_remote=allow_remote, server_keys=server_keys)
        try:
            self.publisher = ResultPublisher(publish, allow_remote=allow_remote, server_keys=server_keys)
        except BaseException:
            self.receiver.close()
            raise
        self._bound_at = time.monotonic()
        self.subscriber_grace_s = subscriber_grace_s
        self.scheduler = Scheduler(max_batch, max_wait_ms, max_pending)
        self.decoder = Decoder("inference")
        self.streams: dict[str, StreamState] = {}
        self.counters = Counters()
        self.stats_interval = stats_interval_s
        self.gc: GcPauses | None = None  # set when run() starts
        self.cpu_wait = ThreadWait()  # of the thread that polls
        self._reads = 0  # socket reads so far (frames of one stream in one read: bunched)
        self._inflight: tuple[list[Job], float, Any] | None = None  # the batch the engine is running
        self._next_stats = time.time() + stats_interval_s
        self.stop = threading.Event()

    # ---- input -------------------------------------------------------------------------
    def _state(self, stream: str, live: bool | None = None) -> StreamState:
        state = self.streams.get(stream)
        if state is None:
            if live is None:
                log.info("frames for stream %s arrived without a start message; treating it as live", stream)
            state = StreamState(RingBuffer(3, self.buffer_len, self.engine.joints, self.persons, max_gap=self.max_gap),
                                SlotAssigner(self.persons, joints=self.engine.joints), live=bool(live) if live is not None else True)
            self.streams[stream] = state
        return state

    def handle(self, data: bytes, t_recv: float | None = None) -> None:
        """Take one raw message; bad ones are counted and dropped, never raised.

        A frame batch goes through exactly the steps of its frames sent one by one (slots,
        ring buffer, a window every ``stride`` frames, recording), in bulk between windows.
        """
        t_recv = time.time() if t_recv is None else t_recv
        msg = self.decoder.decode(data)
        if msg is None:
            return
        if isinstance(msg, Frame):
            self._on_frame(msg, data, t_recv)
        elif isinstance(msg, FrameBatch):
            self._on_batch(msg, data, t_recv)
        elif isinstance(msg, StreamStart):
            self._on_start(msg, data)
        elif isinstance(msg, StreamEnd):
            self._on_end(msg, data)
        elif isinstance(msg, Heartbeat):
            pass

    def _on_start(self, msg: StreamStart, data: bytes) -> None:
        live = bool(msg.meta.get("live", False))
        state = self.streams.get(msg.stream)
        if state is not None and state.started and state.meta == msg.meta:
            # senders of lossless streams repeat their start (see workers/emitter.py)
            log.debug("stream %s: start repeated", msg.stream)
            return
        if state is not None and state.started:
            log.info("stream %s restarted (%s); continuing its buffer", msg.stream, msg.meta.get("source"))
        elif state is not None:
            log.info("stream %s: start message after its first frames (this worker was restarted); now %s",
                     msg.stream, "live" if live else "lossless")
        state = self._state(msg.stream, live)
        state.live, state.started, state.meta = live, True, dict(msg.meta)
        if self.record_dir is not None and state.recorder is None:
            try:
                meta = {"joints": self.engine.joints, "layout": self.engine.layout, **msg.meta}
                state.recorder = RecordingWriter(recording_path(self.record_dir, msg.stream),
                                                 StreamStart(msg.stream, msg.t, meta))
            except (OSError, ValueError) as exc:
                log.error("cannot record stream %s: %s", msg.stream, exc)
        log.info("stream %s started: %s", msg.stream, json.dumps(msg.meta, default=str))

    def _on_frame(self, msg: Frame, data: bytes, t_recv: float) -> None:
        self.counters.frames_in += 1
        self.counters.arrival.append((t_recv - msg.t_capture) * 1000 - msg.pose_ms)
        if msg.layout != self.engine.layout or (msg.persons and msg.joints != self.engine.joints):
            self.counters.bad_frames += 1
            if self.counters.bad_frames <= 5:
                log.warning("stream %s: frame layout %s/%d joints does not match the model (%s/%d); dropped",
                            msg.stream, msg.layout, msg.joints, self.engine.layout, self.engine.joints)
            return
        state = self._state(msg.stream)
        try:
            frame = state.slots.assign(msg.persons, joints=self.engine.joints)
            written = state.buffer.append(frame, msg.seq, check_finite=False)  # the decoder refused NaN/inf
        except ValueError as exc:
            self.counters.bad_frames += 1
            log.warning("stream %s seq %d: %s; dropped", msg.stream, msg.seq, exc)
            return
        if written == 0:
            self.counters.stale += 1
            return
        if state.recorder is not None:
            state.recorder.write(data)
        if state.read == self._reads:
            self.counters.bunched += 1
        state.last, state.t_recv, state.read = msg, t_recv, self._reads
        state.since += written
        if state.buffer.valid >= self.min_frames and state.since >= self.stride:
            self._enqueue(msg.stream, state)

    def _on_batch(self, msg: FrameBatch, data: bytes, t_recv: float) -> None:
        """A batch as its frames one by one would go, in chunks that end where a window is due."""
        n = len(msg)
        self.counters.frames_in += n
        if msg.layout != self.engine.layout or (len(msg.tracks) and msg.joints != self.engine.joints):
            self.counters.bad_frames += n
            if self.counters.bad_frames <= 5:
                log.warning("stream %s: frame layout %s/%d joints does not match the model (%s/%d); %d dropped",
                            msg.stream, msg.layout, msg.joints, self.engine.layout, self.engine.joints, n)
            return
        state = self._state(msg.stream)
        written, windows = self._batch_windows(state, msg.seq)
        ends = windows if windows and windows[-1] == n - 1 else windows + [n - 1]
        due = set(windows)
        offsets = msg.offsets() if len(ends) > 1 else None
        joints = self.engine.joints
        lo = 0
        for hi in ends:
            try:
                if hi == lo:
                    state.buffer.append(state.slots.assign(msg.frame(lo).persons, joints=joints), int(msg.seq[lo]),
                                        check_finite=False)
                elif offsets is None:
                    clip = state.slots.assign_many(msg.counts, msg.tracks, msg.keypoints, joints)
                    state.buffer.append_many(clip, msg.seq, check_finite=False)
                else:
                    a, b = int(offsets[lo]), int(offsets[hi + 1])
                    clip = state.slots.assign_many(msg.counts[lo:hi + 1], msg.tracks[a:b], msg.keypoints[a:b], joints)
                    state.buffer.append_many(clip, msg.seq[lo:hi + 1], check_finite=False)
            except ValueError as exc:
                self.counters.bad_frames += n - lo
                log.warning("stream %s seqs %d..%d: %s; dropped", msg.stream, msg.seq[lo], msg.seq[-1], exc)
                break
            steps = hi - lo + 1 if written is None else int(written[lo:hi + 1].sum())
            if steps:
                last = hi if written is None else lo + int(np.flatnonzero(written[lo:hi + 1])[-1])
                state.last, state.t_recv = msg.frame(last), t_recv
                state.since += steps
            if hi in due:
                self._enqueue(msg.stream, state)
            lo = hi + 1
        kept = np.arange(lo) if written is None else np.flatnonzero(written[:lo])
        self.counters.stale += lo - len(kept)
        if state.recorder is not None and len(kept):
            state.recorder.write(data if len(kept) == n else encode(msg.select(kept)))

    def _batch_windows(self, state: StreamState, seqs: np.ndarray) -> tuple[np.ndarray | None, list[int]]:
        """Per frame of a batch the time steps it writes (None: one each) and the frames after
        which a window is due, exactly as frame by frame: every ``stride`` written steps once
        the buffer holds ``min_frames``."""
        n = len(seqs)
        buf = state.buffer
        if buf.follows(seqs):  # consecutive frames: the windows fall at fixed offsets
            first = max(self.min_frames - buf.valid, self.stride - state.since, 1) - 1
            return None, list(range(first, n, self.stride))
        written, _, valid = buf.plan(seqs)
        total = np.cumsum(written)
        due = (written > 0) & (valid >= self.min_frames)
        windows: list[int] = []
        lo, since = 0, state.since
        while lo < n:
            done = int(total[lo - 1]) if lo else 0
            hits = np.flatnonzero(due[lo:] & (total[lo:] - done >= self.stride - since))
            if not len(hits):
                break
            windows.append(lo + int(hits[0]))
            lo, since = windows[-1] + 1, 0
        return written, windows

    def _enqueue(self, stream: str, state: StreamState) -> None:
        last = state.last
        state.since = 0
        self.scheduler.add(Job(stream, last.seq, last.t_capture, state.t_recv, last.pose_ms,
                               state.buffer.window(self.engine.window), list(state.slots.slots),
                               len(last.persons)), state.live)

    def _on_end(self, msg: StreamEnd, data: bytes) -> None:
        state = self.streams.get(msg.stream)
        if state is None:
            return
        self._finish_batch()  # results in flight go out before the end message
        if state.since > 0 and state.buffer.valid >= self.min_frames and state.last is not None:
            self._enqueue(msg.stream, state)  # the tail of the stream gets its result too
        while self.scheduler.has(msg.stream):
            self._run_batch()
        if state.recorder is not None:
            state.recorder.write(data)
            state.recorder.close(msg.reason)
        self.publisher.send(msg.stream, {"type": "end", "stream": msg.stream, "reason": msg.reason})
        del self.streams[msg.stream]
        log.info("stream %s ended (%s)", msg.stream, msg.reason)

    # ---- model -------------------------------------------------------------------------
    def _run_batch(self) -> None:
        """One batch start to end (the batch in flight first, so results keep their order)."""
        self._finish_batch()
        self._start_batch()
        self._finish_batch()

    def _start_batch(self) -> None:
        """Takes a batch and starts it; on CUDA graphs the GPU runs it while the loop reads frames."""
        jobs = self.scheduler.take()
        if not jobs:
            return
        t0 = time.time()
        batch = self.engine.input_buffer(len(jobs))  # on CUDA, the pinned memory the GPU reads
        np.stack([j.window for j in jobs], out=batch)
        self._inflight = (jobs, t0, self.engine.submit(batch))

    def _finish_batch(self) -> None:
        """Waits for the batch in flight, if any, and publishes its results."""
        if self._inflight is None:
            return
        jobs, t0, collect = self._inflight
        self._inflight = None
        probs, nxt = collect()
        t1 = time.time()
        self.counters.batches += 1
        # Whole-batch conversions: one tolist per batch instead of numpy calls per result.
        k = min(5, probs.shape[1])
        top = np.argsort(-probs, axis=1)[:, :k]
        scores = np.round(np.take_along_axis(probs, top, axis=1).astype(np.float64), 6).tolist()
        top = top.tolist()
        frames = None if nxt is None else np.round(nxt.transpose(0, 3, 2, 1).astype(np.float64), 5).tolist()
        names = self.engine.class_names
        inference_ms = (t1 - t0) * 1000
        lat = self.counters.latency
        for i, job in enumerate(jobs):
            t_result = time.time()
            latency = {
                "pose": job.pose_ms,
                "transport": max(0.0, (job.t_recv - job.t_capture) * 1000 - job.pose_ms),
                "queue": (t0 - job.t_recv) * 1000,
                "inference": inference_ms,
                "total": (t_result - job.t_capture) * 1000,
            }
            for stage, value in latency.items():
                lat[stage].append(value)
            result = {
                "type": "result", "stream": job.stream, "seq": job.seq, "t_capture": job.t_capture,
                "t_result": t_result, "worker": self.name, "persons": job.tracks,
                "top": [{"label": names[c], "index": c, "score": sc} for c, sc in zip(top[i], scores[i])],
                "next_frame": None if frames is None else frames[i],
                "latency_ms": {stage: round(value, 3) for stage, value in latency.items()},
            }
            self.publisher.send(job.stream, result)
        self.counters.windows += len(jobs)

    # ---- loop --------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 5) -> None:
        """One iteration: read what is waiting (unless backpressure is on), while the batch in
        flight runs; publish its results; start the next batch when one is due.

        At most ``max(max_batch, 64)`` messages are read per iteration, about what one batch
        classifies: reading more before a batch runs would let a live stream's next frame
        supersede its pending window (a skip) although the GPU has time for both. (Not waiting
        for a slow batch and reading on instead did exactly that: 75-80 skips at 256 streams
        on two workers, for no better p99; measured on the GPU machine.)
        """
        t_read, n, waited = time.perf_counter(), 0, self.cpu_wait.ms()
        if not self.scheduler.full:
            wait = 0 if len(self.scheduler) or self._inflight is not None else timeout_ms
            self._reads += 1
            for data in self.receiver.recv_many(max(self.scheduler.max_batch, 64), timeout_ms=wait):
                self.handle(data)
                n += 1
                if self.scheduler.full:
                    break
        t_finish = time.perf_counter()
        self._finish_batch()
        t_start = time.perf_counter()
        if self.scheduler.ready() or self.scheduler.full:
            self._start_batch()
        t_stats = time.perf_counter()
        if time.time() >= self._next_stats:
            self._next_stats = time.time() + self.stats_interval
            log.info("stats %s", json.dumps(self.stats()))
            self.counters.longest = {"ms": 0.0}  # each line: its interval's worst iteration, not start-up's
        after = self.cpu_wait.ms()
        waited = None if waited is None or after is None else after - waited
        self.counters.add_loop(t_read, t_finish, t_start, t_stats, time.perf_counter(), n, waited)

    def stats(self) -> dict[str, Any]:
        out = {"streams": len(self.streams),
               **self.counters.summary(self.decoder, self.scheduler.skipped, self.cpu_wait.ms())}
        if self.gc is not None:
            out["gc"] = self.gc.summary()
        return out

    def run(self) -> None:
        log.info("inference worker %s ready: model %s (%s, %d classes, window %d) on %s, stride %d", self.name,
                 self.engine.layout, "predictor" if self.engine.predicts else "no predictor",
                 self.engine.num_class, self.engine.window, self.engine.device, self.stride)
        # PUB drops what it publishes before a subscriber is connected: after a restart, give
        # subscribers (which reconnect every 100 ms) time to rejoin before the first results.
        # Frames meanwhile wait in the socket, nothing is lost.
        grace = self._bound_at + self.subscriber_grace_s - time.monotonic()
        if grace > 0:
            self.stop.wait(grace)
        self.gc = GcPauses(freeze())
        log.info("%d start-up objects frozen out of the garbage collector", self.gc.frozen)
        self.cpu_wait.close()
        self.cpu_wait = ThreadWait()
        while not self.stop.is_set():
            self.poll()
        self._finish_batch()
        while len(self.scheduler):
            self._run_batch()
        self.close()

    def close(self) -> None:
        for state in self.streams.values():
            if state.recorder is not None:
                state.recorder.close("stopped")
        log.info("final stats %s", json.dumps(self.stats()))
        if self.gc is not None:
            self.gc.close()
        self.cpu_wait.close()
        self.receiver.close()
        self.publisher.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.inference", description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--listen", help="frames endpoint to bind (default from config)")
    parser.add_argument("--publish", help="results endpoint to bind (default from config)")
    parser.add_argument("--weights", help="checkpoint (default: the bundled model)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (one GPU of several)")
    parser.add_argument("--stride", type=int, help="classify every N frames per stream")
    parser.add_argument("--record", metavar="DIR", help="save every stream's skeletons for replay or training")
    parser.add_argument("--name", default="inference",
                        help="worker name, sent in every result (default inference; several workers: distinct names)")
    add_curve_args(parser, server=True)
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    auth = None
    try:
        cfg = load_pipeline_config(args.config)
        listen = args.listen or cfg["endpoints"]["frames"]
        publish = args.publish or cfg["endpoints"]["results"]
        curve = server_curve(args, cfg, [listen, publish])  # before the model loads: a refusal is immediate
        if curve is not None:
            auth = start_authenticator(curve.allowed)
            log.info("CURVE on: %d client key(s) admitted", len(curve.allowed))
        from stgcn import DEFAULT_WEIGHTS
        from stgcn.engine import Engine

        icfg = cfg["inference"]
        engine = Engine(args.weights or icfg.get("weights") or DEFAULT_WEIGHTS, args.device or icfg["device"],
                        persons=icfg["persons"])
        stride = args.stride or icfg["stride"][engine.device.type]
        worker = InferenceWorker(engine, listen, publish, stride=stride,
                                 min_frames=icfg["min_frames"], buffer_len=icfg["buffer_frames"],
                                 persons=icfg["persons"], max_batch=icfg["max_batch"][engine.device.type],
                                 max_wait_ms=icfg["max_wait_ms"], max_pending=icfg["max_pending"],
                                 record_dir=args.record, stats_interval_s=icfg["stats_interval_s"],
                                 allow_remote=curve is not None, server_keys=curve.keys if curve else None,
                                 name=args.name)
    except (ValueError, OSError) as exc:
        if auth is not None:
            auth.stop()
        if args.debug:
            raise
        print(f"inference: error: {exc}", file=sys.stderr)
        return 2
    stop_on_signals(worker.stop)
    try:
        worker.run()
    finally:
        if auth is not None:
            auth.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

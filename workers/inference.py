"""Inference worker: per-stream ring buffers, batched ST-GCN classification and next-frame
prediction across streams, results on a PUB socket.

    python -m workers.inference [--listen EP] [--publish EP] [--weights CKPT] [--device auto|cpu|cuda]
                                [--stride N] [--record DIR] [--name NAME]

Frames come in on a PULL socket (``pipeline.messages``); each stream's frames go into its
ring buffer through its person slots; windows are due by ``pipeline.windows``; due windows
are batched across streams by ``pipeline.scheduler`` and run by ``stgcn.engine.Engine``;
results, stream ends and this worker's statistics go out as ``pipeline.results`` records.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any


from pipeline.cli import add_debug_flag, run_cli, setup_logging
from pipeline.messages import Decoder, Frame, FrameBatch, StreamEnd, StreamStart, encode
from pipeline.results import StreamEnded, WorkerStats
from pipeline.scheduler import Scheduler
from pipeline.streams import StreamState
from pipeline.settings import InferenceSettings, load_settings
from pipeline.transport import CurveKeyPair, FrameReceiver, ResultPublisher, start_authenticator
from pipeline.windows import WindowRules
from stgcn.graph import canonical_layout
from workers.config import add_curve_args, add_settings_args, server_curve, stop_on_signals
from workers.heap import freeze
from workers.batches import BatchInFlight
from workers.instruments import Instruments, describe

log = logging.getLogger("workers.inference")


class InferenceWorker:
    """Receives frames, keeps ring buffers, classifies the windows that fall due."""

    def __init__(self, engine, settings: InferenceSettings, listen: str, publish: str, *,
                 record_dir: str | Path | None = None, allow_remote: bool = False,
                 server_keys: CurveKeyPair | None = None, subscriber_grace_s: float = 0.5,
                 name: str = "inference") -> None:
        device = engine.device.type
        self.engine = engine
        self.name = name  # in every result: which worker a stream is pinned to
        self.rules = WindowRules.serving(engine.window, settings, device)
        self.persons = settings.persons
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
        self.scheduler = Scheduler(settings.max_batch.on(device), settings.max_wait_ms, settings.max_pending)
        self.decoder = Decoder("inference")
        self.streams: dict[str, StreamState] = {}
        self.instruments = Instruments(settings.diagnostics)
        self.stats_interval = settings.stats_interval_s
        self._reads = 0  # socket reads so far (frames of one stream in one read: bunched)
        self._unread: list[bytes] = []  # messages read while the scheduler filled up (never dropped)
        self.inflight = BatchInFlight(engine, name, future=settings.future)
        self._next_stats = time.time() + self.stats_interval
        self.stop = threading.Event()

    # ---- input -------------------------------------------------------------------------
    def _state(self, stream: str, live: bool | None = None) -> StreamState:
        state = self.streams.get(stream)
        if state is None:
            if live is None:
                log.info("frames for stream %s arrived without a start message; treating it as live", stream)
            state = StreamState(self.rules, self.engine.joints, self.persons, live=True if live is None else live)
            self.streams[stream] = state
        return state

    def handle(self, data: bytes, t_recv: float | None = None) -> None:
        """Take one raw message; bad ones are counted and dropped, never raised."""
        t_recv = time.time() if t_recv is None else t_recv
        msg = self.decoder.decode(data)
        if isinstance(msg, Frame):
            self._on_frame(msg, data, t_recv)
        elif isinstance(msg, FrameBatch):
            self._on_batch(msg, data, t_recv)
        elif isinstance(msg, StreamStart):
            self._on_start(msg)
        elif isinstance(msg, StreamEnd):
            self._on_end(msg, data)

    def _on_start(self, msg: StreamStart) -> None:
        state = self._state(msg.stream, live=bool(msg.meta.get("live", False)))
        if state.start(msg) and self.record_dir is not None:
            state.record_to(self.record_dir, msg, self.engine.layout)

    def _accepts(self, stream: str, layout: str, joints: int, people: int, n: int) -> bool:
        """Whether frames of this layout fit the model; a mismatch is counted and logged."""
        if canonical_layout(layout) == self.engine.layout and (not people or joints == self.engine.joints):
            return True
        self.instruments.bad_frames += n
        if self.instruments.bad_frames <= 5:
            log.warning("stream %s: frame layout %s/%d joints does not match the model (%s/%d); %d dropped",
                        stream, layout, joints, self.engine.layout, self.engine.joints, n)
        return False

    def _on_frame(self, msg: Frame, data: bytes, t_recv: float) -> None:
        self.instruments.frames_in += 1
        if not self._accepts(msg.stream, msg.layout, msg.joints, len(msg.persons), 1):
            return
        state = self._state(msg.stream)
        if self.instruments.diagnostics:
            self.instruments.arrived(t_recv, msg.t_capture, msg.pose_ms, state.read == self._reads)
        state.read = self._reads
        try:
            written = state.add_frame(msg, t_recv)
        except ValueError as exc:
            self.instruments.bad_frames += 1
            log.warning("stream %s seq %d: %s; dropped", msg.stream, msg.seq, exc)
            return
        if written == 0:
            self.instruments.stale += 1
            return
        if state.recorder is not None:
            state.record(data)
        if state.due:
            self._schedule(state)

    def _on_batch(self, msg: FrameBatch, data: bytes, t_recv: float) -> None:
        """A batch as its frames one by one would go, in chunks that end where a window is due."""
        n = len(msg)
        self.instruments.frames_in += n
        if not self._accepts(msg.stream, msg.layout, msg.joints, len(msg.tracks), n):
            return
        state = self._state(msg.stream)
        kept, taken, error = state.add_batch(msg, t_recv, lambda: self._schedule(state))
        if error is not None:
            self.instruments.bad_frames += n - taken
            log.warning("stream %s seqs %d..%d: %s; dropped", msg.stream, msg.seq[taken], msg.seq[-1], error)
        self.instruments.stale += taken - len(kept)
        if state.recorder is not None and len(kept):
            state.record(data if len(kept) == n else encode(msg.select(kept)))

    def _schedule(self, state: StreamState) -> None:
        """Queue the stream's due window, unless its result was delivered before this worker was
        restarted (the sender rebuilds the stream from its first frame; only the windows after
        the last one delivered are classified again)."""
        job = state.job()
        if job.seq <= state.delivered_through:
            self.instruments.delivered_before += 1
            return
        self.scheduler.add(job, state.live)

    def _on_end(self, msg: StreamEnd, data: bytes) -> None:
        state = self.streams.get(msg.stream)
        if state is None:
            return
        self._finish_batch()  # results in flight go out before the end record
        if state.has_tail:
            self._schedule(state)  # the tail of the stream gets its result too
        while self.scheduler.has(msg.stream):
            self._run_batch()
        if state.recorder is not None:
            state.record(data)
            state.stop_recording(msg.reason)
        for event in state.close_events():
            self.publisher.publish(event)
        self.publisher.publish(StreamEnded(msg.stream, msg.reason))
        del self.streams[msg.stream]
        self.engine.release(msg.stream)
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
        if jobs:
            self.inflight.start(jobs)

    def _finish_batch(self) -> None:
        """Waits for the batch in flight, if any, and publishes its results and the events they close."""
        results, ran = self.inflight.finish()
        self.instruments.batches += ran
        for result in results:
            self.instruments.observe(result.latency_ms)
            state = self.streams.get(result.stream)
            result, events = state.smooth(result) if state is not None else (result, [])
            self.publisher.publish(result)
            for event in events:
                self.publisher.publish(event)
        self.instruments.windows += len(results)

    # ---- loop --------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 5) -> None:
        """One iteration: read what is waiting (unless backpressure is on), while the batch in
        flight runs; publish its results; start the next batch when one is due.

        At most ``max(max_batch, 64)`` messages are read per iteration, about what one batch
        classifies: reading more before a batch runs would let a live stream's next frame
        supersede its pending window (a skip) although the GPU has time for both. (Not waiting
        for a slow batch and reading on instead did exactly that; see docs/benchmarks.md.)
        """
        loop = self.instruments.loop
        if loop is not None:
            loop.begin()
        t_read, n = time.perf_counter(), 0
        if not self.scheduler.full:
            wait = 0 if len(self.scheduler) or self.inflight.busy else timeout_ms
            self._reads += 1
            read = self._unread or self.receiver.recv_many(max(self.scheduler.max_batch, 64), timeout_ms=wait)
            self._unread = []
            for i, data in enumerate(read):
                self.handle(data)
                n += 1
                if self.scheduler.full:
                    self._unread = read[i + 1:]  # read but not taken yet: first in line once there is room
                    break
        t_finish = time.perf_counter()
        self._finish_batch()
        t_start = time.perf_counter()
        if self.scheduler.ready() or self.scheduler.full:
            self._start_batch()
        t_stats = time.perf_counter()
        if time.time() >= self._next_stats:
            self._next_stats = time.time() + self.stats_interval
            self.publish_stats()
        if loop is not None:
            loop.end(t_read, t_finish, t_start, t_stats, time.perf_counter(), n)

    def stats(self) -> dict[str, Any]:
        return {"window": self.rules.window, "stride": self.rules.stride,
                **self.instruments.summary(streams=len(self.streams), bad_messages=self.decoder.bad,
                                           skipped=self.scheduler.skipped)}

    def publish_stats(self, final: bool = False) -> None:
        """A stats record on the results socket and one short log line."""
        stats = self.stats()
        self.publisher.publish(WorkerStats(self.name, time.time(), final, stats))
        log.info("%s", describe(stats, final))
        self.instruments.new_interval()

    def run(self) -> None:
        log.info("inference worker %s ready: model %s (%s, %d classes, window %d, streams %s, %s form) "
                 "on %s, stride %d",
                 self.name, self.engine.layout, "predictor" if self.engine.predicts else "no predictor",
                 self.engine.num_class, self.rules.window, "+".join(self.engine.streams), self.engine.mode,
                 self.engine.device, self.rules.stride)
        # PUB drops what it publishes before a subscriber is connected: after a restart, give
        # subscribers (which reconnect every 100 ms) time to rejoin before the first results.
        # Frames meanwhile wait in the socket, nothing is lost.
        grace = self._bound_at + self.subscriber_grace_s - time.monotonic()
        if grace > 0:
            self.stop.wait(grace)
        frozen = freeze()
        log.info("%d start-up objects frozen out of the garbage collector", frozen)
        self.instruments.start(frozen)
        while not self.stop.is_set():
            self.poll()
        self._finish_batch()
        while len(self.scheduler):
            self._run_batch()
        self.close()

    def close(self) -> None:
        for state in self.streams.values():
            if state.recorder is not None:
                state.stop_recording("stopped")
        self.publish_stats(final=True)
        self.instruments.close()
        self.receiver.close()
        self.publisher.close(linger_ms=1000)  # the final stats record goes out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.inference",
                                     description=" ".join(__doc__.split("\n\n")[0].split()))
    add_settings_args(parser)
    add_debug_flag(parser)
    parser.add_argument("--listen", help="frames endpoint to bind (default from config)")
    parser.add_argument("--publish", help="results endpoint to bind (default from config)")
    parser.add_argument("--weights", help="checkpoint (default: the bundled model)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (one GPU of several)")
    parser.add_argument("--stride", type=int, help="classify every N frames per stream")
    parser.add_argument("--form", choices=("window", "continual"),
                        help="window: each result from its whole window; continual: per-person state, only the "
                             "new frames (default per device in the config)")
    parser.add_argument("--record", metavar="DIR", help="save every stream's skeletons for replay or training")
    parser.add_argument("--future", action="store_true", default=None,
                        help="results carry each person's predicted frames up to the model's horizon (inference.future)")
    parser.add_argument("--name", default="inference",
                        help="worker name, sent in every result (default inference; several workers: distinct names)")
    add_curve_args(parser, server=True)
    args = parser.parse_args(argv)
    setup_logging(args.debug, args.quiet)
    auth = None

    worker = None

    def start() -> int:
        nonlocal auth, worker
        settings = load_settings(args.config, inference__weights=args.weights, inference__device=args.device,
                                 inference__stride=args.stride, inference__form=args.form, inference__future=args.future)
        listen = args.listen or settings.endpoints.frames
        publish = args.publish or settings.endpoints.results
        curve = server_curve(args, settings, [listen, publish])  # before the model loads: a refusal is immediate
        if curve is not None:
            auth = start_authenticator(curve.allowed)
            log.info("CURVE on: %d client key(s) admitted", len(curve.allowed))
        from stgcn import DEFAULT_WEIGHTS
        from stgcn.continual_engine import ContinualEngine
        from stgcn.engine import Engine, pick_device

        icfg = settings.inference
        form = icfg.form.on(pick_device(icfg.device).type)
        engine = (ContinualEngine if form == "continual" else Engine)(icfg.weights or DEFAULT_WEIGHTS, icfg.device,
                                                                      streams=icfg.streams)  # one person a sample
        worker = InferenceWorker(engine, icfg, listen, publish, record_dir=args.record,
                                 allow_remote=curve is not None, server_keys=curve.keys if curve else None,
                                 name=args.name)
        return 0

    try:
        code = run_cli("inference", start, debug=args.debug)  # bad settings, files or endpoints: one line, exit 2
        if worker is not None:
            stop_on_signals(worker.stop)
            worker.run()
        return code
    finally:
        if auth is not None:
            auth.stop()


if __name__ == "__main__":
    sys.exit(main())

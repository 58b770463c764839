"""Overload and crash: live streams into an inference worker that cannot keep up, then kill -9 of it.

    python -m bench.overload [--duration 180] [--streams 1] [--fps 30] [--stride 1] [--weights CKPT]
                              [--kill-down 8] [--out bench/results/overload.json]

Phase 1 (overload, ``--duration`` s): each stream is a live sender process (the capture
worker's policy, :class:`pipeline.transport.FrameSender` with ``live=True``: it never blocks and
drops its oldest frame when its local queue is full) sending a moving two-person skeleton at
``--fps``, re-stamped at send time like a camera frame. The inference worker is the real CLI
(``python -m workers.inference``) on the CPU with stride 1 and, by default, the shipped model
(window 128): on a small CPU it classifies fewer windows per second than the streams produce,
so it must skip stale windows instead of falling behind. Sampled every second: the RSS of the
worker and of every sender (``/proc/PID/status`` VmRSS), the sender's sent/dropped/queued
counts, the worker's stats records (skipped windows, stale frames; every 0.25 s); per result: frame-to-result
latency (result time minus the frame's send time, same clock).

Phase 2 (``--kill-down`` s, 0 skips it): kill -9 of the inference worker while the senders keep
sending; sampled every 0.25 s: each sender's RSS and queued frames (never above its queue
size) and drops; then the worker is started again on the same endpoints and the time until
results for frames sent after the restart arrive is measured.

Prints a table and writes ``{"machine", "date", "config", "metrics"}`` JSON (default
``bench/results/overload.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, RESULTS, machine, rss_mb, write_results
from pipeline.cli import add_debug_flag, setup_logging
from pipeline.endpoints import free_endpoint
from pipeline.messages import Frame, Person, StreamStart
from pipeline.results import Result, WorkerStats
from pipeline.transport import FrameSender, ResultSubscriber, SendTimeout

log = logging.getLogger("bench.overload")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def sender_main(endpoint: str, stream: str, fps: float, queue_size: int, status: Any, stop: Any) -> None:
    """A live source: a two-person skeleton at ``fps``, never blocking; reports its counters
    (sent, dropped, queued now and the most queued since the last report) every 0.25 s."""
    setup_logging()  # the FrameSender's warnings, from this spawned process
    rng = np.random.default_rng(zlib.crc32(stream.encode()))
    base = [rng.uniform(0.3, 0.7, (18, 2)).astype(np.float32) for _ in range(2)]
    sender = FrameSender(endpoint, live=True, queue_size=queue_size)
    meta = {"fps": fps, "source": "bench", "layout": "openpose", "width": 640, "height": 480, "joints": 18,
            "live": True}
    try:
        sender.send_control(StreamStart(stream, time.time(), meta), timeout_ms=30_000)
    except SendTimeout:
        pass  # a live source starts anyway; the worker treats an unannounced stream as live
    t0, seq, pending_max, next_report = time.monotonic(), 0, 0, 0.0
    while not stop.is_set():
        delay = t0 + seq / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        persons = []
        for track, b in enumerate(base):
            kp = np.empty((18, 3), np.float32)
            kp[:, :2] = b + 0.05 * np.sin(seq / 10 + np.arange(18) + track)[:, None]
            kp[:, 2] = 0.9
            persons.append(Person(track + 1, kp))
        sender.send(Frame(stream, seq, time.time(), 640, 480, "openpose", tuple(persons), 0.0, 18))
        pending_max = max(pending_max, sender.pending)
        now = time.monotonic()
        if now >= next_report:
            status.put({"stream": stream, "t": time.time(), "seq": seq, "sent": sender.sent,
                        "dropped": sender.dropped, "pending": sender.pending, "pending_max": pending_max,
                        "queue_size": sender.queue_size})
            pending_max, next_report = 0, now + 0.25
        seq += 1
    sender.close(timeout_ms=0)


class Worker:
    """The inference worker CLI as a child process (its log kept in a file) and the latest stats
    record of its current run."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.argv, self.log_path = argv, log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.latest: dict[str, Any] | None = None  # the current run's latest stats record (periodic or final)

    def launch(self) -> None:
        self.starts += 1
        self.latest = None
        with open(self.log_path, "a") as out:
            out.write(f"--- start {self.starts}\n")
            out.flush()
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT)

    def stats(self) -> dict[str, Any]:
        """The current run's latest stats record ({} before its first)."""
        return self.latest or {}

    def alive(self) -> bool:
        """Whether the current run is still running."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 30 s); returns the exit status."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return None if self.proc is None else self.proc.returncode


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile rounded to 0.1, None for no values."""
    return round(float(np.percentile(values, q)), 1) if values else None


def growth(samples: list[tuple[float, float]], after: float) -> dict[str, float | None]:
    """RSS (t, MiB) after warm-up: first, max, growth (max - first) and slope (MiB/min, least squares)."""
    kept = [(t, v) for t, v in samples if t >= after]
    if len(kept) < 2:
        return {"first_mb": None, "max_mb": None, "growth_mb": None, "slope_mb_per_min": None}
    ts, vs = np.array([t for t, _ in kept]), np.array([v for _, v in kept])
    slope = float(np.polyfit(ts - ts[0], vs, 1)[0]) * 60
    return {"first_mb": round(float(vs[0]), 1), "max_mb": round(float(vs.max()), 1),
            "growth_mb": round(float(vs.max() - vs[0]), 1), "slope_mb_per_min": round(slope, 2)}


class Bench:
    """The worker, the senders and a result subscriber, sampled from this process."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        config = workdir / "pipeline.yaml"  # laid over the default one; JSON is YAML
        config.write_text(json.dumps({"inference": {"stats_interval_s": 0.25}}))  # a stats record to sample
        self.frames_ep, self.results_ep = free_endpoint(), free_endpoint()
        argv = [sys.executable, "-m", "workers.inference", "--listen", self.frames_ep, "--publish", self.results_ep,
                "--device", "cpu", "--stride", str(args.stride), "--config", str(config)]
        if args.weights:
            argv += ["--weights", str(args.weights)]
        self.worker = Worker(argv, workdir / "inference.log")
        self.sub = ResultSubscriber(self.results_ep, rcvhwm=100_000)
        self.ctx = mp.get_context("spawn")
        self.status = self.ctx.Queue()
        self.stop_senders = self.ctx.Event()
        self.senders: list[Any] = []
        self.last_status: dict[str, dict] = {}
        self.results: list[dict] = []  # arrival time, seq, latency per result

    def start_senders(self) -> None:
        for i in range(self.args.streams):
            proc = self.ctx.Process(target=sender_main, args=(self.frames_ep, f"live{i}", self.args.fps,
                                                              self.args.queue_size, self.status, self.stop_senders))
            proc.start()
            self.senders.append(proc)

    def pump(self, seconds: float, on_status=None) -> None:
        """Receive results and sender reports for ``seconds``."""
        end = time.time() + seconds
        while time.time() < end:
            got = self.sub.recv(timeout_ms=20)
            if isinstance(got, Result):
                self.results.append({"t": time.time(), "stream": got.stream, "seq": got.seq,
                                     "latency_ms": (got.t_result - got.t_capture) * 1000})
            elif isinstance(got, WorkerStats):
                self.worker.latest = got.stats
            while True:
                try:
                    st = self.status.get_nowait()
                except queue.Empty:
                    break
                self.last_status[st["stream"]] = st
                if on_status is not None:
                    on_status(st)

    def start_worker(self, timeout: float = 120.0) -> float:
        """Start the worker and wait for its first stats record; returns the seconds that took."""
        t0 = time.time()
        self.worker.launch()
        while self.worker.latest is None:
            if not self.worker.alive() or time.time() - t0 > timeout:
                raise RuntimeError(f"inference worker did not start:\n{self.worker.log_path.read_text()[-3000:]}")
            self.pump(0.05)
        return time.time() - t0

    def sender_totals(self) -> dict[str, int]:
        return {k: sum(s[k] for s in self.last_status.values()) for k in ("sent", "dropped")}

    def overload(self) -> dict[str, Any]:
        args = self.args
        startup = self.start_worker()
        self.start_senders()
        t0 = time.time()
        warm = t0 + args.warmup
        rss_worker: list[tuple[float, float]] = []
        rss_senders: list[tuple[float, float]] = []
        stats_samples = []
        while time.time() - t0 < args.duration:
            self.pump(1.0)
            now = time.time()
            w = rss_mb(self.worker.proc.pid)
            if w is not None:
                rss_worker.append((now, w))
            s = [rss_mb(p.pid) for p in self.senders]
            if all(v is not None for v in s):
                rss_senders.append((now, max(s)))
            stats_samples.append(self.worker.stats())
        stats = self.worker.stats()
        alive = self.worker.alive()
        mine = [r for r in self.results if r["t"] >= warm]
        lat = [r["latency_ms"] for r in mine]
        arrivals = [r["t"] for r in mine]
        gaps = np.diff(arrivals) if len(arrivals) > 1 else np.array([])
        sent = self.sender_totals()
        return {
            "duration_s": round(time.time() - t0, 1), "warmup_s": args.warmup, "worker_startup_s": round(startup, 1),
            "streams": args.streams, "fps": args.fps, "stride": args.stride, "window": stats.get("window"),
            "frames_sent": sent["sent"], "sender_dropped": sent["dropped"],
            "frames_in": stats.get("frames_in"), "windows_classified": stats.get("windows"),
            "skipped_windows": stats.get("skipped_windows"), "stale_frames": stats.get("stale_frames"),
            "drops_counted": sent["dropped"] + (stats.get("skipped_windows") or 0) + (stats.get("stale_frames") or 0),
            "results_after_warmup": len(mine),
            "results_per_s": round(len(mine) / max(1e-9, time.time() - warm), 2),
            "latency_ms": {"p50": percentile(lat, 50), "p99": percentile(lat, 99),
                           "max": round(max(lat), 1) if lat else None},
            "lag_frames_p99": None if not lat else round(percentile(lat, 99) * args.fps / 1000, 1),
            "max_result_gap_s": round(float(gaps.max()), 2) if gaps.size else None,
            "worker_alive": alive,
            "worker_rss": growth(rss_worker, warm),
            "worker_rss_max_mb": round(max(v for _, v in rss_worker), 1) if rss_worker else None,
            "sender_rss": growth(rss_senders, warm),
        }

    def kill_and_restart(self) -> dict[str, Any]:
        args = self.args
        self.pump(0.5)
        before_rss = [rss_mb(p.pid) for p in self.senders]
        dropped_before = self.sender_totals()["dropped"]
        os.kill(self.worker.proc.pid, signal.SIGKILL)
        self.worker.proc.wait(10)
        t_kill = time.time()
        last_seq_before = max((r["seq"] for r in self.results), default=-1)
        down: dict[str, Any] = {"pending_max": 0, "rss": []}

        def on_status(st: dict) -> None:
            down["pending_max"] = max(down["pending_max"], st["pending_max"], st["pending"])

        while time.time() - t_kill < args.kill_down:
            self.pump(0.25, on_status)
            down["rss"].append(max(v for v in (rss_mb(p.pid) for p in self.senders) if v is not None))
        dropped_down = self.sender_totals()["dropped"] - dropped_before
        seq_at_restart = max(s["seq"] for s in self.last_status.values())
        t_restart = time.time()
        startup = self.start_worker()
        n_before = len(self.results)
        deadline = time.time() + 60
        first_new = None
        while time.time() < deadline and first_new is None:
            self.pump(0.1)
            new = [r for r in self.results[n_before:] if r["seq"] > seq_at_restart]
            first_new = new[0] if new else None
        self.pump(args.after_restart)
        after = [r for r in self.results[n_before:] if r["seq"] > seq_at_restart]
        return {
            "down_s": round(t_restart - t_kill, 1), "queue_size": args.queue_size,
            "sender_pending_max_while_down": down["pending_max"],
            "sender_dropped_while_down": dropped_down,
            "sender_rss_before_mb": round(max(v for v in before_rss if v is not None), 1),
            "sender_rss_max_while_down_mb": round(max(down["rss"]), 1) if down["rss"] else None,
            "sender_rss_growth_while_down_mb": round(max(down["rss"]) - max(v for v in before_rss if v is not None), 1)
            if down["rss"] else None,
            "last_result_seq_before_kill": last_seq_before, "sender_seq_at_restart": seq_at_restart,
            "worker_restart_s": round(startup, 1),
            "resumed": first_new is not None,
            "first_result_after_restart_s": None if first_new is None else round(first_new["t"] - t_restart, 1),
            "results_after_restart": len(after),
            "worker_alive": self.worker.alive(),
        }

    def close(self) -> None:
        self.stop_senders.set()
        for proc in self.senders:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        self.worker.stop()
        self.pump(1.0)  # the final stats record
        self.sub.close()


def print_table(metrics: dict[str, Any]) -> None:
    """One block per phase, one line per metric."""
    for phase, values in metrics.items():
        print(f"\n{phase}")
        for key, value in values.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            print(f"  {key:<34} {value}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=180.0, help="seconds of overload (default 180)")
    p.add_argument("--warmup", type=float, help="seconds ignored for RSS growth and latency "
                                                "(default: a third of --duration, at most 30)")
    p.add_argument("--streams", type=int, default=1, help="live sender processes (default 1)")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second per stream (default 30)")
    p.add_argument("--stride", type=int, default=1, help="the worker's stride (default 1: a window per frame)")
    p.add_argument("--queue-size", type=int, default=8, help="each live sender's local queue (default 8, as capture)")
    p.add_argument("--weights", help="checkpoint (default: the shipped model, window 128)")
    p.add_argument("--kill-down", type=float, default=8.0, help="seconds the worker stays killed (0: no kill phase)")
    p.add_argument("--after-restart", type=float, default=3.0, help="seconds of results counted after the restart")
    p.add_argument("--out", default=str(RESULTS / "overload.json"), help="JSON output path")
    add_debug_flag(p)
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(30.0, args.duration / 3)
    setup_logging(args.debug)
    workdir = Path(tempfile.mkdtemp(prefix="overload-"))
    bench = Bench(args, workdir)
    metrics: dict[str, Any] = {}
    load_start = os.getloadavg()[0]
    try:
        log.info("overload: %d live stream(s) at %g fps, stride %d, %g s", args.streams, args.fps, args.stride,
                 args.duration)
        metrics["overload"] = bench.overload()
        if args.kill_down > 0:
            log.info("kill -9 of the inference worker for %g s", args.kill_down)
            metrics["kill"] = bench.kill_and_restart()
    finally:
        bench.close()
    final = bench.worker.stats()
    if "kill" in metrics:
        metrics["kill"]["worker_final_stats"] = {k: final.get(k) for k in ("frames_in", "windows", "skipped_windows")}
    metrics["machine_load"] = {"loadavg_1min_start": round(load_start, 2),
                               "loadavg_1min_end": round(os.getloadavg()[0], 2)}  # other work sharing the cores
    print_table(metrics)
    write_results("overload", {"machine": machine(), "config": {k: v for k, v in vars(args).items() if k != "out"},
                               "metrics": metrics}, args.out)
    healthy = metrics["overload"]["worker_alive"] and metrics.get("kill", {}).get("worker_alive", True)
    if healthy:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log.error("the inference worker died; its log: %s", bench.worker.log_path)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())

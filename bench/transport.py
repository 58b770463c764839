"""Ingest throughput: frames/s from PUSH sockets into per-stream ring buffers, on one core.

    python -m bench.transport [--producers 2] [--frames 100000] [--batch-frames 1000000]
                              [--batch 128] [--persons 2] [--modes frame batch] [--core 0]

The consumer is the real inference worker (``workers.inference.InferenceWorker`` with the
shipped checkpoint on the CPU): its ``poll()`` loop receives, decodes, assigns person slots
and appends to the ring buffers, exactly as in production. Its stride is set beyond the
run, so no window is classified: this measures ingestion alone (bench.inference measures
the model). The consumer process, with its ZeroMQ I/O thread, is pinned to one core
(``--core``); the producer processes run on the other cores and send pre-encoded messages
of their own lossless stream as fast as they can, either one frame per message
(``frame``) or ``--batch`` frames per ``frames`` message (``batch``, protocol v2, what a
fast replay sends by default). Prints a table and writes bench/results/transport.json (or ``--out``); its
``ingest_frames_per_s`` is the faster mode's, named in ``mode``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bench.common import machine, write_results
from pipeline.cli import add_debug_flag, run_cli, setup_logging
from pipeline.endpoints import free_endpoints
from pipeline.messages import SEQ_DTYPE, Frame, FrameBatch, Person, StreamStart, encode
from pipeline.settings import load_settings
from pipeline.transport import FrameSender
from workers.replay import DEFAULT_BATCH

JOINTS = 18
NEVER = 1 << 62  # a stride no run reaches: no window is classified


def _frames(stream: str, n: int, persons: int, seed: int) -> list[Frame]:
    rng = np.random.default_rng(seed)
    kps = [rng.uniform(0.1, 0.9, (JOINTS, 3)).astype(np.float32) for _ in range(persons)]
    people = tuple(Person(i + 1, kp) for i, kp in enumerate(kps))
    return [Frame(stream, seq, 1_700_000_000.0 + seq / 30, 640, 480, "openpose", people, 4.0) for seq in range(n)]


def _messages(stream: str, frames: int, persons: int, batch: int, seed: int) -> Iterator[bytes]:
    """Every message of one producer, exactly as encode() writes them.

    Frame messages are encoded before the clock starts. Batches are one encoded template
    whose ``seq`` column is patched per message, so a million frames cost the producer
    little time and no memory.
    """
    if batch <= 1:
        yield from [encode(f) for f in _frames(stream, frames, persons, seed)]
        return
    template_batch = FrameBatch.from_frames(_frames(stream, batch, persons, seed))
    template = encode(template_batch)
    seq_bytes = template_batch.seq.astype(SEQ_DTYPE).tobytes()
    at = template.index(seq_bytes)
    head, tail = template[:at], template[at + len(seq_bytes):]
    if head + (template_batch.seq + batch).astype(SEQ_DTYPE).tobytes() + tail != \
            encode(replace(template_batch, seq=template_batch.seq + batch)):
        raise RuntimeError("the seq column could not be patched in place")
    base = np.arange(batch, dtype=SEQ_DTYPE)
    for first in range(0, frames - frames % batch, batch):
        yield head + (base + first).tobytes() + tail


def produce(endpoint: str, stream: str, frames: int, persons: int, batch: int, cores: list[int],
            ready: Any, go: Any, done: Any) -> None:
    """One producer process: connect, announce a lossless stream, send everything on ``go``,
    and keep the socket open until the consumer is ``done`` (closing drops what is queued)."""
    if cores:
        os.sched_setaffinity(0, cores)
    messages = _messages(stream, frames, persons, batch, seed=len(stream))
    first = next(messages)
    sender = FrameSender(endpoint, live=False, sndhwm=1000)
    sender.send_control(StreamStart(stream, time.time(), {"fps": 30.0, "source": "bench", "layout": "openpose",
                                                          "width": 640, "height": 480, "joints": JOINTS,
                                                          "live": False}))
    ready.release()
    go.wait()
    sender.send(first)
    for data in messages:
        sender.send(data)
    done.wait(600)
    sender.close()


def run_mode(engine: Any, mode: str, args: argparse.Namespace, producer_cores: list[int]) -> dict[str, Any]:
    """Ingest every producer's stream through a fresh worker; returns one result row."""
    from workers.inference import InferenceWorker

    batch = args.batch if mode == "batch" else 1
    frames = args.batch_frames if mode == "batch" else args.frames
    frames -= frames % batch
    settings = load_settings(inference__stride=NEVER, inference__stats_interval_s=3600.0, inference__max_gap=10,
                             inference__persons=args.persons).inference
    worker = InferenceWorker(engine, settings, *free_endpoints(2))
    ctx = mp.get_context("spawn")
    ready, go, done = ctx.Semaphore(0), ctx.Event(), ctx.Event()
    procs = [ctx.Process(target=produce, args=(worker.receiver.endpoint, f"{mode}{i}", frames, args.persons, batch,
                                               producer_cores, ready, go, done)) for i in range(args.producers)]
    for proc in procs:
        proc.start()
    for _ in procs:
        if not ready.acquire(timeout=300):
            raise RuntimeError("a producer did not start")
    expected = frames * args.producers
    while len(worker.streams) < args.producers:  # the start messages
        worker.poll(timeout_ms=100)
    go.set()
    while worker.instruments.frames_in == 0:
        worker.poll(timeout_ms=100)
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    first = seen = worker.instruments.frames_in
    stalled = time.monotonic() + 30
    while worker.instruments.frames_in < expected and time.monotonic() < stalled:
        worker.poll(timeout_ms=100)
        if worker.instruments.frames_in != seen:
            seen, stalled = worker.instruments.frames_in, time.monotonic() + 30
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    got = worker.instruments.frames_in - first
    done.set()
    for proc in procs:
        proc.join()
    ok = (worker.instruments.frames_in == expected and worker.instruments.bad_frames == 0 and worker.decoder.bad == 0
          and all(s.buffer.total == frames for s in worker.streams.values()))
    worker.close()
    return {"mode": "frame messages" if batch == 1 else f"frames batches of {batch}", "batch": batch,
            "frames": got, "seconds": elapsed, "ingest_frames_per_s": got / elapsed,
            "us_per_frame": elapsed / got * 1e6, "consumer_cpu_us_per_frame": cpu / got * 1e6,
            "frames_per_cpu_s": got / cpu, "load_avg_1m": load, "complete": ok}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.transport", description=__doc__.split("\n")[0])
    p.add_argument("--producers", type=int, default=2, help="streams, one producer process each")
    p.add_argument("--frames", type=int, default=100_000, help="frames per producer, frame-message mode")
    p.add_argument("--batch-frames", type=int, default=1_000_000, help="frames per producer, batch mode")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="frames per batch message (the replay's default)")
    p.add_argument("--persons", type=int, default=2)
    p.add_argument("--modes", nargs="+", choices=["frame", "batch"], default=["frame", "batch"])
    p.add_argument("--core", type=int, default=0, help="the one core the consumer runs on")
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/transport.json)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    setup_logging(args.debug, quiet=not args.debug)  # the worker's per-stream lines would fill the table
    return run_cli(p.prog, lambda: run(args), debug=args.debug)


def run(args: argparse.Namespace) -> int:
    cores = sorted(os.sched_getaffinity(0))
    # pin before torch and ZeroMQ start threads: they inherit this affinity
    os.sched_setaffinity(0, {args.core})
    producer_cores = [c for c in cores if c != args.core]

    from stgcn import DEFAULT_WEIGHTS
    from stgcn.engine import Engine

    engine = Engine(DEFAULT_WEIGHTS, "cpu", persons=args.persons)
    rows = [run_mode(engine, mode, args, producer_cores) for mode in args.modes]
    print(f"consumer pinned to core {args.core}; producers on cores {producer_cores or 'shared'}; "
          f"{args.producers} streams, {args.persons} persons x {JOINTS} joints per frame")
    print(f"{'mode':<26}{'frames':>10}{'seconds':>9}{'frames/s':>12}{'us/frame':>10}{'cpu us/frame':>14}"
          f"{'load 1m':>9}")
    for r in rows:
        print(f"{r['mode']:<26}{r['frames']:>10}{r['seconds']:>9.2f}{r['ingest_frames_per_s']:>12,.0f}"
              f"{r['us_per_frame']:>10.2f}{r['consumer_cpu_us_per_frame']:>14.2f}{r['load_avg_1m']:>9.1f}"
              + ("" if r["complete"] else "  INCOMPLETE"))
    print("frames/s is wall clock on the one core; cpu us/frame is the consumer's own CPU time (its process,"
          " ZeroMQ I/O thread included), which other load on the machine barely changes")
    best = max(rows, key=lambda r: r["ingest_frames_per_s"])
    metrics: dict[str, Any] = {"ingest_frames_per_s": best["ingest_frames_per_s"], "us_per_frame": best["us_per_frame"],
                               "mode": best["mode"], "consumer_cores": 1,
                               "consumer_cpu_us_per_frame": best["consumer_cpu_us_per_frame"]}
    for r in rows:
        key = "frame_messages" if r["batch"] == 1 else f"batch{r['batch']}"
        metrics[f"ingest_frames_per_s_{key}"] = r["ingest_frames_per_s"]
        metrics[f"us_per_frame_{key}"] = r["us_per_frame"]
        metrics[f"consumer_cpu_us_per_frame_{key}"] = r["consumer_cpu_us_per_frame"]
    config = {k: v for k, v in vars(args).items() if k not in ("out", "debug")}
    write_results("transport", {"machine": f"{machine()}, consumer pinned to 1 core", "config": config,
                                "metrics": metrics, "rows": rows}, args.out)
    return 0 if all(r["complete"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

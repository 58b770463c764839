"""The inference worker's own Python per frame at stride 1, apart from the model.

    python -m bench.worker_path [--streams 16] [--frames 160] [--form continual] [--out PATH]

The real worker (``workers.inference.InferenceWorker``, the shipped model on the CPU, real
loopback sockets) takes encoded frames of ``--streams`` lossless one-person streams, one frame
of each at a time, and runs a batch after each round, as its loop does at stride 1. Timed per
frame, after the continual states are ready: reading (decode, ring buffer, tracker, the window
job), starting the batch (the model: the engine's own cost) and finishing it (result records,
smoothing, msgpack, ZeroMQ). Reading and finishing are what bounds one worker process however
fast its model is (the GPU end-to-end runs: docs/continual.md).

Prints the figures and writes ``bench/results/worker_path_cpu.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import write_results
from pipeline.cli import add_debug_flag, run_cli, setup_logging
from pipeline.endpoints import free_endpoints
from pipeline.messages import Frame, Person, StreamStart, encode
from pipeline.settings import load_settings
from stgcn import DEFAULT_WEIGHTS

PHASES = ("read", "start", "finish")


def measure(streams: int, frames: int, form: str, weights: str) -> dict[str, float]:
    """Microseconds per frame of each phase over the rounds after the first ``frames - 30``."""
    from stgcn.continual_engine import ContinualEngine
    from stgcn.engine import Engine
    from workers.inference import InferenceWorker

    engine = (ContinualEngine if form == "continual" else Engine)(weights, "cpu")
    settings = load_settings(inference__stride=1, inference__stats_interval_s=3600.0, inference__persons=1,
                             inference__max_batch=max(streams, 8)).inference
    worker = InferenceWorker(engine, settings, *free_endpoints(2))
    rng = np.random.default_rng(0)
    meta = {"fps": 30.0, "source": "bench", "layout": "openpose", "width": 640, "height": 480, "joints": 18,
            "live": False}
    for s in range(streams):
        worker.handle(encode(StreamStart(f"s{s}", time.time(), meta)))
    data = [[encode(Frame(f"s{s}", t, time.time(), 640, 480, "openpose",
                          (Person(1, rng.uniform(0.1, 0.9, (18, 3)).astype(np.float32)),), 4.0))
             for s in range(streams)] for t in range(frames)]
    spent, timed = dict.fromkeys(PHASES, 0.0), 0
    try:
        for t, round_ in enumerate(data):
            t0 = time.perf_counter()
            for message in round_:
                worker.handle(message)
            t1 = time.perf_counter()
            worker._start_batch()
            t2 = time.perf_counter()
            worker._finish_batch()
            t3 = time.perf_counter()
            if t >= frames - 30:
                for phase, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2)):
                    spent[phase] += dt
                timed += streams
    finally:
        worker.close()
    return {f"{phase}_us_per_frame": 1e6 * spent[phase] / timed for phase in PHASES}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.worker_path", description=__doc__.split("\n")[0])
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--frames", type=int, default=160, help="frames per stream (the last 30 rounds are timed)")
    p.add_argument("--form", choices=("window", "continual"), default="continual")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/worker_path_cpu.json)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    setup_logging(args.debug)

    def body() -> int:
        if args.frames <= 30:
            raise ValueError("--frames must be above 30 (the last 30 rounds are timed)")
        m = measure(args.streams, args.frames, args.form, args.weights)
        python = m["read_us_per_frame"] + m["finish_us_per_frame"]
        m["worker_python_us_per_frame"] = python
        m["worker_frames_per_s_bound"] = 1e6 / python
        print(f"per frame: read {m['read_us_per_frame']:.1f} us, model {m['start_us_per_frame']:.1f} us, "
              f"results {m['finish_us_per_frame']:.1f} us; the worker's own Python {python:.1f} us "
              f"(at most {m['worker_frames_per_s_bound']:.0f} frames/s a process)")
        write_results("worker_path_cpu", {"config": {"streams": args.streams, "frames": args.frames,
                                                     "form": args.form, "weights": args.weights},
                                          "metrics": m}, args.out)
        return 0

    return run_cli(p.prog, body, debug=args.debug, errors=(ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())

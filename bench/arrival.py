"""Frame arrival delay of one live 30 fps stream, without the inference worker: where do frames wait?

    python -m bench.arrival [--frames 300] [--loops plain worker-like torch] [--spinners 0 16]

A sender process sends one stream at ``--fps`` through a live ``FrameSender`` (as the e2e
bench's senders do); this process receives with ``FrameReceiver.recv_many`` and records, for
every frame, receipt time minus send time, and how many reads brought more than one frame
(two frames of a stream in one read: its first window would be superseded). Receiver loops:
``plain`` blocks up to 5 ms per read; ``worker-like`` does what the inference worker's loop does
around a frame (zero-timeout reads while a job is pending, then a result on a PUB socket);
``torch`` adds the engine's kind of work per job (a pinned host copy, a host-to-device copy, a
small CUDA product, an event synchronisation; on the CPU without CUDA), warmed up first;
``engine`` runs the inference worker's own engine (shipped model, CUDA graphs) on one window
(on a CPU its window takes longer than a frame period, so frames queue behind it).
``--spinners N`` runs N niced busy processes beside it, so that no CPU sits idle. bench/e2e.py
reports the same delay for the real worker (``worker_arrival_ms``): comparing the two tells
whether frames wait in the transport or in the worker process.
Prints a table and writes bench/results/arrival_<device>.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import msgpack
import numpy as np

from bench.common import RESULTS, machine, summary_ms, write_results
from pipeline.cli import add_debug_flag, run_cli, setup_logging
from pipeline.endpoints import free_endpoint
from pipeline.transport import FrameReceiver, FrameSender


def send(endpoint: str, frames: int, fps: float) -> None:
    """One live stream on the e2e senders' schedule; the send time travels in the message."""
    import zmq

    ctx = zmq.Context()
    sender = FrameSender(endpoint, live=True, context=ctx)
    time.sleep(0.5)  # the connection
    t0 = time.time()
    for i in range(frames):
        delay = t0 + i / fps - time.time()
        if delay > 0.0002:
            time.sleep(delay)
        sender.send(msgpack.packb({"seq": i, "t": time.time()}))
    time.sleep(0.5)
    sender.close(0)
    ctx.destroy(0)


def spin() -> None:
    os.nice(19)
    while True:
        pass


def engine_like_job() -> tuple[Callable[[], None], str]:
    """A job shaped like the engine's at batch 1 (T=128, 18 joints, 2 persons), warmed up."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    host = torch.empty(1, 3, 128, 18, 2, pin_memory=device == "cuda")
    weight = torch.randn(256, 256, device=device)

    def job() -> None:
        host.copy_(torch.from_numpy(np.random.rand(1, 3, 128, 18, 2).astype(np.float32)))
        x = host.to(device, non_blocking=True)
        (weight @ weight).sum().add_(x.sum())
        if device == "cuda":
            event = torch.cuda.Event()
            event.record()
            event.synchronize()

    for _ in range(5):  # CUDA context, cuBLAS handle, kernels: not part of the steady state
        job()
    return job, device


def engine_job() -> tuple[Callable[[], None], str]:
    """The inference worker's own engine (shipped model, CUDA graphs on CUDA) on one real-shaped window."""
    from stgcn import DEFAULT_WEIGHTS
    from stgcn.engine import Engine

    engine = Engine(DEFAULT_WEIGHTS, "auto", persons=2)
    window = np.random.default_rng(0).uniform(0.2, 0.8, engine.sample_shape).astype(np.float32)

    def job() -> None:
        batch = engine.input_buffer(1)
        batch[0] = window
        engine.submit(batch)()

    for _ in range(5):
        job()
    return job, str(engine.device)


def measure(loop: str, frames: int, fps: float, spinners: int) -> dict[str, Any]:
    import zmq

    ctx = mp.get_context("spawn")
    jobs = {"torch": engine_like_job, "engine": engine_job}
    job, device = jobs[loop]() if loop in jobs else ((lambda: None), "none")
    busy = [ctx.Process(target=spin, daemon=True) for _ in range(spinners)]
    for p in busy:
        p.start()
    receiver = FrameReceiver(free_endpoint())
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.bind(free_endpoint())
    sender = ctx.Process(target=send, args=(receiver.endpoint, frames, fps))
    sender.start()
    delays: list[float] = []
    bunched, pending = 0, None
    end = time.time() + frames / fps + 10
    try:
        while len(delays) < frames and time.time() < end:
            wait = 0 if pending is not None else 5
            msgs = receiver.recv_many(64, timeout_ms=wait)
            now = time.time()
            bunched += len(msgs) > 1
            for m in msgs:
                delays.append((now - msgpack.unpackb(m)["t"]) * 1000)
                pending = None if loop == "plain" else now
            if pending is not None and now - pending > 0.005:  # the worker's max wait, then the batch
                job()
                pub.send_multipart([b"s", msgpack.packb({"seq": len(delays)})])
                pending = None
    finally:
        sender.join(10)
        for p in busy:
            p.kill()
        receiver.close()
        pub.close(0)
    return {"loop": loop, "spinners": spinners, "job_device": device, "frames": frames, "received": len(delays),
            "bunched_reads": bunched, **summary_ms(delays), "over_20ms": int((np.asarray(delays) > 20).sum())}


def fresh(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a new process: each receiver starts its sockets after its own imports and
    CUDA set-up, as the worker does, not in a process an earlier loop has warmed."""
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.arrival", description=__doc__.split("\n")[0],
                                epilog="\n".join(__doc__.split("\n")[2:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=300, help="frames per measurement")
    p.add_argument("--fps", type=float, default=30.0)
    loops = ("plain", "worker-like", "torch", "engine")
    p.add_argument("--loops", nargs="+", choices=loops, default=list(loops[:3]))
    p.add_argument("--spinners", type=int, nargs="+", default=[0], help="niced busy processes beside it")
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/arrival_<device>.json)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    setup_logging(args.debug)
    return run_cli(p.prog, lambda: run(args), debug=args.debug)


def run(args: argparse.Namespace) -> int:
    rows = [fresh(measure, loop, args.frames, args.fps, n) for n in args.spinners for loop in args.loops]
    print(f"{'loop':<12} {'spinners':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'>20 ms':>7} {'bunched':>8}")
    for r in rows:
        print(f"{r['loop']:<12} {r['spinners']:>8} {fmt(r['p50_ms'])} {fmt(r['p99_ms'])} {fmt(r['max_ms'])} "
              f"{r['over_20ms']:>7} {r['bunched_reads']:>8}")
    gpu = next((r["job_device"] for r in rows if r["job_device"].startswith("cuda")), None)
    kind = "cuda" if gpu else "cpu"
    write_results(f"arrival_{kind}", {
        "machine": machine(gpu or "cpu"), "config": {"frames": args.frames, "fps": args.fps},
        "metrics": {f"arrival_p99_ms_{r['loop']}_spin{r['spinners']}": r["p99_ms"] for r in rows}, "rows": rows},
        args.out or RESULTS / f"arrival_{kind}.json")
    return 0


def fmt(ms: float | None) -> str:
    return f"{ms:>7.2f}" if ms is not None else f"{'-':>7}"


if __name__ == "__main__":
    sys.exit(main())

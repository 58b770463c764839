"""Ingest throughput: frames/s from PUSH sockets into per-stream ring buffers, one consumer process.

    python bench/transport.py [--producers 4] [--frames 50000] [--persons 2]

Each producer process sends pre-encoded frame messages of its own stream as fast as it can
(lossless mode); the consumer (this process) receives, decodes, assigns person slots and
appends to the ring buffers, exactly what the inference worker does per frame. Prints a
table and writes bench/results/transport.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.messages import Decoder, Frame, Person, encode  # noqa: E402
from pipeline.ring_buffer import RingBuffer  # noqa: E402
from pipeline.tracker import SlotAssigner  # noqa: E402
from pipeline.transport import FrameReceiver, FrameSender  # noqa: E402


def produce(endpoint: str, stream: str, frames: int, persons: int) -> None:
    rng = np.random.default_rng(0)
    kps = [rng.uniform(0, 1, (18, 3)).astype(np.float32) for _ in range(persons)]
    sender = FrameSender(endpoint, live=False)
    for seq in range(frames):
        sender.send(encode(Frame(stream, seq, time.time(), 640, 480, "openpose",
                                 tuple(Person(i, kp) for i, kp in enumerate(kps)))))
    sender.close(timeout_ms=60_000)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--producers", type=int, default=4)
    p.add_argument("--frames", type=int, default=50_000, help="frames per producer")
    p.add_argument("--persons", type=int, default=2)
    args = p.parse_args()
    receiver = FrameReceiver("tcp://127.0.0.1:*", rcvhwm=10_000)
    decoder = Decoder("bench")
    buffers: dict[str, tuple[RingBuffer, SlotAssigner]] = {}
    procs = [mp.Process(target=produce, args=(receiver.endpoint, f"s{i}", args.frames, args.persons))
             for i in range(args.producers)]
    for proc in procs:
        proc.start()
    total, expected, t0 = 0, args.producers * args.frames, None
    while total < expected:
        batch = receiver.recv_many(1024, timeout_ms=10_000)
        if not batch:
            break
        t0 = t0 or time.perf_counter()
        for data in batch:
            msg = decoder.decode(data)
            if msg is None:
                continue
            buf, slots = buffers.get(msg.stream) or buffers.setdefault(msg.stream, (RingBuffer(), SlotAssigner(2)))
            buf.append(slots.assign(msg.persons, joints=18), msg.seq)
            total += 1
    elapsed = time.perf_counter() - t0
    for proc in procs:
        proc.join()
    rate = total / elapsed
    print(f"{total} frames from {args.producers} producers in {elapsed:.2f} s: {rate:,.0f} frames/s into ring buffers")
    out = {"machine": f"{platform.machine()} CPU, {mp.cpu_count()} cores (this CPU machine)",
           "date": date.today().isoformat(),
           "config": vars(args), "metrics": {"ingest_frames_per_s": rate, "frames": total}}
    path = ROOT / "bench" / "results" / "transport.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path.relative_to(ROOT)}")
    return 0 if total == expected else 1


if __name__ == "__main__":
    sys.exit(main())

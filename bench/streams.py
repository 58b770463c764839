"""Serving cost of a multi-stream model's input-stream choices (``inference.streams``).

    python -m bench.streams --weights CKPT [--device cpu|cuda] [--batches 1 8 64] [--out JSON]

For each choice (the joint stream alone, joint + bone, all the checkpoint's streams) the engine
(CUDA graphs on the GPU, the float32 module on the CPU) runs batches of one-person windows of the
checkpoint's length; prints and saves the median milliseconds per batch and windows per second.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from stgcn.engine import Engine, pick_device

from .common import machine, write_results
from .inference import time_device


def choices(streams: list[str]) -> list[list[str]]:
    """The joint stream, joint + bone, and all streams (those the checkpoint has)."""
    out = [["joint"], ["joint", "bone"], streams]
    return [c for i, c in enumerate(out) if all(s in streams for s in c) and c not in out[:i]]


def real_shaped(engine: Engine, batch: int) -> np.ndarray:
    """``batch`` raw one-person windows of the engine's shape, every joint present."""
    windows = np.random.default_rng(0).uniform(0.3, 0.7, (batch, *engine.sample_shape)).astype(np.float32)
    windows[:, -1] = 0.9
    return windows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", required=True, help="a multi-stream checkpoint")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--repeats", type=int, default=20, help="timed batches per measure (median)")
    parser.add_argument("--out", help="JSON path (default bench/results/streams_{cpu,cuda}.json)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    streams = list(Engine(args.weights, "cpu").streams)
    metrics: dict[str, float | bool] = {}
    check = np.random.default_rng(1).uniform(0.3, 0.7, (8, 3, 1, 1, 1)).astype(np.float32)
    for choice in choices(streams):
        engine = Engine(args.weights, str(device), persons=1, streams=choice)
        key = "+".join(choice)
        if device.type == "cuda":  # served as on the CPU, and replayed from CUDA graphs
            reference = Engine(args.weights, "cpu", persons=1, streams=choice)
            windows = np.broadcast_to(check, (8, *engine.sample_shape)).copy()
            windows += np.random.default_rng(2).normal(0, 0.02, windows.shape).astype(np.float32)
            windows[:, -1] = 0.9
            metrics[f"{key}_max_prob_diff_vs_cpu"] = float(np.abs(engine(windows)[0] - reference(windows)[0]).max())
            metrics[f"{key}_cuda_graphs"] = engine.runner is not None
        for batch in args.batches:
            windows = real_shaped(engine, batch)
            s = time_device(lambda: engine(windows), args.repeats) / 1e3
            metrics[f"{key}_b{batch}_ms"] = round(s * 1e3, 3)
            metrics[f"{key}_b{batch}_windows_per_s"] = round(batch / s, 1)
            print(f"{'+'.join(choice):40s} batch {batch:4d}: {s * 1e3:8.2f} ms  {batch / s:9.1f} windows/s")
    payload = {"machine": machine(device, with_torch=True), "weights": args.weights, "streams": streams,
               "window": engine.window, "what": "median ms per batch of one-person windows, engine as served",
               "metrics": metrics}
    write_results(f"streams_{device.type}", payload, args.out)
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    raise SystemExit(main())

"""Inference throughput and latency of the serving engine (eager model, the shipped checkpoint;
float32 and, on CUDA, bf16 autocast).

    python bench/inference.py [--device cpu|cuda] [--batches 1 8 32] [--window N]

Prints a table and writes bench/results/inference_<device>.json with windows/s and latency per
batch size, and, on the CPU, the stride one real-time 30 fps stream needs.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stgcn import DEFAULT_WEIGHTS  # noqa: E402
from stgcn.engine import Engine  # noqa: E402


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (GPU machine)"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def time_batch(engine: Engine, batch: int, window: int, repeats: int) -> list[float]:
    rng = np.random.default_rng(0)
    x = np.zeros((batch, 3, window, engine.joints, 2), np.float32)
    x[:, :2, :, :, 0] = rng.uniform(0.3, 0.7, (batch, 2, window, engine.joints))
    x[:, 2, :, :14, 0] = 0.9
    engine(x)  # warm-up
    times = []
    for _ in range(repeats):
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        engine(x)
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--window", type=int, help="frames per window (default: the checkpoint's)")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    engine = Engine(args.weights, args.device)
    window = args.window or engine.window
    rows = []
    modes = [("fp32", False), ("bf16", True)] if engine.device.type == "cuda" else [("fp32", False)]
    for mode, amp in modes:
        engine.amp = amp
        for b in args.batches:
            t = float(np.median(time_batch(engine, b, window, args.repeats)))
            rows.append({"mode": mode, "batch": b, "latency_ms": 1000 * t, "windows_per_s": b / t})
            print(f"{mode}  batch {b:4d}  {1000 * t:9.2f} ms  {b / t:9.1f} windows/s", flush=True)
    metrics = {f"windows_per_s_{r['mode']}_b{r['batch']}": r["windows_per_s"] for r in rows}
    best = modes[-1][0]
    metrics.update({f"windows_per_s_b{r['batch']}": r["windows_per_s"] for r in rows if r["mode"] == best})
    metrics["latency_ms_b1"] = next((r["latency_ms"] for r in rows if r["mode"] == best and r["batch"] == 1), None)
    if engine.device.type == "cpu":
        metrics["cpu_stride_for_30fps"] = math.ceil(30 / metrics["windows_per_s_b1"])
        print(f"one 30 fps stream needs stride >= {metrics['cpu_stride_for_30fps']} on this CPU")
    out = {"machine": machine(engine.device), "date": date.today().isoformat(),
           "config": {"weights": Path(args.weights).name, "window": window, "joints": engine.joints, "persons": 2,
                      "device": str(engine.device)}, "metrics": metrics, "rows": rows}
    path = ROOT / "bench" / "results" / f"inference_{engine.device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Inference throughput and latency: the original forward against the serving engine, one run.

    python -m bench.inference --device cuda [--windows 300 128] [--batches 1 2 4 ... 256]
    python -m bench.inference --device cpu

Modes, each on the same inputs (realistic windows, never zeros):

- ``original_fp32``: the original module, float32 (TF32 off), eager;
- ``original_bf16``: the original module under bf16 autocast, eager (the reference's fast mode);
- ``fast``: :class:`stgcn.fast.FastSTGCN` per stream (BN folded, joint-major, fp16 on CUDA), eager;
- ``fast_graph``: the same replayed from a CUDA graph (network only);
- ``engine``: the whole serving step, host windows in and host results out: copy in from the
  pinned batch buffer, normalisation on the device, network, softmax, next frame back to raw
  units, copies out; CUDA graphs.

Device-side modes are timed with CUDA events after warm-up (median); ``engine`` by the wall
clock around the call, which ends synchronised. FLOPs per window are counted by
``torch.utils.flop_counter`` on the original forward; the bf16 matrix-product ceiling is
measured in the same run. On CUDA the shipped model's real windows (``--real``, an npz of raw
UTD-MHAD test windows) check fp16 and bf16 against float32: logit error, top-1 agreement.
Writes ``bench/results/inference_<device>.json`` (or ``--out``) and, on CUDA, a kernel profile of the engine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.common import RESULTS, machine, write_results
from pipeline.cli import add_debug_flag, run_cli, setup_logging
from stgcn import DEFAULT_WEIGHTS, load_model
from stgcn.engine import Engine
from stgcn.fast import fold
from stgcn.graph import get_layout


def raw_windows(batch: int, window: int, real: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Raw windows: real clips tiled (cut or looped to ``window``), else plausible random skeletons."""
    if real is not None:
        idx = rng.integers(0, len(real), batch)
        t = np.arange(window) % real.shape[2]
        return np.ascontiguousarray(real[idx][:, :, t])
    x = np.zeros((batch, 3, window, 18, 2), np.float32)
    x[:, :2, :, :, 0] = rng.uniform(0.3, 0.7, (batch, 2, window, 18))
    x[:, 2, :, :14, 0] = rng.uniform(0.5, 1.0, (batch, window, 14))
    return x


def time_device(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn`` between CUDA events (wall clock on the CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def time_wall(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def matmul_ceiling(device: torch.device) -> float:
    """Measured bf16 matrix-product TFLOP/s (8192^3), the ceiling the shares are taken of."""
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    ms = time_device(lambda: a @ b, 20, warmup=5)
    return 2 * n**3 / ms / 1e9


def gflop_per_window(model: torch.nn.Module, x: torch.Tensor, recent: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x[:1], recent[:1])
    return counter.get_total_flops() / 1e9


def graphed(fn: Callable[[], object]) -> Callable[[], None]:
    """``fn`` (static inputs) captured in a CUDA graph; returns the replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def accuracy_check(engine: Engine, fast_models: dict[str, torch.nn.Module], real: np.ndarray, labels: np.ndarray | None
                   ) -> dict[str, float]:
    """Reduced precision against float32 on real windows: logit error, top-1 agreement."""
    out: dict[str, float] = {}
    x, recent, _, _ = engine.transform.prepare(torch.from_numpy(real).to(engine.device), history=engine.history)
    with torch.no_grad():
        torch.backends.cudnn.allow_tf32 = False
        ref = engine.model(x, recent)[0].double()
        for name, net in fast_models.items():
            logits = net(x, recent)[0].double()
            err = (logits - ref).norm(dim=1) / ref.norm(dim=1)
            out[f"{name}_logit_rel_err_max"] = float(err.max())
            out[f"{name}_logit_rel_err_median"] = float(err.median())
            out[f"{name}_top1_agreement_pct"] = 100 * float((logits.argmax(1) == ref.argmax(1)).double().mean())
            if labels is not None:
                out[f"{name}_top1_accuracy_pct"] = 100 * float((logits.argmax(1).cpu().numpy() == labels).mean())
        if labels is not None:
            out["fp32_top1_accuracy_pct"] = 100 * float((ref.argmax(1).cpu().numpy() == labels).mean())
    out["real_windows"] = len(real)
    return out


def profile_engine(engine: Engine, windows: np.ndarray, path: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    engine(windows)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            engine(windows)
    path.write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", type=int, nargs="+", help="default 1..256 on CUDA, 1 2 4 8 on the CPU")
    p.add_argument("--windows", type=int, nargs="+",
                   help="frames per window; the first gives the headline metrics (default: 300 and the "
                        "checkpoint's on CUDA, the checkpoint's on the CPU)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--real", help="npz with raw real windows x (N, 3, T, 18, 2) and labels y")
    p.add_argument("--modes", nargs="+", help="subset of modes to run")
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/inference_<device>.json)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    setup_logging(args.debug)
    return run_cli(p.prog, lambda: run(args), debug=args.debug)


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    real = labels = None
    if args.real:
        data = np.load(args.real)
        real, labels = data["x"].astype(np.float32), data["y"]
    base = load_model(args.weights)  # the checkpoint's window, layout, joints and classes
    base_window = base.config["window"]
    windows = args.windows or ([300, base_window] if cuda else [base_window])
    batches = args.batches or ([1, 2, 4, 8, 16, 32, 64, 128, 256] if cuda else [1, 2, 4, 8])
    modes = args.modes or (["original_fp32", "original_bf16", "fast", "fast_graph", "engine"] if cuda
                           else ["original_fp32", "engine"])
    results: dict = {"machine": machine(device, with_torch=True), "metrics": {}, "rows": [],
                     "config": {"weights": Path(args.weights).name,
                                "layout": get_layout(base.config["model"]["graph_args"]["layout"]).name,
                                "joints": int(base.A.shape[-1]), "persons": 2,
                                "classes": int(base.config["model"]["num_class"]),
                                "device": str(device), "modes": modes}}
    metrics = results["metrics"]
    if cuda:
        metrics["matmul_bf16_tflops_measured"] = matmul_ceiling(device)
        print(f"bf16 matmul ceiling measured: {metrics['matmul_bf16_tflops_measured']:.0f} TFLOP/s", flush=True)

    for window in windows:
        engine = Engine(args.weights, args.device, persons=2, window=window)
        model = engine.model
        fast = engine.net if engine.device.type == "cuda" else fold(model)
        big = raw_windows(max(batches), window, real, rng)
        xb, rb, _, _ = engine.transform.prepare(torch.from_numpy(big).to(device), history=engine.history)
        gflop = gflop_per_window(model, xb, rb)
        metrics[f"gflop_per_window_w{window}"] = gflop
        print(f"window {window}: {gflop:.2f} GFLOP per window (M=2, V={engine.joints})", flush=True)
        for mode in modes:
            for b in batches:
                x, r, host = xb[:b].contiguous(), rb[:b].contiguous(), big[:b]
                with torch.no_grad():
                    torch.backends.cudnn.allow_tf32 = False
                    if mode == "original_fp32":
                        ms = time_device(lambda: model(x, r), args.repeats)
                    elif mode == "original_bf16":
                        def run_bf16():
                            with torch.autocast("cuda", dtype=torch.bfloat16):
                                return model(x, r)
                        ms = time_device(run_bf16, args.repeats)
                    elif mode == "fast":
                        ms = time_device(lambda: fast(x, r), args.repeats)
                    elif mode == "fast_graph":
                        ms = time_device(graphed(lambda: fast(x, r)), args.repeats)
                    elif mode == "engine":  # the batch built in the engine's input buffer, as the worker does
                        buf = engine.input_buffer(b)
                        buf[:] = host
                        ms = time_wall(lambda: engine(buf), args.repeats)
                    else:
                        raise SystemExit(f"unknown mode {mode}")
                row = {"window": window, "mode": mode, "batch": b, "latency_ms": ms, "windows_per_s": 1000 * b / ms,
                       "tflops": gflop * b / ms}
                if cuda:
                    row["share_of_ceiling"] = row["tflops"] / metrics["matmul_bf16_tflops_measured"]
                results["rows"].append(row)
                print(f"W={window:3d} {mode:14s} batch {b:4d} {ms:9.3f} ms {row['windows_per_s']:10.1f} windows/s "
                      f"{row['tflops']:7.1f} TFLOP/s", flush=True)
        if cuda:  # the graphed step computes what the eager step does
            host = big[:5]
            graphed_probs, graphed_next = engine(host)
            eager = engine.step(torch.from_numpy(host).to(device))
            metrics[f"engine_graph_vs_eager_max_abs_w{window}"] = max(
                float(np.abs(graphed_probs - eager[0].cpu().numpy()).max()),
                float(np.abs(graphed_next - eager[1].cpu().numpy()).max()) if engine.predicts else 0.0)
        if cuda and window == base_window and real is not None:
            reduced = {"fp16": fold(model, torch.float16), "bf16": fold(model, torch.bfloat16)}
            metrics.update(accuracy_check(engine, reduced, real, labels))
        if cuda and window == windows[0]:
            profile_engine(engine, big, RESULTS / "inference_cuda_profile.txt")

    def rate(mode: str, b: int, window: int) -> float | None:
        return next((r["windows_per_s"] for r in results["rows"]
                     if r["mode"] == mode and r["batch"] == b and r["window"] == window), None)

    def lat(mode: str, b: int, window: int) -> float | None:
        return next((r["latency_ms"] for r in results["rows"]
                     if r["mode"] == mode and r["batch"] == b and r["window"] == window), None)

    head = windows[0]
    for window in windows:
        suffix = "" if window == head else f"_w{window}"
        metrics[f"windows_per_s_b256{suffix}"] = rate("engine", 256, window)
        metrics[f"latency_ms_b1{suffix}"] = lat("engine", 1, window)
        metrics[f"latency_ms_b1_network_graph{suffix}"] = lat("fast_graph", 1, window)
        orig = rate("original_bf16", 256, window)
        if orig:
            metrics[f"ratio_vs_original_bf16_b256{suffix}"] = rate("engine", 256, window) / orig
        best = max((r for r in results["rows"] if r["window"] == window and r["mode"] == "engine"),
                   key=lambda r: r["windows_per_s"])
        metrics[f"engine_best_windows_per_s{suffix}"] = best["windows_per_s"]
        if cuda:
            metrics[f"engine_share_of_ceiling_b256{suffix}"] = next(
                (r["share_of_ceiling"] for r in results["rows"]
                 if r["window"] == window and r["mode"] == "engine" and r["batch"] == 256), None)
    if not cuda:
        metrics["cpu_stride_for_30fps"] = math.ceil(30 / rate("engine", 1, head))
        print(f"one 30 fps stream needs stride >= {metrics['cpu_stride_for_30fps']} on this CPU")
    print(json.dumps(metrics, indent=1))
    write_results(f"inference_{device.type}", results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Continual ST-GCN against the regular window: work per result, time per result, accuracy.

    python -m bench.continual [--device cpu|cuda] [--batches 1 8 64] [--engine PEOPLE ...]
                              [--eval-json EVAL.json] [--live VIDEO ...] [--out PATH]

- FLOPs (``torch.utils.flop_counter``): one regular window (300 frames, and the checkpoint's own
  window) against one continual step of the same model, averaged over the 4 steps of a stride
  cycle after warm-up, and the costliest step of the cycle (all strides fall on it).
- Time, median milliseconds for a batch of B people on ``--device``: the regular network on a
  normalised window against one continual step (normalised frames in, state updated, logits read).
- Serving (``--engine N``): :class:`~stgcn.continual_engine.ContinualEngine` alone on N people
  at stride 1: the first batch (everyone new) and the batches after it, median and p99 ms.
- Accuracy, from ``python -m stgcn.eval --continual --json EVAL.json`` on the default model's
  test split (``--eval-json``): regular top-1 minus each continual mode's (live, clip).
- Live (``--live VIDEO``, repeatable; the CPU): each real video played at its frame rate as a
  camera (``workers.capture --realtime``: MediaPipe, tracking) into one inference worker and a
  sink, real processes on loopback, once per serving choice (window at the CPU's stride, window
  at stride 1, continual at stride 1): frame-to-result latency (``t_result - t_capture``)
  percentiles, results per captured frame, and the labels shown.

Prints a table and writes ``bench/results/continual_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import ROOT, machine, summary_ms, write_results
from bench.inference import time_device
from pipeline.cli import add_debug_flag, run_cli, setup_logging
from pipeline.endpoints import free_endpoints
from stgcn import DEFAULT_WEIGHTS, load_model
from stgcn.continual import Continual
from stgcn.continual_engine import ContinualEngine, RowKey


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _frames(n: int, t: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, t, 18, 1, generator=g)
    x[:, 2] = torch.rand(n, t, 18, 1, generator=g)
    return x.to(device)


def flop_table(model: torch.nn.Module, window: int, device: torch.device) -> dict[str, Any]:
    """FLOPs of regular windows and of continual steps (one person; stepped by subsetting, the
    count of the algorithm: CUDA's fixed-shape steps also compute rows a stride leaves out)."""
    co = Continual(model, window, slots=1, fixed=False)
    rows = torch.tensor([0], device=device)
    x = _frames(1, co.delay + 8, device)[..., 0]
    with torch.no_grad():
        for t in range(co.delay + 4):  # warm: every block has produced outputs
            co.step(x[:, :, max(0, t - 1):t + 1], rows)
        steps = [flops(lambda t=t: co.step(x[:, :, t - 1:t + 1], rows)) + flops(lambda: co.logits(rows))
                 for t in range(co.delay + 4, co.delay + 8)]
        out = {"continual_step_flops_mean": sum(steps) / len(steps), "continual_step_flops_max": max(steps)}
        for w in sorted({300, window}):
            out[f"window_flops_w{w}"] = flops(lambda w=w: model(_frames(1, w, device)))
    for w in sorted({300, window}):
        out[f"continual_step_flops_ratio_w{w}"] = out[f"window_flops_w{w}"] / out["continual_step_flops_mean"]
        out[f"continual_worst_step_flops_ratio_w{w}"] = out[f"window_flops_w{w}"] / out["continual_step_flops_max"]
    out["delay_frames"] = co.delay
    out["warm_up_frames"] = co.warm_up()  # frames a new person's state needs before it answers
    return out


def time_table(model: torch.nn.Module, window: int, batches: list[int], device: torch.device, repeats: int
               ) -> list[dict[str, Any]]:
    """Median ms per batch: the regular network on normalised windows, one continual step."""
    rows_out = []
    for b in batches:
        co = Continual(model, window, slots=b)
        rows = torch.arange(b, device=device)
        x = _frames(b, window, device)
        with torch.no_grad():
            for t in range(co.delay + 4):
                co.step(x[:, :, max(0, t - 1):t + 1, :, 0], rows)
            phase = iter(range(10 ** 9))

            def step() -> None:  # steps through the stride cycle, as a live stream does
                t = co.delay + 4 + next(phase) % 4
                co.step(x[:, :, t - 1:t + 1, :, 0], rows)
                co.logits(rows)

            window_ms = time_device(lambda: model(x), repeats)
            step_ms = time_device(step, repeats * 4)
        rows_out.append({"batch": b, "window_ms": window_ms, "continual_step_ms": step_ms,
                         "speedup": window_ms / step_ms})
        print(f"batch {b:5d}: window {window_ms:8.2f} ms, continual step {step_ms:7.2f} ms "
              f"({window_ms / step_ms:.1f}x)")
    return rows_out


def engine_table(weights: str, device: str, people: list[int], frames: int, profile: Path | None
                 ) -> list[dict[str, Any]]:
    """The serving path alone: :class:`ContinualEngine` answering ``n`` people's windows at
    stride 1 (random frames, one batch per frame): its construction, the first batch (every
    person new: stepped ``catch_up`` frames, answered by the window form), and the next
    ``frames`` batches (one step each; the window form every 4th frame until a state is ready)."""
    out = []
    for n in people:
        t0 = time.perf_counter()
        engine = ContinualEngine(weights, device)
        build_ms = 1000 * (time.perf_counter() - t0)
        g = np.random.default_rng(0)
        windows = np.zeros((n, *engine.sample_shape), np.float32)
        windows[..., 0] = g.random(windows[..., 0].shape, np.float32)
        windows[:, 2, ..., 0] = 1.0
        times = []
        for t in range(frames + 1):
            rows = [RowKey(f"s{i}", 0, 0, 1000 + t) for i in range(n)]
            start = time.perf_counter()
            engine.submit(windows, rows)()
            times.append(1000 * (time.perf_counter() - start))
            windows = np.roll(windows, -1, axis=2)
        steady = sorted(times[1:])
        row = {"people": n, "build_ms": build_ms, "first_batch_ms": times[0],
               "batch_p50_ms": steady[len(steady) // 2], "batch_p99_ms": steady[int(0.99 * (len(steady) - 1))],
               "batch_max_ms": steady[-1], "frames_per_s": 1000 * n / statistics.mean(steady)}
        out.append(row)
        print(f"engine, {n} people: built in {build_ms:.0f} ms, first batch {times[0]:.0f} ms, then p50 "
              f"{row['batch_p50_ms']:.1f} ms p99 {row['batch_p99_ms']:.1f} ms ({row['frames_per_s']:.0f} frames/s)")
        if profile is not None:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            with torch_profile(activities=acts) as prof:
                for t in range(8):
                    engine.submit(windows, [RowKey(f"s{i}", 0, 0, 2000 + frames + t) for i in range(n)])()
                    windows = np.roll(windows, -1, axis=2)
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=60)
            with open(profile, "a") as f:
                f.write(f"# ContinualEngine, {n} people, 8 batches at stride 1\n{table}\n")
    return out


LIVE_CHOICES = (("window", 4), ("window", 1), ("continual", 1))
STEADY_AFTER = 120  # frames of results the steady_ latencies leave out (4 s at 30 fps: a person's start)


def live_run(video: Path, form: str, stride: int, weights: str, work: Path, delay: int) -> dict[str, Any]:
    """One real video as a live camera through capture, inference and sink processes; the
    ``steady_`` latencies leave out each run's first ``delay`` frames of results (a person's start:
    the continual state's catch-up)."""
    frames_ep, results_ep = free_endpoints(2)
    out = work / f"{video.stem}_{form}_{stride}.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    py = [sys.executable, "-m"]
    log = work / f"{video.stem}_{form}_{stride}.log"
    with open(log, "w") as err:
        inference = subprocess.Popen(py + ["workers.inference", "--listen", frames_ep, "--publish", results_ep,
                                           "--device", "cpu", "--form", form, "--stride", str(stride),
                                           "--weights", weights], cwd=ROOT, env=env, stderr=err)
    sink = subprocess.Popen(py + ["workers.sinks", "--connect", results_ep, "--output", str(out), "--expect", "1",
                                  "--quiet"], cwd=ROOT, env=env)
    deadline = time.monotonic() + 120  # a camera does not wait: start it once the worker listens
    while "ready" not in log.read_text() and time.monotonic() < deadline and inference.poll() is None:
        time.sleep(0.2)
    capture = subprocess.run(py + ["workers.capture", "--video", str(video), "--realtime", "--connect", frames_ep],
                             cwd=ROOT, env=env, capture_output=True, text=True)
    try:
        sink.wait(timeout=120)
    finally:
        for proc in (sink, inference):
            proc.terminate()
            proc.wait(timeout=30)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    results = [r for r in rows if r.get("type") == "result"]
    lat = [1000 * (r["t_result"] - r["t_capture"]) for r in results]
    captured = next((int(line.split("frames captured")[0].split()[-1]) for line in capture.stderr.splitlines()
                     if "frames captured" in line), None)
    labels = Counter(p["label"] for r in results for p in r["people"])
    steady = [v for r, v in zip(results, lat) if r["seq"] >= results[0]["seq"] + delay]
    return {"video": video.name, "form": form, "stride": stride, "results": len(results), "frames": captured,
            **summary_ms(lat), **summary_ms(steady, "steady_"), "labels": dict(labels.most_common(5))}


def accuracy(path: Path) -> dict[str, Any]:
    """Regular minus continual top-1 (points) per mode, overall and per data set."""
    ev = json.loads(path.read_text())
    out: dict[str, Any] = {"regular_top1": ev["top1"]}
    for mode, m in ev.get("continual", {}).items():
        out[f"continual_top1_{mode}"] = m["top1"]
        out[f"continual_top1_delta_pts_{mode}"] = 100 * (ev["top1"] - m["top1"])
        out[f"continual_answered_{mode}"] = m["answered"]
        for name, d in m.get("per_dataset", {}).items():
            out[f"continual_top1_delta_pts_{mode}_{name}"] = 100 * (ev["per_dataset"][name]["top1"] - d["top1"])
    if "continual_top1_delta_pts_served" in out:  # what the engine shows at each clip's last frame
        out["continual_top1_delta_pts"] = out["continual_top1_delta_pts_served"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.continual", description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", type=int, nargs="+", help="people per batch (default 1 8 on the CPU, "
                                                           "1 64 256 1024 2048 on CUDA)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--engine", type=int, nargs="+", metavar="PEOPLE",
                   help="time the serving engine on this many people at stride 1 (each a run)")
    p.add_argument("--engine-frames", type=int, default=60, help="batches timed after the first (--engine)")
    p.add_argument("--profile", type=Path, help="append a torch.profiler table of each --engine run to this file")
    p.add_argument("--eval-json", type=Path, help="stgcn.eval --continual --json output to take accuracy from")
    p.add_argument("--live", type=Path, action="append", help="real video to play as a live camera (repeatable)")
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/continual_<device>.json)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    setup_logging(args.debug)
    return run_cli(p.prog, lambda: run(args), debug=args.debug)


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    model = load_model(args.weights, device=device).eval()
    window = int(model.config["window"])
    metrics = flop_table(model, window, device)
    m = metrics
    print(f"FLOPs: window of 300 frames {m['window_flops_w300'] / 1e9:.2f} G, continual step "
          f"{m['continual_step_flops_mean'] / 1e6:.1f} M on average ({m['continual_step_flops_ratio_w300']:.0f}x), "
          f"{m['continual_step_flops_max'] / 1e6:.1f} M at most; delay {m['delay_frames']} frames")
    batches = args.batches or ([1, 64, 256, 1024, 2048] if device.type == "cuda" else [1, 8])
    rows = time_table(model, window, batches, device, args.repeats)
    engine = engine_table(args.weights, args.device, args.engine, args.engine_frames, args.profile) \
        if args.engine else []
    if args.eval_json:
        metrics.update(accuracy(args.eval_json))
        for mode in ("live", "clip", "served"):
            if f"continual_top1_{mode}" in metrics:
                print(f"continual {mode}: top-1 {100 * metrics[f'continual_top1_{mode}']:.2f} % "
                      f"(regular {100 * metrics['regular_top1']:.2f} %, "
                      f"{metrics[f'continual_top1_delta_pts_{mode}']:+.2f} points below)")
    live = []
    warm_up = max(metrics["warm_up_frames"], STEADY_AFTER)
    if args.live:
        with tempfile.TemporaryDirectory() as tmp:
            for video in args.live:
                for form, stride in LIVE_CHOICES:
                    live.append(live_run(video, form, stride, args.weights, Path(tmp), warm_up))
                    r = live[-1]
                    print(f"live {r['video']}: {form} stride {stride}: {r['results']} results for {r['frames']} "
                          f"frames, latency p50 {r['p50_ms'] or 0:.0f} ms p99 {r['p99_ms'] or 0:.0f} ms "
                          f"(after the first {warm_up} frames: p99 {r['steady_p99_ms'] or 0:.0f} ms); {r['labels']}")
        p99 = [r["p99_ms"] for r in live if r["form"] == "continual" and r["p99_ms"] is not None]
        if p99:
            metrics["cpu_live_p99_ms_stride1"] = max(p99)
            metrics["cpu_live_p99_ms_stride1_after_warmup"] = max(r["steady_p99_ms"] for r in live
                                                                  if r["form"] == "continual")
    write_results(f"continual_{device.type}", {
        "machine": machine(device, with_torch=True),
        "config": {"weights": str(args.weights), "window": window, "streams": model.config["model"].get("streams"),
                   "batches": batches, "repeats": args.repeats, "live": [str(v) for v in args.live or []]},
        "metrics": metrics, "timing": rows, "engine": engine, "live": live}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

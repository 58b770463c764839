"""Continual ST-GCN against the regular window: work per result, time per result, accuracy.

    python -m bench.continual [--device cpu|cuda] [--batches 1 8 64] [--eval-json EVAL.json] [--out PATH]

- FLOPs (``torch.utils.flop_counter``): one regular window (300 frames, and the checkpoint's own
  window) against one continual step of the same model, averaged over the 4 steps of a stride
  cycle after warm-up, and the costliest step of the cycle (all strides fall on it).
- Time, median milliseconds for a batch of B people on ``--device``: the regular network on a
  normalised window against one continual step (normalised frames in, state updated, logits read).
- Accuracy, from ``python -m stgcn.eval --continual exact clip live --json EVAL.json`` on the
  default model's test split (``--eval-json``): regular top-1 minus each continual mode's.

Prints a table and writes ``bench/results/continual_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import machine, write_results
from bench.inference import time_device
from pipeline.cli import add_debug_flag, run_cli, setup_logging
from stgcn import DEFAULT_WEIGHTS, load_model
from stgcn.continual import Continual


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
    """FLOPs of regular windows and of continual steps (one person)."""
    co = Continual(model, window, slots=1)
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
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.continual", description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", type=int, nargs="+", help="people per batch (default 1 8 on the CPU, "
                                                           "1 64 256 1024 2048 on CUDA)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--eval-json", type=Path, help="stgcn.eval --continual ... --json output to take accuracy from")
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
    print(f"FLOPs: window of 300 frames {metrics['window_flops_w300'] / 1e9:.2f} G, continual step "
          f"{metrics['continual_step_flops_mean'] / 1e6:.1f} M on average ({metrics['continual_step_flops_ratio_w300']:.0f}x), "
          f"{metrics['continual_step_flops_max'] / 1e6:.1f} M at most; delay {metrics['delay_frames']} frames")
    batches = args.batches or ([1, 64, 256, 1024, 2048] if device.type == "cuda" else [1, 8])
    rows = time_table(model, window, batches, device, args.repeats)
    if args.eval_json:
        metrics.update(accuracy(args.eval_json))
        for mode in ("exact", "clip", "live"):
            if f"continual_top1_{mode}" in metrics:
                print(f"continual {mode}: top-1 {100 * metrics[f'continual_top1_{mode}']:.2f} % "
                      f"(regular {100 * metrics['regular_top1']:.2f} %, "
                      f"{metrics[f'continual_top1_delta_pts_{mode}']:+.2f} points below)")
    write_results(f"continual_{device.type}", {
        "machine": machine(device, with_torch=True),
        "config": {"weights": str(args.weights), "window": window, "streams": model.config["model"].get("streams"),
                   "batches": batches, "repeats": args.repeats},
        "metrics": metrics, "timing": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput: samples/s of the real training path, data loading from a memory-mapped npy file.

    python -m bench.train --device cuda [--batch-sizes 64 256] [--compile] [--workers 8]
    python -m bench.train --device cpu --steps 3 --samples 256 --frames 64 --window 32

Everything but the loop's bookkeeping is the training code's: the datasets (``SkeletonDataset``,
memory-mapped, augmented in DataLoader workers), the loaders (pinned memory, per-epoch shuffling),
the model, SGD and :func:`stgcn.train.train_step` (autocast, ``non_blocking`` copies, loss,
backward, step), plus the loss sums the training loop keeps on the device (read back once).
The recipe is a training config (default ``configs/train/kinetics.yaml``: classification,
random_choose + random_move, 256-sample batches in the original); its data is replaced by an
st-gcn ``train_data.npy`` + ``train_label.pkl`` pair written to a temporary folder (``--data``
takes an existing folder), plausible moving skeletons of ``--frames`` frames with clips of varying
length and a second person in some samples.

Per batch size and mode (``fp32``; on CUDA also ``bf16``, the training default ``train.amp``;
``--compile`` adds ``torch.compile`` of the model for each; ``--modes`` also takes variants such
as ``bf16+cl+compile``: ``cl`` for ``train.channels_last``, ``compile`` or a ``torch.compile`` mode
for ``train.compile``, both applied by :func:`stgcn.train.prepare_net` as in training):
``--warmup`` steps, then ``--steps`` timed steps between CUDA synchronisations. ``--profile``
writes the CUDA kernels of a few more steps per mode, by total time, next to the JSON, and their
GPU time per step (``kernel_ms_per_step``; when it is well under the step time, the GPU waits).
samples/s counts the classification batch (with a next-frame task each step also trains on as
many next-frame samples). "data wait" is the share
of the timed steps spent waiting for the loader. By default there are enough samples for the
warm-up and timed steps to stay within one epoch; fewer (``--samples``) start new epochs (and new
workers) on the way, as training does.

Writes ``bench/results/train_<device>.json``: ``train_samples_per_s_b<batch>`` (the best mode) and
``train_samples_per_s_<mode>_b<batch>`` per mode.
"""

from __future__ import annotations

import argparse
import copy
import logging
import pickle
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench.common import RESULTS, ROOT, machine, write_results
from pipeline.cli import add_debug_flag, run_cli, setup_logging
from stgcn.checkpoint import build_model
from stgcn.config import load_config, serving_config
from stgcn.data import available_cpus, build_datasets, load_class_names, resolve_workers
from stgcn.engine import pick_device
from stgcn.graph import get_layout
from stgcn.train import epoch_loaders, make_optimizer, prepare_net, train_step

log = logging.getLogger("bench.train")


def write_dataset(folder: Path, samples: int, frames: int, layout: str, persons: int = 2, classes: int = 400,
                  source_format: str = "raw", seed: int = 0, chunk: int = 256) -> Path:
    """``folder/train_{data.npy,label.pkl}``: ``samples`` plausible skeleton clips ``(3, frames, V, persons)``.

    Each person is a random pose swaying and drifting over time; clips fill between half and all
    of the frames (zeros after); 2D layouts get image coordinates in 0..1 and a confidence channel
    with some joints absent, 3D ones metres about 3 m from the camera. ``source_format="kinetics"``
    stores x, y minus 0.5 as the published Kinetics files do.
    """
    lay = get_layout(layout)
    v, dims = lay.num_node, lay.dims
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = np.lib.format.open_memmap(folder / "train_data.npy", mode="w+", dtype=np.float32,
                                     shape=(samples, 3, frames, v, persons))
    t = np.arange(frames, dtype=np.float32)[None, None, :, None]
    for lo in tqdm(range(0, samples, chunk), desc="writing data", leave=False, disable=not sys.stderr.isatty()):
        n = min(chunk, samples - lo)
        out = np.zeros((n, 3, frames, v, persons), np.float32)
        for m in range(persons):
            scale = 0.12 if dims == 2 else 0.5
            base = (np.array([0.5, 0.5, 3.0][:dims], np.float32)[None, :, None, None]
                    + rng.uniform(-0.2, 0.2, (n, dims, 1, 1)).astype(np.float32)
                    + scale * rng.standard_normal((n, dims, 1, v)).astype(np.float32))
            freq = rng.uniform(0.02, 0.2, (n, 1, 1, v)).astype(np.float32)
            phase = rng.uniform(0, 2 * np.pi, (n, dims, 1, v)).astype(np.float32)
            drift = rng.uniform(-1e-3, 1e-3, (n, dims, 1, 1)).astype(np.float32)
            pos = base + 0.02 * np.sin(freq * t + phase) + drift * t
            length = rng.integers(frames // 2, frames + 1, n)
            alive = (t[0, 0, :, 0][None] < length[:, None]) & (rng.random((n, 1)) < (1.0 if m == 0 else 0.3))
            joint = rng.random((n, frames, v)) > 0.1 if dims == 2 else np.ones((n, frames, v), bool)
            present = alive[:, :, None] & joint
            out[:, :dims, :, :, m] = np.where(present[:, None], pos, 0.0)
            if dims == 2:
                out[:, 2, :, :, m] = np.where(present, rng.uniform(0.3, 1.0, (n, frames, v)), 0.0)
        if source_format == "kinetics":
            present = out[:, 2:3] > 0
            out[:, :2] = np.where(present, out[:, :2] - 0.5, 0.0)
        data[lo:lo + n] = out
    data.flush()
    del data
    labels = rng.integers(0, classes, samples).tolist()
    with open(folder / "train_label.pkl", "wb") as fh:
        pickle.dump(([f"bench{i:06d}" for i in range(samples)], labels), fh)
    return folder


def bench_config(cfg: dict, data: Path, window: int | None, workers: int, frames: int) -> dict:
    """The training config with its train split on ``data``, no validation, and the window set."""
    cfg = copy.deepcopy(cfg)
    d = cfg.setdefault("data", {})
    d["train"] = {"data": str(data / "train_data.npy"), "label": str(data / "train_label.pkl")}
    d.pop("val", None)
    d["num_workers"] = workers
    d["window"] = window = int(window or frames)
    for key, field in (("random_choose", "size"), ("idle_pad", "window")):
        for aug in ("augment", "augment_next"):
            if isinstance(d.get(aug), dict) and isinstance(d[aug].get(key), dict):
                d[aug][key][field] = window
    return cfg


def class_count(cfg: dict, default: int) -> int:
    """The config's class-name count when its names can be read, else ``default`` (names dropped)."""
    spec = cfg.get("class_names")
    if isinstance(spec, str) and not Path(spec).is_absolute():
        spec = str(ROOT / spec)
    try:
        names = load_class_names(spec)
    except OSError:
        names = None
    if names:
        cfg["class_names"] = names
        return len(names)
    cfg["class_names"] = None
    return default


COMPILE_TOKENS = ("compile", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def parse_mode(mode: str) -> dict[str, Any]:
    """``bf16+cl+compile`` -> autocast, channels-last and torch.compile settings of the training config."""
    precision, *rest = mode.split("+")
    if precision not in ("fp32", "bf16") or any(t != "cl" and t not in COMPILE_TOKENS for t in rest):
        raise ValueError(f"mode {mode!r}: fp32 or bf16, then +cl and/or +compile (or +<torch.compile mode>)")
    comp = next((t for t in rest if t != "cl"), False)
    return {"amp": precision == "bf16", "channels_last": "cl" in rest,
            "compile": "default" if comp == "compile" else comp}


def profile_steps(net: torch.nn.Module, batches_iter, step, device: torch.device, n: int, title: str,
                  path: Path) -> float:
    """Appends the CUDA kernels of ``n`` more training steps, by total time, to ``path``; returns the
    kernels' time per step (ms): well under the step time, the GPU waits for the CPU."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            batches = next(batches_iter, None)
            if batches is None:
                break
            step(batches)
        torch.cuda.synchronize(device)
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=45, max_name_column_width=90)
    with path.open("a") as fh:
        fh.write(f"## {title}, {n} steps\n{table}\n")
    kernels = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA]  # not their CPU-side ops
    return sum(e.self_device_time_total for e in kernels) / 1000 / n


def run_mode(cfg: dict, datasets: dict, batch: int, mode: str, device: torch.device,
             warmup: int, steps: int, seed: int = 0, profile: Path | None = None) -> dict[str, Any]:
    """Warm-up then timed training steps of the real path; samples/s and where the time went."""
    tcfg = {**cfg.get("train", {}), **parse_mode(mode)}
    amp = tcfg["amp"]
    task = tcfg.get("task", "classify")
    any_ds = datasets.get("train") or datasets["train_next"]
    serve = serving_config(cfg, int(cfg["model"].get("num_class") or any_ds.num_classes))
    torch.manual_seed(seed)
    model = build_model(serve["model"]).to(device).train()
    optimizer = make_optimizer(model, tcfg)
    net = prepare_net(model, tcfg, device)
    workers = resolve_workers(cfg["data"].get("num_workers", "auto"))
    next_weight, clip = float(tcfg.get("next_frame_weight", 10.0)), float(tcfg.get("clip_grad_norm", 0.0))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    done, epoch, samples, wait, start, loss_sum = 0, 0, 0, 0.0, 0.0, torch.zeros((), device=device)
    bar = tqdm(total=warmup + steps, desc=f"b{batch} {mode}", leave=False, disable=not sys.stderr.isatty())
    while done < warmup + steps:
        batches_iter, fresh = iter(zip(*epoch_loaders(datasets, epoch, batch, workers, seed))), True
        while done < warmup + steps:
            if done == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start, wait, samples = time.perf_counter(), 0.0, 0
            t0 = time.perf_counter()
            batches = next(batches_iter, None)
            if batches is None:
                if not fresh:
                    break
                raise ValueError(f"the loader gave no batch of {batch} (too few samples?)")
            fresh = False
            wait += time.perf_counter() - t0
            losses = train_step(net, batches, optimizer, device, task, serve["model"]["coords"], amp,
                                next_weight, clip)
            for value in losses.values():  # summed on the device, as the training loop does
                loss_sum = loss_sum + value.float()
            samples += int(batches[0]["x"].shape[0])
            done += 1
            bar.update()
        epoch += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    bar.close()
    if not np.isfinite(float(loss_sum)):
        raise FloatingPointError("non-finite training loss")
    kernel_ms = None
    if profile is not None and device.type == "cuda":
        kernel_ms = profile_steps(net, iter(zip(*epoch_loaders(datasets, epoch, batch, workers, seed))),
                      lambda b: train_step(net, b, optimizer, device, task, serve["model"]["coords"], amp,
                                           next_weight, clip),
                      device, 3, f"batch {batch} {mode}", profile)
    row = {"batch": batch, "mode": mode,
           "task": task, "samples_per_s": samples / elapsed, "step_ms": 1000 * elapsed / steps,
           "data_wait": wait / elapsed, "epochs": epoch, "kernel_ms_per_step": kernel_ms}
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--config", default=str(ROOT / "configs/train/kinetics.yaml"),
                        help="training config: model, task, augmentation, optimiser (its data is replaced)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--samples", type=int, help="dataset size (default: enough for warm-up + timed steps "
                                                    "at the largest batch in one epoch, at least 4096)")
    parser.add_argument("--frames", type=int, default=300, help="frames T of each stored sample")
    parser.add_argument("--window", type=int, help="training window (default: --frames)")
    parser.add_argument("--persons", type=int, default=2)
    parser.add_argument("--classes", type=int, default=400, help="labels drawn when the config's class names "
                                                                 "cannot be read")
    parser.add_argument("--data", help="existing folder with train_data.npy and train_label.pkl")
    parser.add_argument("--keep-data", help="write the generated dataset here (kept) instead of a temporary folder")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: 8 on CUDA, 2 on the CPU)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per batch size and mode")
    parser.add_argument("--modes", nargs="+",
                        help="default: fp32 and bf16 on CUDA, fp32 on the CPU (autocast is CUDA-only); "
                             "variants such as bf16+cl+compile or bf16+max-autotune-no-cudagraphs")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the model")
    parser.add_argument("--profile", action="store_true", help="write a kernel profile of each mode (CUDA)")
    parser.add_argument("--out", help="JSON path (default bench/results/train_<device>.json)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    return run_cli(parser.prog, lambda: run(args), debug=args.debug, errors=(ValueError, OSError, KeyError))


def run(args: argparse.Namespace) -> int:
    """Time every batch size and mode; the exit status (1: no mode ran)."""
    device = pick_device(args.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if args.steps < 1 or args.warmup < 0 or min(args.batch_sizes) < 1:
        raise ValueError("--steps and --batch-sizes must be >= 1, --warmup >= 0")
    workers = args.workers if args.workers is not None else min(8 if device.type == "cuda" else 2,
                                                                available_cpus())
    modes = args.modes or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])
    modes += [f"{m}+compile" for m in modes if "+" not in m] if args.compile else []
    for m in modes:
        parse_mode(m)
    base = load_config(args.config)
    classes = class_count(base, args.classes)
    layout = base.get("data", {}).get("layout", base["model"].get("graph_args", {}).get("layout", "openpose"))
    with tempfile.TemporaryDirectory(prefix="stgcn-bench-train-") as tmp:
        if args.data:
            data = Path(args.data)
            samples = None
        else:
            samples = args.samples or max(4096, (args.warmup + args.steps) * max(args.batch_sizes))
            data = Path(args.keep_data) if args.keep_data else Path(tmp)
            log.info("writing %d samples (3, %d, %d, %d) to %s", samples, args.frames,
                     get_layout(layout).num_node, args.persons, data)
            write_dataset(data, samples, args.frames, layout, args.persons, classes,
                          base.get("data", {}).get("source_format", "raw"))
        cfg = bench_config(base, data, args.window, workers, args.frames)
        datasets = build_datasets(cfg, splits=("train",), seed=int(cfg.get("train", {}).get("seed", 0)))
        any_ds = datasets.get("train") or datasets["train_next"]
        log.info("%s, task %s, window %d, %d workers, %s", any_ds, cfg.get("train", {}).get("task", "classify"),
                 cfg["data"]["window"], workers, machine(device, with_torch=True))
        out = Path(args.out) if args.out else RESULTS / f"train_{device.type}.json"
        profile = out.with_name(out.stem + "_profile.txt") if args.profile and device.type == "cuda" else None
        if profile is not None:
            profile.parent.mkdir(parents=True, exist_ok=True)
            profile.write_text(f"# CUDA kernels of training steps, {machine(device, with_torch=True)}, "
                               f"{date.today()}\n\n")
        rows = []
        for batch in args.batch_sizes:
            for mode in modes:
                try:
                    rows.append(run_mode(cfg, datasets, batch, mode, device, args.warmup, args.steps,
                                         profile=profile))
                except Exception as exc:  # one failing mode (e.g. compile without a compiler) must not end the run
                    if args.debug:
                        raise
                    log.error("batch %d %s failed: %s", batch, mode, str(exc).strip().splitlines()[0][:300])
                    rows.append({"batch": batch, "mode": mode, "error": str(exc).strip().splitlines()[0][:300]})
    print(f"\nTraining samples/s, {machine(device, with_torch=True)}, {len(any_ds)} samples (3, {any_ds.shape[2]}, "
          f"{any_ds.shape[3]}, {any_ds.shape[4]}), window {cfg['data']['window']}, {workers} workers")
    print(f"{'batch':>6} {'mode':<24} {'samples/s':>10} {'step ms':>9} {'GPU ms':>7} {'data wait':>10} {'peak GiB':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['batch']:>6} {r['mode']:<24} failed: {r['error'][:80]}")
            continue
        gpu = f"{r['kernel_ms_per_step']:>7.1f}" if r.get("kernel_ms_per_step") else f"{'-':>7}"
        print(f"{r['batch']:>6} {r['mode']:<24} {r['samples_per_s']:>10.1f} {r['step_ms']:>9.1f} {gpu} "
              f"{100 * r['data_wait']:>9.0f}% {r.get('peak_memory_gib', float('nan')):>9.2f}")
    metrics: dict[str, float] = {}
    for r in rows:
        if "error" not in r:
            metrics[f"train_samples_per_s_{r['mode']}_b{r['batch']}"] = r["samples_per_s"]
            key = f"train_samples_per_s_b{r['batch']}"
            metrics[key] = max(metrics.get(key, 0.0), r["samples_per_s"])
    result = {"machine": machine(device, with_torch=True),
              "config": {"config": Path(args.config).name, "task": cfg.get("train", {}).get("task", "classify"),
                         "samples": len(any_ds), "frames": int(any_ds.shape[2]), "joints": int(any_ds.shape[3]),
                         "persons": int(any_ds.shape[4]), "window": cfg["data"]["window"], "workers": workers,
                         "warmup": args.warmup, "steps": args.steps, "device": device.type,
                         "data": "given" if args.data else "generated"},
              "metrics": metrics, "rows": rows}
    write_results(f"train_{device.type}", result, out)
    return 0 if metrics else 1


if __name__ == "__main__":
    sys.exit(main())

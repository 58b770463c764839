"""Train ST-GCN (classification, next-frame prediction, or both) from a YAML config.

    python -m stgcn.train CONFIG [--work-dir DIR] [--device cpu|cuda] [--resume]
    torchrun --nproc-per-node 2 -m stgcn.train CONFIG ...      # DistributedDataParallel

Writes WORK_DIR/last.pt every epoch (atomically, with optimiser state for ``--resume``),
WORK_DIR/best.pt at the best validation top-1 (or MPJPE when only predicting), WORK_DIR/final.pt
after the last epoch,
WORK_DIR/metrics.csv and TensorBoard events when tensorboard is installed.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from pipeline.cli import add_debug_flag, run_cli, setup_logging

from .checkpoint import build_model, save_checkpoint
from .config import load_config, serving_config
from .data import build_datasets, make_loader, resolve_workers
from .evaluation import autocast, evaluate_classification, evaluate_prediction
from .calibrate import calibrate_open_set
from .finetune import adopt_architecture, init_from_checkpoint
from .predictor import present

log = logging.getLogger("stgcn.train")


def make_optimizer(model: torch.nn.Module, tcfg: dict) -> torch.optim.SGD:
    """SGD with the ``train`` section's learning rate, momentum, Nesterov flag and weight decay.

    On CUDA the update is the fused kernel (a few launches for all parameters instead of a few per
    parameter); the arithmetic is the same.
    """
    params = list(model.parameters())
    return torch.optim.SGD(params, lr=float(tcfg.get("lr", 0.1)),
                           momentum=float(tcfg.get("momentum", 0.9)), nesterov=bool(tcfg.get("nesterov", True)),
                           weight_decay=float(tcfg.get("weight_decay", 1e-4)),
                           fused=True if params and all(p.is_cuda for p in params) else None)


def epoch_loaders(datasets: dict[str, Any], epoch: int, batch: int, workers: int, seed: int,
                  world: int = 1, rank: int = 0) -> list[DataLoader]:
    """One epoch's training loaders (classification and/or next frame), reshuffled per epoch, sharded under DDP."""
    loaders = []
    for key in ("train", "train_next"):
        if key in datasets:
            ds = datasets[key]
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)
            sampler = None
            if world > 1:
                sampler = DistributedSampler(ds, world, rank, shuffle=True, seed=seed, drop_last=True)
                sampler.set_epoch(epoch)
            loaders.append(make_loader(ds, batch, shuffle=True, workers=workers, sampler=sampler,
                                       seed=seed * 1000 + epoch, drop_last=len(ds) > batch))
    return loaders


def prepare_net(model: torch.nn.Module, tcfg: dict, device: torch.device, distributed: bool = False
                ) -> torch.nn.Module:
    """The module the training steps call: DDP-wrapped when ``distributed``, and as ``train.channels_last``
    and ``train.compile`` ask (both CUDA only).

    ``channels_last`` puts the convolution weights (and so the activations) in NHWC, the layout
    the tensor-core kernels want; ``compile`` (true or a ``torch.compile`` mode) fuses BatchNorm,
    ReLU and the residual sums into few kernels, forward and backward. ``reduce-overhead`` also
    replays each step as CUDA graphs: the compiled step launches about a thousand kernels and
    custom ops, and without graphs the GPU waits for the CPU. With DDP the default mode is used
    (CUDA graphs around its gradient hooks are not measured here). The parameters stay
    ``model``'s, so checkpoints and the optimiser see the plain module.
    """
    cuda = device.type == "cuda"
    if cuda and tcfg.get("channels_last"):
        model.to(memory_format=torch.channels_last)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None) \
        if distributed else model
    mode = tcfg.get("compile", False)
    if distributed and mode == "reduce-overhead":
        log.info("train.compile: reduce-overhead is not used with DDP; compiling in the default mode")
        mode = "default"
    if cuda and mode:
        return torch.compile(net, mode=None if mode is True or mode == "default" else str(mode))
    return net


def train_step(net: torch.nn.Module, batches: tuple[dict, ...], optimizer: torch.optim.Optimizer,
               device: torch.device, task: str, coords: int, amp: bool = True, next_weight: float = 10.0,
               clip: float = 0.0, label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """One optimisation step on one batch of each of :func:`epoch_loaders`' loaders; the detached losses."""
    losses = {}
    loss = torch.zeros((), device=device)
    with autocast(device, amp):
        if task != "predict":
            b = batches[0]
            logits = net(b["x"].to(device, non_blocking=True))
            label = b["label"].to(device, non_blocking=True)
            if logits.dim() == 3:  # a multi-stream model: each stream (S, N, K) learns from its own loss
                label = label.repeat(logits.shape[0])
            lc = torch.nn.functional.cross_entropy(logits.float().flatten(0, -2), label,
                                                   label_smoothing=label_smoothing)
            loss = loss + lc * (logits.shape[0] if logits.dim() == 3 else 1)
            losses["loss_cls"] = lc.detach()
        if task in ("joint", "predict"):
            b = batches[-1]
            x, recent, target = (b[k].to(device, non_blocking=True) for k in ("x", "recent", "target"))
            _, pred = net(x, recent)
            ln = predictor_loss(pred.float(), target, recent[:, :, -1], coords)
            loss = loss + next_weight * ln
            losses["loss_next"] = ln.detach()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
    optimizer.step()
    return losses


def predictor_loss(pred: torch.Tensor, target: torch.Tensor, last: torch.Tensor, coords: int) -> torch.Tensor:
    """Mean Euclidean error over joints present in the target and the last frame (MPJPE as a
    loss), over every frame ahead when ``pred`` and ``target`` hold several ``(N, C, H, V, M)``."""
    if pred.dim() == last.dim():
        pred, target = pred[:, :, None], target[:, :, None]
    pred, target = pred.movedim(1, 2), target.movedim(1, 2)  # (N, H, C, V, M): frames of (C, V, M)
    mask = present(target, coords) & present(last, coords)[:, None]
    err = torch.sqrt(((pred[:, :, :coords] - target[:, :, :coords]) ** 2).sum(2) + 1e-12)
    return (err * mask).sum() / mask.sum().clamp(min=1)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """Random states as plain types and tensors, so checkpoints load with ``weights_only``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])


class MetricsLog:
    """metrics.csv (appended per epoch, rewritten up to the resume point) and optional TensorBoard."""

    def __init__(self, work_dir: Path, start_epoch: int) -> None:
        self.path = work_dir / "metrics.csv"
        self.rows: list[dict] = []
        if start_epoch > 0 and self.path.exists():
            with self.path.open() as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) < start_epoch]
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(work_dir / "tensorboard"), purge_step=start_epoch)
        except ImportError:
            self.tb = None

    def add(self, epoch: int, metrics: dict[str, float]) -> None:
        row = {"epoch": epoch, **{k: f"{v:.6g}" for k, v in metrics.items()}}
        self.rows.append(row)
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, keys)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, epoch)
            self.tb.flush()


def train(cfg: dict, work_dir: Path, device_name: str = "auto", resume: bool = False) -> dict[str, float]:
    """Run the training described by ``cfg``; returns the final epoch's metrics."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if distributed:
        dist.init_process_group("nccl" if device_name == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(device_name, int(os.environ.get("LOCAL_RANK", 0))) if device_name == "cuda" \
        else torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    cfg = adopt_architecture(cfg)  # train.init_from: the starting checkpoint's network and normalisation
    tcfg = cfg.get("train", {})
    seed = int(tcfg.get("seed", 0))
    _seed_everything(seed + rank)
    task = tcfg.get("task", "classify")
    datasets = build_datasets(cfg, seed=seed)
    any_ds = datasets.get("train") or datasets["train_next"]
    num_class = int(cfg["model"].get("num_class") or any_ds.num_classes)
    serve = {**serving_config(cfg, num_class), "persons": int(any_ds.shape[-1])}
    coords = serve["model"]["coords"]
    model = build_model(serve["model"]).to(device)
    if tcfg.get("init_from"):
        start = init_from_checkpoint(model, tcfg["init_from"], serve["class_names"], int(tcfg.get("freeze_blocks", 0)))
        if task == "predict" and not any(h.endswith("fcn") for h in start["fresh"]):
            serve["task"] = "joint"  # the start model's classifier came along unchanged: the checkpoint classifies too
    epochs = int(tcfg.get("epochs", 80))
    batch = int(tcfg.get("batch_size", 64))
    workers = resolve_workers(cfg["data"].get("num_workers", "auto"))
    optimizer = make_optimizer(model, tcfg)
    steps = [int(s) for s in tcfg.get("steps", [])]
    gamma, warmup = float(tcfg.get("gamma", 0.1)), int(tcfg.get("warmup_epochs", 0))
    if tcfg.get("schedule", "steps") == "cosine":  # linear warm-up, then cosine annealing to 0
        def factor(e: int) -> float:
            return min(1.0, (e + 1) / (warmup + 1)) * 0.5 * (1 + math.cos(math.pi * max(0, e - warmup)
                                                                           / max(1, epochs - warmup)))
    else:  # linear warm-up, then x gamma at each step epoch
        def factor(e: int) -> float:
            return min(1.0, (e + 1) / (warmup + 1)) * gamma ** sum(e >= s for s in steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    amp = bool(tcfg.get("amp", True))
    next_weight = float(tcfg.get("next_frame_weight", 10.0))
    clip = float(tcfg.get("clip_grad_norm", 0.0))
    smoothing = float(tcfg.get("label_smoothing", 0.0))
    eval_every = max(1, int(tcfg.get("eval_every", 1)))  # validation every k epochs and after the last
    start_epoch, best, history = 0, None, {}
    work_dir.mkdir(parents=True, exist_ok=True)
    last_path = work_dir / "last.pt"
    if resume and rank == 0:
        # a run killed while saving leaves save_checkpoint's temporary files (never loaded): drop them
        for stale in work_dir.glob("*.pt.*.tmp"):
            stale.unlink(missing_ok=True)
    if resume and last_path.exists():
        ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best = ckpt["meta"]["epoch"] + 1, ckpt["meta"].get("best")
        _set_rng_state(ckpt["rng"][rank] if rank < len(ckpt["rng"]) else ckpt["rng"][0])
        log.info("resumed from %s at epoch %d", last_path, start_epoch)
    elif resume:
        log.info("--resume: no %s yet, starting from scratch", last_path)
    ema_decay = float(tcfg.get("ema", 0.0))
    # An exponential moving average of the weights (BatchNorm statistics included) is what gets
    # evaluated and saved when ``train.ema`` is set: steadier than the last step's weights.
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay), use_buffers=True) \
        if ema_decay > 0 else None
    if ema is not None and resume and last_path.exists():
        ema.module.load_state_dict(ckpt["state_dict"])
        model.load_state_dict(ckpt["raw_state_dict"])
        ema.n_averaged.fill_(ckpt["meta"].get("ema_steps", 1))
    net = prepare_net(model, tcfg, device, distributed)
    metrics_log = MetricsLog(work_dir, start_epoch) if rank == 0 else None
    train_config = {k: v for k, v in cfg.items()}
    metrics: dict[str, float] = {}
    run_start = time.time()  # for the ETA of the epochs left
    for epoch in range(start_epoch, epochs):
        loaders = epoch_loaders(datasets, epoch, batch, workers, seed, world, rank)
        net.train()
        # losses summed on the device: reading them back every step would stall the GPU each step
        t0, sums, n_batches = time.time(), {"loss_cls": torch.zeros((), device=device),
                                           "loss_next": torch.zeros((), device=device)}, 0
        iterator = zip(*loaders) if len(loaders) > 1 else ((b,) for b in loaders[0])
        total = min(len(dl) for dl in loaders)
        for batches in tqdm(iterator, total=total, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                            disable=rank != 0 or not sys.stderr.isatty()):
            losses = train_step(net, batches, optimizer, device, task, coords, amp, next_weight, clip, smoothing)
            for k, v in losses.items():
                sums[k] += v.float()
            if ema is not None:
                ema.update_parameters(model)
            n_batches += 1
        scheduler.step()
        if rank == 0:
            final = ema.module if ema is not None else model
            metrics = {k: float(v) / max(n_batches, 1) for k, v in sums.items()}
            metrics["lr"] = optimizer.param_groups[0]["lr"]
            metrics["epoch_s"] = time.time() - t0
            evaluated = (epoch + 1) % eval_every == 0 or epoch == epochs - 1
            if "val" in datasets and evaluated:
                ev = evaluate_classification(final, make_loader(datasets["val"], batch, False, workers), device,
                                             num_class, amp)
                metrics.update(val_top1=ev["top1"], val_top5=ev["top5"], val_loss=ev["loss"])
            if "val_next" in datasets and evaluated:
                metrics.update({f"val_{k}": v for k, v in evaluate_prediction(
                    final, make_loader(datasets["val_next"], batch, False, workers), device, coords, amp).items()
                    if isinstance(v, float)})
            score = metrics.get("val_top1", -metrics.get("val_mpjpe", 0.0))
            improved = evaluated and (best is None or score > best)
            best = score if improved else best
            meta = {"epoch": epoch, "best": best, "metrics": metrics,
                    "ema_steps": int(ema.n_averaged) if ema is not None else 0}
            serve_cfg = {**serve, "train_config": train_config}
            extra = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": [_rng_state()]}
            if ema is not None:
                extra["raw_state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            # the metrics row first: a kill between the two then only repeats this epoch on
            # --resume (rows from the resume epoch on are dropped), whereas a checkpoint written
            # before its row would lose the row for good
            metrics_log.add(epoch, metrics)
            save_checkpoint(last_path, final, serve_cfg, meta, extra=extra)
            if improved:
                save_checkpoint(work_dir / "best.pt", final, serve_cfg, meta)
            if epoch == epochs - 1:
                if "train" in datasets and tcfg.get("open_set", True):
                    open_set = calibrate_open_set(final, datasets["train"], batch, workers, device, amp)
                    serve_cfg["open_set"] = open_set.to_config()
                    log.info("open set calibrated on the training data: %s", serve_cfg["open_set"])
                save_checkpoint(work_dir / "final.pt", final, serve_cfg, meta)
            left = (time.time() - run_start) / (epoch + 1 - start_epoch) * (epochs - epoch - 1)
            log.info("epoch %d/%d %s eta %dm%02ds", epoch + 1, epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in metrics.items()), left // 60, left % 60)
        if distributed:
            dist.barrier()
    history.update(metrics)
    if distributed:
        dist.destroy_process_group()
    return history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stgcn.train", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="YAML config (see configs/train/)")
    parser.add_argument("--work-dir", help="where checkpoints and logs go (default work_dirs/<config name>)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--resume", action="store_true", help="continue from WORK_DIR/last.pt")
    parser.add_argument("--data-dir", help="folder with {train,val}_data.npy and {train,val}_label.pkl")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--seed", type=int, help="override train.seed")
    parser.add_argument("--init-from", help="override train.init_from: the checkpoint to start from "
                                            "(its network; 'default': the shipped model)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug)

    def body() -> int:
        cfg = load_config(args.config)
        if args.data_dir:
            d = Path(args.data_dir)
            for split in ("train", "val"):
                cfg.setdefault("data", {})[split] = {"data": str(d / f"{split}_data.npy"),
                                                     "label": str(d / f"{split}_label.pkl")}
            if (d / "class_names.txt").is_file():  # the data's own classes, not those of the config's data
                cfg["class_names"] = str(d / "class_names.txt")
                cfg.setdefault("model", {}).pop("num_class", None)
        if args.epochs is not None:
            cfg.setdefault("train", {})["epochs"] = args.epochs
        if args.seed is not None:
            cfg.setdefault("train", {})["seed"] = args.seed
        if args.init_from:
            cfg.setdefault("train", {})["init_from"] = args.init_from
        work_dir = Path(args.work_dir or Path("work_dirs") / Path(args.config).stem)
        metrics = train(cfg, work_dir, args.device, args.resume)
        if metrics:
            print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return 0

    return run_cli(parser.prog, body, debug=args.debug, errors=(ValueError, OSError, KeyError))


if __name__ == "__main__":
    sys.exit(main())

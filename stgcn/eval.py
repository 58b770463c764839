"""Evaluate a checkpoint: top-1/top-5, per-class accuracy, confusion matrix, next-frame MPJPE.

    python -m stgcn.eval [CONFIG] --weights CKPT [--data-dir DIR] [--json OUT]

CONFIG may be left out for the project's own checkpoints, which carry their config.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .predictor import constant_velocity, mpjpe, zero_velocity

log = logging.getLogger("stgcn.eval")


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA, a no-op elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


@torch.no_grad()
def evaluate_classification(model: torch.nn.Module, loader: DataLoader, device: torch.device,
                            num_class: int, amp: bool = True, progress: bool = False) -> dict[str, Any]:
    """Top-1, top-5, per-class accuracy and the confusion matrix (rows: true, columns: predicted)."""
    model.eval()
    confusion = np.zeros((num_class, num_class), np.int64)
    top5_hits, total, loss_sum = 0, 0, 0.0
    for batch in tqdm(loader, desc="eval", leave=False, disable=not progress):
        x, label = batch["x"].to(device, non_blocking=True), batch["label"].to(device)
        with autocast(device, amp):
            logits = model(x).float()
        loss_sum += float(torch.nn.functional.cross_entropy(logits, label, reduction="sum"))
        top = logits.topk(min(5, num_class), dim=1).indices
        top5_hits += int((top == label[:, None]).any(1).sum())
        np.add.at(confusion, (label.cpu().numpy(), top[:, 0].cpu().numpy()), 1)
        total += len(label)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
    return {"top1": float(confusion.diagonal().sum() / max(total, 1)), "top5": top5_hits / max(total, 1),
            "loss": loss_sum / max(total, 1), "per_class": per_class.tolist(), "confusion": confusion.tolist(),
            "samples": total}


@torch.no_grad()
def evaluate_prediction(model: torch.nn.Module, loader: DataLoader, device: torch.device, coords: int,
                        amp: bool = True, progress: bool = False) -> dict[str, float]:
    """MPJPE of the predictor beside the zero- and constant-velocity baselines (window-local units)."""
    model.eval()
    sums = {"mpjpe": 0.0, "mpjpe_zero_velocity": 0.0, "mpjpe_constant_velocity": 0.0}
    count = 0
    for batch in tqdm(loader, desc="eval-next", leave=False, disable=not progress):
        x, recent, target = (batch[k].to(device, non_blocking=True) for k in ("x", "recent", "target"))
        with autocast(device, amp):
            _, pred = model(x, recent)
        pred = pred.float()
        for key, guess in (("mpjpe", pred), ("mpjpe_zero_velocity", zero_velocity(recent)),
                           ("mpjpe_constant_velocity", constant_velocity(recent, coords))):
            # every guess keeps the last frame's joints, so all are scored on the same joints
            total, n = mpjpe(guess, target, coords, reduce=False)
            sums[key] += float(total)
            if key == "mpjpe":
                count += int(n)
    out = {k: v / max(count, 1) for k, v in sums.items()}
    zv = out["mpjpe_zero_velocity"]
    out["improvement_vs_zero_velocity"] = 1 - out["mpjpe"] / zv if zv > 0 else 0.0
    out["joints"] = count
    return out


def save_confusion_png(confusion: list[list[int]], names: list[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=float)
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(6, 0.35 * len(names))
    fig, ax = plt.subplots(figsize=(size + 2, size))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    if len(names) <= 60:
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError, load_model
    from .config import load_config
    from .train import build_datasets, make_loader, serving_config

    parser = argparse.ArgumentParser(prog="python -m stgcn.eval", description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", help="training YAML config (optional for project checkpoints)")
    parser.add_argument("--weights", required=True, help="checkpoint to evaluate")
    parser.add_argument("--data-dir", help="folder with val_data.npy and val_label.pkl")
    parser.add_argument("--json", help="write the metrics to this JSON file")
    parser.add_argument("--confusion", help="confusion-matrix PNG path (default: next to --json)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    try:
        model = load_model(args.weights, device=device)
        cfg = load_config(args.config) if args.config else dict(model.config.get("train_config") or {})
        if not cfg:
            raise ValueError(f"{args.weights}: carries no training config; pass CONFIG")
        if args.data_dir:
            d = Path(args.data_dir)
            cfg.setdefault("data", {})["val"] = {"data": str(d / "val_data.npy"), "label": str(d / "val_label.pkl")}
        cfg["data"]["num_workers"] = args.workers
        serve = serving_config(cfg, model.config["model"]["num_class"])
        datasets = build_datasets(cfg, splits=("val",))
        metrics: dict[str, Any] = {"weights": str(args.weights)}
        cls_loader = make_loader(datasets["val"], args.batch_size, shuffle=False, workers=args.workers)
        metrics.update(evaluate_classification(model, cls_loader, device, serve["model"]["num_class"], progress=True))
        if model.predictor is not None and "val_next" in datasets:
            nxt = make_loader(datasets["val_next"], args.batch_size, shuffle=False, workers=args.workers)
            metrics.update(evaluate_prediction(model, nxt, device, serve["model"]["coords"], progress=True))
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = model.config.get("class_names") or serve["class_names"]
    print(f"top-1 {100 * metrics['top1']:.2f} %  top-5 {100 * metrics['top5']:.2f} %  ({metrics['samples']} samples)")
    if "mpjpe" in metrics:
        print(f"next-frame MPJPE {metrics['mpjpe']:.5f}  zero-velocity {metrics['mpjpe_zero_velocity']:.5f}  "
              f"constant-velocity {metrics['mpjpe_constant_velocity']:.5f}  "
              f"({100 * metrics['improvement_vs_zero_velocity']:.1f} % below zero-velocity)")
    worst = sorted(zip(metrics["per_class"], names))[:5]
    print("weakest classes: " + ", ".join(f"{n} {100 * a:.0f} %" for a, n in worst))
    png = args.confusion or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if png:
        save_confusion_png(metrics["confusion"], names, Path(png), f"top-1 {100 * metrics['top1']:.1f} %")
        print(f"confusion matrix: {png}")
    if args.json:
        Path(args.json).write_text(json.dumps({**metrics, "class_names": names}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

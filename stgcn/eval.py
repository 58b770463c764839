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

from pipeline.cli import add_debug_flag, run_cli, setup_logging

from .checkpoint import load_model
from .config import load_config, serving_config
from .data import available_cpus, build_datasets, make_loader
from .evaluation import evaluate_classification, evaluate_prediction

log = logging.getLogger("stgcn.eval")


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


def weakest_classes(confusion: list[list[int]], names: list[str], n: int = 5) -> str:
    """The ``n`` classes of lowest accuracy among those with validation samples; classes without
    any are named apart as having no samples (they have no accuracy, rather than 0 %)."""
    confusion = np.asarray(confusion)
    counts, correct = confusion.sum(1), confusion.diagonal()
    scored = sorted((correct[i] / counts[i], names[i]) for i in range(len(names)) if counts[i])
    line = ", ".join(f"{name} {100 * acc:.0f} %" for acc, name in scored[:n]) or "none scored"
    empty = [names[i] for i in range(len(names)) if not counts[i]]
    if empty:
        more = f" (+{len(empty) - n} more)" if len(empty) > n else ""
        line += f"; no samples: {', '.join(empty[:n])}{more}"
    return line


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
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
    names = model.config.get("class_names") or serve["class_names"]
    print(f"top-1 {100 * metrics['top1']:.2f} %  top-5 {100 * metrics['top5']:.2f} %  ({metrics['samples']} samples)")
    if "mpjpe" in metrics:
        print(f"next-frame MPJPE {metrics['mpjpe']:.5f}  zero-velocity {metrics['mpjpe_zero_velocity']:.5f}  "
              f"constant-velocity {metrics['mpjpe_constant_velocity']:.5f}  "
              f"({100 * metrics['improvement_vs_zero_velocity']:.1f} % below zero-velocity)")
    print("weakest classes: " + weakest_classes(metrics["confusion"], names))
    png = args.confusion or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if png:
        save_confusion_png(metrics["confusion"], names, Path(png), f"top-1 {100 * metrics['top1']:.1f} %")
        print(f"confusion matrix: {png}")
    if args.json:
        Path(args.json).write_text(json.dumps({**metrics, "class_names": names}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stgcn.eval", description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", help="training YAML config (optional for project checkpoints)")
    parser.add_argument("--weights", required=True, help="checkpoint to evaluate")
    parser.add_argument("--data-dir", help="folder with val_data.npy and val_label.pkl")
    parser.add_argument("--json", help="write the metrics to this JSON file")
    parser.add_argument("--confusion", help="confusion-matrix PNG path (default: next to --json)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=available_cpus(),
                        help="DataLoader workers (default: the CPUs available, %(default)s here)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    return run_cli(parser.prog, lambda: evaluate_checkpoint(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

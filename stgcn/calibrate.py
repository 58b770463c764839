"""Calibrate a checkpoint's "unknown" thresholds on its training data (see stgcn.open_set).

    python -m stgcn.calibrate --weights CKPT [--config CFG] [--data-dir DIR] [--keep 0.99] [--out CKPT2]
                              [--streams joint bone] [--half]

``stgcn.train`` does this at the end of training; this command does it again for an existing
checkpoint, e.g. with another ``--keep`` or on a user's own training data, or for a subset of a
multi-stream model's input streams (``--streams``: the checkpoint written serves those only; with
``--half`` its weights are stored in float16, half the file; how the shipped model is made). The
training windows are drawn as in training (the config's augmentation), the thresholds are written
into the checkpoint's ``open_set`` (``--out``, default: in place, atomically).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.cli import add_debug_flag, run_cli, setup_logging

from .checkpoint import load_model, save_checkpoint
from .config import checkpoint_training_config
from .data import build_datasets, make_loader, resolve_workers
from .engine import pick_device
from .evaluation import autocast
from .open_set import OpenSet, calibrate
from .streams import select_streams

log = logging.getLogger("stgcn.calibrate")


@torch.no_grad()
def calibrate_open_set(model: torch.nn.Module, dataset: Any, batch: int, workers: int, device: torch.device,
                       amp: bool, keep: float = 0.99) -> OpenSet:
    """The "unknown" thresholds from the training windows (augmented as in training)."""
    model.eval()
    probs, labels, motions = [], [], []
    for item in make_loader(dataset, batch, False, workers):
        with autocast(device, amp):
            logits = model(item["x"].to(device, non_blocking=True)).float()
        probs.append(torch.softmax(logits, 1).cpu().numpy())
        labels.append(item["label"].numpy())
        motions.append(item["motion"].numpy())
    return calibrate(np.concatenate(probs), np.concatenate(labels), np.concatenate(motions), keep=keep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stgcn.calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", required=True, help="checkpoint to calibrate")
    parser.add_argument("--config", help="training YAML (default: the one the checkpoint carries)")
    parser.add_argument("--data-dir", help="folder with train_data.npy and train_label.pkl")
    parser.add_argument("--keep", type=float, default=0.99,
                        help="share of the correctly classified training windows that keep their label")
    parser.add_argument("--out", help="where to write the calibrated checkpoint (default: in place)")
    parser.add_argument("--streams", nargs="+", metavar="STREAM",
                        help="keep only these input streams of a multi-stream model (default: all)")
    parser.add_argument("--half", action="store_true",
                        help="store the weights in float16 (default: as the input checkpoint stores them)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the training windows' augmentation, so a calibration can be repeated")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug)

    def body() -> int:
        device = pick_device(args.device)
        model = select_streams(load_model(args.weights, device=device), args.streams)
        cfg = checkpoint_training_config(model.config, args.weights, args.config)
        if args.data_dir:
            d = Path(args.data_dir)
            cfg.setdefault("data", {})["train"] = {"data": str(d / "train_data.npy"),
                                                   "label": str(d / "train_label.pkl")}
        datasets = build_datasets(cfg, splits=("train",))
        if "train" not in datasets:
            raise ValueError("the config has no classification training data")
        workers = resolve_workers(cfg["data"].get("num_workers", "auto"))
        torch.manual_seed(args.seed)  # the loader's workers draw their augmentation from torch's seed
        open_set = calibrate_open_set(model, datasets["train"], 64, workers, device, True, args.keep)
        config = {**model.config, "open_set": open_set.to_config()}
        out = Path(args.out or args.weights)
        stored = torch.load(args.weights, map_location="cpu", weights_only=True)
        dtypes = {v.dtype for v in stored["state_dict"].values() if v.is_floating_point()}
        dtype = torch.float16 if args.half or dtypes == {torch.float16} else None
        save_checkpoint(out, model, config, dict(stored.get("meta") or {}), dtype=dtype)
        print(f"{out}: unknown below p = {open_set.score_threshold:.3f} or motion {open_set.motion_threshold:.5f}")
        return 0

    return run_cli("calibrate", body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

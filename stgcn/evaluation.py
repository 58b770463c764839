"""Evaluation of a model on DataLoaders: classification accuracy and confusion, next-frame MPJPE.

Training evaluates every epoch with these; ``python -m stgcn.eval`` evaluates a checkpoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .predictor import constant_velocity, mpjpe, zero_velocity


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

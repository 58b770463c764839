"""Evaluation of a model on DataLoaders: classification accuracy and confusion, next-frame MPJPE;
matching a data set's classes to a model's by name.

Training evaluates every epoch with these; ``python -m stgcn.eval`` evaluates a checkpoint.
A label of -1 marks a sample of a class the model lacks: it counts as an error in top-1 and
top-5 and is left out of the loss and the confusion matrix.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.settings import read_yaml

from .model import first_frames
from .predictor import constant_velocity, present, zero_velocity
from .streams import MultiStream


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA, a no-op elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


@torch.no_grad()
def evaluate_classification(model: torch.nn.Module, loader: DataLoader, device: torch.device,
                            num_class: int, amp: bool = True, progress: bool = False,
                            correct: np.ndarray | None = None) -> dict[str, Any]:
    """Top-1, top-5, per-class accuracy and the confusion matrix (rows: true, columns: predicted).

    Labels of -1 (a class the model lacks) count as errors. ``correct``, a bool array over the
    dataset, receives each sample's top-1 hit (by ``batch["index"]``).
    """
    model.eval()
    confusion = np.zeros((num_class, num_class), np.int64)
    top5_hits, total, known, loss_sum = 0, 0, 0, 0.0
    for batch in tqdm(loader, desc="eval", leave=False, disable=not progress):
        x, label = batch["x"].to(device, non_blocking=True), batch["label"].to(device)
        with autocast(device, amp):
            logits = model(x).float()
        loss_sum += float(torch.nn.functional.cross_entropy(logits, label, reduction="sum", ignore_index=-1))
        top = logits.topk(min(5, num_class), dim=1).indices
        top5_hits += int((top == label[:, None]).any(1).sum())
        lab, pred = label.cpu().numpy(), top[:, 0].cpu().numpy()
        ok = lab >= 0
        np.add.at(confusion, (lab[ok], pred[ok]), 1)
        if correct is not None:
            correct[np.asarray(batch["index"])] = lab == pred
        total += len(lab)
        known += int(ok.sum())
    per_class = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
    return {"top1": float(confusion.diagonal().sum() / max(total, 1)), "top5": top5_hits / max(total, 1),
            "loss": loss_sum / max(known, 1), "per_class": per_class.tolist(), "confusion": confusion.tolist(),
            "samples": total}


GUESSES = ("mpjpe", "mpjpe_zero_velocity", "mpjpe_constant_velocity")


def _frame_errors(guess: torch.Tensor, target: torch.Tensor, coords: int, scale: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample: the summed joint errors in local units and in the data's units (local units
    times the window's ``scale`` (N, M)), and the joints counted (present in both frames)."""
    mask = present(guess, coords) & present(target, coords)  # (N, V, M)
    err = torch.sqrt(((guess[:, :coords] - target[:, :coords]) ** 2).sum(1)) * mask
    return err.sum((1, 2)), (err * scale[:, None, :]).sum((1, 2)), mask.sum((1, 2))


@torch.no_grad()
def evaluate_prediction(model: torch.nn.Module, loader: DataLoader, device: torch.device, coords: int,
                        amp: bool = True, progress: bool = False,
                        per_sample: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """MPJPE of the predictor beside the zero- and constant-velocity baselines, for each frame
    ahead it predicts. The top-level keys are one frame ahead in window-local units (the
    window's scale: torso lengths for ``person_centric``); ``horizons`` has every frame ahead in
    local units and ``horizons_data_units`` in the data's own units (metres for Kinect, image
    fractions for 2D sets). ``per_sample``, if given, receives per sample and frame ahead
    ``<guess>`` and ``<guess>_data_units`` error sums and ``joints`` counts ``(N, H)`` arrays
    (by ``batch["index"]``), for sums over any subset (e.g. per source data set)."""
    model = model.first if isinstance(model, MultiStream) else model  # the joint stream holds the head
    model.eval()
    horizon = getattr(model.predictor, "horizon", 1)
    sums = {k: np.zeros(horizon) for k in GUESSES}
    raw = {k: np.zeros(horizon) for k in GUESSES}
    counts = np.zeros(horizon)
    if per_sample is not None:
        shape = (len(loader.dataset), horizon)
        per_sample.update({k: np.zeros(shape) for k in (*GUESSES, *(f"{g}_data_units" for g in GUESSES), "joints")})
    for batch in tqdm(loader, desc="eval-next", leave=False, disable=not progress):
        x, recent, target, scale = (batch[k].to(device, non_blocking=True) for k in ("x", "recent", "target", "scale"))
        with autocast(device, amp):
            _, pred = model(x, recent)
        pred = pred.float()
        if pred.dim() == recent.dim() - 1:  # one frame ahead
            pred, target = pred[:, :, None], target[:, :, None]
        last = zero_velocity(recent)
        velocity = constant_velocity(recent, coords) - last  # zero where a joint was absent before
        index = np.asarray(batch["index"])
        for h in range(horizon):
            guesses = (pred[:, :, h], last, last + (h + 1) * velocity)
            for key, guess in zip(GUESSES, guesses):
                local, data_units, n = (t.cpu().numpy() for t in _frame_errors(guess, target[:, :, h], coords, scale))
                sums[key][h] += local.sum()
                raw[key][h] += data_units.sum()
                if per_sample is not None:
                    per_sample[key][index, h], per_sample[f"{key}_data_units"][index, h] = local, data_units
                    per_sample["joints"][index, h] = n
            counts[h] += n.sum()
    return prediction_summary(sums, raw, counts)


def prediction_summary(sums: dict[str, np.ndarray], raw: dict[str, np.ndarray], counts: np.ndarray) -> dict[str, Any]:
    """Mean errors per frame ahead from error sums and joint counts (see :func:`evaluate_prediction`)."""
    n = np.maximum(counts, 1)
    local = {k: sums[k] / n for k in GUESSES}
    zv = local["mpjpe_zero_velocity"]
    improvement = np.where(zv > 0, 1 - local["mpjpe"] / np.where(zv > 0, zv, 1), 0.0)
    out: dict[str, Any] = {k: float(v[0]) for k, v in local.items()}
    out["improvement_vs_zero_velocity"] = float(improvement[0])
    out["joints"] = int(counts[0])
    out["horizons"] = {"frames": list(range(1, len(counts) + 1)), **{k: v.tolist() for k, v in local.items()},
                       "improvement_vs_zero_velocity": improvement.tolist()}
    out["horizons_data_units"] = {k: (raw[k] / n).tolist() for k in GUESSES}
    return out


def prediction_by_source(per_sample: dict[str, np.ndarray], sources: Sequence[str]) -> dict[str, dict[str, Any]]:
    """:func:`prediction_summary` per source data set, from :func:`evaluate_prediction`'s ``per_sample``."""
    if len(sources) != len(per_sample["joints"]):
        raise ValueError(f"sources name {len(sources)} samples, the data holds {len(per_sample['joints'])}")
    src = np.asarray(sources)
    out = {}
    for name in dict.fromkeys(sources):
        pick = src == name
        out[name] = prediction_summary({k: per_sample[k][pick].sum(0) for k in GUESSES},
                                       {k: per_sample[f"{k}_data_units"][pick].sum(0) for k in GUESSES},
                                       per_sample["joints"][pick].sum(0))
    return out


def clip_starts(x: torch.Tensor) -> torch.Tensor:
    """Each window's first non-zero frame, over its person slots (a short clip is right-aligned,
    zeros before it, as a live stream's window; :func:`stgcn.data.dataset.classification_window`);
    the last frame for an empty window."""
    return first_frames(x).amin(dim=1).clamp(max=x.shape[2] - 1)


@torch.no_grad()
def evaluate_continual(model: torch.nn.Module, loader: DataLoader, device: torch.device, window: int,
                       correct: dict[str, np.ndarray] | None = None, progress: bool = False,
                       regular: np.ndarray | None = None) -> dict[str, Any]:
    """Top-1 of the continual form of ``model`` (:mod:`stgcn.continual`) as the continual engine
    serves it: the first person of each sample alone (the model's other person slots empty),
    stepped frame by frame from the clip's first frame (not the zeros before a short one).
    ``live`` answers at the clip's last frame without the right padding, as a live stream is
    answered once the state has :attr:`~stgcn.continual.Continual.ready_outputs` outputs (a shorter
    clip has no answer yet, an error); ``clip`` flushes the
    right padding first (none for a causal network) (the answer at a clip's known end). With ``regular`` (the window form's
    hit per sample) ``served`` is what the continual engine shows at the clip's last frame: the
    live answer, or the window form's while the state has none (its warm-up). ``correct`` (per
    mode, a bool array over the dataset) receives each sample's hit."""
    from .continual import Continual

    co = Continual(model.eval(), window)
    modes = ("live", "clip") + (("served",) if regular is not None else ())
    hits, answered, total = dict.fromkeys(modes, 0), dict.fromkeys(modes, 0), 0
    for batch in tqdm(loader, desc="eval-continual", leave=False, disable=not progress):
        x, label = batch["x"].to(device, non_blocking=True)[..., :1], batch["label"].to(device)
        out = co.clip(x, clip_starts(x), empty_slots=batch["x"].shape[-1] - 1, outputs=co.ready_outputs)
        index = np.asarray(batch["index"])
        for mode in modes:
            scores, ready = out["flushed" if mode == "clip" else "live"]
            ok = ((scores.argmax(dim=1) == label) & ready).cpu().numpy()
            ready = ready.cpu().numpy()
            if mode == "served":
                ok, ready = np.where(ready, ok, regular[index]), np.ones_like(ready)
            if correct is not None:
                correct[mode][index] = ok
            hits[mode] += int(ok.sum())
            answered[mode] += int(ready.sum())
        total += len(label)
    return {mode: {"top1": hits[mode] / max(total, 1), "answered": answered[mode] / max(total, 1),
                   "samples": total, "delay_frames": co.delay} for mode in hits}


# --------------------------------------------------------------------------- classes by name

def normalise_name(name: str) -> str:
    """A class name for comparison: lower case, ``_`` and ``-`` as spaces, single spaces."""
    return re.sub(r"\s+", " ", re.sub(r"[_-]", " ", str(name).lower())).strip()


def load_synonyms(path: str | os.PathLike | None) -> dict[str, int]:
    """A synonyms table (``configs/classes/synonyms.yaml``: ``name: [synonyms]``) as the group of each
    normalised name; ``{}`` for ``None``. ValueError naming the file for a bad table."""
    if path is None:
        return {}
    table = read_yaml(Path(path))
    groups: dict[str, int] = {}
    for g, (name, others) in enumerate(table.items()):
        others = [others] if isinstance(others, str) else (others or [])
        if not isinstance(others, list):
            raise ValueError(f"{path}: {name}: expected a list of names")
        for n in [name, *others]:
            key = normalise_name(n)
            if groups.setdefault(key, g) != g:
                raise ValueError(f"{path}: {n!r} is in two groups")
    return groups


@dataclass
class ClassMap:
    """The model class of each data class (``index``, -1 where the model has none)."""

    index: np.ndarray
    data_names: list[str]
    model_names: list[str]
    by_synonym: list[str] = field(default_factory=list)  # data classes matched through the synonyms
    ambiguous: list[str] = field(default_factory=list)  # data classes whose group holds several model classes

    @property
    def missing(self) -> list[str]:
        """Data classes the model lacks."""
        return [n for n, i in zip(self.data_names, self.index) if i < 0]

    def as_dict(self) -> dict[str, str | None]:
        return {n: (self.model_names[i] if i >= 0 else None) for n, i in zip(self.data_names, self.index)}


def map_classes(data_names: Sequence[str], model_names: Sequence[str],
                synonyms: dict[str, int] | None = None) -> ClassMap:
    """Match data classes to model classes by name (normalised), else through a synonyms group."""
    synonyms = synonyms or {}
    exact = {normalise_name(n): i for i, n in enumerate(model_names)}
    by_group: dict[int, list[int]] = {}
    for key, i in exact.items():
        if key in synonyms:
            by_group.setdefault(synonyms[key], []).append(i)
    out = ClassMap(np.full(len(data_names), -1, np.int64), list(data_names), list(model_names))
    for k, name in enumerate(data_names):
        key = normalise_name(name)
        if key in exact:
            out.index[k] = exact[key]
            continue
        candidates = by_group.get(synonyms.get(key, -1), [])
        if len(candidates) == 1:
            out.index[k] = candidates[0]
            out.by_synonym.append(name)
        elif len(candidates) > 1:
            out.ambiguous.append(name)
    return out


def accuracy_by_source(correct: np.ndarray, sources: Sequence[str]) -> dict[str, dict[str, float]]:
    """Top-1 and sample count per source dataset, in the order the sources first appear."""
    if len(sources) != len(correct):
        raise ValueError(f"sources name {len(sources)} samples, the data holds {len(correct)}")
    src = np.asarray(sources)
    out = {}
    for name in dict.fromkeys(sources):
        hits = correct[src == name]
        out[name] = {"top1": float(hits.mean()) if len(hits) else 0.0, "samples": int(len(hits))}
    return out

"""Evaluate a checkpoint: top-1/top-5, per-class accuracy, confusion matrix, next-frame MPJPE.

    python -m stgcn.eval [CONFIG] --weights CKPT [--data-dir DIR] [--json OUT]

CONFIG may be left out for the project's own checkpoints, which carry their config.

When DIR has a ``class_names.txt``, its classes are matched to the model's by name (case, ``_``
and ``-`` ignored), else through the near-synonyms of ``configs/classes/synonyms.yaml``
(``--synonyms``): DIR may hold a subset of the model's classes, in any order; samples of
classes the model lacks count as errors. With a ``sources.json`` (a merged data set) the
top-1 of each source dataset is reported too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cli import add_debug_flag, run_cli, setup_logging

from .checkpoint import load_model
from .config import checkpoint_training_config, serving_config
from .data import available_cpus, build_datasets, load_class_names, make_loader
from .engine import pick_device
from .streams import select_streams
from .evaluation import (ClassMap, accuracy_by_source, evaluate_classification, evaluate_continual, evaluate_prediction,
                         load_synonyms, map_classes, prediction_by_source)

log = logging.getLogger("stgcn.eval")

SYNONYMS = Path(__file__).resolve().parents[1] / "configs" / "classes" / "synonyms.yaml"


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


def class_map_lines(cmap: ClassMap, labels: np.ndarray) -> list[str]:
    """What matching the data's classes to the model's did, for the output."""
    matched = len(cmap.data_names) - len(cmap.missing)
    lines = [f"classes: {matched} of the data's {len(cmap.data_names)} matched by name to the model's "
             f"{len(cmap.model_names)}" + (f" ({len(cmap.by_synonym)} through synonyms)" if cmap.by_synonym else "")]
    if cmap.missing:
        lacking = np.isin(labels, [k for k, i in enumerate(cmap.index) if i < 0])
        n = len(cmap.missing)
        more = f" (+{n - 8} more)" if n > 8 else ""
        lines.append(f"{int(lacking.sum())} samples of {n} class{'es' if n > 1 else ''} the model lacks "
                     "count as errors: " + ", ".join(cmap.missing[:8]) + more)
    if cmap.ambiguous:
        lines.append("several model classes share a synonyms group with: " + ", ".join(cmap.ambiguous))
    return lines


def synonyms_path(arg: str) -> str | None:
    """The synonyms table to use: none for 'none', or for the default where no configs folder exists."""
    if arg == "none" or (arg == str(SYNONYMS) and not SYNONYMS.is_file()):
        return None
    return arg


def read_sources(data_dir: Path, split: str = "val") -> list[str] | None:
    """The source dataset of each sample of ``split`` from ``sources.json``, if the folder has one."""
    path = data_dir / "sources.json"
    if not path.is_file():
        return None
    try:
        sources = json.loads(path.read_text())[split]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: expected a JSON object with a {split!r} list ({type(e).__name__}: {e})") from None
    return [str(s) for s in sources]


def report_classification(metrics: dict[str, Any], cmap: ClassMap | None, data_labels: np.ndarray,
                          labels: np.ndarray, correct: np.ndarray, sources: list[str] | None) -> None:
    """Print the classification figures (and add the class map's and per-dataset ones to ``metrics``)."""
    if cmap is not None:
        for line in class_map_lines(cmap, data_labels):
            print(line)
        known = labels >= 0
        metrics.update(class_map=cmap.as_dict(), missing_samples=int((~known).sum()),
                       top1_known=float(correct[known].mean()) if known.any() else 0.0)
    print(f"top-1 {100 * metrics['top1']:.2f} %  top-5 {100 * metrics['top5']:.2f} %  ({metrics['samples']} samples)")
    if cmap is not None and metrics["missing_samples"]:
        print(f"top-1 on the {metrics['samples'] - metrics['missing_samples']} samples of classes the model has: "
              f"{100 * metrics['top1_known']:.2f} %")
    if sources is not None:
        metrics["per_dataset"] = accuracy_by_source(correct, sources)
        print("per dataset: " + ", ".join(f"{k} {100 * v['top1']:.2f} % ({v['samples']})"
                                          for k, v in metrics["per_dataset"].items()))


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    model = select_streams(load_model(args.weights, device=device), args.streams)
    cfg = checkpoint_training_config(model.config, args.weights, args.config)
    d = Path(args.data_dir) if args.data_dir else None
    if d is not None:
        cfg.setdefault("data", {})["val"] = {"data": str(d / "val_data.npy"), "label": str(d / "val_label.pkl")}
    cfg["data"]["num_workers"] = args.workers
    serve = serving_config(cfg, model.config["model"]["num_class"])
    names = model.config.get("class_names") or serve["class_names"]
    cmap = None
    if d is not None and (d / "class_names.txt").is_file():
        cmap = map_classes(load_class_names(d / "class_names.txt"), names, load_synonyms(synonyms_path(args.synonyms)))
        cfg.pop("class_names", None)  # the data's labels index its own classes
    datasets = build_datasets(cfg, splits=("val",))
    sources = read_sources(d) if d is not None else None
    metrics: dict[str, Any] = {"weights": str(args.weights)}
    val = datasets.get("val")  # none for a model trained only to predict
    if val is not None:
        data_labels = val.labels
        if cmap is not None:
            if len(data_labels) and data_labels.max() >= len(cmap.data_names):
                raise ValueError(f"{val.label_path}: label {int(data_labels.max())} but {d / 'class_names.txt'} "
                                 f"names {len(cmap.data_names)} classes")
            val.labels = cmap.index[data_labels]
        correct = np.zeros(len(val), bool)
        cls_loader = make_loader(val, args.batch_size, shuffle=False, workers=args.workers)
        metrics.update(evaluate_classification(model, cls_loader, device, serve["model"]["num_class"], amp=args.amp,
                                               progress=True, correct=correct))
    if args.continual and val is not None:
        hits = {mode: np.zeros(len(val), bool) for mode in ("live", "clip", "served")}
        metrics["continual"] = evaluate_continual(model, cls_loader, device,
                                                  int(model.config.get("window") or serve["window"]), hits, True,
                                                  regular=correct)
        for mode, m in metrics["continual"].items():
            if sources is not None:
                m["per_dataset"] = accuracy_by_source(hits[mode], sources)
    if model.predictor is not None and "val_next" in datasets:
        nxt = make_loader(datasets["val_next"], args.batch_size, shuffle=False, workers=args.workers)
        per_sample: dict[str, np.ndarray] = {}
        metrics.update(evaluate_prediction(model, nxt, device, serve["model"]["coords"], progress=True,
                                           per_sample=per_sample))
        if sources is not None:
            metrics["prediction_per_dataset"] = prediction_by_source(per_sample, sources)
    if val is not None:
        report_classification(metrics, cmap, data_labels, val.labels, correct, sources)
    for mode, m in metrics.get("continual", {}).items():
        per = "".join(f", {k} {100 * v['top1']:.2f} %" for k, v in m.get("per_dataset", {}).items())
        print(f"continual ({mode}): top-1 {100 * m['top1']:.2f} %{per}; {100 * m['answered']:.1f} % answered "
              f"(delay {m['delay_frames']} frames)")
    if "mpjpe" in metrics:
        print(f"next-frame MPJPE {metrics['mpjpe']:.5f}  zero-velocity {metrics['mpjpe_zero_velocity']:.5f}  "
              f"constant-velocity {metrics['mpjpe_constant_velocity']:.5f}  "
              f"({100 * metrics['improvement_vs_zero_velocity']:.1f} % below zero-velocity; window-local units)")
        h = metrics["horizons"]
        if len(h["frames"]) > 1:
            print("frames ahead: " + ", ".join(f"{f}: {100 * i:.0f} %" for f, i in
                                               zip(h["frames"], h["improvement_vs_zero_velocity"])) + " below zero-velocity")
        for name, m in metrics.get("prediction_per_dataset", {}).items():
            print(f"  {name}: next-frame {100 * m['improvement_vs_zero_velocity']:.1f} % below zero-velocity")
    if "confusion" in metrics:
        print("weakest classes: " + weakest_classes(metrics["confusion"], names))
    png = args.confusion or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if png and "confusion" in metrics:
        try:
            save_confusion_png(metrics["confusion"], names, Path(png), f"top-1 {100 * metrics['top1']:.1f} %")
            print(f"confusion matrix: {png}")
        except ImportError:  # matplotlib comes with mediapipe; a training-only install may lack it
            log.warning("no confusion-matrix PNG: matplotlib is not installed")
    if args.json:
        Path(args.json).write_text(json.dumps({**metrics, "class_names": names}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stgcn.eval", description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", help="training YAML config (optional for project checkpoints)")
    parser.add_argument("--weights", required=True, help="checkpoint to evaluate")
    parser.add_argument("--data-dir", help="folder with val_data.npy and val_label.pkl (and optionally "
                                           "class_names.txt, matched to the model's by name, and sources.json)")
    parser.add_argument("--synonyms", default=str(SYNONYMS),
                        help="near-synonyms table for matching class names ('none': exact names only; "
                             "default: configs/classes/synonyms.yaml)")
    parser.add_argument("--streams", nargs="+", metavar="STREAM",
                        help="evaluate a multi-stream model through these input streams only (default: all)")
    parser.add_argument("--continual", action="store_true",
                        help="also evaluate the continual (frame-by-frame) form, each clip stepped from its first "
                             "frame: live (answered at its last frame), clip (its end padded, as the regular model) "
                             "and served (live, or the window form's answer while the state has none)")
    parser.add_argument("--json", help="write the metrics to this JSON file")
    parser.add_argument("--confusion", help="confusion-matrix PNG path (default: next to --json)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--no-amp", dest="amp", action="store_false",
                        help="float32 on CUDA too (default: bf16 autocast there; the continual form runs float32)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=available_cpus(),
                        help="DataLoader workers (default: the CPUs available, %(default)s here)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    return run_cli(parser.prog, lambda: evaluate_checkpoint(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

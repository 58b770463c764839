"""Few-shot benchmark of your own actions: the documented flow's time, and accuracy against k.

    python -m bench.fewshot [--part flow|curve|both] [--steps 60] [--test-per-class 30]
    python -m bench.fewshot --plot-only bench/results/fewshot_cpu.json     # redraw docs/fewshot_cpu.png

flow: 3 classes x 5 takes of 3 s (90 frames) written as pipeline recordings (``.skel``, in the
``--record DIR --label NAME`` layout) from Penn Action training clips, 3 validation takes per class
from its test clips; then the documented commands as subprocesses, each timed:
``python -m stgcn.convert recordings ... --val`` and ``python -m stgcn.train
configs/train/custom.yaml ...`` (fine-tuning the shipped model); the final validation top-1; and
the "unknown" answer on the centre windows of Penn Action test clips: those of the 3 classes not
used as takes (should keep a label) and those of 6 other actions (should be unknown), with the bar
as trained and recalibrated with ``stgcn.calibrate --keep 0.95``.
The shipped model saw Penn Action, so this part measures time, not few-shot accuracy.

curve: few-shot accuracy on classes the starting model never saw. The start model is the
project's earlier shipped model (git ece60ff, ``stgcn/weights/utd_mhad_openpose.pt``): UTD-MHAD
Kinect skeletons projected to OpenPose-18 2D, 27 arm and body gestures, no Penn Action clip.
Five Penn Action classes unlike any UTD-MHAD action are held out; for k = 1, 5, 10 training clips
per class (seeded draw from the official training split) and each seed, three runs of the same
short budget (``--steps`` optimisation steps): custom.yaml's recipe fine-tuning the start model
(``fine-tune``), the same with its first 6 blocks fixed (``fine-tune-6-fixed``), and the same
network from random weights (``scratch``); with ``--pretrained CKPT``, also the recipe from a
network pretrained without labels (``self-supervised``: ``configs/train/predict_2d.yaml``, the
encoder-decoder that predicts the coming frames, on the merged real-video training clips, whose
labels it never reads; the held-out classes' test clips are not among them). All are tested on the official test clips of the five
classes (the first ``--test-per-class`` of each: a subset, to keep it to minutes on a CPU); top-1
among the five. Prints and writes bench/results/fewshot_cpu.json (runs of a later invocation with
the same settings are added to it) and the plot docs/fewshot_cpu.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import pickle
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, ROOT, machine, write_results
from pipeline.cli import add_debug_flag, run_cli, setup_logging
from stgcn.data.dataset import classification_window

log = logging.getLogger("bench.fewshot")

PENN = ROOT / "data" / "penn_action"
START_COMMIT = "ece60ff"
START_PATH = "stgcn/weights/utd_mhad_openpose.pt"
HELD_OUT = ["bench_press", "golf_swing", "jumping_jacks", "pullup", "strum_guitar"]
FLOW_CLASSES = ["jumping_jacks", "pullup", "situp"]
OPEN_SET_OTHERS = ["bench_press", "golf_swing", "squat", "tennis_serve", "baseball_swing", "bowl"]
CUSTOM = ROOT / "configs" / "train" / "custom.yaml"


def load_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A converted set's memory-mapped data, its labels and its class names."""
    data = np.load(folder / f"{split}_data.npy", mmap_mode="r")
    with open(folder / f"{split}_label.pkl", "rb") as f:
        _, labels = pickle.load(f)
    names = (folder / "class_names.txt").read_text().split()
    return data, np.asarray(labels), names


def pick(labels: np.ndarray, classes: list[int], k: int | None, seed: int) -> list[int]:
    """k sample indices per class (seeded; None: the first ones in file order, all of them)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        out += list(rng.permutation(idx)[:k]) if k is not None else list(idx)
    return out


def write_take(path: Path, sample: np.ndarray, label: str, frames: int, fps: float = 30.0) -> None:
    """The first ``frames`` frames of an st-gcn sample's first person as a pipeline recording."""
    from pipeline.messages import StreamStart, encode, frame_from_arrays
    from pipeline.recording import RecordingWriter

    stream = path.stem
    meta = {"fps": fps, "source": "penn_action", "layout": "openpose", "width": 640, "height": 480, "joints": 18,
            "label": label}
    valid = np.flatnonzero(np.abs(sample).sum(axis=(0, 2, 3)) > 0)
    with RecordingWriter(path, StreamStart(stream, 0.0, meta)) as w:
        for t in range(min(frames, int(valid[-1]) + 1 if len(valid) else 0)):
            kp = np.ascontiguousarray(sample[:, t, :, 0].T, dtype=np.float32)
            people = [kp] if kp[:, 2].any() else []
            w.write(encode(frame_from_arrays(stream, t, t / fps, 640, 480, "openpose", people,
                                             list(range(len(people))), joints=18)))


def write_takes(folder: Path, data: np.ndarray, labels: np.ndarray, names: list[str], indices: list[int],
                frames: int) -> None:
    for i in indices:
        label = names[labels[i]]
        (folder / label).mkdir(parents=True, exist_ok=True)
        write_take(folder / label / f"take{i}.skel", np.asarray(data[i]), label, frames)


def timed(cmd: list[str]) -> float:
    """Run a documented command from the repository root; its wall time in seconds."""
    log.info("$ %s", " ".join(cmd))
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return time.perf_counter() - t0


def flow(work: Path, takes: int, val_takes: int, frames: int) -> dict[str, Any]:
    """The documented flow on 3 classes of takes: convert, fine-tune; times and validation top-1."""
    train_x, train_y, names = load_split(PENN, "train")
    test_x, test_y, _ = load_split(PENN, "val")
    classes = [names.index(c) for c in FLOW_CLASSES]
    rec, val, out, runs = work / "rec", work / "rec_val", work / "data", work / "run"
    write_takes(rec, train_x, train_y, names, pick(train_y, classes, takes, 0), frames)
    write_takes(val, test_x, test_y, names, pick(test_y, classes, val_takes, 0), frames)
    py = [sys.executable, "-m"]
    t_convert = timed(py + ["stgcn.convert", "recordings", str(rec), str(out), "--val", str(val), "--no-progress"])
    t_train = timed(py + ["stgcn.train", str(CUSTOM), "--data-dir", str(out), "--work-dir", str(runs)])
    with open(runs / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    val_indices = set(pick(test_y, classes, val_takes, 0))
    known = [i for i in range(len(test_y)) if test_y[i] in classes and i not in val_indices]
    others = [i for i in range(len(test_y)) if names[test_y[i]] in OPEN_SET_OTHERS]
    return {"classes": FLOW_CLASSES, "takes_per_class": takes, "take_frames": frames,
            "val_takes_per_class": val_takes, "convert_s": round(t_convert, 1), "train_s": round(t_train, 1),
            "epochs": int(last["epoch"]) + 1, "val_top1": float(last["val_top1"]),
            "writes_final_pt": (runs / "final.pt").is_file(),
            "open_set": open_set_rates(runs / "final.pt", test_x, test_y, names, known, others)}


def centre_windows(x: np.ndarray, indices: list[int], window: int) -> np.ndarray:
    """The first person's centre window of each clip, raw, by the training data's rule (a shorter
    clip ends the window, as in a live stream that started less than a window ago)."""
    return np.stack([classification_window(np.asarray(x[i])[:, :, :, :1], window) for i in indices])


def open_set_rates(weights: Path, x: np.ndarray, y: np.ndarray, names: list[str], known: list[int],
                   others: list[int]) -> dict[str, Any]:
    """The fine-tuned model's "unknown" bar as trained (99 % of the right augmented training windows
    keep their label) and recalibrated with ``stgcn.calibrate --keep 0.95`` (docs/custom_actions.md):
    the share of new test clips of the takes' classes that keep a label, and of clips of other
    actions called unknown."""
    from stgcn.engine import Engine
    from stgcn.open_set import auroc

    lower = weights.with_name("keep095.pt")
    timed([sys.executable, "-m", "stgcn.calibrate", "--weights", str(weights), "--keep", "0.95", "--out", str(lower)])
    engine = Engine(weights, "cpu", persons=1)
    p_known, _ = engine(centre_windows(x, known, engine.window))
    p_other, _ = engine(centre_windows(x, others, engine.window))
    labels = np.array([engine.class_names.index(names[y[i]]) for i in known])
    out: dict[str, Any] = {"known_clips": len(known), "other_clips": len(others), "other_classes": OPEN_SET_OTHERS,
                           "known_top1": round(float((p_known.argmax(1) == labels).mean()), 4),
                           "auroc": round(auroc(p_known.max(1), p_other.max(1)), 4)}
    for key, path in (("keep_0.99", weights), ("keep_0.95", lower)):
        bar = Engine(path, "cpu", persons=1).open_set.score_threshold
        out[key] = {"threshold": round(bar, 4), "known_kept": round(float((p_known.max(1) >= bar).mean()), 4),
                    "other_unknown": round(float((p_other.max(1) < bar).mean()), 4)}
    return out


def subset(folder: Path, x: np.ndarray, y: np.ndarray, indices: list[int], remap: dict[int, int],
           split: str) -> None:
    """``folder/{split}_*`` of the chosen samples (first person only), labels renumbered."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{split}_data.npy", np.stack([np.asarray(x[i])[..., :1] for i in indices]))
    with open(folder / f"{split}_label.pkl", "wb") as f:
        pickle.dump(([f"s{i}" for i in indices], [remap[int(y[i])] for i in indices]), f)


def start_model(work: Path) -> Path:
    """The held-out start model, taken from the repository's history."""
    path = work / "start.pt"
    work.mkdir(parents=True, exist_ok=True)
    blob = subprocess.run(["git", "show", f"{START_COMMIT}:{START_PATH}"], cwd=ROOT, check=True,
                          capture_output=True).stdout
    path.write_bytes(blob)
    return path


# what each mode changes in custom.yaml's recipe
MODES: dict[str, dict[str, Any]] = {
    "fine-tune": {"freeze_blocks": 0},                  # custom.yaml's recipe: every layer trained
    "fine-tune-6-fixed": {"freeze_blocks": 6},          # the first 6 of 10 blocks fixed: cheaper steps
    "scratch": {"init_from": None, "freeze_blocks": 0, "lr": 0.05},   # the same network, random weights
    "self-supervised": {"freeze_blocks": 0},            # from the --pretrained encoder-decoder (no labels)
}


def train_once(data: Path, work: Path, start: Path, mode: str, steps: int, n_train: int, seed: int
               ) -> dict[str, Any]:
    """custom.yaml's recipe on ``data`` as ``mode`` changes it, from ``start`` or its network from scratch."""
    from stgcn.config import load_config
    from stgcn.train import train

    cfg = load_config(CUSTOM)
    batch = int(cfg["train"]["batch_size"])
    per_epoch = max(1, n_train // batch) if n_train > batch else 1
    epochs = max(1, math.ceil(steps / per_epoch))
    cfg["class_names"] = str(data / "class_names.txt")
    cfg["data"].update(train={"data": str(data / "train_data.npy"), "label": str(data / "train_label.pkl")},
                       val={"data": str(data / "val_data.npy"), "label": str(data / "val_label.pkl")})
    cfg["train"].update(epochs=epochs, eval_every=epochs, open_set=False, seed=seed, init_from=str(start))
    if mode == "scratch":  # the start model's network with a from-scratch warm-up
        from stgcn.finetune import adopt_architecture

        cfg = adopt_architecture(cfg)
        cfg["train"]["warmup_epochs"] = max(1, epochs // 10)
    cfg["train"].update(MODES[mode])
    t0 = time.perf_counter()
    metrics = train(cfg, work, "cpu")
    return {"top1": round(float(metrics["val_top1"]), 4), "train_s": round(time.perf_counter() - t0, 1),
            "epochs": epochs, "steps": epochs * per_epoch}


def curve(work: Path, ks: list[int], modes: list[str], steps: int, test_per_class: int, seeds: list[int],
          pretrained: Path | None = None) -> dict[str, Any]:
    """Fine-tuned against from-scratch top-1 on the held-out classes for each k, mode and seed (the seed
    draws the k clips and initialises the run)."""
    train_x, train_y, names = load_split(PENN, "train")
    test_x, test_y, _ = load_split(PENN, "val")
    classes = [names.index(c) for c in HELD_OUT]
    remap = {c: i for i, c in enumerate(classes)}
    init = start_model(work)
    test = [i for c in classes for i in np.flatnonzero(test_y == c)[:test_per_class]]
    rows = []
    for seed in seeds:
        for k in ks:
            data = work / f"k{k}_s{seed}"
            subset(data, train_x, train_y, pick(train_y, classes, k, seed), remap, "train")
            subset(data, test_x, test_y, test, remap, "val")
            (data / "class_names.txt").write_text("".join(c + "\n" for c in HELD_OUT))
            for mode in modes:
                start = pretrained if mode == "self-supervised" else init
                r = train_once(data, work / f"run_k{k}_s{seed}_{mode}", start, mode, steps, k * len(classes), seed)
                rows.append({"k": k, "mode": mode, "seed": seed, **r})
                print(f"k={k:2d} seed {seed} {mode:13s} top-1 {r['top1']:.3f} ({r['train_s']:.0f} s, "
                      f"{r['steps']} steps)", flush=True)
    return {"modes": {m: MODES[m] for m in modes},
            "start_model": f"git {START_COMMIT}:{START_PATH} (UTD-MHAD Kinect projected to 2D, 27 classes, "
                           "never saw Penn Action)",
            "held_out": HELD_OUT, "test_clips": len(test), "test_per_class": test_per_class, "steps": steps,
            **({"pretrained": f"{pretrained.name}: configs/train/predict_2d.yaml, seed 0, 40 epochs on the merged "
                              "real-video training clips without labels (NVIDIA H200)"} if pretrained else {}),
            "rows": rows, "summary": summarise(rows)}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread of top-1 over seeds, per k and mode."""
    out = []
    for k, mode in sorted({(r["k"], r["mode"]) for r in rows}, key=lambda km: (km[0], list(MODES).index(km[1]))):
        top = [r["top1"] for r in rows if (r["k"], r["mode"]) == (k, mode)]
        out.append({"k": k, "mode": mode, "top1_mean": round(float(np.mean(top)), 4),
                    "top1_std": round(float(np.std(top)), 4), "seeds": len(top)})
    return out


def merge_curve(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``new``, plus the rows of ``old`` for other (k, mode, seed) runs when both ran the same settings."""
    same = ("start_model", "held_out", "test_clips", "steps")
    if not old or any(old.get(k) != new.get(k) for k in same):
        return new
    ran = {(r["k"], r["mode"], r["seed"]) for r in new["rows"]}
    rows = [r for r in old["rows"] if (r["k"], r["mode"], r["seed"]) not in ran] + new["rows"]
    rows.sort(key=lambda r: (r["k"], list(MODES).index(r["mode"]), r["seed"]))
    return {**old, **new, "modes": {**old.get("modes", {}), **new["modes"]}, "rows": rows,
            "summary": summarise(rows)}


def plot(curve_result: dict[str, Any], path: Path) -> None:
    """Top-1 against k, fine-tuned and from scratch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    for mode, style in (("fine-tune", "o-"), ("fine-tune-6-fixed", "^:"), ("scratch", "s--"),
                        ("self-supervised", "d-.")):
        rows = [r for r in curve_result["summary"] if r["mode"] == mode]
        if not rows:
            continue
        line = ax.errorbar([r["k"] for r in rows], [100 * r["top1_mean"] for r in rows],
                           yerr=[100 * r["top1_std"] for r in rows], fmt=style, capsize=3, label=mode)
        runs = [r for r in curve_result["rows"] if r["mode"] == mode]
        ax.plot([r["k"] for r in runs], [100 * r["top1"] for r in runs], ".", color=line[0].get_color(), alpha=0.5)
    ax.axhline(100 / len(curve_result["held_out"]), color="grey", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("training clips per new class (k)")
    ax.set_ylabel(f"top-1 on {curve_result['test_clips']} test clips (%)")
    ax.set_title(f"{len(curve_result['held_out'])} new Penn Action classes, {curve_result['steps']} steps, CPU",
                 fontsize=9)
    ax.set_ylim(0, 100)
    ax.set_xticks(sorted({r["k"] for r in curve_result["rows"]}))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fewshot", description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("flow", "curve", "both"), default="both")
    parser.add_argument("--ks", default="1,5,10", help="training clips per held-out class (default 1,5,10)")
    parser.add_argument("--modes", default=",".join(m for m in MODES if m != "self-supervised"),
                        help=f"curve runs, comma-separated, of {', '.join(MODES)} (default all but self-supervised)")
    parser.add_argument("--steps", type=int, default=60, help="optimisation steps per curve run (default 60)")
    parser.add_argument("--test-per-class", type=int, default=30, help="test clips per held-out class (default 30)")
    parser.add_argument("--seeds", default="0", help="curve: seeds, comma-separated (default 0)")
    parser.add_argument("--pretrained", type=Path, metavar="CKPT",
                        help="curve: a checkpoint pretrained without labels (python -m stgcn.train "
                             "configs/train/predict_2d.yaml), for the self-supervised mode")
    parser.add_argument("--takes", type=int, default=5, help="flow: takes per class (default 5)")
    parser.add_argument("--take-frames", type=int, default=90, help="flow: frames per take (default 90: 3 s)")
    parser.add_argument("--out", help="results JSON (default bench/results/fewshot_cpu.json)")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "fewshot_cpu.png"), help="the curve as a PNG")
    parser.add_argument("--plot-only", metavar="JSON", help="only draw the curve of an earlier results JSON")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug)

    def body() -> int:
        if args.plot_only:
            plot(json.loads(Path(args.plot_only).read_text())["curve"], Path(args.plot))
            return 0
        if not (PENN / "train_data.npy").is_file():
            raise ValueError(f"{PENN}: not converted; run python -m stgcn.convert penn-action "
                             "../shared/data/penn-action data/penn_action")
        out = Path(args.out) if args.out else RESULTS / "fewshot_cpu.json"
        earlier = json.loads(out.read_text()) if out.is_file() else {}
        # a part run alone replaces only its own part of the results file
        payload: dict[str, Any] = {k: v for k, v in earlier.items() if k in ("flow", "curve")}
        payload["machine"] = machine("cpu", with_torch=True)
        with tempfile.TemporaryDirectory(prefix="fewshot-") as tmp:
            if args.part in ("flow", "both"):
                payload["flow"] = {"date": date.today().isoformat(),
                                   **flow(Path(tmp) / "flow", args.takes, 3, args.take_frames)}
                print(f"flow: convert {payload['flow']['convert_s']} s, train {payload['flow']['train_s']} s, "
                      f"val top-1 {payload['flow']['val_top1']:.3f}", flush=True)
            if args.part in ("curve", "both"):
                ks, modes = [int(k) for k in args.ks.split(",")], args.modes.split(",")
                unknown = sorted(set(modes) - set(MODES))
                if unknown:
                    raise ValueError(f"--modes: unknown {unknown}; known: {', '.join(MODES)}")
                if "self-supervised" in modes and (args.pretrained is None or not args.pretrained.is_file()):
                    raise ValueError("--modes self-supervised needs --pretrained CKPT (an existing checkpoint)")
                new = {"date": date.today().isoformat(),
                       **curve(Path(tmp) / "curve", ks, modes, args.steps, args.test_per_class,
                                [int(x) for x in args.seeds.split(",")], args.pretrained)}
                payload["curve"] = merge_curve(payload.get("curve"), new)
        write_results("fewshot_cpu", payload, out)
        if "curve" in payload:
            plot(payload["curve"], Path(args.plot))
        return 0

    return run_cli(parser.prog, body, debug=args.debug, errors=(ValueError, OSError, subprocess.CalledProcessError))


if __name__ == "__main__":
    sys.exit(main())

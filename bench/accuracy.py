"""Accuracy and prediction over seeds: collect the runs of ``tools/train_seeds.sh`` into the tables
of issue-level metrics.

    python -m bench.accuracy RUNS_DIR [RUNS_DIR ...] [--shipped EVAL_JSON] [--update]

Each ``RUNS_DIR/<group>/seed<S>/eval_final.json`` is one run's ``stgcn.eval`` of its final epoch on
its data set's official test split (nothing chosen on it). Groups (the config and data set):
``utd_mhad_4s`` (UTD-MHAD Kinect 3D, 4 streams), ``utd_mhad_2d_4s`` (UTD-MHAD OpenPose 2D alone, 4
streams), ``utd_mhad_2d_kinect_4s`` (the same test, trained on the 2D keypoints and the training
subjects' Kinect skeletons projected to 2D), ``predict_2d_real_video`` (the self-supervised
encoder-decoder on the merged real-video sets, per source set) and ``predict_3d_utd_mhad_3d`` (the
same on UTD-MHAD 3D; its next frame stands for that set over ``utd_mhad_4s``'s head); ``--shipped`` is
the shipped model's evaluation on the merged sets. Penn Action and JHMDB top-1 come from
``bench/results/accuracy_real_video.json`` (the shipped pair of streams, 3 seeds). ``--update``
keeps what the committed ``accuracy.json`` holds of groups not given (runs of earlier sessions).

Writes ``bench/results/accuracy.json`` (top-1 per data set, mean, spread and every run; the
next-frame improvement over zero velocity per data set, beside the two-sided bound of
``bench/results/prediction_baselines.json``) and ``bench/results/prediction.json`` (MPJPE
per frame ahead beside zero and constant velocity, per data set, in torso lengths and the data's
units), and the plot ``docs/prediction.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, ROOT, write_results
from pipeline.cli import add_debug_flag, run_cli, setup_logging

KINECT_2D = "utd-mhad-2d (OpenPose on its videos + Kinect projections of the training subjects, 4 streams)"
MACHINE = "NVIDIA H200 (GPU machine), 16 CPU cores, torch 2.11; runs side by side (tools/train_seeds.sh)"
GUESSES = ("mpjpe", "mpjpe_zero_velocity", "mpjpe_constant_velocity")
UNITS = {"utd-mhad-3d": "metres", "utd-mhad-2d": "image fractions (640x480)",
         "penn-action": "image fractions", "jhmdb": "image fractions"}
COMMANDS = {
    "utd_mhad_4s": "tools/train_seeds.sh work_dirs/acc configs/train/utd_mhad_4s.yaml=data/utd_mhad_3d",
    "utd_mhad_2d_4s": "tools/train_seeds.sh work_dirs/acc configs/train/utd_mhad_2d_4s.yaml=data/utd_mhad_2d",
    "utd_mhad_2d_kinect_4s": "tools/train_seeds.sh work_dirs/acc configs/train/utd_mhad_2d_kinect_4s.yaml="
                             "data/utd_mhad_2d_kinect (data: the config's header)",
    "predict_2d_real_video": "tools/train_seeds.sh work_dirs/pred configs/train/predict_2d.yaml=data/real_video",
    "predict_3d_utd_mhad_3d": "tools/train_seeds.sh work_dirs/pred configs/train/predict_3d.yaml=data/utd_mhad_3d",
    "shipped": "python -m stgcn.train configs/train/real_video_causal.yaml (seed 0), its decoder retrained by "
               "configs/train/real_video_decoder.yaml (the config's header); "
               "python -m stgcn.eval --weights stgcn/weights/real_video.pt --data-dir data/real_video",
    "real_video_causal": "git checkout f0530f1 (before the pooling from each slot's first frame); "
                         "tools/train_seeds.sh work_dirs/acc configs/train/real_video_causal.yaml=data/real_video",
    "real_video_causal_finetune": "tools/train_seeds.sh work_dirs/acc "
                                  "configs/train/real_video_causal_finetune.yaml=data/real_video",
}
# the causal recipes of the merged real-video sets: each set's test split and all three
CAUSAL = {"real_video_causal": "merged sets, joint + joint motion, causal, from scratch, pooled over the whole window",
          "real_video_causal_finetune": "merged sets, joint + joint motion, causal, fine-tuned from the centred pair"}


def runs(dirs: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """Each group's evaluations, by seed."""
    out: dict[str, list[dict[str, Any]]] = {}
    for d in dirs:
        for path in sorted(d.glob("*/seed*/eval_final.json")):
            group = path.parent.parent.name
            out.setdefault(group, []).append(json.loads(path.read_text()))
    return out


def stats(values: list[float], scale: float = 100.0, digits: int = 2) -> dict[str, Any]:
    """Mean, standard deviation and every run of ``values`` (times ``scale``)."""
    v = [round(scale * x, digits) for x in values]
    return {"mean": round(float(np.mean(v)), digits), "std": round(float(np.std(v)), digits), "runs": v}


def prediction_table(evals: list[dict[str, Any]], per_dataset: str | None = None) -> dict[str, Any]:
    """Per frame ahead: each guess's MPJPE (mean over the runs) in torso lengths and data units, and
    the predictor's improvement over zero velocity (mean, spread and runs)."""
    src = [e["prediction_per_dataset"][per_dataset] if per_dataset else e for e in evals]
    frames = src[0]["horizons"]["frames"]
    table: dict[str, Any] = {"frames": frames}
    for units, key in (("torso_lengths", "horizons"), ("data_units", "horizons_data_units")):
        table[units] = {g: [round(float(np.mean([s[key][g][h] for s in src])), 6) for h in range(len(frames))]
                        for g in GUESSES}
    table["improvement_vs_zero_velocity"] = [
        stats([s["horizons"]["improvement_vs_zero_velocity"][h] for s in src], digits=1) for h in range(len(frames))]
    return table


def collect(groups: dict[str, list[dict[str, Any]]], shipped: dict[str, Any] | None,
            earlier_accuracy: dict[str, Any] | None = None) -> tuple[dict, dict]:
    """The accuracy and prediction payloads; ``earlier_accuracy``: an ``accuracy.json`` whose
    entries stand where ``groups`` has none."""
    earlier = json.loads((RESULTS / "accuracy_real_video.json").read_text())
    pair = earlier["streams"].get("joint + joint motion (subset of the 4-stream run; shipped: seed 0)")
    top1: dict[str, Any] = {}
    if "utd_mhad_4s" in groups:
        top1["utd-mhad-3d (Kinect, 4 streams)"] = stats([e["top1"] for e in groups["utd_mhad_4s"]])
    if "utd_mhad_2d_4s" in groups:
        top1["utd-mhad-2d (OpenPose on its videos, alone, 4 streams)"] = stats([e["top1"] for e in groups["utd_mhad_2d_4s"]])
    if "utd_mhad_2d_kinect_4s" in groups:
        top1[KINECT_2D] = {**stats([e["top1"] for e in groups["utd_mhad_2d_kinect_4s"]]),
                           "machine": "one H200 of a two-GPU host, 20 CPU cores (GPU machine), 2026-11-30",
                           "note": "the second of two recipes compared on this test split (the first: "
                                   "utd_mhad_2d_4s.yaml, the keypoints alone)"}
    if pair:
        for name in ("penn-action", "utd-mhad-2d", "jhmdb"):
            top1[f"{name} (merged sets, joint + joint motion, centred: shipped until 2026-11-30)"] = pair[name]
    for group, what in CAUSAL.items():
        for name in groups.get(group, [{}])[0].get("per_dataset", {}):
            top1[f"{name} ({what})"] = stats([e["per_dataset"][name]["top1"] for e in groups[group]])
        if group in groups:
            top1[f"all three ({what})"] = stats([e["top1"] for e in groups[group]])
    next_frame: dict[str, Any] = {}
    prediction: dict[str, Any] = {}
    if "utd_mhad_4s" in groups:  # the classifier's own one-frame head, trained beside it
        next_frame["utd-mhad-3d"] = {"model": "next-frame head of utd_mhad_4s (classifier + head)",
                                     **stats([e["improvement_vs_zero_velocity"] for e in groups["utd_mhad_4s"]],
                                             digits=1)}
    if "predict_2d_real_video" in groups:
        evals = groups["predict_2d_real_video"]
        for name in evals[0]["prediction_per_dataset"]:
            prediction[name] = {"model": "predict_2d.yaml on the merged sets (self-supervised)",
                                **prediction_table(evals, name)}
            next_frame[name] = {"model": "predict_2d.yaml (self-supervised encoder-decoder)",
                                **prediction[name]["improvement_vs_zero_velocity"][0]}
    if "predict_3d_utd_mhad_3d" in groups:  # the 2D sets' recipe: it stands for UTD-MHAD 3D's next frame
        prediction["utd-mhad-3d"] = {"model": "predict_3d.yaml (self-supervised encoder-decoder)",
                                     **prediction_table(groups["predict_3d_utd_mhad_3d"])}
        next_frame["utd-mhad-3d"] = {"model": "predict_3d.yaml (self-supervised encoder-decoder)",
                                     **prediction["utd-mhad-3d"]["improvement_vs_zero_velocity"][0]}
    if shipped:
        prediction["shipped (merged sets)"] = {"model": "stgcn/weights/real_video.pt, seed 0",
                                               **prediction_table([shipped])}
    if earlier_accuracy:
        top1 = {**earlier_accuracy["top1"], **top1}
        next_frame = {**earlier_accuracy["next_frame_improvement_pct"], **next_frame}
    metrics = {}
    names = {"utd_mhad_3d_top1_mean": "utd-mhad-3d (Kinect, 4 streams)",
             "utd_mhad_2d_real_top1_mean": KINECT_2D if KINECT_2D in top1 else
             "utd-mhad-2d (OpenPose on its videos, alone, 4 streams)",
             "penn_action_top1_mean": f"penn-action ({CAUSAL['real_video_causal']})",
             "jhmdb1_top1_mean": f"jhmdb ({CAUSAL['real_video_causal']})"}
    for metric, key in names.items():
        if key in top1:
            metrics[metric] = top1[key]["mean"]
    if next_frame:
        metrics["next_frame_improvement_min"] = round(min(v["mean"] for v in next_frame.values()) / 100, 4)
    accuracy = {
        "machine": MACHINE,
        "what": "top-1 (%) on the official test splits (UTD-MHAD cross-subject, Penn Action, JHMDB split 1), "
                "final epoch of each seed (0, 1, 2), nothing chosen on the test split; the next-frame "
                "improvement is 1 - MPJPE / MPJPE of zero velocity (repeating the last frame), one frame ahead",
        "metrics": metrics, "top1": top1, "next_frame_improvement_pct": next_frame,
        "next_frame_two_sided_bound_pct": two_sided_bounds(),
        "commands": {**(earlier_accuracy or {}).get("commands", {}),
                     **{k: v for k, v in COMMANDS.items() if k in groups or (k == "shipped" and shipped)}},
    }
    pred = {"machine": MACHINE,
            "what": "MPJPE per frame ahead on the official test splits beside zero velocity (the last frame "
                    "repeated) and constant velocity, in torso lengths (the window's median torso) and in the "
                    "data's units; improvement over zero velocity in %, mean, spread and runs over seeds",
            "units": UNITS, "datasets": prediction,
            "commands": {k: v for k, v in COMMANDS.items() if k.startswith("predict") or k == "shipped"}}
    return accuracy, pred


def two_sided_bounds() -> dict[str, float]:
    """Per data set, what an estimate of the next frame that also sees the frames after it reaches
    over zero velocity (``bench.prediction_baselines``): a ceiling for predictors of the past."""
    path = RESULTS / "prediction_baselines.json"
    if not path.is_file():
        return {}
    sets = json.loads(path.read_text())["sets"]
    return {name.replace("_", "-"): round(100 * v["two_sided_bound"]["improvement_vs_zero_velocity"], 1)
            for name, v in sets.items() if "two_sided_bound" in v}


def plot(pred: dict[str, Any], path: Path) -> None:
    """Improvement over zero velocity against frames ahead, one line per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=120)
    for name, table in pred["datasets"].items():
        means = [s["mean"] for s in table["improvement_vs_zero_velocity"]]
        spread = [s["std"] for s in table["improvement_vs_zero_velocity"]]
        ax.errorbar(table["frames"], means, yerr=spread, fmt="o-", ms=3, capsize=2, label=name)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axhline(30, color="grey", lw=0.8, ls=":", label="target (30 %)")
    ax.set_xlabel("frames ahead (30 fps; UTD-MHAD 2D: 15 fps)")
    ax.set_ylabel("MPJPE below zero velocity (%)")
    ax.set_title("Coming frames, test splits: self-supervised encoder-decoder (3 seeds)\n"
                 "per set, and the shipped decoder on the merged sets", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="folders of <group>/seed<S>/eval_final.json")
    parser.add_argument("--shipped", type=Path, help="stgcn.eval JSON of the shipped model on data/real_video")
    parser.add_argument("--update", action="store_true",
                        help="keep the entries of --out for groups not given (runs of earlier sessions)")
    parser.add_argument("--out", type=Path, default=RESULTS / "accuracy.json")
    parser.add_argument("--prediction-out", type=Path, default=RESULTS / "prediction.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "prediction.png")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug)

    def body() -> int:
        groups = runs(args.runs)
        if not groups:
            raise ValueError(f"no <group>/seed<S>/eval_final.json under {', '.join(map(str, args.runs))}")
        shipped = json.loads(args.shipped.read_text()) if args.shipped else None
        earlier = json.loads(args.out.read_text()) if args.update else None
        accuracy, pred = collect(groups, shipped, earlier)
        write_results("accuracy", accuracy, args.out)
        print(json.dumps(accuracy["metrics"], indent=1))
        if pred["datasets"]:
            write_results("prediction", pred, args.prediction_out)
            plot(pred, args.plot)
        return 0

    return run_cli(parser.prog, body, debug=args.debug, errors=(ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())

"""How predictable the next frame is at all: classical extrapolations on each set's test split.

    python -m bench.prediction_baselines [DIR ...] [--history 6] [--out PATH]

For every joint present in the last ``history + 1`` frames and the next one, the next frame's
position is guessed by zero velocity (the last frame), constant velocity (the last step again)
and the best linear filter of the last ``history`` steps (one weight per step, shared by every
joint and coordinate, fitted by least squares on the set's training split). The filter is what
plain extrapolation reaches on the set: on smooth motion it follows the velocity; on still
joints with white jitter it averages the jitter away (at most 29 % in root mean square). Where
it barely beats zero velocity, the motion between frames is neither smooth enough to extrapolate
nor jitter around a still pose: what a learned predictor can add there must come from the
body's context, not from each joint's own past.

The two-sided filter estimates frame t+1 from the ``history`` frames up to t *and* the
``history`` frames after t+1 (weights fitted on the training split for the mean Euclidean error,
by iteratively reweighted least squares). Knowing the future as well, it still cannot foresee the
noise of frame t+1 itself; a predictor that sees only the past has less to go on, so where this
estimate falls short of a target, a predictor is not expected to reach it (it is linear: a bound
in that sense, not a proof).

Errors are MPJPE in the data's units (each joint's distance, averaged; the filter minimises the
squared error, so its root mean square is given too), first person slot of each converted
``{train,val}_data.npy``; a set's coordinates are 2D where its ``meta.json`` names the OpenPose
layout, else 3D.

Prints a table and writes ``bench/results/prediction_baselines.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import write_results
from pipeline.cli import add_debug_flag, run_cli, setup_logging

DEFAULT_SETS = ("data/utd_mhad_2d", "data/jhmdb", "data/penn_action", "data/utd_mhad_3d")


def coords_of(folder: Path) -> int:
    meta = folder / "meta.json"
    return 2 if meta.is_file() and json.loads(meta.read_text()).get("layout") == "openpose" else 3


def steps(path: Path, coords: int, history: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``history`` steps ``(n, coords, history)``, newest first, and the next step
    ``(n, coords)`` of every joint present in all those frames (first person slot)."""
    x = np.load(path, mmap_mode="r")
    past, nxt = [], []
    for i in range(0, len(x), 256):  # a chunk of samples at a time: the arrays can be large
        pos = np.asarray(x[i:i + 256, :coords, :, :, 0], np.float64)  # (N, D, T, V)
        present = np.abs(pos).sum(axis=1) > 0
        diff = np.diff(pos, axis=2)  # step t -> t+1, (N, D, T-1, V)
        for t in range(history, pos.shape[2] - 1):
            ok = present[:, t - history:t + 2].all(axis=1)  # (N, V)
            if ok.any():
                past.append(np.stack([diff[:, :, t - 1 - k] for k in range(history)], -1).transpose(0, 2, 1, 3)[ok])
                nxt.append(diff[:, :, t].transpose(0, 2, 1)[ok])
    if not past:
        raise ValueError(f"{path}: no joint present in {history + 2} frames in a row")
    return np.concatenate(past), np.concatenate(nxt)


def around(path: Path, coords: int, history: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames t-history+1..t and t+2..t+history+1 ``(n, coords, 2 * history)`` and frame t+1
    ``(n, coords)``, relative to frame t, of every joint present in all of them (first person slot)."""
    x = np.load(path, mmap_mode="r")
    span, rows = 2 * history + 1, []
    for i in range(0, len(x), 256):
        pos = np.asarray(x[i:i + 256, :coords, :, :, 0], np.float64)
        present = np.abs(pos).sum(axis=1) > 0
        for t in range(history - 1, pos.shape[2] - history - 1):
            ok = present[:, t - history + 1:t + history + 2].all(axis=1)
            if ok.any():
                w = pos[:, :, t - history + 1:t + history + 2] - pos[:, :, t:t + 1]
                rows.append(w.transpose(0, 3, 1, 2)[ok])  # (n, coords, span)
    if not rows:
        raise ValueError(f"{path}: no joint present in {span} frames in a row")
    w = np.concatenate(rows)
    return np.delete(w, history, axis=2), w[:, :, history]


def two_sided_bound(folder: Path, history: int, iterations: int = 20) -> dict[str, Any]:
    """MPJPE on the test split of the two-sided filter and of zero velocity on the same joints."""
    d = coords_of(folder)
    both, nxt = around(folder / "train_data.npy", d, history)
    a, b = both.reshape(-1, both.shape[-1]), nxt.reshape(-1)
    weights, *_ = np.linalg.lstsq(a, b, rcond=None)
    for _ in range(iterations):  # reweighted by 1 / each joint's Euclidean error: the MPJPE fit
        r = np.linalg.norm((a @ weights - b).reshape(-1, d), axis=1)
        scale = np.repeat(1 / np.sqrt(np.maximum(r, 1e-6)), d)
        weights, *_ = np.linalg.lstsq(a * scale[:, None], b * scale, rcond=None)
    both, nxt = around(folder / "val_data.npy", d, history)
    zero = float(np.linalg.norm(nxt, axis=-1).mean())
    two = float(np.linalg.norm(nxt - both @ weights, axis=-1).mean())
    return {"joints": int(len(nxt)), "mpjpe_zero_velocity": zero, "mpjpe_two_sided_filter": two,
            "improvement_vs_zero_velocity": 1 - two / zero}


def baselines(folder: Path, history: int) -> dict[str, Any]:
    """MPJPE of each guess on the test split; the linear filter fitted on the training split."""
    d = coords_of(folder)
    past, nxt = steps(folder / "train_data.npy", d, history)
    weights, *_ = np.linalg.lstsq(past.reshape(-1, history), nxt.reshape(-1), rcond=None)
    past, nxt = steps(folder / "val_data.npy", d, history)
    guesses = {"zero_velocity": np.zeros_like(nxt), "constant_velocity": past[..., 0], "linear_filter": past @ weights}
    mpjpe = {k: float(np.linalg.norm(nxt - g, axis=-1).mean()) for k, g in guesses.items()}
    rmse = {k: float(np.sqrt(((nxt - g) ** 2).sum(-1).mean())) for k, g in guesses.items()}
    return {"coords": d, "joints": int(len(nxt)), "mpjpe": mpjpe, "rmse": rmse,
            "improvement_vs_zero_velocity": {k: 1 - v / mpjpe["zero_velocity"] for k, v in mpjpe.items()
                                             if k != "zero_velocity"},
            "rmse_improvement_vs_zero_velocity": {k: 1 - v / rmse["zero_velocity"] for k, v in rmse.items()
                                                  if k != "zero_velocity"},
            "filter_weights_newest_first": [round(float(w), 4) for w in weights],
            "two_sided_bound": two_sided_bound(folder, history)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.prediction_baselines", description=__doc__.split("\n")[0])
    p.add_argument("sets", nargs="*", type=Path, default=[Path(s) for s in DEFAULT_SETS],
                   help="converted data set folders (default: %(default)s)")
    p.add_argument("--history", type=int, default=6, help="past steps the linear filter reads")
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/prediction_baselines.json)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    setup_logging(args.debug)

    def body() -> int:
        rows = {}
        for folder in args.sets:
            r = rows[folder.name] = baselines(folder, args.history)
            imp = r["improvement_vs_zero_velocity"]
            print(f"{folder.name:14s} MPJPE zero velocity {r['mpjpe']['zero_velocity']:.5f}, constant velocity "
                  f"{imp['constant_velocity']:+.1%}, linear filter of {args.history} steps "
                  f"{imp['linear_filter']:+.1%} (root mean square: {r['rmse_improvement_vs_zero_velocity']['linear_filter']:+.1%}; "
                  f"{r['joints']} joints); the two-sided bound {r['two_sided_bound']['improvement_vs_zero_velocity']:+.1%}")
        write_results("prediction_baselines", {
            "what": "next-frame MPJPE on each test split (data units) of zero velocity, constant velocity and the "
                    "least-squares linear filter of the last steps fitted on the training split; the two-sided "
                    "filter (past and future frames, fitted for MPJPE) is a ceiling for predictors of the past",
            "config": {"history": args.history, "sets": [str(s) for s in args.sets]},
            "metrics": {**{f"linear_filter_improvement_{k}": round(v["improvement_vs_zero_velocity"]["linear_filter"], 4)
                           for k, v in rows.items()},
                        **{f"two_sided_bound_{k}": round(v["two_sided_bound"]["improvement_vs_zero_velocity"], 4)
                           for k, v in rows.items()}},
            "sets": rows}, args.out)
        return 0

    return run_cli(p.prog, body, debug=args.debug, errors=(ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())

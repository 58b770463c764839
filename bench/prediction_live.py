"""The prediction error measured live: the shipped model's next frames against what real videos then show.

    python -m bench.prediction_live [--videos NAME ...] [--max-frames N] [--weights CKPT]
                                    [--out bench/results/prediction_live_cpu.json]

Each video runs through the real pipeline, ``run_pipeline.py --video V --future --output F
--record DIR --quiet`` (MediaPipe pose estimation and person tracking in the capture worker,
ZeroMQ, the inference worker; its default settings, no ``--stride``). The recording holds the
skeletons the inference worker took in, frame by frame, with the capture worker's track ids (the
ids the results name); the results hold, per window ending at frame ``seq`` and per person, the
predicted skeletons of frames seq+1..seq+H (``future``).

For each result, person and h in 1..H, when the recording has that person's track at frames
seq-1, seq and seq+h, three guesses of frame seq+h are scored against the recorded one: the
model (``future[h-1]``), zero velocity (the skeleton at seq, the last frame the model saw) and
constant velocity (seq + h * (seq - (seq-1))). A joint counts when it is present (c > 0) in the
recorded frame seq+h, in the frames seq and seq-1 and in the prediction, so the three are scored on
the same joints; only joints 0..13 (the model ignores eyes and ears). The error is the mean
per-joint Euclidean distance (MPJPE), pooled over every (result, person, joint) sample, in image
fractions (x / width, y / height, as the pipeline gives them) and in torso lengths (neck to the
mid-point of the hips in the recorded frame seq; persons without one are left out of that unit).
Reported per video and over all, per frame ahead, with the model's improvement over zero
velocity (1 - model / zero) and each video's milliseconds per frame.

The track ids are checked on the data: every result's person ids must be track ids of the
recording, the share of (result, person) whose track is in the recorded frame seq is given, and,
in frames with two or more people, how often the recorded skeleton nearest to a person's predicted
next frame is that person's own track.

Prints a table and writes ``{"machine", "date", "command", "config", "overall", "videos"}`` JSON
(default ``bench/results/prediction_live_cpu.json``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.common import ROOT, RESULTS, machine, shown, write_results
from bench.live import file_digest, read_results, run_logged, trim_video
from pipeline.cli import add_debug_flag, run_cli, setup_logging
from pipeline.recording import SUFFIX, read_recording

log = logging.getLogger("bench.prediction_live")

VIDEOS_DIR = ROOT.parent / "shared" / "data" / "videos"
DEFAULT_VIDEOS = ("clean_and_jerk.mp4", "exercise_three_people.avi", "tai_chi.mp4", "skateboarding.mp4")
BODY_JOINTS = 14  # OpenPose-18 joints 0..13; 14..17 (eyes, ears) are not predicted
NECK, RIGHT_HIP, LEFT_HIP = 1, 8, 11
METHODS = ("model", "zero_velocity", "constant_velocity")

Skeletons = dict[int, dict[int, np.ndarray]]  # seq -> track id -> (V, 3) keypoints


# --------------------------------------------------------------------------- running the pipeline

@dataclass
class Run:
    """One video's pipeline run: its result records, its recording's skeletons and start meta."""

    video: str
    results: list[dict[str, Any]]
    skeletons: Skeletons
    meta: dict[str, Any]
    seconds: float


def run_video(video: Path, workdir: Path, weights: str | None, max_frames: int | None, timeout: float) -> Run:
    """``video`` through run_pipeline.py with ``--future --record``; its results and recording."""
    name = video.name.rsplit(".", 1)[0]
    source = video
    if max_frames:
        source = trim_video(video, workdir / f"{name}_first{max_frames}.avi", max_frames)
    output, record, log_path = workdir / f"{name}.jsonl", workdir / f"{name}_rec", workdir / f"{name}.log"
    argv = [sys.executable, str(ROOT / "run_pipeline.py"), "--video", str(source), "--future",
            "--output", str(output), "--record", str(record), "--quiet"]
    if weights:
        argv += ["--weights", weights]
    log.info("%s: $ %s", video.name, " ".join(argv))
    seconds = run_logged(argv, video.name, log_path, timeout)
    streams = read_results(output)
    recordings = sorted(record.glob(f"*{SUFFIX}"))
    if len(streams) != 1 or len(recordings) != 1:
        raise RuntimeError(f"{video.name}: expected one stream's results and one recording, got "
                           f"{len(streams)} and {len(recordings)} (log: {log_path})")
    rec = read_recording(recordings[0])
    if rec.start is None or rec.start.stream not in streams:
        raise RuntimeError(f"{recordings[0]}: not the recording of stream {next(iter(streams))!r}")
    skeletons: Skeletons = {}
    for frame in rec.frames:
        skeletons[frame.seq] = {p.track: p.keypoints for p in frame.persons}
    log.info("%s: %d results, %d recorded frames in %.1f s", video.name, len(streams[rec.start.stream]),
             len(rec.frames), seconds)
    return Run(video.name, streams[rec.start.stream], skeletons, dict(rec.start.meta), seconds)


# --------------------------------------------------------------------------- scoring

def torso_length(skeleton: np.ndarray) -> float | None:
    """Neck to the mid-point of the hips, None when one of the three is missing or it is zero."""
    if skeleton[[NECK, RIGHT_HIP, LEFT_HIP], 2].min() <= 0:
        return None
    hips = (skeleton[RIGHT_HIP, :2] + skeleton[LEFT_HIP, :2]) / 2
    length = float(np.linalg.norm(skeleton[NECK, :2] - hips))
    return length if length > 0 else None


@dataclass
class Errors:
    """Per-joint distances by frame ahead and method, in image fractions and in torso lengths."""

    horizon: int
    frac: dict[tuple[int, str], list[np.ndarray]] = field(default_factory=dict)
    torso: dict[tuple[int, str], list[np.ndarray]] = field(default_factory=dict)

    def add(self, h: int, method: str, dist: np.ndarray, torso: float | None) -> None:
        self.frac.setdefault((h, method), []).append(dist)
        if torso is not None:
            self.torso.setdefault((h, method), []).append(dist / torso)

    def merge(self, other: Errors) -> None:
        self.horizon = max(self.horizon, other.horizon)
        for mine, theirs in ((self.frac, other.frac), (self.torso, other.torso)):
            for key, parts in theirs.items():
                mine.setdefault(key, []).extend(parts)

    def table(self, ms_per_frame: float | None = None) -> list[dict[str, Any]]:
        """One row per frame ahead: MPJPE of each method in both units, improvement, sample counts."""
        rows = []
        for h in range(1, self.horizon + 1):
            row: dict[str, Any] = {"h": h}
            if ms_per_frame is not None:
                row["ms_ahead"] = round(h * ms_per_frame, 1)
            for unit, store in (("frac", self.frac), ("torso", self.torso)):
                means = {}
                for method in METHODS:
                    parts = store.get((h, method), [])
                    values = np.concatenate(parts) if parts else np.zeros(0)
                    means[method] = float(values.mean()) if values.size else None
                    row[f"{method}_{unit}"] = None if means[method] is None else round(means[method], 6)
                row[f"samples_{unit}"] = int(sum(p.size for p in store.get((h, "model"), [])))
                model, zero = means["model"], means["zero_velocity"]
                better = round(1 - model / zero, 4) if model is not None and zero else None
                row[f"improvement_over_zero_{unit}"] = better
            rows.append(row)
        return rows


def nearest_track(prediction: np.ndarray, people: dict[int, np.ndarray]) -> int | None:
    """The track whose skeleton is nearest the predicted one (MPJPE on their common body joints)."""
    best, best_error = None, np.inf
    for track, skeleton in people.items():
        mask = (prediction[:BODY_JOINTS, 2] > 0) & (skeleton[:BODY_JOINTS, 2] > 0)
        if not mask.any():
            continue
        gap = prediction[:BODY_JOINTS, :2][mask] - skeleton[:BODY_JOINTS, :2][mask]
        error = float(np.linalg.norm(gap, axis=1).mean())
        if error < best_error:
            best, best_error = track, error
    return best


def score_run(run: Run) -> tuple[Errors, dict[str, Any]]:
    """The joint errors of every (result, person, h) the recording can check, and the track-id checks."""
    horizons = {len(p["future"]) for r in run.results for p in r["people"] if p.get("future")}
    if not horizons:
        raise RuntimeError(f"{run.video}: no result carries 'future' (was --future honoured?)")
    errors = Errors(max(horizons))
    recorded_tracks = {t for people in run.skeletons.values() for t in people}
    checks = {"result_seqs_recorded": 0, "person_results": 0, "ids_not_in_recording": [],
              "track_at_seq": 0, "track_at_seq_and_before": 0, "identity_checked": 0, "identity_nearest_own": 0,
              "no_torso": 0}
    for result in run.results:
        seq = result["seq"]
        now, before = run.skeletons.get(seq), run.skeletons.get(seq - 1, {})
        checks["result_seqs_recorded"] += now is not None
        for person in result["people"]:
            track, future = int(person["id"]), person.get("future")
            checks["person_results"] += 1
            if track not in recorded_tracks:
                checks["ids_not_in_recording"].append(track)
            if not future or now is None or track not in now:
                continue
            checks["track_at_seq"] += 1
            following = run.skeletons.get(seq + 1, {})
            if len(following) >= 2 and track in following:
                checks["identity_checked"] += 1
                checks["identity_nearest_own"] += nearest_track(np.asarray(future[0], np.float32), following) == track
            if track not in before:
                continue
            checks["track_at_seq_and_before"] += 1
            last, prev = now[track][:BODY_JOINTS], before[track][:BODY_JOINTS]
            torso = torso_length(now[track])
            checks["no_torso"] += torso is None
            seen = (last[:, 2] > 0) & (prev[:, 2] > 0)
            for h, predicted in enumerate(future, start=1):
                actual = run.skeletons.get(seq + h, {}).get(track)
                if actual is None:
                    continue
                actual = actual[:BODY_JOINTS]
                predicted = np.asarray(predicted, np.float32)[:BODY_JOINTS]
                mask = seen & (actual[:, 2] > 0) & (predicted[:, 2] > 0)
                if not mask.any():
                    continue
                guesses = {"model": predicted[:, :2], "zero_velocity": last[:, :2],
                           "constant_velocity": last[:, :2] + h * (last[:, :2] - prev[:, :2])}
                for method, guess in guesses.items():
                    errors.add(h, method, np.linalg.norm(guess[mask] - actual[mask, :2], axis=1), torso)
    checks["ids_not_in_recording"] = sorted(set(checks["ids_not_in_recording"]))
    checks["horizons"] = sorted(horizons)
    checks["recorded_tracks"] = len(recorded_tracks)
    checks["result_tracks"] = len({int(p["id"]) for r in run.results for p in r["people"]})
    n = checks["identity_checked"]
    checks["identity_nearest_own_share"] = round(checks["identity_nearest_own"] / n, 4) if n else None
    return errors, checks


# --------------------------------------------------------------------------- report

def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(overall: list[dict[str, Any]], videos: list[dict[str, Any]]) -> None:
    """The per-frame-ahead table over all videos, then each video at h = 1 and at its horizon."""
    print(f"\n{'h':>3} {'samples':>8} {'model':>8} {'zero':>8} {'const':>8} {'impr':>7}   "
          f"{'model/T':>8} {'zero/T':>8} {'const/T':>8} {'impr/T':>7}   (image fractions; /T torso lengths)")
    for row in overall:
        print(f"{row['h']:>3} {row['samples_frac']:>8} {fmt(row['model_frac'])} {fmt(row['zero_velocity_frac']):>8} "
              f"{fmt(row['constant_velocity_frac']):>8} {fmt(row['improvement_over_zero_frac'], 3):>7}   "
              f"{fmt(row['model_torso']):>8} {fmt(row['zero_velocity_torso']):>8} "
              f"{fmt(row['constant_velocity_torso']):>8} {fmt(row['improvement_over_zero_torso'], 3):>7}")
    print(f"\n{'video':<28} {'ms/frame':>8} {'h':>3} {'samples':>8} {'model':>8} {'zero':>8} {'const':>8} {'impr':>7}")
    for v in videos:
        for row in (v["per_h"][0], v["per_h"][-1]):
            print(f"{v['video']:<28} {v['ms_per_frame']:>8.1f} {row['h']:>3} {row['samples_frac']:>8} "
                  f"{fmt(row['model_frac'])} {fmt(row['zero_velocity_frac']):>8} "
                  f"{fmt(row['constant_velocity_frac']):>8} {fmt(row['improvement_over_zero_frac'], 3):>7}")
    print()


def resolve_video(name: str, folder: Path) -> Path:
    """A video given by path, or by name in the shared videos folder."""
    path = Path(name)
    if not path.is_file():
        path = folder / name
    if not path.is_file():
        raise ValueError(f"{name}: no such video (neither a path nor in {folder})")
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.prediction_live", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:]))
    p.add_argument("--videos", nargs="+", default=list(DEFAULT_VIDEOS),
                   help=f"video names in --videos-dir or paths (default: {' '.join(DEFAULT_VIDEOS)})")
    p.add_argument("--videos-dir", default=str(VIDEOS_DIR),
                   help="where named videos are (default ../shared/data/videos)")
    p.add_argument("--max-frames", type=int, help="run only the first N frames of each video (a trimmed copy)")
    p.add_argument("--weights", help="checkpoint (default: the pipeline's, the shipped model)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds one pipeline run may take (default 900)")
    p.add_argument("--keep", metavar="DIR", help="keep the results, recordings and logs here (default: a temp dir)")
    p.add_argument("--out", default=str(RESULTS / "prediction_live_cpu.json"),
                   help="JSON output (default bench/results/prediction_live_cpu.json)")
    add_debug_flag(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.debug)
    given = shlex.join(sys.argv[1:] if argv is None else list(argv))
    command = f"python -m bench.prediction_live {given}".strip()

    def body() -> int:
        import stgcn

        videos = [resolve_video(v, Path(args.videos_dir)) for v in args.videos]
        weights = Path(args.weights) if args.weights else Path(stgcn.DEFAULT_WEIGHTS)
        overall, rows, ms = None, [], {}
        with tempfile.TemporaryDirectory(prefix="bench-prediction-live-") as tmp:
            workdir = Path(args.keep) if args.keep else Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            for video in videos:
                run = run_video(video, workdir, args.weights, args.max_frames, args.timeout)
                errors, checks = score_run(run)
                if checks["ids_not_in_recording"]:
                    raise RuntimeError(f"{video.name}: result person ids {checks['ids_not_in_recording']} are not "
                                       f"track ids of the recording")
                fps = float(run.meta.get("fps") or 30.0)
                ms[video.name] = round(1000.0 / fps, 2)
                rows.append({"video": video.name, "fps": round(fps, 3), "ms_per_frame": ms[video.name],
                             "width": run.meta.get("width"), "height": run.meta.get("height"),
                             "recorded_frames": len(run.skeletons), "results": len(run.results),
                             "pipeline_seconds": round(run.seconds, 1), "track_ids": checks,
                             "per_h": errors.table(ms[video.name])})
                if overall is None:
                    overall = errors
                else:
                    overall.merge(errors)
        assert overall is not None
        table = overall.table()
        print_report(table, rows)
        config = {"videos": [os.path.relpath(v, ROOT) for v in videos], "max_frames": args.max_frames,
                  "weights": shown(weights),
                  "weights_sha256": file_digest(weights), "horizon": overall.horizon,
                  "joints": f"0..{BODY_JOINTS - 1}", "pipeline": "run_pipeline.py --future --record (default settings)",
                  "units": {"frac": "image fractions (x / width, y / height)",
                            "torso": "torso lengths (neck to mid-hip of the recorded frame seq)"},
                  "ms_per_frame": ms}
        write_results("prediction_live_cpu", {"machine": machine(), "command": command, "config": config,
                                              "overall": table, "videos": rows}, args.out)
        return 0

    return run_cli("bench.prediction_live", body, debug=args.debug, errors=(ValueError, OSError, RuntimeError))


if __name__ == "__main__":
    sys.exit(main())

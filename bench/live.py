"""Live accuracy: labelled real videos end to end through run_pipeline.py, and test clips replayed.

    python -m bench.live [--clips NAME,...] [--max-frames N] [--weights CKPT] [--stride N]
                         [--replay-test DATA_DIR --per-class N] [--out bench/results/live_cpu.json]

Part 1 (live clips, ``bench/live_clips.yaml``): each real video of the shared data folder runs
through ``run_pipeline.py --video CLIP --output F --quiet``: the real capture worker (MediaPipe
pose estimation, person tracking), the real inference worker and sink, with the pipeline's own
settings unless ``--weights``, ``--stride``, ``--device`` or ``--config`` say otherwise. From the
JSON Lines: per person (track id) the majority label over their windows; the clip's answer is
the majority label of the person with the most windows (ties: the label seen first). An
in-class clip is correct when that label is the model's class of the clip's class (matched by
name, else through ``configs/classes/synonyms.yaml``; a class the model lacks counts as an
error, as in ``stgcn.eval``); an out-of-class clip is right when it claims no action (majority
"unknown", or nobody found). Window-level figures count person-windows (one per person per
classified window), pooled over the clips. ``label`` is what the pipeline shows: the person's
steady label (``pipeline.smoothing``: it starts at "unknown" and needs 3 of the last 5 windows
to change); "top-1" figures score the window's own best class instead (``top[0]``, before the
unknown answer and the smoothing), the model alone.

Part 2 (``--replay-test DATA_DIR``): ``--per-class`` test samples per class of a converted
st-gcn data set (``val_data.npy``, ``val_label.pkl``, ``class_names.txt``, optional
``sources.json`` naming each sample's data set), spread evenly over each class's samples, go
through one ``python -m workers.inference``, ``python -m workers.replay val_data.npy --index I
--fast`` per sample (``--jobs`` streams in flight) and ``python -m workers.sinks --output``, as real
processes on loopback (``run_pipeline.py`` replays only the first sample of an npy file). No
pose estimator: the skeletons are the data set's. Reported per source data set: the share of
person-windows of classes the model knows that keep their label, the clip-level majority
accuracy, and the unknown share on the classes the model lacks.

Prints a table and writes ``{"machine", "date", "config", "metrics", "clips", "per_class",
"replay"}`` JSON (default ``bench/results/live_cpu.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import yaml
from tqdm import tqdm

from bench.common import ROOT, RESULTS, machine, shown, stop_process, write_results
from pipeline.cli import add_debug_flag, run_cli, setup_logging
from pipeline.results import UNKNOWN
from pipeline.settings import read_yaml
from stgcn.checkpoint import load_model
from stgcn.open_set import OpenSet, auroc

log = logging.getLogger("bench.live")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
CLIPS_FILE = ROOT / "bench" / "live_clips.yaml"
SYNONYMS_FILE = ROOT / "configs" / "classes" / "synonyms.yaml"
NO_PERSON = "no person"


@dataclass(frozen=True)
class Clip:
    """A labelled video: its path, its class (None: out of class), how many people it shows."""

    name: str
    file: str
    path: Path
    cls: str | None
    people: int | None
    shows: str


# --------------------------------------------------------------------------- inputs

def load_clips(path: Path, shared: Path) -> list[Clip]:
    """The clips of a clips YAML, their files found under ``shared``; ValueError for a bad file."""
    entries = read_yaml(Path(path)).get("clips")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected 'clips:' with a list of {{file, class, people, shows}}")
    clips = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise ValueError(f"{path}: every clip needs a 'file' (got {entry!r})")
        cls = entry.get("class")
        if cls is not None and not isinstance(cls, str):
            raise ValueError(f"{path}: {entry['file']}: 'class' must be a class name or null")
        clips.append(Clip(Path(entry["file"]).name, entry["file"], shared / entry["file"], cls, entry.get("people"),
                          str(entry.get("shows", ""))))
    return clips


def pick_clips(clips: list[Clip], names: str | None) -> list[Clip]:
    """The clips named in the comma-separated ``names`` (file name, with or without its extension)."""
    if not names:
        return clips
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    by_name = {c.name: c for c in clips} | {c.name.rsplit(".", 1)[0]: c for c in clips}
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise ValueError(f"--clips: no clip named {', '.join(missing)} (have {', '.join(c.name for c in clips)})")
    return [by_name[n] for n in wanted]


def model_class_names(weights: str | None, config: str | None) -> tuple[Path, list[str]]:
    """The checkpoint the pipeline will load (flag, else the config's, else the default) and its class names."""
    import stgcn
    from pipeline.settings import load_settings

    path = Path(weights or load_settings(config).inference.weights or stgcn.DEFAULT_WEIGHTS)
    model = stgcn.load_model(path)
    names = model.config.get("class_names") or [str(i) for i in range(model.config["model"]["num_class"])]
    return path, list(names)


def model_targets(classes: Sequence[str], model_names: Sequence[str], synonyms: Path | None) -> dict[str, str | None]:
    """The model's class name for each data class name (None: the model lacks it)."""
    from stgcn.evaluation import load_synonyms, map_classes

    mapping = map_classes(list(classes), list(model_names), load_synonyms(synonyms))
    return mapping.as_dict()


def file_digest(path: Path) -> str:
    """The first 16 hex digits of a file's SHA-256: which checkpoint a figure was measured with."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def trim_video(src: Path, dst: Path, frames: int) -> Path:
    """The first ``frames`` frames of ``src`` as an MJPG ``.avi`` at the same rate."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise ValueError(f"{src}: cannot open the video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    writer = None
    try:
        for _ in range(frames):
            ok, image = cap.read()
            if not ok:
                break
            if writer is None:
                h, w = image.shape[:2]
                writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
            writer.write(image)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if writer is None:
        raise ValueError(f"{src}: no frames could be read")
    return dst


def read_results(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The result records of a JSON Lines file by stream, in file order (other record types skipped)."""
    streams: dict[str, list[dict[str, Any]]] = {}
    if not path.exists():
        return streams
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("type", "result") == "result" and "people" in record:
            streams.setdefault(record["stream"], []).append(record)
    return streams


# --------------------------------------------------------------------------- scoring

def majority(labels: Iterable[str]) -> str | None:
    """The most frequent label (ties: the one seen first), None for no labels."""
    counts = Counter(labels)
    return counts.most_common(1)[0][0] if counts else None


def share(part: int, whole: int) -> float | None:
    """``part / whole`` rounded to 4 places, None for an empty whole."""
    return round(part / whole, 4) if whole else None


def score_stream(records: list[dict[str, Any]], target: str | None, in_class: bool) -> dict[str, Any]:
    """What one stream's results say: per person and for the clip (see the module docstring).

    ``target`` is the model's class name of an in-class clip (None: the model lacks its class).
    """
    per_person: dict[int, list[str]] = {}
    people_counts, top_scores = [], []
    top1 = 0
    for record in sorted(records, key=lambda r: r["seq"]):
        people_counts.append(len(record["people"]))
        for person in record["people"]:
            per_person.setdefault(int(person["id"]), []).append(person["label"])
            top = person.get("top") or []
            top1 += int(target is not None and bool(top) and top[0]["label"] == target)
            if top:
                top_scores.append(float(top[0]["score"]))
    persons = [{"id": pid, "windows": len(labels), "majority_label": majority(labels),
                "labels": dict(Counter(labels).most_common())}
               for pid, labels in sorted(per_person.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    all_labels = [label for labels in per_person.values() for label in labels]
    person_windows = len(all_labels)
    unknown = sum(label == UNKNOWN for label in all_labels)
    right = sum(label == target for label in all_labels) if in_class and target is not None else 0
    answer = persons[0]["majority_label"] if persons else None
    out = {
        "windows": len(records), "windows_without_people": sum(n == 0 for n in people_counts),
        "person_windows": person_windows,
        "people_per_window": {"mean": round(float(np.mean(people_counts)), 3) if people_counts else None,
                              "max": max(people_counts, default=0),
                              "histogram": {str(k): v for k, v in sorted(Counter(people_counts).items())}},
        "people": len(persons), "main_person": persons[0]["id"] if persons else None,
        "majority_label": answer, "answer": answer if answer is not None else NO_PERSON,
        "unknown_windows": unknown, "unknown_share": share(unknown, person_windows),
        "right_windows": right, "top1_windows": top1,
        "top_scores": top_scores,  # each person-window's top probability: the open-set score (not written)
    }
    if in_class:
        out["correct"] = answer is not None and answer == target
        out["known_window_accuracy"] = share(right, person_windows)
        out["known_top1_window_accuracy"] = share(top1, person_windows)
    else:
        out["no_action_claimed"] = answer in (None, UNKNOWN)
    out["persons"] = persons
    return out


def summarise_live(clips: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The headline metrics and the per-class accuracy of scored live clips."""
    known = [c for c in clips if c["in_class"]]
    out_of_class = [c for c in clips if not c["in_class"]]
    per_class: dict[str, dict[str, Any]] = {}
    for c in known:
        row = per_class.setdefault(c["class"], {"model_class": c["model_class"], "clips": 0, "correct": 0})
        row["clips"] += 1
        row["correct"] += int(c["correct"])
    for row in per_class.values():
        row["accuracy"] = share(row["correct"], row["clips"])
    metrics = {
        "live_clip_accuracy": share(sum(c["correct"] for c in known), len(known)),
        "live_known_window_accuracy": share(sum(c["right_windows"] for c in known),
                                            sum(c["person_windows"] for c in known)),
        "live_known_top1_window_accuracy": share(sum(c["top1_windows"] for c in known),
                                                 sum(c["person_windows"] for c in known)),
        "live_unknown_rate_out_of_class": share(sum(c["unknown_windows"] for c in out_of_class),
                                                sum(c["person_windows"] for c in out_of_class)),
        "live_unknown_clips_out_of_class": share(sum(c["no_action_claimed"] for c in out_of_class),
                                                 len(out_of_class)),
        "live_clips_in_class": len(known), "live_clips_out_of_class": len(out_of_class),
        "live_windows_without_people": share(sum(c["windows_without_people"] for c in clips),
                                             sum(c["windows"] for c in clips)),
    }
    return metrics, per_class


# --------------------------------------------------------------------------- part 1: live clips

def pipeline_flags(args: argparse.Namespace) -> list[str]:
    """The pipeline options both parts pass on (weights, stride, device, config)."""
    flags = []
    for flag, value in (("--weights", args.weights), ("--stride", args.stride), ("--device", args.device),
                        ("--config", args.config)):
        if value is not None:
            flags += [flag, str(value)]
    return flags


def run_clip(clip: Clip, args: argparse.Namespace, workdir: Path, timeout: float) -> tuple[list[dict], float]:
    """One clip through run_pipeline.py: its result records and the seconds the run took."""
    video = clip.path
    if args.max_frames:
        video = trim_video(clip.path, workdir / f"{clip.name.rsplit('.', 1)[0]}_first{args.max_frames}.avi",
                           args.max_frames)
    output = workdir / f"{clip.name}.jsonl"
    log_path = workdir / f"{clip.name}.log"
    argv = [sys.executable, str(ROOT / "run_pipeline.py"), "--video", str(video), "--output", str(output),
            "--quiet"] + pipeline_flags(args)
    seconds = run_logged(argv, clip.name, log_path, timeout)
    streams = read_results(output)
    return [r for records in streams.values() for r in records], seconds


def run_logged(argv: list[str], name: str, log_path: Path, timeout: float) -> float:
    """Run a pipeline command with its output in ``log_path``; its seconds. RuntimeError (naming
    ``name`` and the log's last line) when it fails or outlasts ``timeout``."""
    t0 = time.time()
    with open(log_path, "w") as logf:
        try:
            code = subprocess.run(argv, cwd=ROOT, env=ENV, stdout=logf, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{name}: run_pipeline.py did not finish in {timeout:.0f} s (log: {log_path})") from None
    if code != 0:
        raise RuntimeError(f"{name}: run_pipeline.py exited {code}: {last_line(log_path)}")
    return time.time() - t0


def last_line(path: Path) -> str:
    """The last non-empty line of a log file (what went wrong, usually)."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def live_part(args: argparse.Namespace, model_names: list[str], workdir: Path) -> dict[str, Any]:
    """Part 1: every picked clip through run_pipeline.py, scored."""
    clips = pick_clips(load_clips(Path(args.clips_file), Path(args.shared) / "data"), args.clips)
    for clip in clips:
        if not clip.path.is_file():
            raise ValueError(f"{clip.path}: no such video (--shared DIR names the shared data folder)")
    targets = model_targets([c.cls for c in clips if c.cls], model_names, args.synonyms)
    scored = []
    for i, clip in enumerate(clips, 1):
        records, seconds = run_clip(clip, args, workdir, args.clip_timeout)
        target = targets.get(clip.cls) if clip.cls else None
        row = {"clip": clip.name, "file": clip.file, "class": clip.cls, "in_class": clip.cls is not None,
               "model_class": target, "people_expected": clip.people, "seconds": round(seconds, 1),
               **score_stream(records, target, clip.cls is not None)}
        verdict = (f"correct {row['correct']}" if row["in_class"] else f"no action claimed {row['no_action_claimed']}")
        log.info("clip %d/%d %s: %d windows, %d people, answer %s, unknown %s, %s (%.0f s)", i, len(clips),
                 clip.name, row["windows"], row["people"], row["answer"], row["unknown_share"], verdict, seconds)
        scored.append(row)
    metrics, per_class = summarise_live(scored)
    return {"metrics": metrics, "per_class": per_class, "clips": scored,
            "missing_classes": sorted({c.cls for c in clips if c.cls and targets.get(c.cls) is None})}


# --------------------------------------------------------------------------- part 2: replayed test clips

def load_test_set(data_dir: Path) -> tuple[list[str], np.ndarray, list[str], int]:
    """Class names, test labels, each test sample's source data set and the sample count."""
    names_path, labels_path, data_path = (data_dir / f for f in ("class_names.txt", "val_label.pkl", "val_data.npy"))
    for path in (names_path, labels_path, data_path):
        if not path.is_file():
            raise ValueError(f"{path}: missing (--replay-test wants a converted st-gcn data set)")
    class_names = [line.strip() for line in names_path.read_text().splitlines() if line.strip()]
    with open(labels_path, "rb") as fh:
        _, labels = pickle.load(fh)
    labels = np.asarray(labels, dtype=np.int64)
    samples = int(np.load(data_path, mmap_mode="r").shape[0])
    if samples != len(labels):
        raise ValueError(f"{data_dir}: {samples} samples in val_data.npy, {len(labels)} labels in val_label.pkl")
    sources_path = data_dir / "sources.json"
    if sources_path.is_file():
        sources = json.loads(sources_path.read_text()).get("val") or []
        if len(sources) != samples:
            raise ValueError(f"{sources_path}: names {len(sources)} test samples, the data holds {samples}")
    else:
        sources = [data_dir.name] * samples
    return class_names, labels, [str(s) for s in sources], samples


def pick_samples(labels: np.ndarray, per_class: int) -> list[int]:
    """Up to ``per_class`` samples of each class, evenly spread over its samples, in index order."""
    picked: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        take = np.unique(np.linspace(0, len(idx) - 1, min(per_class, len(idx))).round().astype(int))
        picked += idx[take].tolist()
    return sorted(picked)


def sample_frames(data: np.ndarray, index: int) -> int:
    """The frames a replay of sample ``index`` sends: up to its last non-empty one (as workers.replay)."""
    valid = np.flatnonzero(np.abs(np.asarray(data[index])).sum(axis=(0, 2, 3)) > 0)
    return int(valid[-1]) + 1 if len(valid) else 0


class ReplayRig:
    """One inference worker and one sink as real processes on loopback, and replay workers sent to them.

    At most ``jobs`` streams are in flight (started and not yet ended at the worker): a replay
    sends its whole sample at once and exits, and a worker far behind must not be left holding
    the frames of many streams whose senders are gone. A subscriber here follows the worker's
    end records for that; the sink process writes the results.
    """

    def __init__(self, args: argparse.Namespace, workdir: Path, streams: int) -> None:
        from pipeline.endpoints import free_endpoints
        from pipeline.transport import ResultSubscriber

        self.frames_ep, self.results_ep = free_endpoints(2)
        self.workdir, self.output = workdir, workdir / "replay.jsonl"
        overlay = workdir / "replay_pipeline.yaml"  # a quick stats record shows the worker is up
        base = (yaml.safe_load(Path(args.config).read_text()) if args.config else None) or {}
        base.setdefault("inference", {})["stats_interval_s"] = 0.5
        overlay.write_text(json.dumps(base))
        py = [sys.executable, "-m"]
        common = ["--config", str(overlay), "--quiet"]
        inference = py + ["workers.inference", "--listen", self.frames_ep, "--publish", self.results_ep] + common
        for flag, value in (("--weights", args.weights), ("--stride", args.stride), ("--device", args.device)):
            if value is not None:
                inference += [flag, str(value)]
        self.replay_argv = py + ["workers.replay", "--connect", self.frames_ep, "--fast"] + common
        self.logs = {"inference": workdir / "inference.log", "sink": workdir / "sink.log"}
        self.sub = ResultSubscriber(self.results_ep)
        self.sink = self._start(py + ["workers.sinks", "--connect", self.results_ep, "--output", str(self.output),
                                      "--expect", str(streams)] + common, "sink")
        self.worker = self._start(inference, "inference")
        self.ended: set[str] = set()
        self.stats: dict[str, Any] = {}

    def _start(self, argv: list[str], name: str) -> subprocess.Popen:
        with open(self.logs[name], "w") as out:
            return subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT)

    def pump(self, timeout_ms: int = 100) -> None:
        """Take the records that arrived: stream ends and the worker's stats."""
        from pipeline.results import StreamEnded, WorkerStats

        record = self.sub.recv(timeout_ms=timeout_ms)
        while record is not None:
            if isinstance(record, StreamEnded):
                self.ended.add(record.stream)
            elif isinstance(record, WorkerStats):
                self.stats = record.stats
            record = self.sub.recv(timeout_ms=0)
        if self.worker.poll() is not None:
            raise RuntimeError(f"the inference worker stopped: {last_line(self.logs['inference'])}")

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the worker publishes its first stats record (the sink, started first, then hears it too)."""
        deadline = time.time() + timeout
        while not self.stats:
            if time.time() > deadline:
                raise RuntimeError(f"the inference worker did not start in {timeout:.0f} s")
            self.pump(200)
        time.sleep(1.0)

    def replay_all(self, npy: Path, indices: list[int], jobs: int, timeout: float, progress: Any) -> None:
        """Each sample as stream ``s{index}``, at most ``jobs`` in flight, until the worker ended them all."""
        todo = list(indices)
        running: dict[str, tuple[subprocess.Popen, float]] = {}
        while todo or running:
            while todo and len(running) < jobs:
                i = todo.pop(0)
                argv = self.replay_argv + [str(npy), "--index", str(i), "--stream", f"s{i}"]
                proc = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True)
                running[f"s{i}"] = (proc, time.time())
            self.pump()
            for stream, (proc, t0) in list(running.items()):
                code = proc.poll()
                if code not in (None, 0):
                    lines = [line for line in proc.stderr.read().splitlines() if line.strip()]
                    raise RuntimeError(f"replay of {stream} exited {code}: {lines[-1] if lines else '(no output)'}")
                if stream in self.ended and code == 0:
                    proc.stderr.close()
                    del running[stream]
                    progress(stream)
                elif time.time() - t0 > timeout:
                    proc.kill()
                    raise RuntimeError(f"stream {stream}: no end from the inference worker within {timeout:.0f} s")

    def finish(self, timeout: float) -> dict[str, list[dict[str, Any]]]:
        """Wait for the sink to hear every stream's end and for a stats record after it; the results by stream."""
        try:
            self.sink.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the sink did not see every stream end within {timeout:.0f} s "
                               f"(log: {self.logs['sink']})") from None
        self.stats = {}
        deadline = time.time() + 30
        while not self.stats and time.time() < deadline:
            self.pump(200)
        return read_results(self.output)

    def close(self) -> None:
        self.sub.close()
        for proc in (self.worker, self.sink):
            stop_process(proc)


def replay_part(args: argparse.Namespace, model_names: list[str], workdir: Path) -> dict[str, Any]:
    """Part 2: ``--per-class`` test samples per class replayed through the real workers, scored."""
    data_dir = Path(args.replay_test)
    class_names, labels, sources, _ = load_test_set(data_dir)
    picked = pick_samples(labels, args.per_class)
    targets = model_targets(class_names, model_names, args.synonyms)
    npy = data_dir / "val_data.npy"
    data = np.load(npy, mmap_mode="r")
    frames = {i: sample_frames(data, i) for i in picked}
    rig = ReplayRig(args, workdir, len(picked))
    t0 = time.time()
    bar = tqdm(total=len(picked), desc="replay", unit="clip", disable=not sys.stderr.isatty())
    done: list[str] = []

    def progress(stream: str) -> None:
        bar.update(1)
        done.append(stream)
        if len(done) % 25 == 0 or len(done) == len(picked):
            log.info("replayed %d/%d test samples (%.0f s)", len(done), len(picked), time.time() - t0)

    try:
        rig.wait_ready()
        rig.replay_all(npy, picked, args.jobs, args.clip_timeout, progress)
        streams = rig.finish(args.clip_timeout)
    finally:
        bar.close()
        rig.close()
    seconds = time.time() - t0
    frames_in, frames_sent = rig.stats.get("frames_in"), sum(frames.values())
    if frames_in is not None and frames_in != frames_sent:
        raise RuntimeError(f"the inference worker took {frames_in} frames of the {frames_sent} replayed")
    rows = []
    for i in picked:
        cls = class_names[labels[i]]
        target = targets[cls]
        row = score_stream(streams.get(f"s{i}", []), target, True)
        rows.append({"index": i, "source": sources[i], "class": cls, "model_class": target, "frames": frames[i],
                     **{k: row[k] for k in ("windows", "person_windows", "majority_label", "answer", "correct",
                                            "right_windows", "top1_windows", "unknown_windows", "top_scores")}})
    out = {"data": shown(data_dir), "per_class_asked": args.per_class, "samples": len(rows), "frames": frames_sent,
           "worker_frames_in": frames_in, "seconds": round(seconds, 1),
           "missing_classes": sorted({r["class"] for r in rows if r["model_class"] is None}),
           **replay_summary(rows), "by_source": {}, "samples_detail": rows}
    for source in dict.fromkeys(r["source"] for r in rows):
        out["by_source"][source] = replay_summary([r for r in rows if r["source"] == source])
    log.info("replayed %d test samples in %.0f s", len(rows), seconds)
    return out


def replay_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Known-class window and clip accuracy, and the unknown share on the classes the model lacks."""
    known = [r for r in rows if r["model_class"] is not None]
    lacking = [r for r in rows if r["model_class"] is None]
    known_scored = [r for r in known if r["windows"] > 0]
    lacking_scored = [r for r in lacking if r["windows"] > 0]
    return {
        "known_samples": len(known), "known_samples_without_windows": len(known) - len(known_scored),
        "known_window_accuracy": share(sum(r["right_windows"] for r in known),
                                       sum(r["person_windows"] for r in known)),
        "top1_window_accuracy": share(sum(r["top1_windows"] for r in known), sum(r["person_windows"] for r in known)),
        "clip_accuracy": share(sum(r["correct"] for r in known_scored), len(known_scored)),
        "known_unknown_share": share(sum(r["unknown_windows"] for r in known), sum(r["person_windows"] for r in known)),
        "lacking_samples": len(lacking), "lacking_samples_without_windows": len(lacking) - len(lacking_scored),
        "lacking_unknown_share": share(sum(r["unknown_windows"] for r in lacking),
                                       sum(r["person_windows"] for r in lacking)),
        "lacking_unknown_clips": share(sum(r["majority_label"] in (None, UNKNOWN) for r in lacking_scored),
                                       len(lacking_scored)),
    }


# --------------------------------------------------------------------------- report

def open_set_metrics(report: dict[str, Any], weights: str) -> dict[str, Any]:
    """How well the top probability tells known-class windows (live in-class clips and replayed
    test clips of the model's classes) from out-of-class ones (AUROC), and the model's own
    threshold as an operating point; the per-window scores are dropped from the report."""
    known, unknown = [], []
    for clip in report.get("live", {}).get("clips") or []:
        (known if clip["in_class"] else unknown).extend(clip.pop("top_scores", []))
    for row in (report.get("replay") or {}).get("samples_detail") or []:
        (known if row["model_class"] is not None else unknown).extend(row.pop("top_scores", []))
    open_set = OpenSet.from_config(load_model(weights).config.get("open_set"))
    out: dict[str, Any] = {"open_set_auroc": round(auroc(np.array(known), np.array(unknown)), 4)
                           if known and unknown else None,
                           "open_set_known_windows": len(known), "open_set_unknown_windows": len(unknown)}
    if open_set is not None and known and unknown:
        out["open_set_threshold"] = open_set.score_threshold
        out["open_set_known_kept_at_threshold"] = share(sum(s >= open_set.score_threshold for s in known), len(known))
        out["open_set_unknown_rejected_at_threshold"] = share(sum(s < open_set.score_threshold for s in unknown),
                                                              len(unknown))
    return out


def pct(value: float | None) -> str:
    """A share as a percentage, "-" for None."""
    return "-" if value is None else f"{100 * value:.1f} %"


def print_report(report: dict[str, Any]) -> None:
    """The per-clip table, the headline metrics and, when run, the replay summary by source."""
    live = report.get("live")
    if live:
        print(f"\n{'clip':<34} {'class':<16} {'answer':<30} {'ok':<5} {'unknown':>8} {'windows':>7} {'people':>6}")
        for c in live["clips"]:
            ok = c["correct"] if c["in_class"] else c["no_action_claimed"]
            print(f"{c['clip']:<34} {c['class'] or '(out of class)':<16} {c['answer'][:30]:<30} "
                  f"{'yes' if ok else 'no':<5} {pct(c['unknown_share']):>8} {c['windows']:>7} {c['people']:>6}")
        for cls, row in live["per_class"].items():
            print(f"class {cls} (model: {row['model_class']}): {row['correct']}/{row['clips']} clips")
    replay = report.get("replay")
    if replay:
        print(f"\nreplayed {replay['samples']} test samples of {replay['data']} ({replay['seconds']} s)")
        print(f"{'source':<14} {'known':>6} {'window acc':>10} {'top-1':>8} {'clip acc':>9} {'unknown':>8}   "
              f"{'lacking':>7} {'unknown':>8} {'clips unk':>9}")
        for source, s in [*replay["by_source"].items(), ("all", replay)]:
            print(f"{source:<14} {s['known_samples']:>6} {pct(s['known_window_accuracy']):>10} "
                  f"{pct(s['top1_window_accuracy']):>8} {pct(s['clip_accuracy']):>9} "
                  f"{pct(s['known_unknown_share']):>8}   {s['lacking_samples']:>7} "
                  f"{pct(s['lacking_unknown_share']):>8} {pct(s['lacking_unknown_clips']):>9}")
    print()
    for key, value in report["metrics"].items():
        print(f"  {key:<36} {value}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:4]))
    p.add_argument("--clips-file", default=str(CLIPS_FILE), help="labelled clips YAML (default bench/live_clips.yaml)")
    p.add_argument("--clips", help="comma-separated clip names to run (default: all)")
    p.add_argument("--no-live", action="store_true", help="skip the live clips (only --replay-test)")
    p.add_argument("--shared", default=str(ROOT.parent / "shared"),
                   help="the shared folder; clip paths are relative to its data/ (default ../shared)")
    p.add_argument("--max-frames", type=int, help="run only the first N frames of each clip (a trimmed copy)")
    p.add_argument("--weights", help="checkpoint (default: the pipeline's, the shipped model)")
    p.add_argument("--stride", type=int, help="classify every N frames (default: the pipeline's)")
    p.add_argument("--device", help="inference device (default: the pipeline's, auto)")
    p.add_argument("--config", help="pipeline YAML laid over configs/pipeline.yaml")
    p.add_argument("--synonyms", default=str(SYNONYMS_FILE),
                   help="class synonyms YAML (default configs/classes/synonyms.yaml)")
    p.add_argument("--replay-test", metavar="DATA_DIR", help="also replay test samples of this converted data set")
    p.add_argument("--per-class", type=int, default=5, help="test samples per class to replay (default 5)")
    p.add_argument("--jobs", type=int, default=2, help="replayed streams in flight at a time (default 2)")
    p.add_argument("--clip-timeout", type=float, default=600.0, help="seconds one run may take (default 600)")
    p.add_argument("--keep", metavar="DIR", help="keep the JSON Lines and logs here (default: a removed temp folder)")
    p.add_argument("--out", default=str(RESULTS / "live_cpu.json"), help="JSON output path")
    add_debug_flag(p)
    args = p.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        p.error("--max-frames must be at least 1")
    if args.per_class < 1 or args.jobs < 1:
        p.error("--per-class and --jobs must be at least 1")
    if args.no_live and not args.replay_test:
        p.error("--no-live needs --replay-test")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.debug)

    def body() -> int:
        with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
            workdir = Path(args.keep) if args.keep else Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            weights, model_names = model_class_names(args.weights, args.config)
            args.weights = str(shutil.copyfile(weights, workdir / "weights.pt"))  # every run loads the same model
            digest = file_digest(Path(args.weights))
            t0 = time.time()
            report: dict[str, Any] = {"metrics": {}}
            if not args.no_live:
                report["live"] = live_part(args, model_names, workdir)
                report["metrics"].update(report["live"]["metrics"])
            if args.replay_test:
                report["replay"] = replay_part(args, model_names, workdir)
                report["metrics"].update({"replay_known_window_accuracy": report["replay"]["known_window_accuracy"],
                                          "replay_known_top1_window_accuracy":
                                              report["replay"]["top1_window_accuracy"],
                                          "replay_clip_accuracy": report["replay"]["clip_accuracy"],
                                          "replay_lacking_unknown_share": report["replay"]["lacking_unknown_share"]})
            report["metrics"].update(open_set_metrics(report, args.weights))
            report["metrics"]["seconds"] = round(time.time() - t0, 1)
        print_report(report)
        config = {"weights": shown(weights), "weights_sha256": digest, "model_classes": model_names,
                  **{k: v for k, v in vars(args).items() if k not in ("out", "debug", "keep", "weights")}}
        for key in ("clips_file", "synonyms", "shared"):
            config[key] = os.path.relpath(config[key], ROOT)
        live = report.get("live", {})
        write_results("live_cpu", {"machine": machine(), "config": config, "metrics": report["metrics"],
                                   "clips": live.get("clips"), "per_class": live.get("per_class"),
                                   "missing_classes": live.get("missing_classes"),
                                   "replay": report.get("replay")}, args.out)
        return 0

    return run_cli("bench.live", body, debug=args.debug, errors=(ValueError, OSError, RuntimeError))


if __name__ == "__main__":
    sys.exit(main())

"""Chaos: random SIGKILLs and pauses of the pipeline's workers over a long run, with exact accounting.

    python -m bench.chaos [--seconds 90 | --minutes 10] [--seed N] [--device cpu|cuda] [--weights CKPT]
                          [--replays 2] [--video PATH]... [--fault-every 6] [--pause-max 4]
                          [--out bench/results/chaos_cpu.json] [--plot docs/chaos_soak_cpu.png]

``run_pipeline.py`` runs as users run it, with lossless sources (``--replay`` of recordings made
of the real Kinetics clip, looped to last the run and replayed at their recorded 30 fps) and
live sources (``--video`` of real videos through MediaPipe), writing ``--output``, plus an
outside results subscriber (``python -m workers.sinks``) on ``--results-endpoint``. For the set
time, at random moments (exponential gaps of mean ``--fault-every`` s, seeded; the seed is
printed), a worker is hit: the kinds (inference, replay, capture, sink) take turns in a shuffled
cycle, the worker of a kind is drawn at random, and it is either killed (SIGKILL) or paused
(SIGSTOP, then SIGCONT after up to ``--pause-max`` s). The supervisor restarts what it runs; this
bench restarts the outside sink.

Accounting, from the JSON Lines and the workers' stats records (each worker's latest, read on
the results socket):

- lossless sources: every window the recording yields under the project's window rules
  (:mod:`bench.accounting`) is classified exactly once, with the expected people, in order;
- live sources: no duplicates, windows missing or moved, the longest gap between results
  (frames and seconds) against the recovery time of the faults;
- every output line parses (the main output and each outside sink's file); the RSS of every
  long-running process (sampled every second) after warm-up; no process of the run left once
  ``run_pipeline.py`` has exited.

With ``--minutes`` the run is a soak: latency percentiles and RSS per 30 s over the run, drawn
to ``--plot`` (matplotlib). Prints a summary and writes ``{"machine", "date", ...}`` JSON
(default ``bench/results/chaos_cpu.json``, ``chaos_cuda.json`` on CUDA). Exit status 1 when
anything was lost or duplicated.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.accounting import account_live, account_lossless, expected_windows, read_jsonl, results_by_stream
from bench.common import ROOT, machine, percentile, rss_mb, stop_process, write_results
from pipeline.cli import add_debug_flag, setup_logging
from pipeline.endpoints import free_endpoint
from pipeline.messages import Frame, StreamStart, StreamEnd
from pipeline.results import STATS_TOPIC, WorkerStats
from pipeline.settings import load_settings
from pipeline.windows import WindowRules

log = logging.getLogger("bench.chaos")
SHARED = ROOT.parent / "shared" / "data"
KINETICS_CLIP = SHARED / "skeleton" / "kinetics_skeleton_--33Lscn6sk.json"
DEFAULT_VIDEO = SHARED / "videos" / "tai_chi.mp4"
KINDS = ("inference", "replay", "capture", "sink")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
KILLS_PER_MINUTE = 3  # below the supervisor's 5 restarts a minute, after which it gives a worker up


# ---- sources ---------------------------------------------------------------------------------

def looped_recording(path: Path, stream: str, frames_wanted: int, source: Path = KINETICS_CLIP) -> list[Frame]:
    """A pipeline recording of the real clip played ``frames_wanted`` frames long (the clip again
    and again, sequence numbers running on); returns its frames."""
    from pipeline.recording import RecordingWriter
    from workers.replay import load_frames

    meta, clip = load_frames(source)
    period = clip[-1].seq + 1
    frames = []
    loop = 0
    while len(frames) < frames_wanted:
        frames += [Frame(stream, f.seq + loop * period, 0.0, f.width, f.height, f.layout, f.persons, 0.0, f.joints)
                   for f in clip[:frames_wanted - len(frames)]]
        loop += 1
    start_meta = {"fps": 30.0, "source": str(source), "layout": "openpose", "width": clip[0].width,
                  "height": clip[0].height, "joints": 18}
    writer = RecordingWriter(path, StreamStart(stream, time.time(), start_meta))
    for frame in frames:
        writer.write(frame)
    writer.write(StreamEnd(stream, time.time(), "eof"))
    return frames


def video_frames(path: Path) -> tuple[int, float]:
    """Frame count and fps of a video file."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS) or 30.0)
    finally:
        cap.release()


# ---- processes -------------------------------------------------------------------------------

@dataclass
class Seen:
    """A process of the run as found in /proc."""

    pid: int
    role: str  # supervisor, inference, replay, capture, sink
    name: str
    stream: str | None


def _arg(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def scan(tag: str) -> dict[int, Seen]:
    """Every live process whose command line carries ``tag`` (the run's config path)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if not any(tag in a for a in argv) or state == "Z":
            continue
        text = " ".join(argv)
        pid = int(entry)
        if "run_pipeline.py" in text:
            found[pid] = Seen(pid, "supervisor", "supervisor", None)
        elif "workers.inference" in text:
            found[pid] = Seen(pid, "inference", _arg(argv, "--name") or "inference", None)
        elif "workers.replay" in text or "workers.capture" in text:
            stream = _arg(argv, "--stream")
            role = "replay" if "workers.replay" in text else "capture"
            found[pid] = Seen(pid, role, f"{role} {stream}", stream)
        elif "workers.sinks" in text:
            found[pid] = Seen(pid, "sink", "sink", None)
    return found


class StatsListener(threading.Thread):
    """Each inference worker's stats records (every process's latest and final ones)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        from pipeline.transport import ResultSubscriber

        self.sub = ResultSubscriber(endpoint, streams=[STATS_TOPIC])
        self.records: list[WorkerStats] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            record = self.sub.recv(timeout_ms=200)
            if isinstance(record, WorkerStats):
                self.records.append(record)
        self.sub.close()


# ---- the run ---------------------------------------------------------------------------------

@dataclass
class Fault:
    t: float
    kind: str
    action: str  # kill or pause
    victim: str
    pid: int
    seconds: float = 0.0
    recovery_s: float | None = None


@dataclass
class Run:
    """Everything one chaos run saw."""

    faults: list[Fault] = field(default_factory=list)
    rss: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # "role name pid" -> (t, MiB)
    sinks: list[Path] = field(default_factory=list)
    sink_restarts: int = 0
    orphans: list[str] = field(default_factory=list)
    exit_code: int | None = None
    t0: float = 0.0
    t_end: float = 0.0
    load: list[tuple[float, float, float]] = field(default_factory=list)
    stats: list[WorkerStats] = field(default_factory=list)


def start_sink(work: Path, endpoint: str, config: str, n: int) -> tuple[subprocess.Popen, Path]:
    out = work / f"sink-{n}.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "workers.sinks", "--connect", endpoint, "--output", str(out),
                             "--quiet", "--config", config], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=open(work / f"sink-{n}.log", "w"))
    return proc, out


def run_chaos(args: argparse.Namespace, work: Path, replays: list[Path], videos: list[Path]) -> tuple[Run, Path, Path]:
    """Run the pipeline under faults; returns what happened, the output and the pipeline's log."""
    tag = f"chaos-{os.getpid()}-{time.time_ns()}"
    folder = work / tag
    folder.mkdir()
    config = folder / "pipeline.yaml"  # no changes: it puts the tag on every worker's command line
    config.write_text("# bench.chaos: the defaults of configs/pipeline.yaml\n{}\n")
    out, results_ep = work / "results.jsonl", free_endpoint()
    argv = [sys.executable, "run_pipeline.py", "--device", args.device, "--config", str(config), "--output", str(out),
            "--results-endpoint", results_ep, "--print-every", "1000000000"]
    argv += [a for r in replays for a in ("--replay", str(r))] + [a for v in videos for a in ("--video", str(v))]
    if args.weights:
        argv += ["--weights", str(args.weights)]
    if args.stride:
        argv += ["--stride", str(args.stride)]
    pipeline_log = work / "pipeline.log"
    run = Run(t0=time.time())
    rng = random.Random(args.seed)
    stats = StatsListener(results_ep)
    stats.start()
    proc = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=open(work / "pipeline.out", "w"),
                            stderr=open(pipeline_log, "w"))
    sink, sink_out = start_sink(work, results_ep, str(config), 0)
    run.sinks.append(sink_out)
    cycle: list[str] = ["capture"] if videos else []  # first: a video source ends before the replays
    next_fault = run.t0 + args.warmup + rng.expovariate(1 / args.fault_every) if args.fault_every else float("inf")
    faults_until = run.t0 + args.seconds
    paused: tuple[Seen, float] | None = None
    kills: dict[str, list[float]] = {}
    last_sample = 0.0
    bar = tqdm(total=int(args.seconds), desc="chaos", unit="s", disable=args.no_progress)
    try:
        while proc.poll() is None:
            now = time.time()
            if now - run.t0 > args.seconds + args.drain:
                log.error("the pipeline did not finish within %.0f s of the run's end; stopping it", args.drain)
                break
            bar.update(min(int(now - run.t0), int(args.seconds)) - bar.n)
            procs = scan(tag)
            if now - last_sample >= 1.0:
                last_sample = now
                run.load.append(os.getloadavg())
                for p in procs.values():
                    mb = rss_mb(p.pid)
                    if mb is not None:
                        run.rss.setdefault(f"{p.name} {p.pid}", []).append((now - run.t0, mb))
            if paused is not None and now >= paused[1]:
                _signal(paused[0].pid, signal.SIGCONT)
                paused = None
            if sink.poll() is not None:
                run.sink_restarts += 1
                sink, sink_out = start_sink(work, results_ep, str(config), len(run.sinks))
                run.sinks.append(sink_out)
            if paused is None and now >= next_fault and now < faults_until:
                fault = _inject(rng, procs, cycle, kills, now, args.pause_max, args.kill_share)
                if fault is not None:
                    run.faults.append(fault)
                    log.info("fault %d at %.1f s: %s %s (pid %d)%s", len(run.faults), now - run.t0, fault.action,
                             fault.victim, fault.pid, f" for {fault.seconds:.1f} s" if fault.action == "pause" else "")
                    if fault.action == "pause":
                        paused = (Seen(fault.pid, fault.kind, fault.victim, None), now + fault.seconds)
                next_fault = now + rng.expovariate(1 / args.fault_every)
            time.sleep(0.2)
    finally:
        bar.close()
        if paused is not None:
            _signal(paused[0].pid, signal.SIGCONT)
        stop_process(proc, signal.SIGINT)
        run.exit_code = proc.returncode
        run.t_end = time.time()
        time.sleep(1.0)  # the outside sink takes the last records
        stop_process(sink, timeout=15)
        stats.stop.set()
        stats.join(5)
        time.sleep(0.5)
        left = scan(tag)
        run.orphans = [f"{p.name} (pid {p.pid})" for p in left.values()]
        for p in left.values():
            _signal(p.pid, signal.SIGKILL)
    run.stats = stats.records
    return run, out, pipeline_log


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _inject(rng: random.Random, procs: dict[int, Seen], cycle: list[str], kills: dict[str, list[float]],
            now: float, pause_max: float, kill_share: float) -> Fault | None:
    """One fault on the next kind in the shuffled cycle that has a running worker."""
    for _ in range(2 * len(KINDS)):
        if not cycle:
            cycle.extend(rng.sample(KINDS, len(KINDS)))
        kind = cycle.pop(0)
        victims = sorted((p for p in procs.values() if p.role == kind), key=lambda p: p.pid)
        if not victims:
            continue
        victim = rng.choice(victims)
        recent = [t for t in kills.get(victim.name, []) if now - t < 60]
        kill = rng.random() < kill_share and len(recent) < KILLS_PER_MINUTE
        seconds = round(rng.uniform(0.5, pause_max), 2)
        if kill:
            kills.setdefault(victim.name, []).append(now)
            _signal(victim.pid, signal.SIGKILL)
            return Fault(now, kind, "kill", victim.name, victim.pid)
        _signal(victim.pid, signal.SIGSTOP)
        return Fault(now, kind, "pause", victim.name, victim.pid, seconds)
    return None


# ---- accounting ------------------------------------------------------------------------------

def window_rules(args: argparse.Namespace) -> tuple[WindowRules, int]:
    """The rules the inference worker serves the model under, and its person slots."""
    from stgcn import DEFAULT_WEIGHTS, load_model

    settings = load_settings(None, inference__stride=args.stride).inference
    window = load_model(args.weights or DEFAULT_WEIGHTS).config["window"]
    return WindowRules.serving(window, settings, "cuda" if args.device.startswith("cuda") else "cpu"), \
        settings.persons


def recoveries(run: Run, by_stream: dict[str, list[dict]]) -> None:
    """Each fault's recovery: from the fault to the first result after it (of the victim's stream
    for a source; of any stream for the inference worker and the sink), pauses included."""
    for f in run.faults:
        stream = f.victim.split(" ", 1)[1] if f.kind in ("replay", "capture") else None
        after = [r["t_result"] for s, rows in by_stream.items() if stream in (None, s) for r in rows
                 if r["t_result"] > f.t + (f.seconds if f.action == "pause" else 0)]
        f.recovery_s = round(min(after) - f.t, 2) if after else None


def memory(run: Run, warmup: float) -> dict[str, Any]:
    """Per process that lived long enough: RSS after warm-up, first and last fifth (medians)."""
    out = {}
    for key, samples in run.rss.items():
        t = np.array([s[0] for s in samples])
        mb = np.array([s[1] for s in samples])
        keep = t >= t[0] + warmup
        if keep.sum() < 20:
            continue
        t, mb = t[keep], mb[keep]
        fifth = max(1, len(mb) // 5)
        out[key] = {"seconds": round(float(t[-1] - t[0]), 1), "start_mb": round(float(np.median(mb[:fifth])), 1),
                    "end_mb": round(float(np.median(mb[-fifth:])), 1), "max_mb": round(float(mb.max()), 1),
                    "growth_mb": round(float(np.median(mb[-fifth:]) - np.median(mb[:fifth])), 1)}
    return out


def over_time(run: Run, rows: list[dict], bin_s: float) -> list[dict[str, Any]]:
    """Latency percentiles and each role's RSS (sum over its processes) per ``bin_s`` of the run."""
    bins: list[dict[str, Any]] = []
    end = run.t_end - run.t0
    for lo in np.arange(0.0, end, bin_s):
        hi = lo + bin_s
        lat = [r["latency_ms"]["total"] for r in rows if lo <= r["t_result"] - run.t0 < hi]
        row: dict[str, Any] = {"t_s": round(float(lo), 1), "results": len(lat),
                               "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99)}
        for key, samples in run.rss.items():
            role = key.rsplit(" ", 1)[0].split(" ")[0]
            vals = [mb for t, mb in samples if lo <= t < hi]
            if vals:
                row.setdefault("rss_mb", {})
                row["rss_mb"][role] = round(max(row["rss_mb"].get(role, 0.0), float(np.median(vals))), 1)
        bins.append(row)
    return bins


def account(args: argparse.Namespace, run: Run, out: Path, pipeline_log: Path, lossless: dict[str, list[Frame]],
            live: dict[str, tuple[int, float]]) -> dict[str, Any]:
    """The whole run's figures (see the module docstring)."""
    rows, bad_lines = read_jsonl(out)
    by_stream = results_by_stream(rows)
    rules, persons = window_rules(args)
    recoveries(run, by_stream)
    streams: dict[str, Any] = {}
    for stream, frames in lossless.items():
        streams[stream] = {"kind": "lossless", **account_lossless(by_stream.get(stream, []),
                                                                  expected_windows(frames, rules, 18, persons))}
    for stream, (count, fps) in live.items():
        empty = [Frame(stream, i, 0.0, 640, 480, "openpose", (), 0.0, 18) for i in range(count)]
        expected = [seq for seq, _ in expected_windows(empty, rules, 18, persons)]
        streams[stream] = {"kind": "live", **account_live(by_stream.get(stream, []), expected, fps)}
    sinks = []
    main_keys = {(r["stream"], r["seq"]) for r in rows if r.get("type") == "result"}
    for path in run.sinks:
        srows, sbad = read_jsonl(path)
        results = [(r["stream"], r["seq"]) for r in srows if r.get("type") == "result"]
        sinks.append({"file": path.name, "lines": len(srows) + sbad, "bad_lines": sbad, "results": len(results),
                      "not_in_main_output": len(set(results) - main_keys),
                      "duplicates": len(results) - len(set(results))})
    text = pipeline_log.read_text() if pipeline_log.exists() else ""
    kinds: dict[str, dict[str, int]] = {}
    for f in run.faults:
        kinds.setdefault(f.kind, {"kill": 0, "pause": 0})[f.action] += 1
    live_rows = [s for s in streams.values() if s["kind"] == "live"]
    lossless_rows = [s for s in streams.values() if s["kind"] == "lossless"]
    mem = memory(run, args.warmup)
    final_stats = {}
    for record in run.stats:
        final_stats[record.worker] = record.stats
    summary = {
        "faults": len(run.faults), "faults_by_kind": kinds,
        "kills": sum(f.action == "kill" for f in run.faults), "pauses": sum(f.action == "pause" for f in run.faults),
        "seconds": round(run.t_end - run.t0, 1),
        "restarts_by_supervisor": text.count("crashed (exit"), "sink_restarts": run.sink_restarts,
        "lossless_windows": sum(s["expected"] for s in lossless_rows),
        "lost": sum(s["lost"] for s in lossless_rows),
        "lost_before_last": sum(s["lost_before_last"] for s in lossless_rows),
        "duplicates": sum(s["duplicates"] for s in streams.values()) + sum(s["duplicates"] for s in sinks),
        "extra": sum(s["extra"] for s in lossless_rows),
        "in_order": all(s["in_order"] for s in streams.values()),
        "live_missing_windows": sum(s["missing"] for s in live_rows),
        "max_live_gap_s": max((s["max_gap_s"] or 0 for s in live_rows), default=None),
        "max_recovery_s": max((f.recovery_s or 0 for f in run.faults), default=None),
        "bad_lines": bad_lines + sum(s["bad_lines"] for s in sinks),
        "max_rss_growth_mb": max((m["growth_mb"] for m in mem.values()), default=None),
        "orphans": run.orphans, "exit_code": run.exit_code,
        "tracebacks": text.count("Traceback"),
    }
    return {"summary": summary, "streams": streams, "sinks": sinks, "memory": mem,
            "faults": [vars(f) | {"t": round(f.t - run.t0, 2)} for f in run.faults],
            "worker_stats": final_stats,
            "over_time": over_time(run, [r for r in rows if r.get("type") == "result"], args.bin),
            "load_avg_1min": {"mean": round(float(np.mean([l[0] for l in run.load])), 2) if run.load else None,
                              "max": round(float(np.max([l[0] for l in run.load])), 2) if run.load else None}}


def plot(result: dict[str, Any], path: Path, title: str) -> None:
    """Latency percentiles and RSS over the run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = result["over_time"]
    minutes = [b["t_s"] / 60 for b in bins]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.2), dpi=120, sharex=True)
    for key, style in (("p50_ms", "o-"), ("p99_ms", "s--")):
        top.plot(minutes, [b[key] / 1000 if b[key] is not None else np.nan for b in bins], style, ms=3,
                 label=key.replace("_ms", ""))
    for f in result["faults"]:
        top.axvline(f["t"] / 60, color="red" if f["action"] == "kill" else "orange", lw=0.5, alpha=0.5)
    top.set_ylabel("frame-to-result latency (s)")
    top.legend(fontsize=8, title="red: kill, orange: pause", title_fontsize=7)
    roles = sorted({role for b in bins for role in b.get("rss_mb", {})})
    for role in roles:
        bottom.plot(minutes, [b.get("rss_mb", {}).get(role, np.nan) for b in bins], ".-", label=role)
    bottom.set_ylabel("RSS (MiB)")
    bottom.set_xlabel("minutes")
    bottom.legend(fontsize=7, ncol=3)
    top.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


# ---- CLI -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, default=90.0, help="faults for this long (default 90)")
    length.add_argument("--minutes", type=float, help="a soak of this many minutes (latency and memory over time)")
    parser.add_argument("--seed", type=int, help="the faults' random seed (default: from the clock; printed)")
    parser.add_argument("--device", default="cpu", help="inference device: cpu or cuda (default cpu)")
    parser.add_argument("--weights", help="checkpoint (default: the bundled model)")
    parser.add_argument("--stride", type=int, help="classify every N frames (default: the config's)")
    parser.add_argument("--replays", type=int, default=2, help="lossless replayed streams (default 2)")
    parser.add_argument("--video", action="append", help=f"live video source (repeatable; default {DEFAULT_VIDEO.name})")
    parser.add_argument("--no-video", action="store_true", help="no live video source")
    parser.add_argument("--fault-every", type=float, default=6.0, help="mean seconds between faults (0: none)")
    parser.add_argument("--pause-max", type=float, default=4.0, help="longest pause (SIGSTOP) in seconds")
    parser.add_argument("--kill-share", type=float, default=0.6, help="share of faults that are kills (default 0.6)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the first fault and memory sample")
    parser.add_argument("--drain", type=float, default=180.0, help="seconds the pipeline may take to finish after")
    parser.add_argument("--bin", type=float, default=30.0, help="seconds per point of the over-time figures")
    parser.add_argument("--out", help="results JSON (default bench/results/chaos_<device>.json)")
    parser.add_argument("--plot", help="latency and memory over time as a PNG (soak)")
    parser.add_argument("--keep", help="keep the run's files (outputs, logs) in this folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    if args.minutes:
        args.seconds = args.minutes * 60
    if args.seed is None:
        args.seed = int(time.time()) % 100_000
    print(f"chaos seed {args.seed} (python -m bench.chaos --seed {args.seed} repeats the faults' draws)", flush=True)
    videos = [] if args.no_video else [Path(v) for v in (args.video or [DEFAULT_VIDEO])]
    for v in videos:
        if not v.is_file():
            print(f"error: {v}: no such video", file=sys.stderr)
            return 2
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        frames_wanted = int(args.seconds * 30)
        replays, lossless = [], {}
        for i in range(args.replays):
            path = work / f"chaos{i}.skel"
            if path.exists():
                path.unlink()
            lossless[f"chaos{i}"] = looped_recording(path, f"chaos{i}", frames_wanted)
            replays.append(path)
        live = {v.name.split(".")[0]: video_frames(v) for v in videos}
        run, out, pipeline_log = run_chaos(args, work, replays, videos)
        result = account(args, run, out, pipeline_log, lossless, live)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    s = result["summary"]
    print(json.dumps(s, indent=1))
    device = "cuda" if args.device.startswith("cuda") else "cpu"
    payload = {"machine": machine(args.device),
               "config": {"seed": args.seed, "seconds": args.seconds, "device": args.device,
                          "weights": args.weights or "bundled", "replays": args.replays,
                          "videos": [v.name for v in videos], "fault_every_s": args.fault_every,
                          "pause_max_s": args.pause_max, "kill_share": args.kill_share, "warmup_s": args.warmup},
               **result}
    write_results(f"chaos_{device}", payload, args.out)
    if args.plot:
        plot(payload, Path(args.plot), f"{args.seconds / 60:.0f}-minute run, {s['faults']} faults, {payload['machine']}")
    ok = s["lost"] == 0 and s["duplicates"] == 0 and s["extra"] == 0 and s["in_order"] and not s["orphans"] \
        and s["bad_lines"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

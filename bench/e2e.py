"""End-to-end latency: N live streams at 30 fps through the real pipeline, frame to result.

    python -m bench.e2e [--streams 1 4 16 64 128 256] [--duration 10] [--warmup 3]
                        [--device auto|cpu|cuda] [--stride 1] [--weights CKPT] [--all]
                        [--inference-workers W --devices cuda:0,cuda:1]

For each N the inference worker starts as its own process (``python -m workers.inference``,
exactly as run_pipeline.py starts it), and a few sender processes (``--streams-per-sender``
streams each, not one process per stream) replay a real skeleton clip (the Kinetics JSON clip,
looped; pre-encoded once) on N streams at 30 fps each, phases spread over the frame period,
through one live ``FrameSender`` per stream: when the worker falls behind, the sender drops the
oldest frames and counts them, as a camera would. Each frame's capture time is the time it is
sent. This process collects the results, and the workers' stats records (every 0.5 s, with
their diagnostics on), on a SUB socket.

Per N, over the frames of the measured window (after ``--warmup`` seconds): p50/p99 of
``t_result - t_capture`` (the result's own stamps), drops (frames dropped at the senders plus
windows the worker skipped, from its stats), lost results (frames sent in the window with no
result: drops, skips or results dropped on the way), results/s, windows/s, and the senders'
achieved rate and lateness against their schedule (the driver must not be the bottleneck).
To find where time goes, each row also has every frame's arrival delay at the worker
(``worker_arrival_ms``, with ``bunched``: frames read together with their stream's previous
one), the worker's loop phases and its wait for a CPU (``worker_loop_ms``; the window's longest
iteration by phase in ``worker_longest_in_window``), the senders' frames that their socket did
not take at once (``sender_deferred``) and, over the measured window, the machine's steal,
CPU-quota throttling and each process's run-queue wait (``cpu_lost``). Results slower than
``--tail-ms`` are grouped into episodes (``tail_episodes``) with the steal on the workers' CPUs
meanwhile and how much slower a canary process, timing fixed work beside the pipeline, ran then
(``canary_x``): a slow machine slows the canary too, a slow pipeline does not.
``--transport ipc`` uses Unix-domain sockets instead of loopback TCP.
The sweep stops at the first N whose p99 exceeds ``--budget-ms`` or that drops anything
(``--all``: run every N). Prints a table and writes bench/results/e2e_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from bench.common import ROOT, machine, write_results
from pipeline.cli import add_debug_flag, setup_logging
from pipeline.endpoints import free_endpoints
from pipeline.messages import Frame, Person, StreamStart, encode
from pipeline.results import Result, WorkerStats
from pipeline.transport import FrameSender, ResultSubscriber
from workers.schedstat import process_wait_ms

log = logging.getLogger("bench.e2e")
KINETICS_CLIP = ROOT.parent / "shared" / "data" / "skeleton" / "kinetics_skeleton_--33Lscn6sk.json"
DEFAULT_STREAMS = [1, 4, 16, 64, 128, 256]


# ---- the clip ------------------------------------------------------------------------------

def load_templates(clip: Path | None) -> tuple[list[dict[str, Any]], str]:
    """The clip's frames as wire maps (encoded once, unpacked), to be re-stamped per send."""
    frames: list[Frame]
    if clip is not None and clip.is_file():
        from workers.replay import load_frames

        _, frames = load_frames(clip)
        source = clip.name
    else:
        log.warning("clip %s not found: using a synthetic 300-frame clip of one moving person", clip)
        base = np.random.default_rng(0).uniform(0.3, 0.7, (18, 2)).astype(np.float32)
        frames = []
        for seq in range(300):
            kp = np.zeros((18, 3), np.float32)
            kp[:, :2] = base + 0.05 * np.sin(seq / 10 + np.arange(18))[:, None]
            kp[:, 2] = 0.9
            frames.append(Frame("clip", seq, 0.0, 640, 480, "openpose", (Person(1, kp),), 0.0, 18))
        source = "synthetic"
    return [msgpack.unpackb(encode(f), raw=False) for f in frames], source


# ---- sender processes ----------------------------------------------------------------------

@dataclass
class SenderPlan:
    """What one sender process sends: its streams, their endpoints and phases, the schedule."""

    streams: list[str]
    endpoints: list[str]
    phases: list[float]  # seconds after each frame tick
    fps: float
    frames: int  # per stream, warm-up included
    window: tuple[int, int]  # frame indices [i0, i1) that are measured
    queue: int = 8


def sender_main(plan: SenderPlan, templates: list[dict[str, Any]], ready: Any, go: Any, t_start: Any,
                out: Any) -> None:
    """Send ``plan.frames`` frames per stream at ``plan.fps``; report counts and lateness."""
    import zmq

    ctx = zmq.Context()
    senders = [FrameSender(ep, live=True, queue_size=plan.queue, context=ctx) for ep in plan.endpoints]
    meta = {"fps": plan.fps, "source": "bench/e2e", "layout": templates[0]["layout"],
            "width": templates[0]["width"], "height": templates[0]["height"], "joints": templates[0]["joints"],
            "live": True}
    for stream, sender in zip(plan.streams, senders):
        sender.send_control(StreamStart(stream, time.time(), meta))  # also waits for the connection
    ready.put(os.getpid())
    go.wait()
    t0 = t_start.value
    order = sorted(range(len(senders)), key=lambda k: plan.phases[k])
    i0, i1 = plan.window
    attempted = dropped = dropped_total = deferred = 0
    lateness: list[float] = []
    send_max = 0.0
    packb, n_tpl = msgpack.packb, len(templates)
    for i in range(plan.frames):
        wire = dict(templates[i % n_tpl], seq=i)
        measured = i0 <= i < i1
        for k in order:
            due = t0 + i / plan.fps + plan.phases[k]
            delay = due - time.time()
            if delay > 0.0002:
                time.sleep(delay)
            now = time.time()
            wire["stream"], wire["t_capture"] = plan.streams[k], now
            sender = senders[k]
            before, waiting = sender.dropped, sender.deferred
            sender.send(packb(wire, use_bin_type=True))
            dropped_total += sender.dropped - before
            if measured:
                attempted += 1
                dropped += sender.dropped - before
                deferred += sender.deferred - waiting
                lateness.append(now - due)
                send_max = max(send_max, time.time() - now)
    for sender in senders:
        sender.close(timeout_ms=0)
    ctx.destroy(linger=0)
    late = np.asarray(lateness or [0.0]) * 1000
    out.put({"attempted": attempted, "dropped": dropped, "dropped_total": dropped_total, "deferred": deferred,
             "send_max_ms": 1000 * send_max,
             "late_p50_ms": float(np.percentile(late, 50)), "late_p99_ms": float(np.percentile(late, 99)),
             "late_max_ms": float(late.max())})


# ---- the inference worker(s) ---------------------------------------------------------------

@dataclass
class WorkerProc:
    """One inference worker process and the stats records it published (every 0.5 s here)."""

    proc: subprocess.Popen
    name: str
    log: Path
    stats: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    final: dict[str, Any] | None = None

    def take(self, record: WorkerStats) -> None:
        if record.final:
            self.final = record.stats
        else:
            self.stats.append((time.time(), record.stats))

    @property
    def ready(self) -> bool:
        """Running its loop: it has published stats."""
        return bool(self.stats)

    def tail(self) -> str:
        return "\n".join(self.log.read_text().splitlines()[-40:]) if self.log.exists() else ""

    def longest_between(self, t0: float, t1: float) -> dict[str, Any] | None:
        """The worker's longest loop iteration (by phase) in the stats lines that cover ``[t0, t1]``
        (each line reports the interval since the previous one)."""
        covering = []
        for when, s in self.stats:
            if when > t0:
                covering.append(s.get("loop_ms", {}).get("longest"))
                if when > t1:
                    break
        return max(filter(None, covering), key=lambda x: x["ms"], default=None)

    def stats_before(self, t: float) -> tuple[float, dict[str, Any]]:
        """The last periodic stats logged by time ``t`` and when they were read."""
        earlier = [(when, s) for when, s in self.stats if when <= t]
        return earlier[-1] if earlier else (0.0, {})


def write_config(folder: Path, max_batch: int | None) -> Path:
    """A pipeline config laid over the default one (JSON is YAML): stats every 0.5 s, diagnostics on."""
    inference: dict[str, Any] = {"stats_interval_s": 0.5, "diagnostics": True}
    if max_batch:
        inference["max_batch"] = {"cuda": max_batch, "cpu": max_batch}
    path = folder / "e2e.yaml"
    path.write_text(json.dumps({"inference": inference}))
    return path


def start_worker(frames_ep: str, results_ep: str, device: str, name: str, args: argparse.Namespace,
                 config: Path) -> WorkerProc:
    argv = [sys.executable, "-m", "workers.inference", "--listen", frames_ep, "--publish", results_ep,
            "--device", device, "--stride", str(args.stride), "--config", str(config), "--name", name]
    if args.weights:
        argv += ["--weights", args.weights]
    if args.form:
        argv += ["--form", args.form]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # keep carried packages
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)  # PyTorch's CPU threads in the worker
    log_path = config.parent / f"{name}.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file, env=env)
    return WorkerProc(proc, name, log_path)


# ---- contention for CPUs --------------------------------------------------------------------

def cpu_snapshot(pids: dict[str, list[int]]) -> dict[str, Any]:
    """Counters of time lost to other work on the machine, to subtract two snapshots: the machine's
    steal (hypervisor), the cgroup's CPU-quota throttling, and each process's run-queue wait."""
    snap: dict[str, Any] = {"t": time.time()}
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        snap["steal_ms"] = int(fields[8]) * 1000 / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        pass
    try:
        stat = dict(line.split() for line in Path("/sys/fs/cgroup/cpu.stat").read_text().splitlines())
        snap["throttled_ms"] = int(stat.get("throttled_usec", 0)) / 1000
        snap["nr_throttled"] = int(stat.get("nr_throttled", 0))
    except (OSError, ValueError):
        pass
    for role, ids in pids.items():
        snap[role] = [process_wait_ms(pid) for pid in ids]
    return snap


def cpu_lost(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Per second between snapshots ``a`` and ``b``: steal and throttling (ms/s over the machine),
    run-queue wait per process (ms/s)."""
    dt = b["t"] - a["t"]
    out: dict[str, Any] = {}
    for key in ("steal_ms", "throttled_ms", "nr_throttled"):
        if key in a and key in b:
            out[key + ("_per_s" if key != "nr_throttled" else "")] = round((b[key] - a[key]) / dt, 2)
    for key in a:
        if isinstance(a[key], list):
            out[f"{key}_wait_ms_per_s"] = [None if x is None or y is None else round((y - x) / dt, 2)
                                           for x, y in zip(a[key], b[key])]
    return out


class CpuSampler(threading.Thread):
    """Every ``period`` seconds: each CPU's steal so far (ms, from /proc/stat) and the CPU each
    worker's main thread is on, to tell whether a latency spike was the hypervisor taking a
    worker's CPU away."""

    def __init__(self, pids: list[int], period: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pids, self.period = pids, period
        self.rows: list[tuple[float, list[float], list[int | None]]] = []
        self.halt = threading.Event()
        self._tick_ms = 1000 / os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self.halt.wait(self.period):
            try:
                lines = Path("/proc/stat").read_text().splitlines()
            except OSError:
                return
            steal = [int(line.split()[8]) * self._tick_ms for line in lines if line[:3] == "cpu" and line[3] != " "]
            self.rows.append((time.time(), steal, [self._cpu_of(pid) for pid in self.pids]))

    @staticmethod
    def _cpu_of(pid: int) -> int | None:
        try:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[36])
        except (OSError, IndexError, ValueError):
            return None


def canary_main(halt: Any, out: Any) -> None:
    """Times the same small piece of work (a Python loop and a 4 MiB copy) every 2 ms, in a
    process of its own: if it slows down when the workers do, the whole machine was slow
    (shared memory bandwidth, the hypervisor), not the pipeline."""
    buf = np.ones(1 << 19)
    rows = []
    while not halt.is_set():
        t = time.perf_counter()
        sum(range(2000))
        buf.copy()
        rows.append((time.time(), (time.perf_counter() - t) * 1000))
        time.sleep(0.002)
    out.put(rows)


def tail_episodes(tail: list[tuple[float, float, str]], samples: list[tuple[float, list[float], list[int | None]]],
                  canary: list[tuple[float, float]], t0: float, gap: float = 0.1,
                  top: int = 5) -> list[dict[str, Any]]:
    """Results over the tail threshold ``(t_capture, ms, worker)``, grouped into episodes (captures
    under ``gap`` s apart), the most results first: when (s into the window), how long, which
    workers, the steal meanwhile on the most-stolen CPU and on the CPUs the workers ran on, and
    how much slower than its median the canary's work ran (``canary_x``)."""
    typical = float(np.median([ms for _, ms in canary])) if canary else None
    groups: list[list[tuple[float, float, str]]] = []
    for r in sorted(tail):
        if groups and r[0] - groups[-1][-1][0] < gap:
            groups[-1].append(r)
        else:
            groups.append([r])
    out = []
    for g in sorted(groups, key=len, reverse=True)[:top]:
        start, end = g[0][0], max(t + ms / 1000 for t, ms, _ in g)
        inside = [s for s in samples if start - gap <= s[0] <= end]
        ep: dict[str, Any] = {"at_s": round(start - t0, 3), "span_ms": round((end - start) * 1000, 1), "results": len(g),
                              "max_ms": round(max(ms for _, ms, _ in g), 1), "workers": sorted({w for _, _, w in g})}
        if len(inside) > 1:
            stolen = [b - a for a, b in zip(inside[0][1], inside[-1][1])]
            cpus = sorted({c for s in inside for c in s[2] if c is not None})
            ep["steal_ms_max_cpu"] = round(max(stolen), 1)
            ep["steal_ms_worker_cpus"] = {c: round(stolen[c], 1) for c in cpus if c < len(stolen)}
        during = [ms for t, ms in canary if start - gap <= t <= end]
        if during and typical:
            ep["canary_x"] = round(max(during) / typical, 1)
        out.append(ep)
    return out


# ---- one point of the sweep ----------------------------------------------------------------

def percentile(values: np.ndarray, q: float) -> float | None:
    """The q-th percentile, None without values (no result in the window)."""
    return float(np.percentile(values, q)) if len(values) else None


def run_point(n: int, args: argparse.Namespace, templates: list[dict[str, Any]], config: Path) -> dict[str, Any]:
    """N streams for warm-up + duration seconds; the row of the table."""
    n_workers = args.inference_workers
    devices = [d for d in (args.devices or args.device).split(",") if d]
    eps = free_endpoints(2 * n_workers) if args.transport == "tcp" else \
        [f"ipc://{config.parent}/e2e-{n}-{i}" for i in range(2 * n_workers)]
    frames_eps, results_eps = eps[:n_workers], eps[n_workers:]
    sub = ResultSubscriber(results_eps, rcvhwm=1_000_000)
    workers = [start_worker(frames_eps[w], results_eps[w], devices[w % len(devices)], f"inference-{w}", args, config)
               for w in range(n_workers)]
    procs: list[mp.Process] = []
    sampler: CpuSampler | None = None
    canary_halt = None
    try:
        deadline = time.time() + 180
        by_name = {w.name: w for w in workers}
        while not all(w.ready for w in workers):
            record = sub.recv(timeout_ms=200)
            if isinstance(record, WorkerStats) and record.worker in by_name:
                by_name[record.worker].take(record)
            for w in workers:
                if not w.ready and (w.proc.poll() is not None or time.time() > deadline):
                    raise RuntimeError("the inference worker did not start:\n" + w.tail())

        fps = args.fps
        i0 = round(args.warmup * fps)
        i1 = i0 + round(args.duration * fps)
        streams = [f"e2e{g:04d}" for g in range(n)]
        per = max(1, args.streams_per_sender)
        ctx = mp.get_context("spawn")
        ready, out, go, t_start = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
        for lo in range(0, n, per):
            group = list(range(lo, min(n, lo + per)))
            plan = SenderPlan([streams[g] for g in group], [frames_eps[g % n_workers] for g in group],
                              [g / (n * fps) for g in group], fps, i1, (i0, i1))
            procs.append(ctx.Process(target=sender_main, args=(plan, templates, ready, go, t_start, out), daemon=True))
        canary_halt, canary_out = ctx.Event(), ctx.Queue()
        canary = ctx.Process(target=canary_main, args=(canary_halt, canary_out), daemon=True)
        for p in procs + [canary]:
            p.start()
        pids = {"workers": [w.proc.pid for w in workers], "senders": [ready.get(timeout=60) for _ in procs]}
        sampler = CpuSampler(pids["workers"])
        sampler.start()
        t_start.value = time.time() + 0.2
        go.set()
        t_meas0 = t_start.value + i0 / fps
        t_meas1 = t_start.value + i1 / fps

        latency: list[float] = []
        delivered: list[float] = []
        tail: list[tuple[float, float, str]] = []  # results over --tail-ms: (t_capture, ms, worker)
        seen = 0
        reports: list[dict[str, Any]] = []
        last_result = time.time()
        snaps: list[dict[str, Any]] = []
        while True:
            got = sub.recv(timeout_ms=50)
            now = time.time()
            if len(snaps) < 2 and now >= (t_meas0, t_meas1)[len(snaps)]:
                snaps.append(cpu_snapshot(pids))
            if isinstance(got, WorkerStats) and got.worker in by_name:
                by_name[got.worker].take(got)
            elif isinstance(got, Result):
                last_result = now
                if i0 <= got.seq < i1:
                    seen += 1
                    latency.append(got.t_result - got.t_capture)
                    delivered.append(now - got.t_capture)
                    if latency[-1] * 1000 > args.tail_ms:
                        tail.append((got.t_capture, latency[-1] * 1000, got.worker))
            if got is not None:
                continue
            while len(reports) < len(procs) and not out.empty():
                reports.append(out.get())
            if len(reports) == len(procs) and (now - last_result > 1.0 or now > t_meas1 + args.drain):
                break
            if now > t_meas1 + args.drain + 30:
                raise RuntimeError("the sender processes did not finish")
    finally:
        if sampler is not None:
            sampler.halt.set()
            sampler.join(1)
        if canary_halt is not None:
            canary_halt.set()
        for w in workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        stop_by = time.time() + 30
        while any(w.final is None and w.proc.poll() is None for w in workers) and time.time() < stop_by:
            record = sub.recv(timeout_ms=100)  # the final stats records
            if isinstance(record, WorkerStats) and record.worker in by_name:
                by_name[record.worker].take(record)
        sub.close()
        for w in workers:
            try:
                w.proc.wait(30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()

    try:
        canary_rows = [r for r in canary_out.get(timeout=10) if t_meas0 <= r[0] <= t_meas1]
    except queue.Empty:  # the canary did not report: the episodes go without it
        canary_rows = []
    canary_ms = np.asarray([ms for _, ms in canary_rows])
    expected = n * (i1 - i0)
    attempted = sum(r["attempted"] for r in reports)
    sender_drops = sum(r["dropped"] for r in reports)
    skipped, windows_per_s = 0, 0.0
    for w in workers:
        (w0, s0), (w1, s1) = w.stats_before(t_meas0), w.stats_before(t_meas1)
        end = w.final or (w.stats[-1][1] if w.stats else {})
        skipped += end.get("skipped_windows", 0) - s0.get("skipped_windows", 0)  # the window's late skips too
        if w1 > w0:
            windows_per_s += (s1.get("windows", 0) - s0.get("windows", 0)) / (w1 - w0)
    lat, dlv = np.asarray(latency) * 1000, np.asarray(delivered) * 1000
    row = {
        "streams": n, "target_fps": n * fps, "send_fps": attempted / args.duration,
        "send_late_p99_ms": max(r["late_p99_ms"] for r in reports),
        "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
        "p99_delivered_ms": percentile(dlv, 99), "max_ms": percentile(lat, 100),
        "sender_drops": sender_drops, "sender_deferred": sum(r["deferred"] for r in reports),
        "sender_send_max_ms": max(r["send_max_ms"] for r in reports),
        "skipped_windows": skipped, "drops": sender_drops + skipped,
        "lost_results": expected - seen, "results_per_s": seen / args.duration, "windows_per_s": windows_per_s,
        "senders": len(procs),
        "worker_latency_ms": [(w.final or {}).get("latency_ms") for w in workers],
        "worker_arrival_ms": [(w.final or {}).get("arrival_ms") for w in workers],  # all frames, bunched ones
        "worker_loop_ms": [(w.final or {}).get("loop_ms") for w in workers],  # iterations; the last interval's longest
        "worker_longest_in_window": [w.longest_between(t_meas0, t_meas1) for w in workers],  # by phase
        "worker_gc": [(w.final or {}).get("gc") for w in workers],
        "measured_from_to": [round(t_meas0, 3), round(t_meas1, 3)],  # wall clock, to place the longest iteration
        "cpu_lost": cpu_lost(*snaps) if len(snaps) == 2 else {},  # over the measured window
        f"over_{args.tail_ms:g}ms": len(tail),
        "tail_episodes": tail_episodes(tail, sampler.rows, canary_rows, t_meas0),
        "canary_ms": {"p50": percentile(canary_ms, 50), "p99": percentile(canary_ms, 99),
                      "max": percentile(canary_ms, 100)},
    }
    row["driver_ok"] = row["send_fps"] >= 0.99 * row["target_fps"] and row["send_late_p99_ms"] < 5.0
    return row


# ---- main ----------------------------------------------------------------------------------

def fmt(ms: float | None) -> str:
    return f"{ms:>7.1f}" if ms is not None else f"{'-':>7}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:6]))
    p.add_argument("--streams", type=int, nargs="+", default=DEFAULT_STREAMS, help="stream counts to sweep")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per stream count")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before the measured window (>= 1: the "
                   "first 30 frames of a stream give no result)")
    p.add_argument("--drain", type=float, default=5.0, help="longest wait for the window's last results")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second per stream")
    p.add_argument("--stride", type=int, default=1, help="classify every N frames per stream")
    p.add_argument("--device", default="auto", help="inference device: auto, cpu, cuda, cuda:N")
    p.add_argument("--devices", help="comma-separated device per inference worker (overrides --device)")
    p.add_argument("--inference-workers", type=int, default=1, help="inference workers; stream g goes to g mod W")
    p.add_argument("--weights", help="checkpoint (default: the bundled model)")
    p.add_argument("--form", choices=("window", "continual"), help="the model's serving form (default: the config's)")
    p.add_argument("--max-batch", type=int, help="override the config's max_batch")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the inference worker (default: PyTorch's)")
    p.add_argument("--streams-per-sender", type=int, default=64, help="streams per sender process")
    p.add_argument("--transport", choices=("tcp", "ipc"), default="tcp",
                   help="loopback TCP (as run_pipeline.py) or Unix-domain ipc:// endpoints")
    p.add_argument("--clip", type=Path, default=KINETICS_CLIP, help="Kinetics JSON clip, .skel or npy to loop")
    p.add_argument("--budget-ms", type=float, default=100.0, help="p99 budget")
    p.add_argument("--tail-ms", type=float, default=50.0,
                   help="results slower than this are counted and grouped into episodes (tail_episodes)")
    p.add_argument("--all", action="store_true", help="run every stream count, do not stop at the first failure")
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/e2e_<device>.json)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    setup_logging(args.debug)
    if args.warmup < 1.0 + 1.0 / args.fps:
        p.error("--warmup must be at least about 1 s (30 frames before a stream's first result)")
    templates, source = load_templates(args.clip)
    load_at_start = round(os.getloadavg()[0], 2)  # other work on the machine skews the figures
    device = (args.devices or args.device).split(",")[0]
    if device == "auto":
        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            device = "cpu"
    kind = device.split(":")[0]
    rows: list[dict[str, Any]] = []
    header = (f"{'streams':>7} {'target/s':>8} {'sent/s':>8} {'late p99':>8} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'drops':>6} {'skipped':>7} {'lost':>6} {'results/s':>9} {'windows/s':>9}")
    print(header, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        config = write_config(Path(tmp), args.max_batch)
        for n in args.streams:
            try:
                row = run_point(n, args, templates, config)
            except RuntimeError as exc:
                print(f"error at {n} streams: {exc}", file=sys.stderr)
                return 1
            rows.append(row)
            print(f"{n:>7} {row['target_fps']:>8.0f} {row['send_fps']:>8.0f} {row['send_late_p99_ms']:>8.2f} "
                  f"{fmt(row['p50_ms'])} {fmt(row['p99_ms'])} {row['sender_drops']:>6} {row['skipped_windows']:>7} "
                  f"{row['lost_results']:>6} {row['results_per_s']:>9.0f} {row['windows_per_s']:>9.0f}"
                  + ("" if row["driver_ok"] else "  (driver behind its schedule)"), flush=True)
            ok = row["p99_ms"] is not None and row["p99_ms"] <= args.budget_ms and row["drops"] == 0 \
                and row["lost_results"] == 0
            row["passed"] = ok
            if not ok and not args.all:
                break
    passed = [r["streams"] for r in rows if r["passed"]]
    metrics: dict[str, Any] = {
        f"e2e_max_streams_p99_under_{args.budget_ms:g}ms": max(passed) if passed else 0,
        "e2e_p99_ms_256x30fps": next((r["p99_ms"] for r in rows if r["streams"] == 256), None),
    }
    for r in rows:
        metrics[f"e2e_p50_ms_{r['streams']}x30fps"] = r["p50_ms"]
        metrics[f"e2e_p99_ms_{r['streams']}x30fps"] = r["p99_ms"]
        metrics[f"e2e_drops_{r['streams']}x30fps"] = r["drops"]
    out = {"machine": machine(device),
           "config": {"device": args.devices or device, "stride": args.stride, "fps": args.fps,
                      "duration_s": args.duration, "warmup_s": args.warmup, "clip": source,
                      "weights": args.weights or "bundled", "inference_workers": args.inference_workers,
                      "max_batch": args.max_batch or "config", "transport": args.transport,
                      "streams_per_sender": args.streams_per_sender,
                      "worker_threads": args.threads or "default", "loadavg_1m_at_start": load_at_start},
           "metrics": metrics, "rows": rows}
    path = write_results(f"e2e_{kind}", out, args.out)
    best = metrics[f"e2e_max_streams_p99_under_{args.budget_ms:g}ms"]
    print(f"largest N with p99 <= {args.budget_ms:g} ms and no drops: {best}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

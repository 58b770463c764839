"""Run the whole streaming pipeline: capture/replay workers -> ZeroMQ -> inference -> results.

    python run_pipeline.py                       # the bundled sample video
    python run_pipeline.py --camera 0
    python run_pipeline.py --video a.mp4 --video b.mp4 --output results.jsonl
    python run_pipeline.py --replay recording.skel --replay clip.json
    python run_pipeline.py --camera 0 --camera 1 --inference-workers 2 --devices cuda:0,cuda:1
    python run_pipeline.py --camera 0 --record rec/ --label wave   # one labelled take: rec/wave/camera0[-N].skel
    python run_pipeline.py --cluster auto --camera host-a:0 --replay clip.json   # workers as Ray actors

Each source and the inference worker run as their own processes, wired over ZeroMQ on
loopback; this process supervises them (a crashed worker is reported and restarted, a
capture worker resuming its stream) and prints and writes the results. It exits 0 when all
finite sources have ended, and stops every worker cleanly on Ctrl-C / SIGTERM.

With ``--inference-workers N`` there are N inference workers, each with its own frames and
results endpoints (and ``--devices`` entry); the i-th source is pinned to worker i mod N, so
each stream's ring buffer stays whole in one worker, also when either side is restarted
(a restarted worker keeps its command line, endpoints included). The results of all workers
are merged here.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.cli import SUPERVISOR_ENV, USER_ERROR, setup_logging
from pipeline.endpoints import free_endpoints, split_list

ROOT = Path(__file__).resolve().parent
SAMPLE_VIDEO = ROOT / "assets" / "tai_chi.mp4"
log = logging.getLogger("run_pipeline")


@dataclass
class Worker:
    """A supervised child process."""

    name: str
    argv: list[str]
    restartable: bool = True
    proc: subprocess.Popen | None = None
    restarts: int = 0
    done: bool = False
    failed: bool = False
    stream: str | None = None
    started_at: float = 0.0
    restart_times: list[float] = field(default_factory=list)
    pinned: str | None = None  # a source: the inference worker its stream goes to
    resends: bool = False  # a replay: restarted, it sends its stream again (workers/replay.py)
    extra: list[str] = field(default_factory=list)  # flags of its next start only

    def start(self) -> None:
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # keep packages found there
        env = {**os.environ, "PYTHONPATH": path, SUPERVISOR_ENV: str(os.getpid())}
        self.proc = subprocess.Popen(self.argv + self.extra, cwd=ROOT, env=env)
        self.extra = []
        self.started_at = time.time()


def _unique(name: str, taken: set[str]) -> str:
    base, n = name, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name)
    return name


def build_workers(args: argparse.Namespace, frames_eps: list[str], results_eps: list[str],
                  state_dir: Path, record_dir: Path | None = None) -> list[Worker]:
    """The inference workers first (one per frames/results endpoint pair), then one worker per source.

    The inference workers record (``record_dir``: ``--record``, or its ``--label`` folder); the
    sources put the ``--label`` in their streams' metadata."""
    from pipeline.messages import sanitize_stream_id

    py = [sys.executable, "-m"]
    common = ["--config", args.config] if args.config else []
    common += [flag for flag, on in (("--debug", args.debug), ("--quiet", args.quiet)) if on]
    n = len(frames_eps)
    devices = split_list(args.devices) or [args.device]
    workers = []
    for i, (frames_ep, results_ep) in enumerate(zip(frames_eps, results_eps, strict=True)):
        name = "inference" if n == 1 else f"inference-{i}"
        inference = py + ["workers.inference", "--listen", frames_ep, "--publish", results_ep, "--name", name] + common
        for flag, value in (("--weights", args.weights), ("--device", devices[i % len(devices)]),
                            ("--stride", args.stride), ("--form", args.form), ("--record", record_dir)):
            if value is not None:
                inference += [flag, str(value)]
        inference += ["--future"] if args.future else []
        workers.append(Worker(name, inference))
    taken: set[str] = set()
    sources = [("camera", str(c)) for c in args.camera] + [("video", v) for v in args.video] + \
              [("replay", r) for r in args.replay]
    if not sources:
        sources = [("video", str(SAMPLE_VIDEO))]
    for index, (kind, value) in enumerate(sources):
        stream = _unique(f"camera{value}" if kind == "camera" else sanitize_stream_id(Path(value).name.split(".")[0]),
                         taken)
        frames_ep, results_ep = frames_eps[index % n], results_eps[index % n]  # pinned: argv survives restarts
        if n > 1:
            log.info("stream %s -> %s", stream, workers[index % n].name)
        state = str(state_dir / f"{stream}.json")
        if kind == "replay":
            argv = py + ["workers.replay", value, "--connect", frames_ep, "--stream", stream, "--state-file", state]
            if args.replay_fast:
                argv.append("--fast")
        else:
            argv = py + ["workers.capture", f"--{kind}", value, "--connect", frames_ep, "--stream", stream,
                         "--state-file", state, "--results", results_ep]
            if args.save_video:
                target = Path(args.save_video)
                if len(sources) > 1:
                    target = target.with_name(f"{target.stem}_{stream}{target.suffix or '.mp4'}")
                argv += ["--save-video", str(target)]
            if args.show:
                argv.append("--show")
            if args.realtime and kind == "video":
                argv.append("--realtime")
        if args.label:
            argv += ["--label", args.label]
        workers.append(Worker(f"{kind} {value}", argv + common, stream=stream, pinned=workers[index % n].name,
                              resends=kind == "replay"))
    return workers


class Supervisor:
    """Starts, watches and stops the workers; the results sink runs in this process."""

    def __init__(self, workers: list[Worker], sink, restart_limit: int = 5) -> None:
        self.workers, self.sink, self.restart_limit = workers, sink, restart_limit
        self.stopping = False

    def sources(self) -> list[Worker]:
        return [w for w in self.workers if w.stream is not None]

    def check(self) -> None:
        for w in self.workers:
            if w.done or w.proc is None:
                continue
            code = w.proc.poll()
            if code is None:
                continue
            if w.stream is not None and code == 0:
                w.done = True
                log.info("%s finished", w.name)
            elif code == USER_ERROR:
                w.done = w.failed = True
                log.error("%s stopped with an error (see above); not restarted", w.name)
            elif self.stopping:
                w.done = True
            elif w.stream is not None and w.stream in self.sink.ended:
                w.done = True  # killed after its stream's end was through: nothing left to send
                log.warning("%s crashed (exit %s) after its stream ended; not restarted", w.name, code)
            else:
                recent = [t for t in w.restart_times if time.time() - t < 60]
                if len(recent) >= self.restart_limit:
                    w.done = w.failed = True
                    log.error("%s crashed %d times within a minute; giving up", w.name, len(recent))
                    continue
                log.warning("%s crashed (exit %s); restarting", w.name, code)
                w.restart_times.append(time.time())
                w.restarts += 1
                if w.stream is None:
                    self.restart_inference(w)
                else:
                    w.start()

    def restart_inference(self, worker: Worker) -> None:
        """Restart a crashed inference worker. Its replays send their streams again from the
        first frame (stopped before it binds, so that no old frame reaches it first): it rebuilds
        their windows as they were, classifying only those after the sink's last result of the
        stream (the sink drops any it already has), so none is lost or written twice. A replay
        whose stream has ended in the sink is left alone."""
        again = [s for s in self.sources() if s.pinned == worker.name and s.resends and not s.failed
                 and s.stream not in self.sink.ended]
        for source in again:
            if source.proc is not None and source.proc.poll() is None:
                source.proc.kill()
                source.proc.wait()
        worker.start()
        for source in again:
            log.info("%s sends its stream again to the restarted %s", source.name, worker.name)
            delivered = self.sink.last_seq.get(source.stream)
            source.extra = [] if delivered is None else ["--delivered-through", str(delivered)]
            source.done = False
            source.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping = True
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + timeout
        for w in self.workers:
            if w.proc is None:
                continue
            try:
                w.proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", w.name, timeout)
                w.proc.kill()
                w.proc.wait()

    def run(self, drain_idle_s: float = 30.0) -> int:
        interrupted = False

        def on_signal(signum, _frame):
            nonlocal interrupted
            interrupted = True
            self.sink.stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):  # before any worker exists: none is left behind
            signal.signal(sig, on_signal)
        last_result = last_check = time.time()
        try:
            for w in self.workers:
                w.start()
            while not interrupted:
                record = self.sink.sub.recv(timeout_ms=100)
                if record is not None:
                    self.sink.handle(record)
                    last_result = time.time()
                    if last_result - last_check < 0.1:
                        continue  # a steady flow of results does not hold up the restarts
                last_check = time.time()
                self.check()
                srcs = self.sources()
                if all(w.done for w in srcs):
                    if any(w.failed for w in srcs) and all(w.failed for w in srcs):
                        break
                    expected = {w.stream for w in srcs if not w.failed}
                    if expected <= self.sink.ended or time.time() - last_result > drain_idle_s:
                        break
                if any(w.failed for w in self.workers if w.stream is None):
                    break  # an inference worker gave up: the streams pinned to it cannot finish
        finally:
            self.stop()
            self.sink.close()
        failed = [w.name for w in self.workers if w.failed]
        summary = ", ".join(f"{s}: {n} results" for s, n in sorted(self.sink.counts.items())) or "no results"
        print(f"pipeline finished: {summary}" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
        if interrupted:
            return 130
        if failed:
            return USER_ERROR
        return 1 if self.sink.write_failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:9]))
    p.add_argument("--camera", type=_camera, action="append", default=[],
                   help="camera index (repeatable); with --cluster HOST:INDEX, a camera of that host")
    p.add_argument("--video", action="append", default=[], help="video file (repeatable)")
    p.add_argument("--replay", action="append", default=[], help=".skel recording, Kinetics JSON or npy (repeatable)")
    p.add_argument("--replay-fast", action="store_true", help="replay as fast as the pipeline takes frames")
    p.add_argument("--config", help="pipeline YAML (default configs/pipeline.yaml)")
    p.add_argument("--weights", help="checkpoint (default: the bundled model)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="inference device (default auto)")
    p.add_argument("--inference-workers", type=int, metavar="N",
                   help="inference workers (e.g. one per GPU); source i is pinned to worker i mod N "
                   "(default 1; with --cluster one per GPU of the cluster)")
    p.add_argument("--devices", metavar="LIST",
                   help="comma-separated device per inference worker, cycled, e.g. cuda:0,cuda:1 (overrides --device)")
    p.add_argument("--stride", type=int, help="classify every N frames of each stream")
    p.add_argument("--form", choices=("window", "continual"),
                   help="window: each result from its whole window; continual: per-person state, only the new "
                        "frames (docs/continual.md; default per device in the config)")
    p.add_argument("--future", action="store_true",
                   help="results (and the annotated video) carry each person's predicted frames up to the model's "
                        "horizon, not only the next one")
    p.add_argument("--realtime", action="store_true",
                   help="play --video files at their frame rate as live sources, as a camera would deliver them")
    p.add_argument("--output", help="write results as JSON Lines")
    p.add_argument("--save-video", help="annotated video path (.mp4 or .avi)")
    p.add_argument("--show", action="store_true", help="live window (needs a display)")
    p.add_argument("--record", metavar="DIR", help="save every stream's skeletons for replay or training")
    p.add_argument("--label", metavar="NAME",
                   help="with --record: the action this take shows; the take goes to DIR/NAME/ under a new name")
    p.add_argument("--quiet", action="store_true", help="no per-result console lines; workers log warnings only")
    p.add_argument("--print-every", type=int, default=1, help="print one result line in N per stream")
    p.add_argument("--frames-endpoint",
                   help="fixed frames endpoint (default: a free loopback port); N workers: N comma-separated")
    p.add_argument("--results-endpoint",
                   help="fixed results endpoint, e.g. for outside subscribers; N workers: N comma-separated")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run every worker as an actor of the Ray cluster at ADDRESS (auto, ray://HOST:PORT, "
                   "HOST:PORT, or local); sources may name their host (HOST:INDEX, HOST:PATH); docs/cluster.md")
    p.add_argument("--debug", action="store_true", help="debug logging and tracebacks")
    return p.parse_args(argv)


def _camera(value: str) -> int | str:
    """A camera index, or ``HOST:INDEX`` (a camera of that host, with --cluster)."""
    if value.isdigit():
        return int(value)
    host, _, index = value.rpartition(":")
    if host and index.isdigit():
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: a camera is an index (0, 1, ...) or HOST:INDEX")


def record_folder(args: argparse.Namespace) -> Path | None:
    """Where the inference workers record: ``--record DIR``, or ``DIR/NAME`` with ``--label NAME``."""
    from pipeline.messages import is_valid_stream_id

    if args.label is not None:
        if not args.record:
            raise ValueError("--label needs --record DIR (the take goes to DIR/NAME/)")
        if not is_valid_stream_id(args.label):
            raise ValueError(f"--label {args.label!r}: use letters, digits and _ . : @ + - (it names a folder)")
        return Path(args.record) / args.label
    return Path(args.record) if args.record else None


def report_takes(folder: Path, before: set[Path], streams: list[str]) -> bool:
    """Print the recordings this run wrote; False (with an error line) when a stream has none."""
    from pipeline.recording import read_recording

    new = sorted(set(folder.glob("*.skel")) - before)
    cut = sorted(set(folder.glob("*.skel.part")) - {p.with_name(p.name + ".part") for p in before})
    for path in new + cut:
        try:
            frames = len(read_recording(path).frames)
        except ValueError as exc:
            frames = f"unreadable: {exc}"
        note = "; cut short: the inference worker could not write more, see its log" if path in cut else ""
        print(f"recorded {path} ({frames} frames{note})", flush=True)
    lost = [s for s in streams if not any(p.name.split(".")[0] == s or p.name.startswith(f"{s}-") for p in new + cut)]
    for stream in lost:
        print(f"error: stream {stream}: no recording was written to {folder} (see the inference worker's log)",
              file=sys.stderr)
    return not lost and not cut


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.debug, args.quiet)
    from workers.sinks import ResultSink

    if args.save_video and Path(args.save_video).suffix.lower() not in (".mp4", ".avi"):
        suffix = Path(args.save_video).suffix
        print(f"error: --save-video {args.save_video}: cannot write {repr(suffix) if suffix else 'no extension'} "
              "videos; use .mp4 or .avi", file=sys.stderr)
        return USER_ERROR
    hosted = [c for c in args.camera if isinstance(c, str)]
    if hosted and not args.cluster:
        print(f"error: --camera {hosted[0]} names a host: that needs --cluster", file=sys.stderr)
        return USER_ERROR
    for path in args.video + args.replay:
        if not Path(path).is_file() and not args.cluster:  # with --cluster a file may be on another node
            print(f"error: {path}: no such file", file=sys.stderr)
            return USER_ERROR
    try:
        record_dir = record_folder(args)
        if record_dir is not None:
            record_dir.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR
    if args.inference_workers is not None and args.inference_workers < 1:
        print("error: --inference-workers must be at least 1", file=sys.stderr)
        return USER_ERROR
    if args.cluster:
        from pipeline.cluster import run_cluster

        return run_cluster(args, record_dir, build_workers)
    n = args.inference_workers or 1
    fixed_frames, fixed_results = split_list(args.frames_endpoint), split_list(args.results_endpoint)
    for flag, eps in (("--frames-endpoint", fixed_frames), ("--results-endpoint", fixed_results)):
        if eps and len(eps) != n:
            print(f"error: {flag} lists {len(eps)} endpoint(s) for {n} inference worker(s)", file=sys.stderr)
            return USER_ERROR
    free = free_endpoints(2 * n)
    frames_eps, results_eps = fixed_frames or free[:n], fixed_results or free[n:]
    with tempfile.TemporaryDirectory(prefix="stgcn-pipeline-") as state_dir:
        try:
            sink = ResultSink(results_eps, args.output, args.quiet, print_every=args.print_every, reuse_ids=False)
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return USER_ERROR
        workers = build_workers(args, frames_eps, results_eps, Path(state_dir), record_dir)
        before = set(record_dir.glob("*.skel")) if record_dir is not None else set()
        code = Supervisor(workers, sink).run()
        if record_dir is not None and not report_takes(record_dir, before, [w.stream for w in workers if w.stream]):
            return code or USER_ERROR
        return code


if __name__ == "__main__":
    sys.exit(main())

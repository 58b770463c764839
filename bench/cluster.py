"""The pipeline on a Ray cluster: N replayed skeleton streams through ``run_pipeline.py --cluster``.

    python -m bench.cluster [--streams 8] [--inference-workers 1] [--cluster local]
                            [--recording CLIP] [--repeat 5] [--warmup 5] [--device auto|cpu|cuda]
                            [--stride N] [--fast] [--weights CKPT] [--out FILE.json]

Runs ``run_pipeline.py --cluster ADDRESS`` exactly as users do (``local``: a one-machine Ray
cluster started for the run; every worker a Ray actor, CURVE between them), with ``--streams``
replays of one recorded skeleton file at its recorded rate, and ``--inference-workers`` workers
(one GPU each when the cluster has GPUs). The file (default: the Kinetics-skeleton clip in
../shared/data, 189 frames at 30 fps, up to 3 people) is played ``--repeat`` times in a row
(a .skel recording written for the run), so that the streams outlast the start-up.

From the run's JSON Lines: p50/p99 of each result's frame-to-result latency
(``latency_ms.total``, its own stamps) over the frames captured from ``--warmup`` s after the
first result on (before that, frames sent while the workers and the model start queue up);
results and frames per second over the streaming period (first to last result); and drops:
the windows a stream lacks against the union of all streams' windows (every stream replays the
same file losslessly, so each should have the same ones), plus streams with no result. Also the
time from launch to the first result (Ray, actors, model start-up) and the run's wall time and
exit status. Prints a summary and writes bench/results/cluster_<device>.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, machine, summary_ms, write_results

CLIP = ROOT.parent / "shared" / "data" / "skeleton" / "kinetics_skeleton_--33Lscn6sk.json"


def repeated(path: Path, times: int, out: Path) -> int:
    """``path`` played ``times`` times in a row, as a pipeline recording at ``out``; its frames."""
    from dataclasses import replace

    from pipeline.messages import StreamStart, encode
    from pipeline.recording import RecordingWriter
    from workers.replay import load_frames

    meta, frames = load_frames(path)
    first = frames[0]
    meta = {**meta, "source": path.name, "layout": first.layout, "joints": first.joints or 18,
            "width": first.width, "height": first.height}
    writer = RecordingWriter(out, StreamStart("bench", time.time(), meta))
    n = 0
    for _ in range(times):
        for frame in frames:
            writer.write(encode(replace(frame, stream="bench", seq=n)))
            n += 1
    writer.close("eof")
    return n


def measure(rows: list[dict], streams: int, frames: int, warmup: float) -> dict:
    """Latency (after ``warmup`` s), throughput and drops of one run's results."""
    results = [r for r in rows if r.get("type") == "result"]
    t_first = min((r["t_result"] for r in results), default=0.0)
    steady = [r for r in results if r["t_capture"] >= t_first + warmup]
    seqs: dict[str, set[int]] = {}
    for r in results:
        seqs.setdefault(r["stream"], set()).add(r["seq"])
    union = set().union(*seqs.values()) if seqs else set()
    lacking = sum(len(union - s) for s in seqs.values())
    silent = streams - len(seqs)
    t = sorted(r["t_result"] for r in results)
    span = (t[-1] - t[0]) if len(t) > 1 else 0.0
    return {"results": len(results), "windows_per_stream": len(union), "streams_with_results": len(seqs),
            "dropped_windows": lacking + silent * len(union), "silent_streams": silent,
            "latency_results": len(steady), **summary_ms((r["latency_ms"]["total"] for r in steady), "latency_"),
            "results_per_s": round(len(results) / span, 1) if span else None,
            "frames_per_s": round(streams * frames / span, 1) if span else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n")[0],
                                     epilog="\n".join(__doc__.split("\n")[2:5]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=8, help="replayed streams (default 8)")
    parser.add_argument("--inference-workers", type=int, default=1, help="inference workers (default 1)")
    parser.add_argument("--cluster", default="local", help="Ray cluster address (default local: one started here)")
    parser.add_argument("--recording", type=Path, default=CLIP, help="skeleton file to replay (.skel, .json, .npy)")
    parser.add_argument("--repeat", type=int, default=5, help="plays of the file in a row per stream (default 5)")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="latency over frames captured this long after the first result (default 5 s)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="inference device")
    parser.add_argument("--stride", type=int, help="classify every N frames (default: the config's per device)")
    parser.add_argument("--fast", action="store_true", help="replay as fast as the pipeline takes frames")
    parser.add_argument("--weights", help="checkpoint (default: the bundled model)")
    parser.add_argument("--timeout", type=float, default=1800, help="longest the run may take, s (default 1800)")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/cluster_<device>.json)")
    args = parser.parse_args(argv)
    if not args.recording.is_file():
        print(f"error: {args.recording}: no such file", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        recording = Path(tmp) / f"{args.recording.name.split('.')[0]}.skel"
        frames = repeated(args.recording, args.repeat, recording)
        out = Path(tmp) / "r.jsonl"
        argv_run = [sys.executable, "run_pipeline.py", "--cluster", args.cluster, "--quiet", "--device", args.device,
                    "--inference-workers", str(args.inference_workers), "--output", str(out)]
        for flag, value in (("--stride", args.stride), ("--weights", args.weights)):
            if value is not None:
                argv_run += [flag, str(value)]
        argv_run += ["--replay-fast"] if args.fast else []
        for _ in range(args.streams):
            argv_run += ["--replay", str(recording)]
        load = os.getloadavg()[0]  # other work on the machine: the CPU figures depend on it
        t0 = time.time()
        proc = subprocess.Popen(argv_run, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = None
        while proc.poll() is None and time.time() - t0 < args.timeout:
            if first is None and out.exists() and out.stat().st_size:
                first = time.time() - t0
            time.sleep(0.1)
        if proc.poll() is None:
            proc.terminate()
        stdout, stderr = proc.communicate(timeout=60)
        wall = time.time() - t0
        rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    device = "cuda" if args.device == "cuda" else "cpu" if args.device == "cpu" else _auto_device()
    payload = {"machine": machine(device), "cluster": args.cluster, "device": device, "streams": args.streams,
               "inference_workers": args.inference_workers, "recording": args.recording.name, "repeat": args.repeat,
               "frames_per_stream": frames, "rate": "fast" if args.fast else "recorded (30 fps)",
               "warmup_s": args.warmup, "load_avg_1min_before": round(load, 2),
               "stride": args.stride, "exit_status": proc.returncode, "wall_s": round(wall, 1),
               "first_result_s": round(first, 1) if first is not None else None,
               **measure(rows, args.streams, frames, args.warmup),
               "summary_line": next((line for line in stdout.splitlines() if line.startswith("pipeline finished")),
                                    None)}
    for key, value in payload.items():
        print(f"{key}: {value}")
    if proc.returncode != 0:
        print(stderr[-3000:], file=sys.stderr)
    write_results(f"cluster_{device}", payload, args.out)
    return 0 if proc.returncode == 0 else 1


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    sys.exit(main())

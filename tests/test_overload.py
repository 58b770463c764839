"""Overload and a killed consumer, measured by ``python -m bench.overload`` as a real run (shorter here).

Live sender processes push a camera-rate stream into the real inference worker CLI, which on
this CPU classifies fewer windows than the stream produces (stride 1); then the worker is
killed with SIGKILL while the senders keep going, and started again. Bounds are generous
relations (a result's frame is less than a window old, memory growth of a few MB), not speeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def run_bench(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "overload.json"
    proc = subprocess.run([sys.executable, "-m", "bench.overload", "--out", str(out), *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())["metrics"]


def test_overloaded_worker_skips_stale_windows_with_bounded_latency_and_flat_memory(tmp_path):
    m = run_bench(tmp_path, "--duration", "12", "--kill-down", "0")["overload"]
    print(json.dumps(m))
    assert m["worker_alive"]
    assert m["skipped_windows"] > 0 and m["drops_counted"] >= m["skipped_windows"], "the overload is counted"
    assert m["windows_classified"] < m["frames_sent"], "the worker was really behind (stride 1)"
    assert m["results_after_warmup"] >= 3 and m["max_result_gap_s"] < m["duration_s"] / 2, "results keep coming"
    assert m["lag_frames_p99"] < m["window"], "every result is for a frame less than one window old"
    assert m["worker_rss"]["growth_mb"] < 50 and m["sender_rss"]["growth_mb"] < 20


def test_senders_stay_bounded_while_the_worker_is_killed_and_resume_after_restart(tmp_path, tiny_weights):
    m = run_bench(tmp_path, "--duration", "3", "--warmup", "1", "--kill-down", "5", "--after-restart", "1",
                  "--weights", str(tiny_weights))["kill"]
    print(json.dumps(m))
    assert m["sender_pending_max_while_down"] <= m["queue_size"]
    assert m["sender_dropped_while_down"] > 0, "a live sender drops (and counts) what nobody takes"
    assert m["sender_rss_growth_while_down_mb"] < 10
    assert m["resumed"] and m["results_after_restart"] > 0, "results for frames sent after the restart"
    assert m["worker_alive"]

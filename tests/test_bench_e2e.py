"""bench/e2e.py runs end to end: inference workers as processes, paced senders, the JSON it writes."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_e2e_bench_smoke(tmp_path, tiny_weights):
    out = tmp_path / "e2e.json"
    proc = subprocess.run([sys.executable, "-m", "bench.e2e", "--streams", "2", "--duration", "1", "--warmup", "1.2",
                           "--device", "cpu", "--threads", "1", "--weights", str(tiny_weights), "--all",
                           "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report) >= {"machine", "date", "metrics", "rows"}
    assert {"e2e_max_streams_p99_under_100ms", "e2e_p99_ms_256x30fps", "e2e_p99_ms_2x30fps"} <= set(report["metrics"])
    row = report["rows"][0]
    assert row["streams"] == 2 and row["target_fps"] == 60
    assert row["results_per_s"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
    assert row["lost_results"] <= 60 and len(row["worker_latency_ms"]) == 1
    assert row["canary_ms"]["max"] >= row["canary_ms"]["p50"] > 0  # the machine's own pace, beside the pipeline
    episodes = row["tail_episodes"]  # results over 50 ms, grouped by when they were captured
    assert sum(e["results"] for e in episodes) <= row["over_50ms"]
    assert all(e["max_ms"] > 50 and e["workers"] == ["inference-0"] for e in episodes)
    assert all(w is None or w["ms"] >= w["read_ms"] for w in row["worker_longest_in_window"])
    assert "largest N with p99" in proc.stdout

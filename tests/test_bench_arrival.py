"""bench.arrival: one live stream through the real FrameSender and FrameReceiver, every frame timed."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_arrival_bench_times_every_frame(tmp_path):
    out = tmp_path / "arrival.json"
    subprocess.run([sys.executable, "-m", "bench.arrival", "--frames", "45", "--loops", "plain",
                    "worker-like", "--out", str(out)], cwd=ROOT, check=True, timeout=120, capture_output=True)
    result = json.loads(out.read_text())
    assert {"machine", "date", "metrics"} <= set(result)
    for row in result["rows"]:
        assert row["received"] == 45  # a live sender at 30 fps to a reader that keeps up: nothing dropped
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]

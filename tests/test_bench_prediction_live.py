"""bench/prediction_live.py end to end on the first 120 frames of a real video: the real pipeline
(MediaPipe, ZeroMQ, the shipped model with --future and --record), then the errors joined to the recording."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT.parent / "shared" / "data" / "videos" / "clean_and_jerk.mp4"
pytestmark = pytest.mark.skipif(not VIDEO.is_file(), reason="shared real videos not available")
METHODS = ("model", "zero_velocity", "constant_velocity")


def test_prediction_live_short_video(tmp_path: Path) -> None:
    out = tmp_path / "prediction_live.json"
    proc = subprocess.run([sys.executable, "-m", "bench.prediction_live", "--videos", str(VIDEO),
                           "--max-frames", "120", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"machine", "date", "command", "config", "overall", "videos"} <= set(report)
    assert report["config"]["horizon"] == 10
    overall = report["overall"]
    assert [row["h"] for row in overall] == list(range(1, 11))

    for row in overall:
        assert row["samples_frac"] > 0 and row["samples_torso"] > 0
        for method in METHODS:
            for unit in ("frac", "torso"):
                value = row[f"{method}_{unit}"]
                assert value is not None and math.isfinite(value) and value > 0, (row["h"], method, unit)
        assert row["improvement_over_zero_frac"] == pytest.approx(
            1 - row["model_frac"] / row["zero_velocity_frac"], abs=2e-3)

    zero = [row["zero_velocity_frac"] for row in overall]
    assert zero[0] < zero[1] < zero[4] < zero[9]
    assert all(b >= 0.95 * a for a, b in zip(zero, zero[1:])), zero

    (video,) = report["videos"]
    assert video["video"] == VIDEO.name and video["recorded_frames"] == 120
    assert video["ms_per_frame"] == pytest.approx(1000 / 29.97, abs=0.1)
    assert video["per_h"][9]["ms_ahead"] == pytest.approx(10 * video["ms_per_frame"], abs=0.1)
    ids = video["track_ids"]
    assert ids["horizons"] == [10] and ids["ids_not_in_recording"] == []
    assert 0 < ids["track_at_seq"] <= ids["person_results"]
    assert ids["result_seqs_recorded"] == video["results"] > 0

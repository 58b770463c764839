"""bench.inference and bench.continual --engine run on the shipped model (CPU, tiny settings) and
write their JSON; no timing is asserted."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", *args, "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_bench_inference_runs_the_shipped_model_with_its_multi_frame_predictor(tmp_path):
    result = _run(tmp_path, "bench.inference", "--device", "cpu", "--batches", "1", "--repeats", "1",
                  "--modes", "engine")
    assert result["metrics"]["latency_ms_b1"] > 0 and result["metrics"]["gflop_per_window_w96"] > 1


def test_bench_continual_times_the_serving_engine_from_a_first_batch_of_new_people(tmp_path):
    result = _run(tmp_path, "bench.continual", "--batches", "1", "--repeats", "1", "--engine", "3",
                  "--engine-frames", "4")
    [row] = result["engine"]
    assert row["people"] == 3 and row["first_batch_ms"] > 0 and row["batch_p50_ms"] > 0
    assert result["metrics"]["continual_step_flops_ratio_w300"] > 50


def test_bench_worker_path_times_the_real_worker_per_frame(tmp_path):
    result = _run(tmp_path, "bench.worker_path", "--streams", "2", "--frames", "40")
    m = result["metrics"]
    assert m["read_us_per_frame"] > 0 and m["finish_us_per_frame"] > 0 and m["start_us_per_frame"] > 0
    assert m["worker_python_us_per_frame"] == m["read_us_per_frame"] + m["finish_us_per_frame"]

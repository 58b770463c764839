"""bench.train runs end to end on the CPU (tiny settings) and writes its JSON; no timing is asserted."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_bench_train_writes_a_memory_mapped_dataset_and_its_json(tmp_path):
    out, data = tmp_path / "train_cpu.json", tmp_path / "data"
    proc = subprocess.run([sys.executable, "-m", "bench.train", "--device", "cpu", "--batch-sizes", "4", "8",
                           "--samples", "12", "--frames", "24", "--window", "16", "--warmup", "1", "--steps", "2",
                           "--workers", "1", "--keep-data", str(data), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"machine", "date", "metrics"} <= set(result)
    metrics = result["metrics"]
    assert metrics["train_samples_per_s_b4"] > 0 and metrics["train_samples_per_s_fp32_b8"] > 0
    assert result["config"]["window"] == 16 and result["config"]["samples"] == 12
    assert "samples/s" in proc.stdout
    arr = np.load(data / "train_data.npy", mmap_mode="r")
    assert arr.shape == (12, 3, 24, 18, 2) and arr.dtype == np.float32 and np.abs(arr).max() > 0
    with open(data / "train_label.pkl", "rb") as fh:
        names, labels = pickle.load(fh)
    assert len(names) == len(labels) == 12

"""bench.prediction_baselines on synthetic sets whose answer is known: smooth motion is
extrapolated far better than zero velocity; still joints with white jitter defeat constant
velocity, and the best a filter can do there is average the jitter away (at most 1 - 1/sqrt(2),
29 %, in root mean square). The two-sided bound, which also sees the frames after the one it
estimates, cannot foresee that frame's own jitter either: it stays under 29 % on jitter."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _write_set(folder: Path, positions: np.ndarray) -> None:
    """``positions`` (N, T, V, 2) as an OpenPose 2D set: confidence 1, one person slot filled."""
    folder.mkdir()
    n, t, v, _ = positions.shape
    x = np.zeros((n, 3, t, v, 2), np.float32)
    x[:, :2, :, :, 0] = positions.transpose(0, 3, 1, 2)
    x[:, 2, :, :, 0] = 1.0
    for split in ("train", "val"):
        np.save(folder / f"{split}_data.npy", x)
    (folder / "meta.json").write_text(json.dumps({"layout": "openpose"}))


def test_smooth_motion_is_extrapolated_and_jitter_only_averaged(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(40)[None, :, None, None]
    phase = rng.uniform(0, 6, (8, 1, 18, 2))
    _write_set(tmp_path / "smooth", 0.5 + 0.1 * np.sin(0.2 * t + phase))
    _write_set(tmp_path / "jitter", 0.5 + 0.01 * rng.standard_normal((8, 40, 18, 2)))
    out = tmp_path / "baselines.json"
    proc = subprocess.run([sys.executable, "-m", "bench.prediction_baselines", str(tmp_path / "smooth"),
                           str(tmp_path / "jitter"), "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sets = json.loads(out.read_text())["sets"]
    smooth, jitter = sets["smooth"]["improvement_vs_zero_velocity"], sets["jitter"]["improvement_vs_zero_velocity"]
    assert smooth["constant_velocity"] > 0.8 and smooth["linear_filter"] > 0.9
    assert jitter["constant_velocity"] < -0.3 and 0.1 < jitter["linear_filter"] < 0.35
    assert sets["jitter"]["rmse_improvement_vs_zero_velocity"]["linear_filter"] < 1 - 2 ** -0.5
    assert sets["smooth"]["two_sided_bound"]["improvement_vs_zero_velocity"] > 0.95
    assert 0.2 < sets["jitter"]["two_sided_bound"]["improvement_vs_zero_velocity"] < 1 - 2 ** -0.5

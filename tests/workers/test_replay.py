"""Replay sources: an st-gcn npy sample, a Kinetics clip, bad files."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workers.replay import ReplayError, load_frames

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


def test_npy_sample_replays_frame_by_frame(tmp_path):
    subprocess.run([sys.executable, "-m", "stgcn.convert", "utd-mhad", str(SHARED / "utd-mhad"), str(tmp_path),
                    "--layout", "openpose", "--frames", "128", "--subjects", "1", "2", "--limit", "2",
                    "--no-progress"], cwd=ROOT, check=True, capture_output=True)
    data = np.load(tmp_path / "train_data.npy")
    meta, frames = load_frames(tmp_path / "train_data.npy", index=1)
    valid = int((data[1, 2, :, :, 0].sum(1) > 0).sum())
    assert len(frames) == valid and frames[0].layout == "openpose" and meta["index"] == 1
    kp = frames[5].persons[0].keypoints
    np.testing.assert_allclose(kp, data[1, :, 5, :, 0].T)
    assert all(len(f.persons) == 1 for f in frames), "the empty second person is not sent"
    with pytest.raises(ReplayError, match="--index 9"):
        load_frames(tmp_path / "train_data.npy", index=9)


def test_kinetics_clip_keeps_its_frame_index_and_people():
    meta, frames = load_frames(SHARED / "skeleton" / "kinetics_skeleton_--33Lscn6sk.json")
    assert meta["label"] == "flipping pancake" and frames[-1].seq == 189
    assert max(len(f.persons) for f in frames) == 3


@pytest.mark.parametrize("content,match", [(b"{not json", "kinetics_bad"), (b"\x00" * 40, "not a readable npy")])
def test_bad_files_raise_one_clear_error(tmp_path, content, match):
    path = tmp_path / ("kinetics_bad.json" if content.startswith(b"{") else "bad_data.npy")
    path.write_bytes(content)
    with pytest.raises(ReplayError, match=match):
        load_frames(path)
    proc = subprocess.run([sys.executable, "-m", "workers.replay", str(path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and str(path.name) in proc.stderr

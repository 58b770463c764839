"""Reliability of the file-reading CLIs and of training: real subprocesses of the real CLIs, no mocks.

1. Truncated or malformed inputs (npy, pkl, Kinetics JSON, NTU .skeleton, UTD .mat, video,
   checkpoint, recording), each fed to the CLI that reads it: a non-zero exit, exactly one error
   line on stderr naming the file, no traceback; with ``--debug`` the traceback is shown.
2. A training run killed with SIGKILL mid-epoch resumes with ``--resume`` and ends with the same
   metrics as an uninterrupted run; the checkpoint left by the kill loads.
3. A converter killed with SIGKILL mid-write leaves no final-named file that loads but is wrong.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from stgcn import load_model
from tests.stgcn.test_train import rows
from tests.stgcn.test_train import write_config as train_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
UTD = SHARED / "utd-mhad"
KINETICS_CLIP = SHARED / "skeleton" / "kinetics_skeleton_--33Lscn6sk.json"
VIDEO = SHARED / "videos" / "clean_and_jerk.mp4"

ENV = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(*args, check=True, timeout=120):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def truncate(path: Path, fraction: float = 0.5) -> Path:
    path.chmod(0o644)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * fraction))
    return path


def copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    dst.chmod(0o644)
    return dst


@pytest.fixture(scope="module")
def utd_subset(tmp_path_factory) -> Path:
    """A few UTD-MHAD clips in the openpose layout, 64 frames: 8 train, 8 val."""
    out = tmp_path_factory.mktemp("utd")
    run("-m", "stgcn.convert", "utd-mhad", UTD, out, "--layout", "openpose", "--frames", "64",
        "--subjects", "1", "2", "--limit", "8", "--no-progress")
    return out


def write_config(path: Path, data: Path, epochs: int = 3) -> Path:
    return train_config(path, data, epochs, batch_size=4, steps=[2], seed=3)


@pytest.fixture(scope="module")
def checkpoint(utd_subset, tmp_path_factory) -> Path:
    """A valid project checkpoint (untrained weights) whose training config points at ``utd_subset``."""
    from stgcn.checkpoint import build_model, save_checkpoint
    from stgcn.config import load_config
    from stgcn.train import serving_config

    d = tmp_path_factory.mktemp("ckpt")
    cfg = load_config(write_config(d / "tiny.yaml", utd_subset))
    serve = serving_config(cfg, 27)
    torch.manual_seed(0)
    return save_checkpoint(d / "model.pt", build_model(serve["model"]), {**serve, "train_config": cfg},
                           {"epoch": 0})


# --------------------------------------------------------------------------- bad-file cases
# Each builder gets (tmp, utd_subset, checkpoint) and returns (CLI argv, the bad file's path).

def _data_copy(tmp: Path, utd: Path) -> Path:
    d = tmp / "data"
    for name in ("train_data.npy", "train_label.pkl", "val_data.npy", "val_label.pkl"):
        copy(utd / name, d / name)
    return d


def _train_argv(tmp: Path, data: Path) -> list:
    return ["-m", "stgcn.train", write_config(tmp / "c.yaml", data), "--work-dir", tmp / "w", "--device", "cpu"]


def _train_on_spoiled(tmp: Path, utd: Path, name: str, spoil) -> tuple[list, Path]:
    d = _data_copy(tmp, utd)
    return _train_argv(tmp, d), spoil(d / name)


def _write(content: bytes):
    def spoil(path: Path) -> Path:
        path.write_bytes(content)
        return path
    return spoil


def train_truncated_npy(tmp, utd, ckpt):
    return _train_on_spoiled(tmp, utd, "train_data.npy", truncate)


def train_garbage_npy(tmp, utd, ckpt):
    return _train_on_spoiled(tmp, utd, "train_data.npy", _write(b"this is not an npy file\n" * 10))


def train_truncated_pkl(tmp, utd, ckpt):
    return _train_on_spoiled(tmp, utd, "train_label.pkl", truncate)


def train_wrong_pkl(tmp, utd, ckpt):
    return _train_on_spoiled(tmp, utd, "val_label.pkl", _write(pickle.dumps({"not": "a tuple"})))


def eval_truncated_npy(tmp, utd, ckpt):
    d = _data_copy(tmp, utd)
    bad = truncate(d / "val_data.npy", 0.9)
    return ["-m", "stgcn.eval", "--weights", ckpt, "--data-dir", d, "--device", "cpu", "--workers", "0"], bad


def eval_garbage_pkl(tmp, utd, ckpt):
    d = _data_copy(tmp, utd)
    bad = d / "val_label.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    return ["-m", "stgcn.eval", "--weights", ckpt, "--data-dir", d, "--device", "cpu", "--workers", "0"], bad


def eval_truncated_checkpoint(tmp, utd, ckpt):
    bad = truncate(copy(ckpt, tmp / "model.pt"))
    return ["-m", "stgcn.eval", "--weights", bad, "--device", "cpu", "--workers", "0"], bad


def eval_config_truncated_checkpoint(tmp, utd, ckpt):
    bad = truncate(copy(ckpt, tmp / "model.pt"), 0.2)
    cfg = write_config(tmp / "c.yaml", utd)
    return ["-m", "stgcn.eval", cfg, "--weights", bad, "--device", "cpu", "--workers", "0"], bad


def convert_kinetics_truncated(tmp, utd, ckpt):
    src = tmp / "kin"
    copy(KINETICS_CLIP, src / "a.json")
    bad = truncate(copy(KINETICS_CLIP, src / "b.json"), 0.6)
    labels = tmp / "labels.json"
    labels.write_text('{"a": {"has_skeleton": true, "label": "flipping pancake", "label_index": 129},'
                      ' "b": {"has_skeleton": true, "label": "flipping pancake", "label_index": 129}}')
    return ["-m", "stgcn.convert", "kinetics", src, tmp / "out", "--label-json", labels, "--no-progress"], bad


def _ntu_text(seed: int, frames: int = 6) -> str:
    rng = np.random.default_rng(seed)
    lines = [str(frames)]
    for _ in range(frames):
        lines += ["1", "72057594037920000 0 1 1 1 1 0 -0.1 0.2 2", "25"]
        for x, y, z in rng.uniform(-1, 3, size=(25, 3)):
            lines.append(f"{x:.4f} {y:.4f} {z:.4f} 250.1 180.2 1000.3 500.4 0.1 0.2 0.3 0.9 2")
    return "\r\n".join(lines) + "\r\n"


def convert_ntu_truncated(tmp, utd, ckpt):
    src = tmp / "ntu"
    src.mkdir()
    (src / "S001C001P001R001A001.skeleton").write_text(_ntu_text(0))
    bad = src / "S001C002P002R001A002.skeleton"
    bad.write_text(_ntu_text(1))
    truncate(bad, 0.5)
    return ["-m", "stgcn.convert", "ntu", src, tmp / "out", "--no-progress"], bad


def convert_utd_truncated(tmp, utd, ckpt):
    src = tmp / "utd"
    lines = (UTD / "manifest.csv").read_text().splitlines()
    keep = [lines[0]] + [ln for ln in lines[1:] if ln.split(",")[3] in ("1", "2")][:3]
    (src / "Skeleton").mkdir(parents=True)
    (src / "manifest.csv").write_text("\n".join(keep) + "\n")
    files = [src / ln.split(",")[0] for ln in keep[1:]]
    for f in files:
        copy(UTD / f.relative_to(src), f)
    bad = truncate(files[1], 0.5)
    return ["-m", "stgcn.convert", "utd-mhad", src, tmp / "out", "--no-progress"], bad


def convert_utd_garbage(tmp, utd, ckpt):
    src = tmp / "utd"
    (src / "Skeleton").mkdir(parents=True)
    copy(UTD / "Skeleton" / "a1_s1_t1_skeleton.mat", src / "Skeleton" / "a1_s1_t1_skeleton.mat")
    bad = src / "Skeleton" / "a1_s2_t1_skeleton.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 200)
    return ["-m", "stgcn.convert", "utd-mhad", src, tmp / "out", "--no-progress"], bad


def replay_truncated_npy(tmp, utd, ckpt):
    bad = truncate(copy(utd / "val_data.npy", tmp / "val_data.npy"))
    return ["-m", "workers.replay", bad, "--fast", "--connect", "tcp://127.0.0.1:9"], bad


def replay_garbage_npy(tmp, utd, ckpt):
    bad = tmp / "x_data.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    return ["-m", "workers.replay", bad, "--fast", "--connect", "tcp://127.0.0.1:9"], bad


def replay_truncated_json(tmp, utd, ckpt):
    bad = truncate(copy(KINETICS_CLIP, tmp / "clip.json"), 0.5)
    return ["-m", "workers.replay", bad, "--fast", "--connect", "tcp://127.0.0.1:9"], bad


def replay_garbage_skel(tmp, utd, ckpt):
    bad = tmp / "rec.skel"
    bad.write_bytes(bytes(range(256)) * 4)
    return ["-m", "workers.replay", bad, "--fast", "--connect", "tcp://127.0.0.1:9"], bad


def capture_truncated_video(tmp, utd, ckpt):
    bad = truncate(copy(VIDEO, tmp / "clip.mp4"), 0.3)
    return ["-m", "workers.capture", "--video", bad, "--connect", "tcp://127.0.0.1:9"], bad


def capture_not_a_video(tmp, utd, ckpt):
    bad = tmp / "notes.mp4"
    bad.write_text("not a video at all\n" * 50)
    return ["-m", "workers.capture", "--video", bad, "--connect", "tcp://127.0.0.1:9"], bad


# (builder, also check that --debug shows the traceback)
CASES = [
    (train_truncated_npy, True),
    (train_garbage_npy, False),
    (train_truncated_pkl, False),
    (train_wrong_pkl, False),
    (eval_truncated_npy, True),
    (eval_garbage_pkl, False),
    (eval_truncated_checkpoint, False),
    (eval_config_truncated_checkpoint, False),
    (convert_kinetics_truncated, True),
    (convert_ntu_truncated, False),
    (convert_utd_truncated, False),
    (convert_utd_garbage, False),
    (replay_truncated_npy, True),
    (replay_garbage_npy, False),
    (replay_truncated_json, False),
    (replay_garbage_skel, False),
    (capture_truncated_video, False),
    (capture_not_a_video, True),
]


@pytest.mark.parametrize("build,debug", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_file_gives_one_error_line_naming_it(build, debug, utd_subset, checkpoint, tmp_path):
    argv, bad = build(tmp_path, utd_subset, checkpoint)
    proc = run(*argv, check=False)
    err = proc.stderr
    assert proc.returncode != 0, f"exit 0 on {bad}:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    errors = [ln for ln in err.splitlines() if re.search(r"\berror\b", ln, re.I)]
    assert len(errors) == 1, f"expected one error line, got {errors}\n{err[-3000:]}"
    assert str(bad) in errors[0], f"error line does not name {bad}: {errors[0]}"
    if debug:
        proc = run(*argv, "--debug", check=False)
        assert proc.returncode != 0 and "Traceback (most recent call last)" in proc.stderr, proc.stderr[-3000:]


# --------------------------------------------------------------------------- killed training resumes

def test_training_killed_mid_epoch_resumes_to_the_same_metrics(utd_subset, tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml", utd_subset, epochs=3)
    full, part = tmp_path / "full", tmp_path / "part"
    train = ["-m", "stgcn.train", str(cfg), "--device", "cpu", "--work-dir"]
    run(*train, full)

    proc = subprocess.Popen([sys.executable, *train, str(part)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        epoch = None
        while time.monotonic() < deadline and proc.poll() is None:
            if (part / "last.pt").exists():
                epoch = torch.load(part / "last.pt", map_location="cpu", weights_only=True)["meta"]["epoch"]
                if epoch >= 0:
                    break
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert epoch == 0, f"killed after epoch {epoch}, expected during epoch 1"
    assert proc.returncode == -signal.SIGKILL
    # every checkpoint under a final name is complete: it loads (a save cut short stays a *.tmp)
    for ckpt in part.glob("*.pt"):
        assert load_model(ckpt).config["window"] == 16, ckpt
    assert torch.load(part / "last.pt", map_location="cpu", weights_only=True)["meta"]["epoch"] == 0
    assert not (part / "final.pt").exists()

    run(*train, part, "--resume")
    a, b = rows(full), rows(part)
    assert [r["epoch"] for r in a] == ["0", "1", "2"]
    assert [r["epoch"] for r in b] == ["0", "1", "2"]
    for key in ("loss_cls", "loss_next", "val_top1", "val_loss", "val_mpjpe"):
        assert float(b[-1][key]) == pytest.approx(float(a[-1][key]), rel=1e-6, abs=1e-12), key
    assert not [p for p in part.iterdir() if p.name.endswith(".tmp")], "stale temporary files after --resume"
    assert load_model(part / "final.pt").config["window"] == 16


# --------------------------------------------------------------------------- killed converter

def test_converter_killed_mid_write_leaves_no_wrong_final_file(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "stgcn.convert", "utd-mhad", str(UTD), str(out), "--frames", "300",
                             "--no-progress"], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        caught = False
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and any(p.name.startswith(".train_data.npy.tmp") for p in out.iterdir()):
                caught = True
                break
            time.sleep(0.001)
        if caught:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if not caught or proc.returncode != -signal.SIGKILL:
        pytest.skip("the conversion finished before it could be killed mid-write")
    finals = sorted(p for p in out.iterdir() if not p.name.startswith("."))
    # the kill landed while train_data.npy was being filled, so normally nothing has a final name
    # yet; whatever does must be complete and right (same as an uninterrupted conversion)
    if finals:
        from stgcn.convert.utd_mhad import convert_utd_mhad

        ref = tmp_path / "ref"
        convert_utd_mhad(UTD, ref, frames=300, progress=False)
        for p in finals:
            if p.suffix == ".npy":
                np.testing.assert_array_equal(np.load(p), np.load(ref / p.name), err_msg=str(p))
            else:
                assert pickle.loads(p.read_bytes()) == pickle.loads((ref / p.name).read_bytes()), p
    assert not (out / "val_data.npy").exists() or (out / "train_label.pkl").exists()

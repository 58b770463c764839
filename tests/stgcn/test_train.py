"""Training, evaluation and resume as users run them: real subprocesses on real UTD-MHAD data."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stgcn import load_model

ROOT = Path(__file__).resolve().parents[2]
UTD = ROOT.parent / "shared" / "data" / "utd-mhad"


def run(*args, check=True):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def utd_subset(tmp_path_factory):
    out = tmp_path_factory.mktemp("utd")
    run("-m", "stgcn.convert", "utd-mhad", str(UTD), str(out), "--layout", "openpose", "--frames", "64",
        "--subjects", "1", "2", "--limit", "12", "--no-progress")
    return out


def write_config(path: Path, data: Path, epochs: int, **train: object) -> Path:
    """A tiny training config on ``data`` (``train`` overrides the recipe's train section)."""
    cfg = yaml.safe_load((ROOT / "configs/train/utd_mhad_openpose.yaml").read_text())
    cfg["data"]["train"] = {"data": str(data / "train_data.npy"), "label": str(data / "train_label.pkl")}
    cfg["data"]["val"] = {"data": str(data / "val_data.npy"), "label": str(data / "val_label.pkl")}
    cfg["data"]["window"] = 16
    cfg["data"]["num_workers"] = 0
    cfg["class_names"] = str(UTD / "class_names.json")
    cfg["train"].update(dict(epochs=epochs, batch_size=6, steps=[1], warmup_epochs=0, lr=0.05), **train)
    path.write_text(yaml.safe_dump(cfg))
    return path


def rows(work: Path) -> list[dict]:
    with (work / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_train_eval_and_resume_match_an_uninterrupted_run(utd_subset, tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml", utd_subset, epochs=2)
    full, part = tmp_path / "full", tmp_path / "part"
    run("-m", "stgcn.train", str(cfg), "--work-dir", str(full), "--device", "cpu")
    run("-m", "stgcn.train", str(cfg), "--work-dir", str(part), "--device", "cpu", "--epochs", "1")
    run("-m", "stgcn.train", str(cfg), "--work-dir", str(part), "--device", "cpu", "--resume")
    a, b = rows(full), rows(part)
    assert [r["epoch"] for r in b] == ["0", "1"]
    for key in ("loss_cls", "loss_next", "val_top1", "val_mpjpe"):
        assert float(a[-1][key]) == pytest.approx(float(b[-1][key]), rel=1e-4), key

    model = load_model(full / "best.pt")
    assert model.config["class_names"][2] == "right hand wave" and model.config["window"] == 16
    assert model.predictor is not None and model.config["normalisation"]["drop_joints"] == [14, 15, 16, 17]

    assert list((full / "tensorboard").glob("events.out.tfevents.*")), "metrics also go to TensorBoard"
    final = load_model(full / "final.pt").config
    assert final["persons"] == 2, "the person slots of the training data"
    assert 0 < final["open_set"]["score_threshold"] < 1 and final["open_set"]["motion_threshold"] > 0, \
        "the unknown thresholds, calibrated on the training windows"
    bars = []
    for keep in ("0.99", "0.5"):
        run("-m", "stgcn.calibrate", "--weights", str(full / "final.pt"), "--keep", keep, "--out",
            str(tmp_path / f"c{keep}.pt"), "--device", "cpu")
        bars.append(load_model(tmp_path / f"c{keep}.pt").config["open_set"]["score_threshold"])
    assert 0 < bars[0] <= bars[1] < 1, "keeping fewer of the right answers: a bar as high or higher"
    workers = yaml.safe_load(cfg.read_text())
    workers["data"]["num_workers"] = 2  # workers draw their augmentation from torch's seed
    (tmp_path / "workers.yaml").write_text(yaml.safe_dump(workers))
    again = []
    for k in range(2):
        run("-m", "stgcn.calibrate", "--weights", str(full / "final.pt"), "--config", str(tmp_path / "workers.yaml"),
            "--out", str(tmp_path / f"again{k}.pt"), "--device", "cpu")
        again.append(load_model(tmp_path / f"again{k}.pt").config["open_set"])
    assert again[0] == again[1], "the same windows drawn again: the same thresholds"

    out = tmp_path / "eval.json"
    proc = run("-m", "stgcn.eval", "--weights", str(full / "last.pt"), "--json", str(out), "--device", "cpu",
               "--workers", "0")
    metrics = json.loads(out.read_text())
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 1 and len(metrics["per_class"]) == 27
    assert metrics["mpjpe_zero_velocity"] > 0 and metrics["mpjpe"] > 0
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "top-1" in proc.stdout
    assert float(rows(full)[-1]["val_top1"]) == pytest.approx(metrics["top1"], abs=1e-6)


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    proc = run("-m", "stgcn.train", str(tmp_path / "missing.yaml"), check=False)
    assert proc.returncode == 2 and "missing.yaml: no such config file" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    proc = run("-m", "stgcn.eval", "--weights", str(bad), check=False)
    assert proc.returncode == 2 and str(bad) in proc.stderr and "Traceback" not in proc.stderr


def test_distributed_data_parallel_with_two_cpu_processes(utd_subset, tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml", utd_subset, epochs=1)
    work = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "stgcn.train", str(cfg),
                           "--work-dir", str(work), "--device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(rows(work)) == 1 and load_model(work / "final.pt").config["window"] == 16


def test_predictor_alone_trains_without_labels(utd_subset, tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml", utd_subset, epochs=1)
    text = cfg.read_text().replace("task: joint", "task: predict")
    cfg.write_text(text)
    work = tmp_path / "predict"
    proc = run("-m", "stgcn.train", str(cfg), "--work-dir", str(work), "--device", "cpu")
    assert "epoch 1/1 " in proc.stderr and " eta 0m00s" in proc.stderr, "each epoch's line ends with the time left"
    row = rows(work)[0]
    assert "val_top1" not in row and float(row["val_mpjpe"]) > 0 and float(row["loss_cls"]) == 0
    assert load_model(work / "best.pt").predictor is not None

"""ONNX export as users run it: the CLI in a subprocess, then ONNX Runtime against PyTorch on real windows."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from stgcn import STGCN, load_model
from stgcn.export import check_inputs, compare, export_onnx, relative_error

ROOT = Path(__file__).resolve().parents[2]
UTD = ROOT.parent / "shared" / "data" / "utd-mhad"


def run(*args):
    return subprocess.run([sys.executable, "-m", "stgcn.export", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def exported(tiny_weights, tmp_path_factory):
    """The CLI's export of the tiny project checkpoint (predictor head, 16-frame window), with its check."""
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    proc = run("--weights", tiny_weights, "--onnx", out, "--check-data", UTD, "--check-batch", "4")
    return proc, out


def test_cli_exports_and_reports_the_error_against_pytorch(exported):
    proc, out = exported
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file() and not list(out.parent.glob(".*.tmp-*"))
    assert "inputs x, recent" in proc.stdout and "T = 16" in proc.stdout
    worst = float(re.search(r"max relative error ([0-9.e+-]+)", proc.stdout).group(1))
    assert worst <= 1e-4 and "ok" in proc.stdout.splitlines()[-1]
    assert "Traceback" not in proc.stderr


def test_onnxruntime_matches_pytorch_at_two_batch_sizes_on_real_windows(exported, tiny_weights):
    _, out = exported
    model = load_model(tiny_weights)
    inputs = check_inputs(model, 16, count=5, source=UTD)
    assert np.abs(inputs["recent"]).max() > 0, "the recent frames are real skeletons"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x", "recent"]
    assert [o.name for o in session.get_outputs()] == ["logits", "next_frame"]
    for batch in (1, 5):
        feed = {k: v[:batch] for k, v in inputs.items()}
        logits, nxt = session.run(None, feed)
        with torch.no_grad():
            ref_logits, ref_next = model(torch.from_numpy(feed["x"]), torch.from_numpy(feed["recent"]))
        assert logits.shape == (batch, 5) and nxt.shape == (batch, 3, 18, 2)
        assert relative_error(logits, ref_logits.numpy()) <= 1e-4
        assert relative_error(nxt, ref_next.numpy()) <= 1e-4


def test_original_published_key_checkpoint_exports(tmp_path):
    """A plain state dict as published (``module.`` prefix, float16): logits only, batch axis dynamic."""
    sd = {f"module.{k}": v.half() if v.is_floating_point() else v
          for k, v in STGCN(3, 60, graph_args={"layout": "ntu-rgb+d"}).state_dict().items()}
    torch.save(sd, tmp_path / "st_gcn.ntu-xsub.pt")
    model = load_model(tmp_path / "st_gcn.ntu-xsub.pt")
    path = export_onnx(model, tmp_path / "ntu.onnx", window=32)
    errors = compare(path, model, check_inputs(model, 32, count=3, source=UTD), (1, 3))
    assert set(errors) == {1, 3} and all(set(e) == {"logits"} for e in errors.values())
    assert max(e["logits"] for e in errors.values()) <= 1e-4


def test_bad_checkpoint_is_one_line_error(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint at all")
    proc = run("--weights", path, "--onnx", tmp_path / "out.onnx")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m stgcn.export: error: ") and str(path) in lines[0], \
        proc.stderr
    assert not (tmp_path / "out.onnx").exists()

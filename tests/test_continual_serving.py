"""The continual form serving the whole pipeline: a real skeleton clip replayed through
run_pipeline.py (real processes, ZeroMQ on loopback, the bundled model) at stride 1, against the
window form on the same clip."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINETICS_CLIP = ROOT.parent / "shared" / "data" / "skeleton" / "kinetics_skeleton_--33Lscn6sk.json"


def run(tmp: Path, form: str, stride: int) -> tuple[subprocess.CompletedProcess, dict[int, dict[int, str]]]:
    out = tmp / f"{form}.jsonl"
    proc = subprocess.run([sys.executable, "run_pipeline.py", "--device", "cpu", "--replay", str(KINETICS_CLIP),
                           "--replay-fast", "--form", form, "--stride", str(stride), "--output", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return proc, {r["seq"]: {p["id"]: p["top"][0]["label"] for p in r["people"]}
                  for r in rows if r["type"] == "result"}


def test_continual_form_answers_every_frame_and_agrees_with_the_window_form(tmp_path):
    proc, window = run(tmp_path, "window", 4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, cont = run(tmp_path, "continual", 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "continual) on cpu, stride 1" in proc.stderr, "the worker says which form serves"
    seqs = sorted(cont)
    assert seqs == list(range(min(window), 190)), \
        "a result for every frame of the 190-frame clip, from the window form's first (min_frames) on"
    both = [(cont[s][i], window[s][i]) for s in window for i in window[s] if i in cont.get(s, {})]
    assert len(both) > 60, "the two people of the clip, in most windows of both runs"
    agree = sum(a == b for a, b in both) / len(both)
    assert agree >= 0.8, f"the continual form's best class is the window form's in {agree:.0%} of person-windows"

"""The continual form serving the whole pipeline: a real skeleton clip replayed through
run_pipeline.py (real processes, ZeroMQ on loopback, the bundled model) at stride 1, against the
window form on the same clip. The clip's two people change places in the replay's person order
from frame to frame, and its action changes (walking, then bowling), so the two forms, which
weigh the frames differently, agree less than on a steady clip (tests/stgcn/test_continual_engine.py)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINETICS_CLIP = ROOT.parent / "shared" / "data" / "skeleton" / "kinetics_skeleton_--33Lscn6sk.json"


def run(tmp: Path, form: str, stride: int) -> tuple[subprocess.CompletedProcess, dict[int, dict[int, tuple]]]:
    out = tmp / f"{form}.jsonl"
    proc = subprocess.run([sys.executable, "run_pipeline.py", "--device", "cpu", "--replay", str(KINETICS_CLIP),
                           "--replay-fast", "--form", form, "--stride", str(stride), "--output", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return proc, {r["seq"]: {p["id"]: (p["top"][0]["label"], p["top"][0]["score"]) for p in r["people"]}
                  for r in rows if r["type"] == "result"}


def test_continual_form_answers_every_frame_and_agrees_with_the_window_form(tmp_path):
    proc, window = run(tmp_path, "window", 4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, cont = run(tmp_path, "continual", 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "continual form) on cpu, stride 1" in proc.stderr, "the worker says which form serves"
    seqs = sorted(cont)
    assert seqs == list(range(min(window), 190)), \
        "a result for every frame of the 190-frame clip, from the window form's first (min_frames) on"
    first = min(window)
    assert set(cont[first]) == set(window[first]) == {0, 1}, "both people answered from the first window on"
    state = {i: [(cont[s][i], window[s][i]) for s in sorted(window)
                 if s >= first + 40 and i in window[s] and i in cont.get(s, {})] for i in (0, 1)}
    assert sum(map(len, state.values())) >= 10, "both people, once their states have caught up"
    diffs = [abs(c[1] - w[1]) for pairs in state.values() for c, w in pairs]
    assert sum(d > 1e-3 for d in diffs) >= 0.8 * len(diffs), "then the state answers, with its own scores"
    # the replay's person order swaps the two people from frame to frame; the bowler's own slot
    # (id 1) keeps its action once both forms have seen the bowling
    late = [(cont[s][1], window[s][1]) for s in sorted(window) if s >= 124 and 1 in window[s] and 1 in cont.get(s, {})]
    assert late and all(c[0] == w[0] == "bowl" for c, w in late)

"""bench/live.py end to end on short real clips (the real pipeline, MediaPipe included) and a replay
of real UTD-MHAD 2D skeletons, with the tiny checkpoint: the JSON's structure and that its numbers add up."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.live import majority, pick_samples, score_stream

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VIDEOS = SHARED / "data" / "videos"
UTD_2D = SHARED / "data" / "utd-mhad-openpose2d" / "csv"
pytestmark = pytest.mark.skipif(not (VIDEOS / "clean_and_jerk.mp4").is_file() or not UTD_2D.is_dir(),
                                reason="shared real data not available")


def small_test_set(out: Path) -> Path:
    """Three real UTD-MHAD 2D sequences as a converted test set: two of class "a" (a class of the tiny
    model) and one of a class it lacks."""
    from stgcn.convert.utd_mhad_2d import read_utd_mhad_2d

    files = ["a10_s2_t1_coco.csv", "a10_s4_t1_coco.csv", "a22_s2_t1_coco.csv"]
    data = np.stack([read_utd_mhad_2d(UTD_2D / f, frames=100) for f in files]).astype(np.float32)
    out.mkdir()
    np.save(out / "val_data.npy", data)
    with open(out / "val_label.pkl", "wb") as fh:
        pickle.dump((files, [0, 0, 1]), fh)
    (out / "class_names.txt").write_text("a\nnot a model class\n")
    (out / "sources.json").write_text(json.dumps({"datasets": ["utd-mhad-2d"], "val": ["utd-mhad-2d"] * 3}))
    return out


def test_live_bench_short_clips(tmp_path, tiny_weights):
    out = tmp_path / "live.json"
    data = small_test_set(tmp_path / "set")
    proc = subprocess.run([sys.executable, "-m", "bench.live", "--clips", "clean_and_jerk,ntu_two_person",
                           "--max-frames", "40", "--weights", str(tiny_weights), "--device", "cpu",
                           "--replay-test", str(data), "--per-class", "2", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"machine", "date", "config", "metrics", "clips", "per_class", "replay"} <= set(report)
    assert report["config"]["weights"] == str(tiny_weights) and report["config"]["model_classes"] == list("abcde")
    metrics = report["metrics"]
    assert {"live_clip_accuracy", "live_known_window_accuracy", "live_unknown_rate_out_of_class",
            "live_unknown_clips_out_of_class", "replay_known_window_accuracy", "replay_clip_accuracy"} <= set(metrics)

    clips = {c["clip"]: c for c in report["clips"]}
    assert set(clips) == {"clean_and_jerk.mp4", "ntu_two_person.avi"}
    for c in clips.values():
        persons = c["persons"]
        assert c["windows"] > 0 and c["person_windows"] == sum(p["windows"] for p in persons)
        assert all(sum(p["labels"].values()) == p["windows"] for p in persons)
        assert c["unknown_windows"] == sum(p["labels"].get("unknown", 0) for p in persons)
        assert sum(c["people_per_window"]["histogram"].values()) == c["windows"]
        assert sum(int(k) * v for k, v in c["people_per_window"]["histogram"].items()) == c["person_windows"]
        assert c["windows_without_people"] == c["people_per_window"]["histogram"].get("0", 0)
        assert c["main_person"] == persons[0]["id"] and c["answer"] == persons[0]["majority_label"]
        assert persons[0]["windows"] == max(p["windows"] for p in persons)
    cj, pair = clips["clean_and_jerk.mp4"], clips["ntu_two_person.avi"]
    assert cj["in_class"] and cj["class"] == "clean_and_jerk" and cj["model_class"] is None  # the tiny model lacks it
    assert cj["correct"] is False and cj["known_window_accuracy"] == 0.0
    assert not pair["in_class"] and pair["people_expected"] == 2
    assert pair["no_action_claimed"] == (pair["answer"] == "unknown")
    assert metrics["live_clip_accuracy"] == 0.0
    assert metrics["live_unknown_rate_out_of_class"] == pytest.approx(
        pair["unknown_windows"] / pair["person_windows"], abs=1e-4)
    assert report["per_class"] == {"clean_and_jerk": {"model_class": None, "clips": 1, "correct": 0, "accuracy": 0.0}}

    replay = report["replay"]
    rows = replay["samples_detail"]
    assert [r["index"] for r in rows] == [0, 1, 2] and replay["samples"] == 3
    assert [r["model_class"] for r in rows] == ["a", "a", None]
    assert all(r["windows"] > 0 and r["person_windows"] == r["windows"] for r in rows)  # one person each
    known = rows[:2]
    assert all(r["right_windows"] <= r["person_windows"] and r["top1_windows"] <= r["person_windows"] for r in known)
    assert replay["known_window_accuracy"] == pytest.approx(
        sum(r["right_windows"] for r in known) / sum(r["person_windows"] for r in known), abs=1e-4)
    assert replay["clip_accuracy"] == sum(r["correct"] for r in known) / 2
    assert replay["lacking_unknown_share"] == pytest.approx(rows[2]["unknown_windows"] / rows[2]["person_windows"],
                                                            abs=1e-4)
    assert replay["by_source"]["utd-mhad-2d"]["known_samples"] == 2
    assert "clean_and_jerk.mp4" in proc.stdout and "utd-mhad-2d" in proc.stdout


def test_scoring_helpers():
    assert majority(["x", "y", "y", "x"]) == "x" and majority([]) is None
    assert pick_samples(np.array([0, 0, 0, 0, 0, 1, 2, 2]), 2) == [0, 4, 5, 6, 7]
    records = [{"seq": 3, "people": [{"id": 1, "label": "wave"}, {"id": 2, "label": "unknown"}]},
               {"seq": 7, "people": [{"id": 1, "label": "wave"}]}, {"seq": 11, "people": []}]
    records[0]["people"][1]["top"] = [{"label": "wave", "score": 0.4}]  # top class, but unknown to the open set
    row = score_stream(records, "wave", True)
    assert row["answer"] == "wave" and row["correct"] and row["right_windows"] == 2 and row["top1_windows"] == 1
    assert row["person_windows"] == 3 and row["windows_without_people"] == 1 and row["people"] == 2
    assert score_stream([], None, False)["answer"] == "no person"

"""The inference worker as a real process on real ZeroMQ loopback sockets."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import msgpack
import numpy as np
import pytest

from pipeline.endpoints import free_endpoint
from pipeline.messages import Frame, FrameBatch, Person, StreamEnd, StreamStart, encode
from pipeline.recording import read_recording
from pipeline.results import Result, StreamEnded
from pipeline.transport import FrameSender, ResultSubscriber
from stgcn import STGCN, save_checkpoint
from stgcn.graph import OPENPOSE_EDGES
from tests.conftest import final_stats
from workers.replay import load_frames

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker(tiny_weights, tmp_path):
    frames_ep, results_ep = free_endpoint(), free_endpoint()
    config = tmp_path / "diagnostics.yaml"  # laid over configs/pipeline.yaml: the timing probes on
    config.write_text("inference:\n  diagnostics: true\n")
    proc = subprocess.Popen([sys.executable, "-m", "workers.inference", "--listen", frames_ep, "--publish", results_ep,
                             "--weights", str(tiny_weights), "--device", "cpu", "--stride", "4",
                             "--record", str(tmp_path / "rec"), "--config", str(config)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sub = ResultSubscriber(results_ep)
    time.sleep(0.3)
    yield frames_ep, sub, proc, tmp_path / "rec"
    sub.close()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def person(rng, track):
    kp = np.zeros((18, 3), np.float32)
    kp[:, :2] = rng.uniform(0.3, 0.7, (18, 2))
    kp[:14, 2] = 0.9
    return Person(track, kp)


def collect(sub, stream, timeout=60.0):
    results, deadline = [], time.time() + timeout
    while time.time() < deadline:
        got = sub.recv(timeout_ms=200)
        if got is None:
            continue
        if isinstance(got, StreamEnded) and got.stream == stream:
            return results
        if isinstance(got, Result):
            results.append(got.to_json())
    raise AssertionError(f"no end for {stream} within {timeout} s ({len(results)} results)")


def test_classifies_every_stride_survives_bad_input_and_records(worker):
    frames_ep, sub, proc, rec_dir = worker
    rng = np.random.default_rng(0)
    sender = FrameSender(frames_ep, live=False)
    sender.send_control(StreamStart("cam", time.time(), {"fps": 30.0, "source": "test", "layout": "openpose",
                                                         "width": 640, "height": 480, "joints": 18, "live": False}))
    n = 60
    bad = [b"", b"\xc1garbage", msgpack.packb({"v": 1, "type": "frame"}), msgpack.packb([1, 2, 3]),
           msgpack.packb({"v": 99, "type": "frame"})]
    for seq in range(n):
        sender.send(Frame("cam", seq, time.time(), 640, 480, "openpose", (person(rng, 7), person(rng, 3)), 5.0))
        if seq % 12 == 0:
            sender.send(bad[(seq // 12) % len(bad)])
    # a frame of another layout is dropped and counted, not fed to the model
    sender.send(Frame("cam", n, time.time(), 640, 480, "ntu-rgb+d", (Person(1, np.ones((25, 3), np.float32)),)))
    sender.send_control(StreamEnd("cam", time.time(), "eof"))
    results = collect(sub, "cam")
    sender.close()
    # first result once the window has 16 frames (min_frames is capped at the window), then every 4
    seqs = [r["seq"] for r in results]
    assert seqs == list(range(15, n, 4)) + ([n - 1] if (n - 1 - 15) % 4 else [])
    r = results[0]
    assert sorted(p["id"] for p in r["people"]) == [3, 7], "each tracked person gets their own result"
    for p in r["people"]:
        scores = [t["score"] for t in p["top"]]
        assert scores == sorted(scores, reverse=True) and {t["label"] for t in p["top"]} == set("abcde")
        assert len(p["top"]) == 5 and abs(sum(scores) - 1) < 1e-4
        assert p["label"] == p["top"][0]["label"] and p["score"] == scores[0], "a new person's first label at once"
        assert np.asarray(p["next_frame"]).shape == (18, 3)
    a, b = r["people"]
    assert a["top"] != b["top"], "two different people, two different classifications"
    steady = [p["label"] for p in results[-1]["people"]]
    assert all(label in set("abcde") for label in steady), "after a few windows each person has a steady label"
    assert set(r["latency_ms"]) == {"pose", "transport", "queue", "inference", "total"} and r["latency_ms"]["pose"] == 5
    assert proc.poll() is None, "bad messages never stop the worker"
    proc.send_signal(signal.SIGTERM)
    final = final_stats(sub)
    proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert final["bad_messages"] == 5 and final["bad_frames"] == 1 and final["frames_in"] == n + 1
    assert final["gc"]["frozen"] > 10000 and len(final["gc"]["collections"]) == 3  # torch's heap is out of the walks
    longest = final["loop_ms"]["longest"]  # the worst loop iteration, split by phase
    assert longest["ms"] >= max(longest["read_ms"], longest["finish_ms"], longest["start_ms"], longest["stats_ms"]) > 0
    arrival = final["arrival_ms"]  # every frame, classified or not
    assert arrival["max"] >= arrival["p99"] >= arrival["p50"] and arrival["bunched"] >= 0
    rec = read_recording(rec_dir / "cam.skel")
    assert len(rec.frames) == n and rec.end is not None and rec.start.meta["fps"] == 30.0


def test_live_stream_keeps_only_the_newest_window(worker):
    frames_ep, sub, proc, _ = worker
    rng = np.random.default_rng(1)
    sender = FrameSender(frames_ep, live=False)  # deliver everything at once: the worker must skip
    sender.send_control(StreamStart("live", time.time(), {"fps": 30.0, "source": "cam", "layout": "openpose",
                                                          "width": 640, "height": 480, "joints": 18, "live": True}))
    for seq in range(400):
        sender.send(encode(Frame("live", seq, time.time(), 640, 480, "openpose", (person(rng, 1),))))
    sender.send_control(StreamEnd("live", time.time(), "eof"))
    results = collect(sub, "live")
    sender.close()
    assert results[-1]["seq"] == 399
    assert len(results) < len(range(15, 400, 4)), "stale live windows are skipped, not queued"
    assert [r["seq"] for r in results] == sorted(r["seq"] for r in results)


def test_a_batched_stream_gives_the_results_of_its_frames_sent_one_by_one(worker):
    """The same frames, one stream one per message and one in batches (with a gap, stale frames,
    people coming and going, a batch of another layout and a corrupt batch): same windows,
    same results, same recording."""
    frames_ep, sub, proc, rec_dir = worker
    rng = np.random.default_rng(3)
    tracks = [7, 3]
    seqs = [s for s in range(80) if s not in (40, 41, 42)]  # a gap of 3 frames, held by the ring buffer
    frames = []
    for seq in seqs:
        if seq in (20, 55):
            tracks = [3] if seq == 20 else [3, 9]
        frames.append(Frame("x", seq, time.time(), 640, 480, "openpose", tuple(person(rng, t) for t in tracks), 5.0))
    sizes = [7, 1, 13, 2, 20, 30, 4]
    groups, i = [], 0
    for size in sizes:
        groups.append(frames[i:i + size])
        i += size
    assert i == len(frames)
    meta = {"fps": 30.0, "source": "test", "layout": "openpose", "width": 640, "height": 480, "joints": 18,
            "live": False}
    sender = FrameSender(frames_ep, live=False)
    for stream in ("one", "many"):
        sender.send_control(StreamStart(stream, time.time(), meta))
    for f in frames:
        sender.send(replace(f, stream="one"))
    sender.send(replace(frames[10], stream="one"))  # stale
    for n, group in enumerate(groups):
        sender.send(FrameBatch.from_frames([replace(f, stream="many") for f in group]))
        if n == 1:
            stale = [replace(f, stream="many") for f in frames[5:9]]
            sender.send(FrameBatch.from_frames(stale))  # every frame already there: all stale
            other = Frame("many", 1000, time.time(), 640, 480, "ntu-rgb+d", (Person(1, np.ones((25, 3), np.float32)),))
            sender.send(FrameBatch.from_frames([other]))  # another layout: dropped and counted
            corrupt = bytearray(encode(FrameBatch.from_frames(stale)))
            corrupt[-4:] = b"\x00\x00\xc0\x7f"  # the last keypoint value becomes a NaN
            sender.send(bytes(corrupt))
    for stream in ("one", "many"):
        sender.send_control(StreamEnd(stream, time.time(), "eof"))
    results: dict[str, list] = {"one": [], "many": []}
    ended: set[str] = set()
    deadline = time.time() + 60
    while ended != {"one", "many"} and time.time() < deadline:
        got = sub.recv(timeout_ms=200)
        if got is None:
            continue
        if isinstance(got, StreamEnded):
            ended.add(got.stream)
        elif isinstance(got, Result):
            results[got.stream].append(got.to_json())
    sender.close()
    assert ended == {"one", "many"}
    one, many = results["one"], results["many"]
    assert [r["seq"] for r in many] == [r["seq"] for r in one] and len(one) > 10
    for a, b in zip(one, many):
        assert [p["id"] for p in a["people"]] == [p["id"] for p in b["people"]]
        for pa, pb in zip(a["people"], b["people"]):
            assert [t["label"] for t in pa["top"]] == [t["label"] for t in pb["top"]]
            np.testing.assert_allclose([t["score"] for t in pa["top"]], [t["score"] for t in pb["top"]], atol=1e-4)
            np.testing.assert_allclose(pa["next_frame"], pb["next_frame"], atol=1e-4)
    proc.send_signal(signal.SIGTERM)
    stats = final_stats(sub)
    proc.communicate(timeout=15)
    # the stale frames of both streams, the other layout, the corrupt batch
    assert stats["stale_frames"] == 5 and stats["bad_frames"] == 1 and stats["bad_messages"] == 1
    rec_one, rec_many = read_recording(rec_dir / "one.skel"), read_recording(rec_dir / "many.skel")
    assert [replace(f, stream="x") for f in rec_many.frames] == [replace(f, stream="x") for f in rec_one.frames]
    assert [f.seq for f in rec_many.frames] == seqs


KINETICS_CLIP = ROOT.parent / "shared" / "data" / "skeleton" / "kinetics_skeleton_--33Lscn6sk.json"
EXTRA_EDGES = [(4, 7), (10, 13)]  # wrist to wrist, ankle to ankle: a graph of our own over the OpenPose joints


def serve_kinetics_clip(*worker_args: str) -> tuple[list[dict], dict, str]:
    """The Kinetics clip replayed (fast) into a real inference worker started with ``worker_args``
    on the CPU: its results, its final stats and its output."""
    frames_ep, results_ep = free_endpoint(), free_endpoint()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-m", "workers.inference", "--listen", frames_ep, "--publish",
                               results_ep, "--device", "cpu", *worker_args],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sub = ResultSubscriber(results_ep)
    try:
        replay = subprocess.run([sys.executable, "-m", "workers.replay", str(KINETICS_CLIP), "--connect", frames_ep,
                                 "--fast", "--stream", "clip"], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120)
        assert replay.returncode == 0, replay.stderr[-2000:]
        results = collect(sub, "clip")
        worker.send_signal(signal.SIGTERM)
        stats = final_stats(sub)
    finally:
        sub.close()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    return results, stats, out


@pytest.mark.parametrize("layout", ["kinetics", {"name": "openpose", "num_node": 18, "center": 1,
                                                 "edges": [list(e) for e in OPENPOSE_EDGES + tuple(EXTRA_EDGES)]}],
                         ids=["alias", "custom-graph"])
def test_serves_a_checkpoint_whose_layout_is_an_alias_or_a_custom_graph(layout, tmp_path):
    """Frames say "openpose"; the checkpoint names its layout another way: every frame is served."""
    cfg = {"in_channels": 3, "num_class": 4, "graph_args": {"layout": layout}, "predictor": True, "coords": 2}
    weights = tmp_path / "w.pt"
    save_checkpoint(weights, STGCN(**cfg), {"model": cfg, "class_names": list("abcd"),
                                             "normalisation": {"name": "person_centric"}, "window": 16})
    results, stats, out = serve_kinetics_clip("--weights", str(weights), "--stride", "10")
    _, frames = load_frames(KINETICS_CLIP)
    assert stats["bad_frames"] == 0 and stats["frames_in"] == len(frames) > 100, out[-2000:]
    assert len(results) == stats["windows"] >= len(frames) // 10 - 1, "a window every 10 frames, none dropped"
    assert "model openpose" in out  # served under the canonical name


def test_serves_the_input_streams_its_settings_choose(tmp_path):
    """``inference.streams`` runs a subset of the bundled two-stream model; a stream it lacks is one error line."""
    config = tmp_path / "joint.yaml"
    config.write_text("inference:\n  streams: [joint]\n")
    results, _, out = serve_kinetics_clip("--stride", "30", "--config", str(config))
    assert results and any(r["people"] for r in results)
    assert "streams joint, continual form)" in out, out[-2000:]
    config.write_text("inference:\n  streams: [bone]\n")
    bad = subprocess.run([sys.executable, "-m", "workers.inference", "--device", "cpu", "--config", str(config),
                          "--listen", free_endpoint(), "--publish", free_endpoint()], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "streams ['bone'] are not in this model (it has joint, joint_motion)" in bad.stderr

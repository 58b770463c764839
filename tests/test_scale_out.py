"""Scale-out: several inference workers, each stream pinned to exactly one of them.

Real processes (run_pipeline.py and its workers, replay workers started by hand) and real
ZeroMQ on loopback, the tiny checkpoint of conftest.py on the CPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from pipeline.messages import Frame, StreamEnd, decode
from pipeline.endpoints import split_list
from pipeline.sharding import pick_endpoint, pick_index
from pipeline.transport import FrameReceiver
from tests.test_reliability_streaming import (
    ENV,
    cleanup,
    pgrep,
    rows,
    unique_config,
    wait_for,
    write_walk_recording,
)

ROOT = Path(__file__).resolve().parents[1]
KINETICS_CLIP = ROOT.parent / "shared" / "data" / "skeleton" / "kinetics_skeleton_--33Lscn6sk.json"
LONG_FRAMES = 400


def start(tmp_path: Path, tiny_weights: Path, sources: list[str], *extra: str):
    config, tag = unique_config(tmp_path)
    out = tmp_path / "r.jsonl"
    argv = [sys.executable, "run_pipeline.py", "--device", "cpu", "--quiet", "--weights", str(tiny_weights),
            "--config", config, "--output", str(out), "--inference-workers", "2"]
    for source in sources:
        argv += ["--replay", source]
    proc = subprocess.Popen(argv + list(extra), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return proc, out, tag


def by_stream(results: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        out[r["stream"]].append(r)
    return out


def test_streams_are_split_across_two_workers_and_each_stays_whole(tmp_path, tiny_weights):
    proc, out, tag = start(tmp_path, tiny_weights, [str(KINETICS_CLIP)] * 4, "--replay-fast", "--stride", "10")
    try:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-3000:]
    finally:
        cleanup(proc, tag)
    streams = by_stream(rows(out))
    assert len(streams) == 4
    workers = {s: {r["worker"] for r in rs} for s, rs in streams.items()}
    assert all(len(w) == 1 for w in workers.values()), f"a stream's results came from several workers: {workers}"
    owners = [next(iter(w)) for w in workers.values()]
    assert sorted(owners) == ["inference-0", "inference-0", "inference-1", "inference-1"], workers
    # frames 1..189; the tiny model's window is 16 frames: a result every 10 frames from frame 16, and the last
    expected = list(range(16, 189, 10)) + [189]
    for stream, rs in streams.items():
        assert [r["seq"] for r in rs] == expected, f"{stream} has gaps"
    # the same clip through either worker gives the same windows, hence the same results
    first = {next(iter(w)): streams[s] for s, w in workers.items()}
    for a, b in zip(first["inference-0"], first["inference-1"]):
        assert [p["id"] for p in a["people"]] == [p["id"] for p in b["people"]]
        for pa, pb in zip(a["people"], b["people"]):
            np.testing.assert_allclose([t["score"] for t in pa["top"]], [t["score"] for t in pb["top"]], atol=1e-5)


@pytest.fixture
def long_recording(tmp_path) -> Path:
    """One person moving smoothly, 400 frames at 20 fps: a 20 s stream, so that a worker killed
    after its first result is back (up to 15 s on a busy 2-core machine) well within the
    stream's lifetime (a replay's tail also waits for its consumer, as long as it takes)."""
    return write_walk_recording(tmp_path / "walk.skel", LONG_FRAMES, 20.0, seed=5)


def test_a_restarted_worker_keeps_its_streams(tmp_path, tiny_weights, long_recording):
    proc, out, tag = start(tmp_path, tiny_weights, [str(long_recording)] * 2, "--stride", "10")
    try:
        got = wait_for(lambda: [r for r in rows(out) if r["worker"] == "inference-1"], 60,
                       "a result of inference-1")
        victim = got[0]["stream"]
        pids = pgrep(f"workers.inference .*--name inference-1 .*{tag}")
        assert len(pids) == 1, pids
        killed_at = time.time()
        os.kill(pids[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=90)
        assert proc.returncode == 0, stderr[-3000:]
        assert "inference-1 crashed (exit -9); restarting" in stderr
    finally:
        cleanup(proc, tag)
    streams = by_stream(rows(out))
    assert set(streams) == {"walk", "walk-2"}
    for stream, rs in streams.items():
        owner = "inference-1" if stream == victim else "inference-0"
        assert {r["worker"] for r in rs} == {owner}, f"{stream} moved between workers"
        assert rs[-1]["seq"] == LONG_FRAMES - 1, f"{stream} was classified to its last frame; log:\n{stderr[-4000:]}"
    after = [r for r in streams[victim] if r["t_result"] > killed_at]
    assert after and after[-1]["seq"] == LONG_FRAMES - 1, "the restarted worker took its stream back"
    other = [r["seq"] for r in streams["walk-2" if victim == "walk" else "walk"]]
    assert other == list(range(15, LONG_FRAMES - 1, 10)) + [LONG_FRAMES - 1], "the other worker's stream is untouched"


def test_stable_hash_pins_hand_started_senders():
    # fixed values: the rule must never change, senders on other machines rely on it
    assert [pick_index(s, 2) for s in ("a", "walk", "s0", "s1")] == [1, 0, 1, 0]
    assert [pick_index(s, 3) for s in ("a", "c", "s3")] == [2, 0, 0]
    assert split_list(["tcp://a:1,tcp://b:2", " tcp://c:3 "]) == ["tcp://a:1", "tcp://b:2", "tcp://c:3"]
    receivers = [FrameReceiver("tcp://127.0.0.1:*"), FrameReceiver("tcp://127.0.0.1:*")]
    eps = [r.endpoint for r in receivers]
    streams = {"s0": eps[1], "s1": eps[0]}
    assert all(pick_endpoint(s, eps) == ep for s, ep in streams.items())
    procs = [subprocess.Popen([sys.executable, "-m", "workers.replay", str(KINETICS_CLIP), "--fast", "--stream", "s0",
                               "--connect", eps[0], "--connect", eps[1]], cwd=ROOT, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen([sys.executable, "-m", "workers.replay", str(KINETICS_CLIP), "--fast", "--stream", "s1",
                               "--connect", ",".join(eps)], cwd=ROOT, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    seen: dict[tuple[str, str], list[int]] = defaultdict(list)
    ended: set[str] = set()
    try:
        deadline = time.time() + 30
        while len(ended) < 2 and time.time() < deadline:
            for ep, receiver in zip(eps, receivers):
                for data in receiver.recv_many(256, timeout_ms=20):
                    msg = decode(data)
                    if isinstance(msg, Frame):
                        seen[(msg.stream, ep)].append(msg.seq)
                    elif hasattr(msg, "frames"):  # a fast replay may send several frames in one message
                        seen[(msg.stream, ep)].extend(f.seq for f in msg.frames())
                    elif isinstance(msg, StreamEnd):
                        ended.add(msg.stream)
        assert ended == {"s0", "s1"}
        assert set(seen) == {("s0", eps[1]), ("s1", eps[0])}, "each stream went to the endpoint its hash picks"
        assert all(seqs == list(range(1, 190)) for seqs in seen.values())
    finally:
        for p in procs:
            p.wait(30)
        for r in receivers:
            r.close()


def test_endpoint_lists_must_match_the_worker_count():
    proc = subprocess.run([sys.executable, "run_pipeline.py", "--inference-workers", "2", "--frames-endpoint",
                           "tcp://127.0.0.1:7001", "--replay", str(KINETICS_CLIP)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2 and "--frames-endpoint lists 1 endpoint(s) for 2 inference worker(s)" in proc.stderr

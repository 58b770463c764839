"""Replay sources: an st-gcn npy sample, a Kinetics clip, bad files."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

from pipeline.messages import Frame, Person, StreamStart
from pipeline.recording import RecordingWriter, read_recording
from pipeline.results import Result, StreamEnded, WorkerStats
from pipeline.endpoints import free_endpoint
from pipeline.transport import ResultSubscriber
from tests.conftest import final_stats
from workers.replay import ReplayError, due_groups, load_frames

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


def test_due_groups_batch_a_fast_replay_and_send_a_paced_one_frame_by_frame():
    frames = [Frame("r", seq, 0.0, 640, 480, "openpose", (), joints=18) for seq in range(10)]
    assert [[f.seq for f in g] for g in due_groups(frames, None, start_seq=2, max_frames=3)] == \
        [[3, 4, 5], [6, 7, 8], [9]]
    assert [len(g) for g in due_groups(frames, 1e9, max_frames=4)] == [4, 4, 2]  # all due at once: behind
    assert len(next(due_groups(frames, 1.0, max_frames=4))) == 1  # on time: one frame per message


def test_fast_replay_sends_batches_that_the_inference_worker_records_frame_for_frame(tiny_weights, tmp_path):
    """A real replay worker (batches of 16) into a real inference worker on loopback."""
    rng = np.random.default_rng(0)
    source = tmp_path / "clip.skel"
    meta = {"fps": 30.0, "source": "test", "layout": "openpose", "width": 640, "height": 480, "joints": 18}
    with RecordingWriter(source, StreamStart("clip", 0.0, meta)) as writer:
        for seq in [s for s in range(70) if s != 33]:
            kp = rng.uniform(0.2, 0.8, (18, 3)).astype(np.float32)
            writer.write(Frame("clip", seq, 1.0 + seq / 30, 640, 480, "openpose", (Person(4, kp),), 2.0))
    frames_ep, results_ep = free_endpoint(), free_endpoint()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-m", "workers.inference", "--listen", frames_ep, "--publish", results_ep,
                               "--weights", str(tiny_weights), "--device", "cpu", "--stride", "8",
                               "--record", str(tmp_path / "rec")], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sub = ResultSubscriber(results_ep)
    try:
        replay = subprocess.run([sys.executable, "-m", "workers.replay", str(source), "--fast", "--batch", "16",
                                 "--connect", frames_ep, "--stream", "copy"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert replay.returncode == 0, replay.stderr[-2000:]
        seqs, deadline = [], time.time() + 60
        while time.time() < deadline:
            got = sub.recv(timeout_ms=200)
            if isinstance(got, StreamEnded):
                break
            if isinstance(got, Result):
                seqs.append(got.seq)
        # min_frames is capped at the tiny model's window of 16, then every 8 frames (the held frame of the
        # gap at 33 counts), and the tail at the end
        assert seqs == [15, 23, 31, 39, 47, 55, 63, 69]
    finally:
        sub.close()
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    assert re.search(r"final stats: .*\b69 frames in, .*\b0 bad messages", out), out[-2000:]
    sent, got = read_recording(source).frames, read_recording(tmp_path / "rec" / "copy.skel").frames
    assert [f.seq for f in got] == [f.seq for f in sent]
    assert all(a.persons == b.persons for a, b in zip(sent, got))
    types = [obj["type"] for obj in msgpack.Unpacker(open(tmp_path / "rec" / "copy.skel", "rb"), raw=False)]
    assert "frames" in types, "the replay sent batches and the worker recorded them whole"


def test_a_lossless_replay_waits_for_a_paused_consumer_and_loses_nothing(tiny_weights, tmp_path):
    """The consumer stalls for longer than the 20 s a replay's end used to wait before exiting 0
    with its tail undelivered: the replay now waits, and every frame and the end arrive."""
    rng = np.random.default_rng(1)
    source = tmp_path / "long.skel"
    meta = {"fps": 30.0, "source": "test", "layout": "openpose", "width": 640, "height": 480, "joints": 18}
    with RecordingWriter(source, StreamStart("long", 0.0, meta)) as writer:
        for seq in range(200):
            kp = rng.uniform(0.2, 0.8, (18, 3)).astype(np.float32)
            writer.write(Frame("long", seq, 1.0 + seq / 30, 640, 480, "openpose", (Person(1, kp),), 2.0))
    config = tmp_path / "fast_stats.yaml"
    config.write_text("inference:\n  stats_interval_s: 0.5\n")
    frames_ep, results_ep = free_endpoint(), free_endpoint()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-m", "workers.inference", "--listen", frames_ep, "--publish", results_ep,
                               "--weights", str(tiny_weights), "--device", "cpu", "--stride", "50", "--config",
                               str(config)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sub = ResultSubscriber(results_ep)
    replay = None
    try:
        deadline = time.time() + 120
        while not isinstance(sub.recv(timeout_ms=200), WorkerStats):  # the worker runs its loop
            assert time.time() < deadline and worker.poll() is None, "the inference worker did not start"
        os.kill(worker.pid, signal.SIGSTOP)
        replay = subprocess.Popen([sys.executable, "-m", "workers.replay", str(source), "--fast", "--connect",
                                   frames_ep, "--stream", "long"], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(23)
        assert replay.poll() is None, "the replay gave up on its paused consumer"
        os.kill(worker.pid, signal.SIGCONT)
        out, _ = replay.communicate(timeout=60)
        assert replay.returncode == 0, out[-2000:]
        assert "waiting 20 s for the consumer" in out, out[-2000:]
        ended, deadline = False, time.time() + 60
        while not ended and time.time() < deadline:
            ended = isinstance(sub.recv(timeout_ms=200), StreamEnded)
        assert ended, "the end of the stream arrived"
        worker.send_signal(signal.SIGTERM)
        assert final_stats(sub)["frames_in"] == 200, "every frame arrived"
    finally:
        if replay is not None and replay.poll() is None:
            replay.kill()
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGCONT)
            worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        sub.close()

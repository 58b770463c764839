"""Reliability of the streaming pipeline: hostile input, crashed workers, signals.

Real processes and real ZeroMQ on loopback, no mocks. Every wait polls for a condition under a
generous deadline; nothing asserts on timing beyond "within N seconds".
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from pipeline.messages import (
    MAX_MESSAGE_BYTES,
    DecodeError,
    Decoder,
    Frame,
    Person,
    StreamEnd,
    StreamStart,
    decode,
    encode,
)
from pipeline.transport import FrameSender, ResultSubscriber
from pipeline.endpoints import free_endpoint
from pipeline.results import Result, StreamEnded
from tests.conftest import final_stats

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def wait_for(cond, timeout: float, what: str, step: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---- message generators ----------------------------------------------------------------------

def valid_frame(rng, stream="cam", seq=0, persons=2, joints=18) -> Frame:
    people = []
    for track in range(persons):
        kp = np.zeros((joints, 3), np.float32)
        kp[:, :2] = rng.uniform(0.2, 0.8, (joints, 2))
        kp[:, 2] = rng.uniform(0.1, 1.0, joints)
        people.append(Person(track + 1, kp))
    return Frame(stream, seq, time.time(), 640, 480, "openpose", tuple(people), 3.5, joints)


def frame_wire(frame: Frame) -> dict:
    return msgpack.unpackb(encode(frame), raw=False)


# Values that each field must refuse (None-safe: every one of these must make decode fail).
_INT_BAD = [None, True, 1.5, "7", b"7", [1], {"a": 1}, -1.0]
_FLOAT_BAD = [None, True, "1.0", b"1", [1.0], {"x": 1.0}, math.nan, math.inf, -math.inf]
_BAD_BY_FIELD = {
    "v": _INT_BAD + [0, 3, -1, 99, 1 << 40],  # 1 and 2 are the supported versions
    "type": [None, 1, b"frame", "Frame", "", "frames", ["frame"]],
    "stream": [None, 1, b"cam", "", "a/b", "x" * 129, "..", "sp ace", ["cam"]],
    "seq": _INT_BAD + [-1, -(1 << 40)],
    "t_capture": _FLOAT_BAD,
    "width": _INT_BAD + [0, -5, 65536],
    "height": _INT_BAD + [0, -5, 65536],
    "layout": [None, 1, b"openpose", "", "x" * 65, ["openpose"]],
    "joints": _INT_BAD + [0, 257, 17, 19],  # 17/19 mismatch the kp length
    "pose_ms": [None, True, "1", b"1", [1.0], math.nan, math.inf, -1.0],
    "persons": [None, 1, "p", b"p", {"track": 1}, [1], [None], ["x"], [[1, 2]]],
}
_PERSON_BAD = {
    "track": [None, True, 1.5, "1", b"1", [1], 1 << 63],
    "kp": [None, 1, "kp", [0.0] * 54, {"a": 1}],
}
_REQUIRED = ["v", "type", "stream", "seq", "t_capture", "width", "height", "layout", "joints", "persons"]


def random_msgpack_object(rng, depth=0):
    k = int(rng.integers(0, 9 if depth < 3 else 6))
    if k == 0:
        return None
    if k == 1:
        return bool(rng.integers(0, 2))
    if k == 2:
        return int(rng.integers(-(1 << 62), 1 << 62))
    if k == 3:
        return float(rng.normal() * 1e6)
    if k == 4:
        return "".join(chr(int(c)) for c in rng.integers(32, 0x2FF, int(rng.integers(0, 12))))
    if k == 5:
        return rng.bytes(int(rng.integers(0, 40)))
    if k == 6:
        return [random_msgpack_object(rng, depth + 1) for _ in range(int(rng.integers(0, 5)))]
    if k == 7:
        return {str(i): random_msgpack_object(rng, depth + 1) for i in range(int(rng.integers(0, 5)))}
    # a map that looks like a message with random values
    keys = rng.choice(_REQUIRED, size=int(rng.integers(1, len(_REQUIRED))), replace=False)
    return {str(key): random_msgpack_object(rng, depth + 1) for key in keys}


def huge_header(rng) -> bytes:
    """A msgpack header declaring an enormous str/bin/array/map, followed by a few bytes."""
    n = int(rng.integers(1 << 20, 1 << 32))
    head = [b"\xdb" + n.to_bytes(4, "big"), b"\xc6" + n.to_bytes(4, "big"),
            b"\xdd" + n.to_bytes(4, "big"), b"\xdf" + n.to_bytes(4, "big"),
            b"\xc5" + (n & 0xFFFF).to_bytes(2, "big"), b"\xc9" + n.to_bytes(4, "big") + b"\x01"]
    body = head[int(rng.integers(0, len(head)))]
    if rng.integers(0, 2):  # inside a map, as a field value
        body = b"\x82\xa1v\x01\xa4type" + body
    return body + rng.bytes(int(rng.integers(0, 16)))


def must_fail_message(rng, base: dict, valid: bytes) -> bytes:
    """One message that decode() is certain to refuse, of a randomly chosen kind."""
    kind = int(rng.integers(0, 9))
    if kind == 0:  # a strict prefix of a valid encoding is never a whole msgpack object
        return valid[: int(rng.integers(0, len(valid)))]
    if kind == 1:  # one field replaced by a value of a wrong type or out of range
        field = list(_BAD_BY_FIELD)[int(rng.integers(0, len(_BAD_BY_FIELD)))]
        choices = _BAD_BY_FIELD[field]
        wire = dict(base, **{field: choices[int(rng.integers(0, len(choices)))]})
        return msgpack.packb(wire, use_bin_type=True)
    if kind == 2:  # a person field broken
        field = "track" if rng.integers(0, 2) else "kp"
        choices = _PERSON_BAD[field]
        persons = [dict(p) for p in base["persons"]]
        persons[int(rng.integers(0, len(persons)))][field] = choices[int(rng.integers(0, len(choices)))]
        return msgpack.packb(dict(base, persons=persons), use_bin_type=True)
    if kind == 3:  # wrong kp length
        persons = [dict(p) for p in base["persons"]]
        i = int(rng.integers(0, len(persons)))
        n = len(persons[i]["kp"])
        cut = int(rng.integers(0, n)) if rng.integers(0, 2) else n + int(rng.integers(1, 13))
        persons[i]["kp"] = (persons[i]["kp"] + rng.bytes(16))[:cut]
        return msgpack.packb(dict(base, persons=persons), use_bin_type=True)
    if kind == 4:  # NaN / inf keypoints
        persons = [dict(p) for p in base["persons"]]
        i = int(rng.integers(0, len(persons)))
        kp = np.frombuffer(persons[i]["kp"], "<f4").copy()
        kp[int(rng.integers(0, kp.size))] = [np.nan, np.inf, -np.inf][int(rng.integers(0, 3))]
        persons[i]["kp"] = kp.tobytes()
        return msgpack.packb(dict(base, persons=persons), use_bin_type=True)
    if kind == 5:  # a required field missing
        wire = dict(base)
        del wire[_REQUIRED[int(rng.integers(0, len(_REQUIRED)))]]
        return msgpack.packb(wire, use_bin_type=True)
    if kind == 6:
        return huge_header(rng)
    if kind == 7:  # a valid message with trailing bytes
        return valid + rng.bytes(int(rng.integers(1, 8)))
    # a random msgpack object that is not a map, or a map that cannot be a message (no v of 1 or 2)
    obj = random_msgpack_object(rng)
    if isinstance(obj, dict):
        obj["v"] = int(rng.integers(3, 1000))
    return msgpack.packb(obj, use_bin_type=True)


# ---- 1. the decoder, in process ------------------------------------------------------------

def test_fuzz_decoder_only_raises_decode_error_and_counts_every_bad_message():
    rng = np.random.default_rng(1234)
    frames = [valid_frame(rng, seq=i, persons=p) for i, p in enumerate([1, 2, 3])]
    bases = [frame_wire(f) for f in frames]
    valids = [encode(f) for f in frames]
    controls = [encode(StreamStart("cam", 1.0, {"fps": 30.0, "live": False, "source": "x"})),
                encode(StreamEnd("cam", 2.0, "eof"))]
    decoder = Decoder("fuzz", log_first=0, log_every=10**9)
    total = must = may = raised = 0
    t0 = time.perf_counter()
    for batch in range(100):
        for _ in range(1000):
            i = int(rng.integers(0, len(valids)))
            r = rng.random()
            if r < 0.6:
                data, certain = must_fail_message(rng, bases[i], valids[i]), True
            elif r < 0.75:  # random bytes (could in theory be valid: not required to fail)
                data, certain = rng.bytes(int(rng.integers(0, 200))), False
            else:  # a valid message with 1-4 random bytes changed: may or may not stay valid
                src = valids[i] if rng.random() < 0.8 else controls[int(rng.integers(0, 2))]
                buf = bytearray(src)
                for _ in range(int(rng.integers(1, 5))):
                    buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
                data, certain = bytes(buf), False
            total += 1
            must += certain
            may += not certain
            # Decoder.decode catches DecodeError only: any other exception fails the test here
            if decoder.decode(data) is None:
                raised += 1
            else:
                assert not certain, f"decode accepted a message it must refuse: {data[:120]!r}"
            assert decoder.bad == raised, "the Decoder counts every message it refuses"
        # after every batch of garbage a valid frame still decodes to what was sent
        assert decoder.decode(valids[batch % 3]) == frames[batch % 3]
    # inputs of the wrong Python type and oversized ones
    for data in ["text", 123, None, [b"x"], b"\x80" * (MAX_MESSAGE_BYTES + 1), b""]:
        with pytest.raises(DecodeError):
            decode(data)
        before = decoder.bad
        assert decoder.decode(data) is None and decoder.bad == before + 1
    took = time.perf_counter() - t0
    print(f"fuzzed {total} messages ({must} certain-bad, {may} mutated/random) in {took:.1f} s; "
          f"by reason: {dict(sorted(decoder.stats()['by_reason'].items()))}")
    assert total >= 100_000 and must >= 55_000
    assert decoder.ok == 100 + total - raised and decoder.bad == raised + 6
    assert len(decoder.stats()["by_reason"]) >= 15, "the fuzzer reaches many different rejections"
    assert decoder.decode(valids[0]) == frames[0]


# ---- 2. the inference worker's input, as a real process ----------------------------------

def test_fuzz_inference_worker_input(tiny_weights):
    frames_ep, results_ep = free_endpoint(), free_endpoint()
    proc = subprocess.Popen([sys.executable, "-m", "workers.inference", "--listen", frames_ep, "--publish",
                             results_ep, "--weights", str(tiny_weights), "--device", "cpu", "--stride", "1"],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sub = ResultSubscriber(results_ep)
    ctx = zmq.Context.instance()
    big = ctx.socket(zmq.PUSH)  # its own connection: the receiver drops the peer of an oversized message
    big.setsockopt(zmq.LINGER, 2000)
    sender = FrameSender(frames_ep, live=False, sndhwm=64)
    try:
        rng = np.random.default_rng(7)
        base_rng = np.random.default_rng(8)
        base = frame_wire(valid_frame(base_rng, stream="fz"))
        valid = encode(valid_frame(base_rng, stream="fz"))
        bad = []
        while len(bad) < 3000:
            data = must_fail_message(rng, base, valid) if rng.random() < 0.8 else rng.bytes(int(rng.integers(0, 100)))
            try:
                decode(data)
            except DecodeError:
                bad.append(data)  # only messages certain to be refused, so the count is exact
        n_good = 120
        sender.send_control(StreamStart("fz", time.time(), {"fps": 30.0, "source": "fuzz", "layout": "openpose",
                                                            "width": 640, "height": 480, "joints": 18,
                                                            "live": False}), timeout_ms=30000)
        big.connect(frames_ep)
        oversized = 0
        per_frame = len(bad) // n_good
        frame_rng = np.random.default_rng(9)
        for seq in range(n_good):
            for data in bad[seq * per_frame:(seq + 1) * per_frame]:
                sender.send(data)
            f = valid_frame(frame_rng, stream="fz", seq=seq)
            sender.send(Frame("fz", seq, time.time(), 640, 480, "openpose", f.persons, 2.0, 18))
            if seq % 30 == 5:
                big.send(rng.bytes(MAX_MESSAGE_BYTES + 1 + int(rng.integers(0, 1 << 19))))
                oversized += 1
        for data in bad[n_good * per_frame:]:
            sender.send(data)
        sender.send_control(StreamEnd("fz", time.time(), "eof"), timeout_ms=30000)
        results = []
        deadline = time.time() + 60
        while time.time() < deadline:
            got = sub.recv(timeout_ms=200)
            if got is None:
                assert proc.poll() is None, "the inference worker died on bad input"
                continue
            if isinstance(got, StreamEnded) and got.stream == "fz":
                break
            if isinstance(got, Result):
                results.append(got.seq)
        else:
            raise AssertionError(f"no end of stream within 60 s ({len(results)} results)")
        # window 16 (min_frames is capped at the window), stride 1: every frame from seq 15 on
        assert results == list(range(15, n_good))
        assert proc.poll() is None, "bad messages never stop the worker"
        proc.send_signal(signal.SIGTERM)
        stats = final_stats(sub)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out[-3000:]
        assert stats["bad_messages"] == len(bad), "every bad message counted, oversized ones never decoded"
        assert stats["frames_in"] == n_good and stats["bad_frames"] == 0 and stats["windows"] == n_good - 15
        assert oversized >= 4
    finally:
        big.close(0)
        sender.close(0)
        sub.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# ---- 3 and 4: run_pipeline.py as users run it -------------------------------------------

CLIP_FRAMES = 300  # replayed at its recorded 30 fps: a 10 s stream, long enough to act on mid-way


def write_walk_recording(path: Path, frames: int, fps: float, seed: int) -> Path:
    """A pipeline recording of one person moving smoothly."""
    from pipeline.recording import RecordingWriter

    base = np.random.default_rng(seed).uniform(0.3, 0.7, (18, 2)).astype(np.float32)
    writer = RecordingWriter(path, StreamStart("walk", time.time(), {
        "fps": fps, "source": "synthetic", "layout": "openpose", "width": 640, "height": 480, "joints": 18}))
    for seq in range(frames):
        kp = np.zeros((18, 3), np.float32)
        kp[:, :2] = base + 0.05 * np.sin(seq / 10 + np.arange(18))[:, None]
        kp[:, 2] = 0.9
        writer.write(Frame("walk", seq, time.time(), 640, 480, "openpose", (Person(1, kp),), 1.0, 18))
    assert writer.close("eof") == path
    return path


@pytest.fixture(scope="module")
def walk_recording(tmp_path_factory):
    """300 frames at 30 fps."""
    return write_walk_recording(tmp_path_factory.mktemp("rec") / "walk.skel", CLIP_FRAMES, 30.0, seed=3)

def unique_config(tmp_path: Path) -> tuple[str, str]:
    """A copy of the pipeline config in a uniquely named folder: the workers of this run carry
    its path on their command line, so pgrep finds them and only them."""
    tag = f"reltest-{os.getpid()}-{time.time_ns()}"
    folder = tmp_path / tag
    folder.mkdir()
    shutil.copy(ROOT / "configs" / "pipeline.yaml", folder / "pipeline.yaml")
    return str(folder / "pipeline.yaml"), tag


def pgrep(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out if int(p) != os.getpid()]


def start_pipeline(tmp_path, tiny_weights, recording, *extra):
    config, tag = unique_config(tmp_path)
    out = tmp_path / "r.jsonl"
    argv = [sys.executable, "run_pipeline.py", "--replay", str(recording), "--device", "cpu",
            "--print-every", "100000", "--weights", str(tiny_weights), "--config", config, "--output", str(out), *extra]
    proc = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, out, tag


def rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    text = path.read_text()
    return [r for line in text.splitlines() if (r := json.loads(line))["type"] == "result"]


def n_complete_lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def cleanup(proc, tag):
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=30)
    for pid in pgrep(tag):  # our own run's leftovers only (the unique tag is on their command line)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_killed_inference_worker_is_restarted_and_the_run_completes(tmp_path, tiny_weights, walk_recording):
    proc, out, tag = start_pipeline(tmp_path, tiny_weights, walk_recording, "--stride", "5")
    try:
        wait_for(lambda: n_complete_lines(out) >= 1, 90, "the first result")
        victims = pgrep(f"workers.inference .*{tag}")
        assert len(victims) == 1, victims
        before = len(rows(out))
        os.kill(victims[0], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-3000:]
        assert "inference crashed (exit -9); restarting" in stderr
        restarted = pgrep(f"workers.inference .*{tag}")
        assert not restarted, "the restarted worker was stopped at the end"
        got = rows(out)
        after = got[before:]
        assert after, "results after the restart"
        assert after[-1]["seq"] == CLIP_FRAMES - 1, "the stream was classified to its last frame"
        assert [r["seq"] for r in after] == sorted(r["seq"] for r in after)
        assert "pipeline finished: walk:" in stdout
        # the sender repeats its start: the restarted worker learns that the stream is a file
        # (lossless), and a repeated start of a known stream is not logged again
        started = [line for line in stderr.splitlines()
                   if "stream walk started (" in line or "stream walk: start message after" in line]
        assert len(started) == 2, started
        assert all("lossless" in line for line in started)
        # the restarted worker rebuilt the windows already delivered without classifying them again
        final = [line for line in stderr.splitlines() if "final stats:" in line]
        assert len(final) == 1 and "delivered before a restart" in final[0], final
        windows = int(re.search(r"(\d+) windows,", final[0]).group(1))
        assert windows <= len(after) + 1, f"{windows} windows classified for {len(after)} new results"
        print(f"killed after seq {got[before - 1]['seq']}; {len(after)} results after the restart; {final[0]}")
    finally:
        cleanup(proc, tag)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("moment", ["workers_just_started", "results_flowing"])
def test_signal_stops_the_run_cleanly(tmp_path, tiny_weights, walk_recording, sig, moment):
    proc, out, tag = start_pipeline(tmp_path, tiny_weights, walk_recording, "--stride", "2")
    try:
        if moment == "workers_just_started":
            wait_for(lambda: len(pgrep(tag)) >= 2, 30, "the inference and replay workers to be spawned", 0.01)
        else:
            wait_for(lambda: n_complete_lines(out) >= 3, 90, "results to flow")
            assert proc.poll() is None, "the 10 s replay is still running"
        t0 = time.time()
        proc.send_signal(sig)
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError("run_pipeline did not exit within 30 s of the signal") from None
        took = time.time() - t0
        assert took < 10.0, f"exited {took:.1f} s after the signal"
        assert proc.returncode == 130, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        assert pgrep(tag) == [], "no worker outlives run_pipeline"
        text = out.read_text() if out.exists() else ""
        assert text == "" or text.endswith("\n"), "the file ends at a record boundary"
        got = rows(out)  # every line is one whole JSON record
        if moment == "results_flowing":
            assert len(got) >= 3 and all(r["stream"] == "walk" for r in got)
    finally:
        cleanup(proc, tag)

"""CURVE through the command lines: an inference worker bound beyond loopback, keyed clients.

Real processes and real ZeroMQ sockets, no mocks: the inference worker binds every interface
with its server key and a folder of admitted client keys; a keyed replay worker and a keyed
sinks worker get through, while a peer with no key and a peer with an unlisted key can
neither inject frames nor read results.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.messages import Frame, Person, StreamStart
from pipeline.recording import RecordingWriter
from pipeline.transport import FrameSender, ResultSubscriber, load_keypair, load_public_key
from tests.conftest import final_stats

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
N_FRAMES = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def own_address() -> str:
    """This machine's non-loopback IPv4 address when it has one (no packet is sent), else 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            address = s.getsockname()[0]
        except OSError:
            return "127.0.0.1"
    return address if not address.startswith("127.") and address != "0.0.0.0" else "127.0.0.1"


def write_recording(path: Path, stream: str = "walk", frames: int = N_FRAMES) -> Path:
    """A pipeline recording of one person moving smoothly."""
    rng = np.random.default_rng(5)
    base = rng.uniform(0.3, 0.7, (18, 2)).astype(np.float32)
    writer = RecordingWriter(path, StreamStart(stream, time.time(), {
        "fps": 30.0, "source": "synthetic", "layout": "openpose", "width": 640, "height": 480, "joints": 18}))
    for seq in range(frames):
        kp = np.zeros((18, 3), np.float32)
        kp[:, :2] = base + 0.05 * np.sin(seq / 10 + np.arange(18))[:, None]
        kp[:, 2] = 0.9
        writer.write(Frame(stream, seq, time.time(), 640, 480, "openpose", (Person(1, kp),), 1.0, 18))
    writer.close("eof")
    return path


def intruder_frame(stream: str, seq: int) -> Frame:
    kp = np.full((18, 3), 0.5, np.float32)
    return Frame(stream, seq, time.time(), 640, 480, "openpose", (Person(7, kp),), 1.0, 18)


def py(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def test_keys_cli_makes_private_certificates_and_refuses_to_overwrite(tmp_path):
    ok = subprocess.run(py("pipeline.keys", str(tmp_path / "k"), "server", "cam1"), cwd=ROOT, env=ENV,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "k" / "server.key").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "k" / "cam1.key_secret").stat().st_mode & 0o077 == 0, "secret keys are private"
    again = subprocess.run(py("pipeline.keys", str(tmp_path / "k"), "cam1"), cwd=ROOT, env=ENV,
                           capture_output=True, text=True)
    assert again.returncode == 2 and again.stderr.strip().count("\n") == 0 and "--force" in again.stderr
    for cli in ("pipeline.keys", "workers.inference", "workers.replay", "workers.sinks", "workers.capture"):
        help_text = subprocess.run(py(cli, "--help"), cwd=ROOT, env=ENV, capture_output=True, text=True)
        assert help_text.returncode == 0
        assert ("--allowed-clients" if cli == "workers.inference" else "NAME" if cli == "pipeline.keys"
                else "--server-public") in help_text.stdout


def test_remote_bind_without_keys_is_refused_by_the_cli(tiny_weights):
    for listen in (f"tcp://0.0.0.0:{free_port()}", f"tcp://*:{free_port()}", f"tcp://{own_address()}:{free_port()}"):
        if listen.startswith("tcp://127."):
            continue  # no non-loopback interface here: the two wildcard binds stand for it
        proc = subprocess.run(py("workers.inference", "--listen", listen, "--weights", str(tiny_weights),
                                 "--device", "cpu"), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"refusing to bind {listen} beyond loopback without CURVE keys" in lines[0], lines


def test_keyed_clients_get_through_and_unkeyed_or_unlisted_peers_do_not(tmp_path, tiny_weights):
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    subprocess.run(py("pipeline.keys", str(keys), "server", "replay", "sink", "mallory"), cwd=ROOT, env=ENV,
                   check=True, capture_output=True)
    allowed.mkdir()
    for name in ("replay", "sink"):  # mallory made a key pair too, but nobody admitted it
        shutil.copy(keys / f"{name}.key", allowed)
    recording = write_recording(tmp_path / "walk.skel")
    pf, pr = free_port(), free_port()
    host = own_address()
    frames_ep, results_ep = f"tcp://{host}:{pf}", f"tcp://{host}:{pr}"
    client_flags = ["--client-key", str(keys / "sink.key_secret"), "--server-public", str(keys / "server.key")]
    out = tmp_path / "results.jsonl"
    logs = {name: tmp_path / f"{name}.log" for name in ("sink", "worker", "replay")}

    def spawn(name: str, argv: list[str]) -> subprocess.Popen:
        with open(logs[name], "w") as log_file:
            return subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=log_file, stderr=subprocess.STDOUT)

    def diagnosis() -> str:
        return "\n".join(f"--- {name}:\n{path.read_text()[-2500:]}" for name, path in logs.items() if path.exists())

    sink = spawn("sink", py("workers.sinks", "--connect", results_ep, "--output", str(out), "--expect", "1",
                            "--quiet", *client_flags))
    worker = spawn("worker", py("workers.inference", "--listen", f"tcp://0.0.0.0:{pf}", "--publish",
                                f"tcp://0.0.0.0:{pr}", "--server-key", str(keys / "server.key_secret"),
                                "--allowed-clients", str(allowed), "--weights", str(tiny_weights), "--device", "cpu",
                                "--stride", "1"))
    server_public = load_public_key(keys / "server.key")
    mallory = load_keypair(keys / "mallory.key_secret")
    keyless_sub = ResultSubscriber(results_ep)
    mallory_sub = ResultSubscriber(results_ep, server_public=server_public, client_keys=mallory)
    keyed_sub = ResultSubscriber(results_ep, server_public=server_public,
                                 client_keys=load_keypair(keys / "sink.key_secret"))
    keyless_tx = FrameSender(frames_ep, live=True, linger_ms=0)
    mallory_tx = FrameSender(frames_ep, live=True, linger_ms=0, server_public=server_public, client_keys=mallory)
    replay = None
    try:
        deadline = time.time() + 60
        while "ready: model" not in logs["worker"].read_text():
            assert time.time() < deadline and worker.poll() is None, diagnosis()
            time.sleep(0.05)
        replay = spawn("replay", py("workers.replay", str(recording), "--connect", frames_ep, "--fast",
                                    "--client-key", str(keys / "replay.key_secret"), "--server-public",
                                    str(keys / "server.key")))
        leaked, seq = [], 0
        deadline = time.time() + 60
        # the intruders try throughout the stream, and at least 100 times (a fast replay can end in a second)
        while (sink.poll() is None or seq < 100) and time.time() < deadline:
            keyless_tx.send(intruder_frame("intruder", seq))
            mallory_tx.send(intruder_frame("mallory", seq))
            seq += 1
            for sub in (keyless_sub, mallory_sub):
                got = sub.recv(timeout_ms=10)
                if got is not None:
                    leaked.append(got)
        assert sink.poll() == 0, f"the keyed sink saw the stream end within 60 s\n{diagnosis()}"
        assert replay.wait(30) == 0, diagnosis()
        for sub in (keyless_sub, mallory_sub):  # a last look, after everything was published
            got = sub.recv(timeout_ms=300)
            if got is not None:
                leaked.append(got)
        assert leaked == [], "a keyless or unlisted subscriber read results"
        rows = [r for line in out.read_text().splitlines() if (r := json.loads(line))["type"] == "result"]
        assert {r["stream"] for r in rows} == {"walk"}
        assert [r["seq"] for r in rows] == list(range(15, N_FRAMES)), "window 16, stride 1: every frame from 15 on"
        worker.send_signal(signal.SIGTERM)
        stats = final_stats(keyed_sub)
        worker.wait(30)
        text = logs["worker"].read_text()
        assert worker.returncode == 0, diagnosis()
        assert stats["frames_in"] == N_FRAMES and stats["bad_messages"] == 0, "no frame of the intruders got in"
        assert "intruder" not in text and "stream mallory" not in text
        assert "refused a CURVE client whose key is not in the allowed list" in text
        print(f"bound tcp://0.0.0.0 (clients via {host}); {seq} frames from each intruder refused, "
              f"{len(rows)} results to the keyed sink, none to the others")
    finally:
        for sock in (keyless_tx, mallory_tx):
            sock.close(timeout_ms=0)
        keyless_sub.close()
        mallory_sub.close()
        for proc in (replay, sink, worker):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)

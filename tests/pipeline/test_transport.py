"""ZeroMQ transport over real loopback sockets: flow control, limits, PUB/SUB and CURVE."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import msgpack
import numpy as np
import pytest
import zmq

from pipeline.messages import StreamEnd, StreamStart, decode, encode, frame_from_arrays
from pipeline.results import RESULT_VERSION, StreamEnded, WorkerStats
from pipeline.transport import (
    FrameReceiver, FrameSender, ResultPublisher, ResultSubscriber, SenderStopped, SendTimeout,
    allowed_keys_from_dir, check_bind_endpoint, create_certificates, generate_keypair, is_loopback_endpoint,
    load_keypair, load_public_key, start_authenticator,
)

KP = [np.random.default_rng(0).random((18, 3), dtype=np.float32) for _ in range(2)]
LOOPBACK = "tcp://127.0.0.1:*"


def frame_bytes(seq: int, stream: str = "cam0") -> bytes:
    return encode(frame_from_arrays(stream, seq, 1000.0 + seq, 640, 480, "openpose", KP, [1, 2]))


def seq_of(data: bytes) -> int:
    return decode(data).seq  # type: ignore[union-attr]


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``condition`` until true; a generous bound only, never a measured speed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def wait_until_stalled(counter: Callable[[], int], quiet_checks: int = 5) -> int:
    """Wait until ``counter()`` stops changing (a blocked producer); returns its value."""
    last, same = counter(), 0
    deadline = time.monotonic() + 10.0
    while same < quiet_checks and time.monotonic() < deadline:
        time.sleep(0.05)
        now = counter()
        same = same + 1 if now == last else 0
        last = now
    return last


@pytest.fixture
def receiver() -> Iterator[FrameReceiver]:
    rx = FrameReceiver(LOOPBACK, rcvhwm=4, rcvbuf=4096)
    yield rx
    rx.close()


# --- bind policy ---------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", [
    "tcp://127.0.0.1:5555", "tcp://127.3.4.5:1", "tcp://localhost:5555", "tcp://[::1]:5555",
    "ipc:///tmp/stgcn-test.sock", "inproc://frames",
])
def test_loopback_and_local_endpoints_may_be_bound(endpoint: str) -> None:
    assert check_bind_endpoint(endpoint) is False
    assert is_loopback_endpoint(endpoint)


@pytest.mark.parametrize("endpoint", [
    "tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://192.168.1.20:5555", "tcp://8.8.8.8:5555",
    "tcp://eth0:5555", "tcp://[::]:5555", "tcp://example.com:80", "udp://127.0.0.1:5555",
])
def test_non_loopback_binds_are_refused_unless_allowed(endpoint: str) -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        check_bind_endpoint(endpoint)
    assert check_bind_endpoint(endpoint, allow_remote=True) is True


@pytest.mark.parametrize("endpoint", ["127.0.0.1:5555", "tcp://127.0.0.1", ""])
def test_malformed_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(ValueError):
        check_bind_endpoint(endpoint)


def test_remote_bind_without_curve_keys_is_refused_before_binding() -> None:
    with pytest.raises(ValueError, match="requires CURVE"):
        FrameReceiver("tcp://0.0.0.0:*", allow_remote=True)
    with pytest.raises(ValueError, match="not a loopback"):
        ResultPublisher("tcp://*:*")


def test_random_port_binding_reports_the_real_endpoint(receiver: FrameReceiver) -> None:
    prefix, _, port = receiver.endpoint.rpartition(":")
    assert prefix == "tcp://127.0.0.1" and int(port) > 0


# --- lossless mode -------------------------------------------------------------------------

def test_lossless_sender_blocks_on_a_slow_consumer_and_delivers_everything_in_order(
        receiver: FrameReceiver) -> None:
    n = 1500
    tx = FrameSender(receiver.endpoint, live=False, sndhwm=4, sndbuf=4096)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(n):
                tx.send(frame_bytes(i))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    stalled_at = wait_until_stalled(lambda: tx.sent)
    assert 0 < stalled_at < n, "producer should be held back by the consumer"
    seqs = []
    while len(seqs) < n:
        batch = receiver.recv_many(16, timeout_ms=5000)
        assert batch, f"stream stopped after {len(seqs)} messages"
        seqs += [seq_of(b) for b in batch]
        time.sleep(0.001)  # a consumer slower than the producer
    producer.join(10)
    tx.close()
    assert not errors and seqs == list(range(n)) and tx.sent == n and tx.dropped == 0


def test_blocked_lossless_sender_can_be_stopped(receiver: FrameReceiver) -> None:
    stop = threading.Event()
    tx = FrameSender(receiver.endpoint, live=False, sndhwm=2, sndbuf=4096, stop=stop, linger_ms=0)
    raised: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(100_000):
                tx.send(frame_bytes(i))
        except BaseException as exc:
            raised.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    wait_until_stalled(lambda: tx.sent)
    stop.set()
    producer.join(10)
    assert not producer.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], SenderStopped)
    tx.close(timeout_ms=0)


def test_lossless_send_timeout_raises_when_nobody_reads(receiver: FrameReceiver) -> None:
    tx = FrameSender(receiver.endpoint, live=False, sndhwm=2, sndbuf=4096, send_timeout_ms=200, linger_ms=0)
    with pytest.raises(SendTimeout):
        for i in range(100_000):
            tx.send(frame_bytes(i))
    assert 0 < tx.sent < 100_000
    tx.close(timeout_ms=0)


def test_control_messages_follow_queued_frames_and_time_out_cleanly(receiver: FrameReceiver) -> None:
    tx = FrameSender(receiver.endpoint, live=True, queue_size=4, linger_ms=0)
    tx.send_control(StreamStart("cam0", 0.0, {"live": True}), timeout_ms=5000)
    for i in range(3):
        tx.send(frame_bytes(i))
    tx.send_control(StreamEnd("cam0", 1.0, "stopped"))
    kinds = [type(decode(receiver.recv(5000))).__name__ for _ in range(5)]
    assert kinds == ["StreamStart", "Frame", "Frame", "Frame", "StreamEnd"]
    tx.close()
    lonely = FrameSender("tcp://127.0.0.1:9", live=True, linger_ms=0)  # nothing listens there
    with pytest.raises(SendTimeout):
        lonely.send_control(StreamEnd("cam0", 1.0, "stopped"), timeout_ms=100)
    lonely.close(timeout_ms=0)


# --- live mode -----------------------------------------------------------------------------

def test_live_sender_stays_bounded_drops_the_oldest_and_delivers_the_newest(receiver: FrameReceiver) -> None:
    n, queue = 4000, 8
    tx = FrameSender(receiver.endpoint, live=True, queue_size=queue, sndhwm=4, sndbuf=4096)
    tx.send_control(StreamStart("cam0", 0.0, {"live": True}), timeout_ms=5000)  # waits for the connection
    assert isinstance(decode(receiver.recv(5000)), StreamStart)
    for i in range(n):
        tx.send(frame_bytes(i))  # the consumer reads nothing meanwhile; send never blocks
        assert tx.pending <= queue
    assert tx.dropped > n // 2
    assert n - tx.sent < tx.deferred <= n  # every frame the full socket refused is counted once per send
    in_flight = tx.sent - 1
    assert tx.dropped + in_flight + tx.pending == n

    seqs = []
    while True:
        data = receiver.recv(timeout_ms=300)
        if data is None:
            if tx.pending == 0:
                break
            tx.flush(timeout_ms=5000)
            continue
        seqs.append(seq_of(data))
        tx.flush(timeout_ms=0)
    assert len(seqs) + tx.dropped == n
    assert seqs == sorted(set(seqs)), "frames arrive once and in order"
    assert seqs[-queue:] == list(range(n - queue, n)), "the frames left at the end are the newest"
    assert seqs[0] == 0  # frames already in flight when the consumer stalled were not recalled
    tx.close()


def test_live_sender_without_a_connected_consumer_keeps_only_the_newest_frames(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/frames.sock"
    tx = FrameSender(endpoint, live=True, queue_size=5, linger_ms=0)  # nothing is bound there yet
    for i in range(50):
        tx.send(frame_bytes(i))
    assert tx.sent == 0 and tx.pending == 5 and tx.dropped == 45 and tx.deferred == 50
    with FrameReceiver(endpoint) as rx:
        assert tx.flush(timeout_ms=5000)
        assert [seq_of(rx.recv(5000)) for _ in range(5)] == [45, 46, 47, 48, 49]
        tx.close()


# --- receiver details ----------------------------------------------------------------------

def test_recv_many_drains_what_is_queued_and_returns_empty_on_timeout(receiver: FrameReceiver) -> None:
    assert receiver.recv_many(10, timeout_ms=50) == []
    assert receiver.recv(timeout_ms=0) is None
    tx = FrameSender(receiver.endpoint, live=False)
    for i in range(3):
        tx.send(frame_bytes(i))
    tx.close()
    assert wait_until(lambda: receiver._sock.poll(0, zmq.POLLIN) != 0)
    got: list[bytes] = []
    while len(got) < 3:
        got += receiver.recv_many(2, timeout_ms=5000)
        assert len(got) <= 3
    assert [seq_of(b) for b in got] == [0, 1, 2]


def test_multipart_messages_are_discarded_and_counted(receiver: FrameReceiver) -> None:
    raw = zmq.Context.instance().socket(zmq.PUSH)
    raw.connect(receiver.endpoint)
    raw.send_multipart([b"part1", b"part2"])
    raw.send(frame_bytes(5))
    assert seq_of(receiver.recv(5000)) == 5
    assert receiver.rejected == 1
    raw.close(0)


def test_oversized_messages_are_refused_at_both_ends() -> None:
    with FrameReceiver(LOOPBACK, max_msg_size=1024) as rx:
        tx = FrameSender(rx.endpoint, live=False, max_msg_size=1024, linger_ms=0)
        with pytest.raises(ValueError, match="exceeds max_msg_size"):
            tx.send(b"x" * 2000)
        tx.close()
        raw = zmq.Context.instance().socket(zmq.PUSH)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(rx.endpoint)
        raw.send(b"B" * 4096)
        got: list[bytes] = []
        for _ in range(100):  # the peer is disconnected for the big message, then reconnects
            raw.send(b"small")
            data = rx.recv(100)
            if data is not None:
                got.append(data)
                break
        assert got and all(len(g) <= 1024 for g in got)
        raw.close()


# --- results -------------------------------------------------------------------------------

def test_records_are_published_and_filtered_by_exact_stream() -> None:
    with ResultPublisher(LOOPBACK) as pub, \
            ResultSubscriber(pub.endpoint) as sub_all, \
            ResultSubscriber(pub.endpoint, streams=["cam1"]) as sub_one:
        def joined() -> bool:
            pub.publish(StreamEnded("cam1", "hello"))
            return sub_one.recv(50) is not None and sub_all.recv(50) is not None
        assert wait_until(joined), "subscribers never joined"
        while sub_all.recv(100) is not None or sub_one.recv(0) is not None:
            pass
        stats = WorkerStats("w", 1.0, False, {"frames_in": np.int64(3)})
        pub.publish(StreamEnded("cam10", "eof"))
        pub.publish(stats)
        pub.publish(StreamEnded("cam1", "eof"))
        assert sub_all.recv(5000) == StreamEnded("cam10", "eof")
        assert sub_all.recv(5000) == WorkerStats("w", 1.0, False, {"frames_in": 3})
        assert sub_all.recv(5000) == StreamEnded("cam1", "eof")
        assert sub_one.recv(5000) == StreamEnded("cam1", "eof"), "neither cam10 nor the stats match cam1"
        assert sub_one.recv(200) is None
        with pytest.raises(ValueError):
            pub.send("bad/topic", {})


def test_subscriber_skips_and_counts_malformed_records() -> None:
    raw = zmq.Context.instance().socket(zmq.PUB)
    port = raw.bind_to_random_port("tcp://127.0.0.1")
    end = msgpack.packb({"type": "end", "v": RESULT_VERSION, "stream": "s", "reason": "eof"})
    with ResultSubscriber(f"tcp://127.0.0.1:{port}") as sub:
        def joined() -> bool:
            raw.send_multipart([b"s", end])
            return sub.recv(50) is not None
        assert wait_until(joined)
        while sub.recv(100) is not None:
            pass
        raw.send_multipart([b"s", b"\xc1"])  # not msgpack
        raw.send_multipart([b"s", b"\x91\x01"])  # not a map
        raw.send(b"single part")
        raw.send_multipart([b"s", b"\x80"])  # a map but no record
        raw.send_multipart([b"t", end])  # a record under another stream's topic
        raw.send_multipart([b"s", end])
        assert sub.recv(5000) == StreamEnded("s", "eof")
        assert sub.bad == 5
    raw.close(0)


# --- CURVE ---------------------------------------------------------------------------------

def test_curve_receiver_accepts_keyed_peers_only() -> None:
    server = generate_keypair()
    with FrameReceiver(LOOPBACK, allow_remote=True, server_keys=server) as rx:
        keyless = FrameSender(rx.endpoint, live=False, linger_ms=0)
        wrong_server = FrameSender(rx.endpoint, live=False, linger_ms=0, server_public=generate_keypair().public)
        keyless.send(frame_bytes(1))
        wrong_server.send(frame_bytes(2))
        assert rx.recv(500) is None
        keyed = FrameSender(rx.endpoint, live=False, server_public=server.public, client_keys=generate_keypair())
        keyed.send(frame_bytes(3))
        assert seq_of(rx.recv(5000)) == 3
        assert rx.recv(200) is None
        for tx in (keyless, wrong_server, keyed):
            tx.close(timeout_ms=0)


def test_authenticator_admits_only_listed_client_keys(tmp_path: Path) -> None:
    create_certificates(tmp_path / "server", "server")
    create_certificates(tmp_path / "clients", "alice")
    server = load_keypair(tmp_path / "server" / "server.key_secret")
    alice = load_keypair(tmp_path / "clients" / "alice.key_secret")
    assert load_public_key(tmp_path / "clients" / "alice.key") == alice.public
    with pytest.raises(ValueError, match="no secret key"):
        load_keypair(tmp_path / "clients" / "alice.key")
    mallory = generate_keypair()
    ctx = zmq.Context()
    auth = start_authenticator(allowed_keys_from_dir(tmp_path / "clients"), context=ctx)
    try:
        with FrameReceiver(LOOPBACK, allow_remote=True, server_keys=server, context=ctx) as rx:
            intruder = FrameSender(rx.endpoint, live=False, linger_ms=0, server_public=server.public,
                                   client_keys=mallory)
            intruder.send(frame_bytes(1))
            assert rx.recv(500) is None
            friend = FrameSender(rx.endpoint, live=False, server_public=server.public, client_keys=alice)
            friend.send(frame_bytes(2))
            assert seq_of(rx.recv(5000)) == 2
            intruder.close(timeout_ms=0)
            friend.close(timeout_ms=0)
    finally:
        auth.stop()
        ctx.term()


def test_connecting_beyond_loopback_without_curve_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.transport"):
        FrameSender("tcp://192.0.2.1:5555", live=True, linger_ms=0).close(timeout_ms=0)
    assert any("unencrypted" in r.getMessage() for r in caplog.records)

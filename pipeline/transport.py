"""ZeroMQ sockets between the pipeline stages, with their flow-control policies.

Capture workers PUSH encoded messages to the inference worker's PULL socket; results go
out on a PUB socket. A live camera must never fall behind, so its :class:`FrameSender`
keeps a small local queue and drops the oldest frame when the consumer cannot keep up;
files and replays must lose nothing, so there the sender blocks (backpressure) but stays
stoppable. Every socket caps the message size, and binding beyond loopback requires
CURVE encryption, so a worker is never reachable unauthenticated from the network.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import msgpack
import numpy as np
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from .messages import Message, encode, is_valid_stream_id
from .results import STATS_TOPIC, Record, ResultDecodeError, decode_record, encode_record, record_topic

log = logging.getLogger(__name__)

DEFAULT_MAX_MSG_SIZE = 1 << 20
DEFAULT_LINGER_MS = 1000
DEFAULT_CONTROL_TIMEOUT_MS = 5000
_POLL_SLICE_MS = 100
_LOCAL_SCHEMES = ("ipc://", "inproc://")


class SendTimeout(TimeoutError):
    """A blocking send did not complete within its timeout (the consumer is gone or stuck)."""


class SenderStopped(RuntimeError):
    """A blocking send was abandoned because the sender's stop event was set."""


@dataclass(frozen=True)
class CurveKeyPair:
    """A CURVE key pair, both keys Z85-encoded (40 bytes each)."""

    public: bytes
    secret: bytes


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq build has no CURVE support")


def generate_keypair() -> CurveKeyPair:
    """A fresh in-memory CURVE key pair."""
    _require_curve()
    public, secret = zmq.curve_keypair()
    return CurveKeyPair(public, secret)


def create_certificates(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``name.key`` (public) and ``name.key_secret`` into ``directory``; returns both paths."""
    _require_curve()
    Path(directory).mkdir(parents=True, exist_ok=True)
    public_file, secret_file = zmq.auth.create_certificates(str(directory), name)
    return Path(public_file), Path(secret_file)


def load_keypair(path: str | Path) -> CurveKeyPair:
    """Load a key pair from a ``.key_secret`` certificate file."""
    public, secret = zmq.auth.load_certificate(str(path))
    if secret is None:
        raise ValueError(f"{path}: no secret key in this certificate (use the .key_secret file)")
    return CurveKeyPair(public, secret)


def load_public_key(path: str | Path) -> bytes:
    """Load the public key from a ``.key`` or ``.key_secret`` certificate file."""
    public, _ = zmq.auth.load_certificate(str(path))
    return public


def apply_curve_server(sock: zmq.Socket, secret: bytes, public: bytes) -> None:
    """Make ``sock`` a CURVE server: only clients that know ``public`` can talk to it."""
    _require_curve()
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True


def apply_curve_client(sock: zmq.Socket, server_public: bytes, client_secret: bytes, client_public: bytes) -> None:
    """Make ``sock`` a CURVE client of the server whose public key is ``server_public``."""
    _require_curve()
    sock.curve_serverkey = server_public
    sock.curve_secretkey = client_secret
    sock.curve_publickey = client_public


class _KeySet:
    """ZAP credentials provider allowing a fixed set of client public keys."""

    def __init__(self, keys: Iterable[bytes | str]) -> None:
        self.keys = {k.encode() if isinstance(k, str) else bytes(k) for k in keys}
        self.denied = 0

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        self.denied += 1
        if self.denied == 1 or self.denied % 100 == 0:
            log.warning("refused a CURVE client whose key is not in the allowed list (%d refused so far)",
                        self.denied)
        return False


def start_authenticator(allowed_public_keys: Iterable[bytes | str] | None = None,
                        context: zmq.Context | None = None) -> ThreadAuthenticator:
    """Start ZAP for ``context``'s CURVE servers; only the listed client keys get in.

    ``None`` allows any client that knows the server key. Stop it with ``.stop()``.
    """
    auth = ThreadAuthenticator(context or zmq.Context.instance(), log=log.getChild("auth"))
    auth.start()
    if allowed_public_keys is None:
        auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
    else:
        auth.configure_curve_callback(domain="*", credentials_provider=_KeySet(allowed_public_keys))
    return auth


def allowed_keys_from_dir(directory: str | Path) -> list[bytes]:
    """Public keys of every certificate file in ``directory``, for :func:`start_authenticator`."""
    return list(zmq.auth.load_certificates(str(directory)))


def _tcp_host(endpoint: str) -> str:
    address = endpoint[len("tcp://"):].split(";")[-1]
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port:
        raise ValueError(f"tcp endpoint {endpoint!r} must look like tcp://HOST:PORT")
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on 127.0.0.0/8, ::1 or localhost."""
    if endpoint.startswith(_LOCAL_SCHEMES):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = _tcp_host(endpoint)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_endpoint(endpoint: str, allow_remote: bool = False) -> bool:
    """Refuse (ValueError) to bind beyond loopback unless ``allow_remote``; True if remote."""
    if not isinstance(endpoint, str) or "://" not in endpoint:
        raise ValueError(f"endpoint {endpoint!r} must look like tcp://HOST:PORT, ipc://PATH or inproc://NAME")
    if is_loopback_endpoint(endpoint):
        return False
    if not allow_remote:
        raise ValueError(f"refusing to bind {endpoint}: not a loopback address "
                         "(pass allow_remote=True with CURVE keys)")
    return True


def bind_socket(sock: zmq.Socket, endpoint: str, *, allow_remote: bool = False,
                server_keys: CurveKeyPair | None = None) -> str:
    """Bind after the loopback check; returns the bound endpoint.

    A remote bind needs ``server_keys`` (CURVE). A tcp port of ``*`` or ``0`` picks a free
    port via ``bind_to_random_port``.
    """
    remote = check_bind_endpoint(endpoint, allow_remote)
    if remote and server_keys is None:
        raise ValueError(f"refusing to bind {endpoint}: a non-loopback bind requires CURVE server keys")
    if server_keys is not None:
        apply_curve_server(sock, server_keys.secret, server_keys.public)
    if endpoint.startswith("tcp://"):
        prefix, _, port = endpoint.rpartition(":")
        if port in ("*", "0"):
            return f"{prefix}:{sock.bind_to_random_port(prefix)}"
    sock.bind(endpoint)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def _new_socket(kind: int, context: zmq.Context | None, max_msg_size: int, linger_ms: int) -> zmq.Socket:
    sock = (context or zmq.Context.instance()).socket(kind)
    sock.setsockopt(zmq.MAXMSGSIZE, max_msg_size)
    sock.setsockopt(zmq.LINGER, linger_ms)
    return sock


def _connect(sock: zmq.Socket, endpoint: str, server_public: bytes | None, client_keys: CurveKeyPair | None) -> None:
    if server_public is not None:
        keys = client_keys or generate_keypair()
        apply_curve_client(sock, server_public, keys.secret, keys.public)
    elif not is_loopback_endpoint(endpoint):
        log.warning("connecting to %s without CURVE: traffic is unencrypted", endpoint)
    sock.connect(endpoint)


def _deadline(timeout_ms: int | None) -> float | None:
    return None if timeout_ms is None else time.monotonic() + timeout_ms / 1000


def _remaining_ms(deadline: float | None) -> int | None:
    return None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))


class FrameSender:
    """PUSH side of the frame channel (capture worker -> inference worker).

    ``live=True``: never blocks. Frames wait in a local deque of ``queue_size``; each
    :meth:`send` flushes as many as the socket takes without blocking, and when the deque
    is full the oldest frame is dropped (counted in :attr:`dropped`).
    ``live=False``: lossless; :meth:`send` blocks while the bounded socket queue is full,
    so a slow consumer slows the producer. It gives up with :class:`SendTimeout` after
    ``send_timeout_ms`` (None: never) or :class:`SenderStopped` once ``stop`` is set.
    """

    def __init__(self, endpoint: str, *, live: bool, queue_size: int = 8, sndhwm: int | None = None,
                 send_timeout_ms: int | None = None, stop: threading.Event | None = None,
                 control_timeout_ms: int = DEFAULT_CONTROL_TIMEOUT_MS, max_msg_size: int = DEFAULT_MAX_MSG_SIZE,
                 linger_ms: int = DEFAULT_LINGER_MS, sndbuf: int | None = None,
                 server_public: bytes | None = None, client_keys: CurveKeyPair | None = None,
                 context: zmq.Context | None = None) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.endpoint = endpoint
        self.live = live
        self.send_timeout_ms = send_timeout_ms
        self.control_timeout_ms = control_timeout_ms
        self.max_msg_size = max_msg_size
        self.stop = stop
        self.sent = 0
        self.dropped = 0
        self.deferred = 0  # live frames the socket did not take at once: they wait for the next send
        self._queue: deque[bytes] = deque(maxlen=queue_size)
        self._sock = _new_socket(zmq.PUSH, context, max_msg_size, linger_ms)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm if sndhwm is not None else (64 if live else 256))
        if sndbuf is not None:
            self._sock.setsockopt(zmq.SNDBUF, sndbuf)
        # Live: no queueing towards a consumer that is not connected yet; those frames would be stale.
        self._sock.setsockopt(zmq.IMMEDIATE, 1 if live else 0)
        try:
            _connect(self._sock, endpoint, server_public, client_keys)
        except BaseException:
            self._sock.close(0)
            raise
        self._closed = False

    @property
    def pending(self) -> int:
        """Frames waiting in the local (live) queue."""
        return len(self._queue)

    @property
    def queue_size(self) -> int:
        """Capacity of the local (live) queue."""
        return self._queue.maxlen or 0

    def send(self, msg: bytes | Message) -> None:
        """Send one frame according to the live or lossless policy."""
        data = self._bytes(msg)
        if not self.live:
            self._send_blocking(data, _deadline(self.send_timeout_ms), honour_stop=True)
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("%s: consumer too slow, dropped %d oldest frame(s) so far", self.endpoint, self.dropped)
        self._queue.append(data)
        if not self.flush():
            self.deferred += 1

    def flush(self, timeout_ms: int | None = 0) -> bool:
        """Hand queued frames to the socket, waiting up to ``timeout_ms``; True when empty."""
        deadline = _deadline(timeout_ms)
        while self._queue:
            try:
                self._sock.send(self._queue[0], zmq.NOBLOCK)
            except zmq.Again:
                remaining = _remaining_ms(deadline)
                if remaining == 0:
                    return False
                self._sock.poll(_POLL_SLICE_MS if remaining is None else min(_POLL_SLICE_MS, remaining), zmq.POLLOUT)
                continue
            self._queue.popleft()
            self.sent += 1
        return True

    def send_control(self, msg: bytes | Message, timeout_ms: int | None = None) -> None:
        """Send a start/end/heartbeat message losslessly, after any queued frames.

        Blocks up to ``timeout_ms`` (default ``control_timeout_ms``) even when ``stop`` is
        set, so a stopping producer can still announce its end; raises :class:`SendTimeout`.
        """
        data = self._bytes(msg)
        deadline = _deadline(self.control_timeout_ms if timeout_ms is None else timeout_ms)
        if not self.flush(_remaining_ms(deadline)):
            raise SendTimeout(f"{self.endpoint}: could not flush {len(self._queue)} queued frame(s) "
                              "before a control message")
        self._send_blocking(data, deadline, honour_stop=False)

    def close(self, timeout_ms: int = DEFAULT_LINGER_MS) -> None:
        """Flush queued frames for up to ``timeout_ms``, then close the socket (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if not self.flush(timeout_ms):
            log.warning("%s: closing with %d unsent frame(s)", self.endpoint, len(self._queue))
        self._sock.close()

    def __enter__(self) -> FrameSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _bytes(self, msg: bytes | Message) -> bytes:
        data = msg if isinstance(msg, bytes) else encode(msg)
        if len(data) > self.max_msg_size:
            raise ValueError(f"message of {len(data)} bytes exceeds max_msg_size {self.max_msg_size}")
        return data

    def _send_blocking(self, data: bytes, deadline: float | None, honour_stop: bool) -> None:
        while True:
            try:
                self._sock.send(data, zmq.NOBLOCK)
                self.sent += 1
                return
            except zmq.Again:
                pass
            if honour_stop and self.stop is not None and self.stop.is_set():
                raise SenderStopped(f"{self.endpoint}: stopped while blocked on a full queue")
            remaining = _remaining_ms(deadline)
            if remaining == 0:
                raise SendTimeout(f"{self.endpoint}: consumer did not accept a message in time")
            self._sock.poll(_POLL_SLICE_MS if remaining is None else min(_POLL_SLICE_MS, remaining), zmq.POLLOUT)


class FrameReceiver:
    """PULL side of the frame channel; binds (loopback unless ``allow_remote`` + CURVE).

    Multipart messages are not part of the protocol: they are discarded and counted in
    :attr:`rejected`.
    """

    def __init__(self, endpoint: str, *, rcvhwm: int = 1000, max_msg_size: int = DEFAULT_MAX_MSG_SIZE,
                 linger_ms: int = 0, rcvbuf: int | None = None, allow_remote: bool = False,
                 server_keys: CurveKeyPair | None = None, context: zmq.Context | None = None) -> None:
        self.rejected = 0
        self._sock = _new_socket(zmq.PULL, context, max_msg_size, linger_ms)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        if rcvbuf is not None:
            self._sock.setsockopt(zmq.RCVBUF, rcvbuf)
        try:
            self.endpoint = bind_socket(self._sock, endpoint, allow_remote=allow_remote, server_keys=server_keys)
        except BaseException:
            self._sock.close(0)
            raise

    def recv(self, timeout_ms: int | None = None) -> bytes | None:
        """Next message, or None after ``timeout_ms`` (None: wait forever, 0: don't wait)."""
        deadline = _deadline(timeout_ms)
        while True:
            remaining = _remaining_ms(deadline)
            if not self._sock.poll(remaining if remaining is not None else -1, zmq.POLLIN):
                return None
            data = self._take()
            if data is not None:
                return data

    def recv_many(self, max_n: int, timeout_ms: int | None = None) -> list[bytes]:
        """Wait up to ``timeout_ms`` for a first message, then drain up to ``max_n`` queued ones."""
        out: list[bytes] = []
        first = self.recv(timeout_ms)
        if first is None:
            return out
        out.append(first)
        sock = self._sock
        while len(out) < max_n:  # non-blocking receives until the queue is empty: no poll per message
            try:
                data = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if sock.getsockopt(zmq.RCVMORE):
                self._reject_rest()
            else:
                out.append(data)
        return out

    def _take(self) -> bytes | None:
        try:
            data = self._sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None
        if self._sock.getsockopt(zmq.RCVMORE):
            self._reject_rest()
            return None
        return data

    def _reject_rest(self) -> None:
        """Discard the remaining parts of a multipart message (not part of the protocol)."""
        while self._sock.getsockopt(zmq.RCVMORE):
            self._sock.recv()
        self.rejected += 1
        if self.rejected == 1 or self.rejected % 1000 == 0:
            log.warning("%s: discarded %d multipart message(s)", self.endpoint, self.rejected)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> FrameReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_builtin(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


class ResultPublisher:
    """PUB socket for the records of :mod:`pipeline.results`: multipart ``[topic, msgpack(record)]``,
    topic = stream id (statistics: ``STATS_TOPIC``).

    PUB never blocks: a subscriber that falls ``sndhwm`` messages behind loses messages. Each
    record carries ``pub`` (this publisher's random id) and ``n`` (its number within its topic),
    so that a subscriber counts what it lost (:attr:`ResultSubscriber.missed`).
    """

    def __init__(self, endpoint: str, *, sndhwm: int = 1000, max_msg_size: int = DEFAULT_MAX_MSG_SIZE,
                 linger_ms: int = 0, allow_remote: bool = False, server_keys: CurveKeyPair | None = None,
                 context: zmq.Context | None = None) -> None:
        self.max_msg_size = max_msg_size
        self.sent = 0
        self.id = os.urandom(4).hex()
        self._numbers: dict[str, int] = {}
        self._sock = _new_socket(zmq.PUB, context, max_msg_size, linger_ms)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        try:
            self.endpoint = bind_socket(self._sock, endpoint, allow_remote=allow_remote, server_keys=server_keys)
        except BaseException:
            self._sock.close(0)
            raise

    def publish(self, record: Record) -> None:
        """Publish one result, end or stats record under its topic."""
        self.send(record_topic(record), encode_record(record))

    def send(self, topic: str, payload: dict[str, Any]) -> None:
        """Publish ``payload`` (numpy values become lists/scalars) under ``topic``."""
        if not (is_valid_stream_id(topic) or topic == STATS_TOPIC):
            raise ValueError(f"topic {topic!r} is not a valid stream id")
        n = self._numbers[topic] = self._numbers.get(topic, -1) + 1
        body = msgpack.packb({**payload, "pub": self.id, "n": n}, use_bin_type=True, default=_to_builtin)
        if len(body) > self.max_msg_size:
            raise ValueError(f"result of {len(body)} bytes exceeds max_msg_size {self.max_msg_size}")
        try:
            self._sock.send_multipart([topic.encode(), body], zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            log.debug("%s: result for %s dropped", self.endpoint, topic)

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; ``linger_ms``: how long records still queued may take to go out."""
        self._sock.close(linger_ms)

    def __enter__(self) -> ResultPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResultSubscriber:
    """SUB socket receiving the records of all streams (and workers' statistics) or only of ``streams``.

    ``endpoint`` may be a list: one socket then connects to every inference worker's
    results endpoint (scale-out, each stream pinned to one of them) and merges them.
    ZeroMQ subscriptions match prefixes, so topics are also compared exactly here
    (subscribing ``cam1`` does not deliver ``cam10``). Malformed messages and invalid
    records are counted in :attr:`bad` and skipped; records the publisher dropped because this
    subscriber fell behind are counted in :attr:`missed` (gaps in their numbers).
    """

    def __init__(self, endpoint: str | Sequence[str], streams: Iterable[str] | None = None, *, rcvhwm: int = 1000,
                 max_msg_size: int = DEFAULT_MAX_MSG_SIZE, linger_ms: int = 0, rcvbuf: int | None = None,
                 server_public: bytes | None = None, client_keys: CurveKeyPair | None = None,
                 context: zmq.Context | None = None) -> None:
        self.streams = None if streams is None else frozenset(streams)
        self.bad = 0
        self.missed = 0
        self.missed_by_topic: dict[str, int] = {}
        self._last: dict[tuple[str, str], int] = {}
        self._sock = _new_socket(zmq.SUB, context, max_msg_size, linger_ms)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        if rcvbuf is not None:
            self._sock.setsockopt(zmq.RCVBUF, rcvbuf)
        for topic in [""] if self.streams is None else sorted(self.streams):
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        try:
            for ep in [endpoint] if isinstance(endpoint, str) else endpoint:
                _connect(self._sock, ep, server_public, client_keys)
        except BaseException:
            self._sock.close(0)
            raise

    def recv(self, timeout_ms: int | None = None) -> Record | None:
        """Next record, or None after ``timeout_ms`` (None: wait forever)."""
        deadline = _deadline(timeout_ms)
        while True:
            remaining = _remaining_ms(deadline)
            if not self._sock.poll(remaining if remaining is not None else -1, zmq.POLLIN):
                return None
            parts = self._sock.recv_multipart()
            result = self._parse(parts)
            if result is not None:
                return result

    def _parse(self, parts: list[bytes]) -> Record | None:
        try:
            if len(parts) != 2:
                raise ValueError(f"{len(parts)} parts")
            topic = parts[0].decode()
            obj = msgpack.unpackb(parts[1], raw=False)
            record = decode_record(obj)
            if topic != record_topic(record):
                raise ResultDecodeError(f"topic {topic[:40]!r} does not match the record")
        except Exception as exc:  # anything malformed from the network is skipped
            self.bad += 1
            if self.bad == 1 or self.bad % 1000 == 0:
                log.warning("bad result message #%d skipped (%s)", self.bad, exc)
            return None
        if self.streams is not None and topic not in self.streams:
            return None
        self._count(obj.get("pub"), topic, obj.get("n"))
        return record

    def _count(self, pub: Any, topic: str, n: Any) -> None:
        """Gaps in a publisher's numbers of a topic: records it dropped for this subscriber."""
        if not isinstance(pub, str) or not isinstance(n, int) or isinstance(n, bool):
            return
        last = self._last.get((pub, topic))
        self._last[(pub, topic)] = n
        if last is not None and n > last + 1:
            before, self.missed = self.missed, self.missed + n - last - 1
            self.missed_by_topic[topic] = self.missed_by_topic.get(topic, 0) + n - last - 1
            if before == 0 or self.missed // 1000 > before // 1000:
                log.warning("result records missed: this subscriber fell behind its publisher (%d so far)",
                            self.missed)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> ResultSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

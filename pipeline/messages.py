"""Versioned msgpack wire format between the capture, inference and recording stages.

Every message is one msgpack map carrying ``"v"`` (the protocol version) and ``"type"``.
Four types exist: ``frame`` (the keypoints of one video frame), ``start`` and ``end``
(the bounds of a stream, ``start`` carrying its metadata) and ``heartbeat``.

Frames carry each person's keypoints as raw little-endian float32 bytes of a ``(V, 3)``
array ``(x, y, confidence)`` with x and y divided by the image width and height, as in the
Kinetics-skeleton JSON; absent joints have confidence 0. Bytes decode with one
``np.frombuffer`` instead of a list of floats per joint, which keeps both ends cheap.

:func:`decode` treats its input as hostile: anything malformed raises :class:`DecodeError`
and nothing else, and the msgpack size limits stop a forged length from allocating memory.
Long-running workers use :class:`Decoder`, which counts and logs bad input instead.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union

import msgpack
import numpy as np

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1

MAX_MESSAGE_BYTES = 1 << 20
MAX_STREAM_LEN = 128
MAX_NAME_LEN = 64
MAX_TEXT_LEN = 1024
MAX_PERSONS = 64
MAX_JOINTS = 256
MAX_DIM = 65535
MAX_META_ITEMS = 32
KP_DTYPE = np.dtype("<f4")

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_STREAM_RE = re.compile(rf"[A-Za-z0-9_.:@+\-]{{1,{MAX_STREAM_LEN}}}")

# Every length msgpack may declare is capped before it allocates anything.
UNPACK_LIMITS: dict[str, int] = {
    "max_bin_len": MAX_JOINTS * 3 * KP_DTYPE.itemsize,
    "max_str_len": MAX_TEXT_LEN,
    "max_array_len": MAX_PERSONS,
    "max_map_len": MAX_META_ITEMS + 8,
    "max_ext_len": 0,
}

MetaValue = Union[str, int, float, bool, None]


class DecodeError(ValueError):
    """A message that is not valid wire format.

    ``reason`` is a short stable category (``"truncated"``, ``"bad_field:seq"``, ...) fit
    for counting; ``detail`` says what exactly was wrong.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True, eq=False)
class Person:
    """One tracked person: a track id and float32 keypoints of shape ``(V, 3)``."""

    track: int
    keypoints: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "track", _as_int(self.track, "track"))
        kp = np.asarray(self.keypoints, dtype=np.float32)
        if kp.ndim != 2 or kp.shape[1] != 3:
            raise ValueError(f"keypoints must have shape (V, 3), got {kp.shape}")
        object.__setattr__(self, "keypoints", kp)

    @property
    def score(self) -> float:
        """Sum of joint confidences, the ranking the Kinetics-skeleton data uses."""
        return float(self.keypoints[:, 2].sum())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Person):
            return NotImplemented
        return self.track == other.track and np.array_equal(self.keypoints, other.keypoints)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Frame:
    """The keypoints of every person in one captured frame of one stream.

    ``joints`` (V) is taken from the persons when left at 0; a frame without persons must
    state it, since the wire format always carries V.
    """

    stream: str
    seq: int
    t_capture: float
    width: int
    height: int
    layout: str
    persons: tuple[Person, ...] = ()
    pose_ms: float = 0.0
    joints: int = 0

    def __post_init__(self) -> None:
        for name in ("seq", "width", "height", "joints"):
            object.__setattr__(self, name, _as_int(getattr(self, name), name))
        object.__setattr__(self, "t_capture", float(self.t_capture))
        object.__setattr__(self, "pose_ms", float(self.pose_ms))
        persons = tuple(self.persons)
        object.__setattr__(self, "persons", persons)
        if self.joints == 0 and persons:
            object.__setattr__(self, "joints", int(persons[0].keypoints.shape[0]))

    def keypoints(self) -> np.ndarray:
        """All persons' keypoints stacked as ``(P, V, 3)`` float32 (P may be 0)."""
        if not self.persons:
            return np.zeros((0, self.joints, 3), np.float32)
        return np.stack([p.keypoints for p in self.persons])


@dataclass(frozen=True, slots=True)
class StreamStart:
    """Opens a stream; ``meta`` holds scalars such as fps, source, layout, width, height, live."""

    stream: str
    t: float
    meta: dict[str, MetaValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        meta = {k: v.item() if isinstance(v, np.generic) else v for k, v in dict(self.meta).items()}
        object.__setattr__(self, "meta", meta)


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Closes a stream; ``reason`` says why (``"eof"``, ``"stopped"``, ``"error: ..."``)."""

    stream: str
    t: float
    reason: str = "eof"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Liveness signal of a stream or worker."""

    stream: str
    t: float


Message = Union[Frame, StreamStart, StreamEnd, Heartbeat]


def is_valid_stream_id(stream: object) -> bool:
    """True for 1..128 characters of ``A-Z a-z 0-9 _ . : @ + -``.

    Stream ids become file names and PUB topics, so separators and control characters are
    kept out.
    """
    return isinstance(stream, str) and _STREAM_RE.fullmatch(stream) is not None and stream not in (".", "..")


def sanitize_stream_id(name: str) -> str:
    """Map any name (a file name, a camera URL) to a valid stream id."""
    cleaned = re.sub(r"[^A-Za-z0-9_.:@+\-]+", "_", name).strip("_")[:MAX_STREAM_LEN]
    return cleaned if is_valid_stream_id(cleaned) else "stream"


def encode(msg: Message) -> bytes:
    """Serialise a message; raises ValueError for anything :func:`decode` would refuse."""
    if isinstance(msg, Frame):
        wire: dict[str, Any] = {
            "v": PROTOCOL_VERSION, "type": "frame", "stream": msg.stream, "seq": msg.seq,
            "t_capture": msg.t_capture, "width": msg.width, "height": msg.height,
            "layout": msg.layout, "joints": msg.joints, "pose_ms": msg.pose_ms,
            "persons": [
                {"track": p.track, "kp": p.keypoints.astype(KP_DTYPE, copy=False).tobytes()}
                for p in msg.persons
            ],
        }
    elif isinstance(msg, StreamStart):
        wire = {"v": PROTOCOL_VERSION, "type": "start", "stream": msg.stream, "t": msg.t, "meta": dict(msg.meta)}
    elif isinstance(msg, StreamEnd):
        wire = {"v": PROTOCOL_VERSION, "type": "end", "stream": msg.stream, "t": msg.t, "reason": msg.reason}
    elif isinstance(msg, Heartbeat):
        wire = {"v": PROTOCOL_VERSION, "type": "heartbeat", "stream": msg.stream, "t": msg.t}
    else:
        raise TypeError(f"cannot encode {type(msg).__name__}")
    try:
        parse(wire)
        data = msgpack.packb(wire, use_bin_type=True)
    except (DecodeError, TypeError, OverflowError) as exc:
        raise ValueError(f"cannot encode {wire['type']} message: {exc}") from None
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"cannot encode {wire['type']} message: {len(data)} bytes > {MAX_MESSAGE_BYTES}")
    return data


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Parse and validate one wire message; raises :class:`DecodeError` and nothing else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("not_bytes", type(data).__name__)
    if len(data) > MAX_MESSAGE_BYTES:
        raise DecodeError("too_large", f"{len(data)} bytes")
    if len(data) == 0:
        raise DecodeError("empty")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, **UNPACK_LIMITS)
    except msgpack.ExtraData:
        raise DecodeError("trailing_bytes") from None
    except Exception as exc:  # msgpack signals bad input with several exception types
        text = str(exc)
        if "incomplete" in text:
            reason = "truncated"
        elif "max_ext_len" in text:
            reason = "ext_type"
        elif "exceeds max_" in text:
            reason = "size_limit"
        else:
            reason = "not_msgpack"
        raise DecodeError(reason, text[:120] or type(exc).__name__) from None
    return parse(obj)


def parse(obj: object) -> Message:
    """Validate an already unpacked msgpack object and build the message (see :func:`decode`)."""
    if not isinstance(obj, dict):
        raise DecodeError("not_a_map", type(obj).__name__)
    if "v" not in obj:
        raise DecodeError("missing_field:v")
    version = obj["v"]
    if type(version) is not int:
        raise DecodeError("bad_field:v", f"expected int, got {type(version).__name__}")
    if version != PROTOCOL_VERSION:
        raise DecodeError("unsupported_version", str(version))
    kind = obj.get("type")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise DecodeError("unknown_type", repr(kind)[:40])
    return parser(obj)


def frame_from_arrays(
    stream: str,
    seq: int,
    t_capture: float,
    width: int,
    height: int,
    layout: str,
    keypoints: Sequence[np.ndarray],
    tracks: Sequence[int],
    pose_ms: float = 0.0,
    joints: int = 0,
) -> Frame:
    """Build a Frame from per-person ``(V, 3)`` arrays and their track ids."""
    if len(keypoints) != len(tracks):
        raise ValueError(f"{len(keypoints)} keypoint arrays but {len(tracks)} track ids")
    persons = tuple(Person(int(t), kp) for t, kp in zip(tracks, keypoints, strict=True))
    return Frame(stream, seq, t_capture, width, height, layout, persons, pose_ms, joints)


class Decoder:
    """Decodes for long-running workers: counts bad input and logs it rate-limited.

    The first ``log_first`` bad messages are logged, then every ``log_every``-th, so a
    flood of garbage cannot flood the log.
    """

    def __init__(self, name: str = "decoder", log_first: int = 10, log_every: int = 1000) -> None:
        self.name = name
        self.log_first = log_first
        self.log_every = log_every
        self.ok = 0
        self.bad = 0
        self.by_reason: dict[str, int] = {}

    def decode(self, data: bytes | bytearray | memoryview) -> Message | None:
        """The decoded message, or None (counted and maybe logged) when the input is bad."""
        try:
            msg = decode(data)
        except DecodeError as exc:
            self.bad += 1
            self.by_reason[exc.reason] = self.by_reason.get(exc.reason, 0) + 1
            if self.bad <= self.log_first or self.bad % self.log_every == 0:
                log.warning("%s: dropped bad message #%d (%s)", self.name, self.bad, exc)
            return None
        self.ok += 1
        return msg

    def stats(self) -> dict[str, Any]:
        """Counters as a plain dict, for status reports."""
        return {"ok": self.ok, "bad": self.bad, "by_reason": dict(self.by_reason)}


def _as_int(value: object, name: str) -> int:
    """Accept Python and numpy integers, refuse bools and everything else."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def _get(obj: Mapping[str, Any], key: str, kind: str) -> Any:
    if key not in obj:
        raise DecodeError(f"missing_field:{key}", kind)
    return obj[key]


def _int(obj: Mapping[str, Any], key: str, kind: str, lo: int, hi: int) -> int:
    value = _get(obj, key, kind)
    if type(value) is not int:  # bool is an int subclass and must not pass
        raise DecodeError(f"bad_field:{key}", f"expected int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise DecodeError(f"bad_field:{key}", f"{value} outside [{lo}, {hi}]")
    return value


def _float(obj: Mapping[str, Any], key: str, kind: str, lo: float = -math.inf, default: float | None = None) -> float:
    if default is not None and key not in obj:
        return default
    value = _get(obj, key, kind)
    if type(value) not in (float, int):
        raise DecodeError(f"bad_field:{key}", f"expected float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise DecodeError(f"bad_field:{key}", "not finite")
    if value < lo:
        raise DecodeError(f"bad_field:{key}", f"{value} < {lo}")
    return value


def _str(obj: Mapping[str, Any], key: str, kind: str, max_len: int) -> str:
    value = _get(obj, key, kind)
    if type(value) is not str:
        raise DecodeError(f"bad_field:{key}", f"expected str, got {type(value).__name__}")
    if len(value) > max_len:
        raise DecodeError(f"bad_field:{key}", f"longer than {max_len}")
    return value


def _stream(obj: Mapping[str, Any], kind: str) -> str:
    value = _get(obj, "stream", kind)
    if not is_valid_stream_id(value):
        raise DecodeError("bad_field:stream", repr(value)[:40])
    return value


def _parse_frame(obj: Mapping[str, Any]) -> Frame:
    kind = "frame"
    stream = _stream(obj, kind)
    seq = _int(obj, "seq", kind, 0, _INT64_MAX)
    t_capture = _float(obj, "t_capture", kind)
    width = _int(obj, "width", kind, 1, MAX_DIM)
    height = _int(obj, "height", kind, 1, MAX_DIM)
    layout = _str(obj, "layout", kind, MAX_NAME_LEN)
    if not layout:
        raise DecodeError("bad_field:layout", "empty")
    joints = _int(obj, "joints", kind, 1, MAX_JOINTS)
    pose_ms = _float(obj, "pose_ms", kind, lo=0.0, default=0.0)
    raw_persons = _get(obj, "persons", kind)
    if type(raw_persons) is not list:
        raise DecodeError("bad_field:persons", f"expected list, got {type(raw_persons).__name__}")
    if len(raw_persons) > MAX_PERSONS:
        raise DecodeError("too_many_persons", str(len(raw_persons)))
    nbytes = joints * 3 * KP_DTYPE.itemsize
    persons = []
    for item in raw_persons:
        if type(item) is not dict:
            raise DecodeError("bad_field:persons", f"item is {type(item).__name__}, not a map")
        track = _int(item, "track", "person", _INT64_MIN, _INT64_MAX)
        kp = _get(item, "kp", "person")
        if type(kp) is not bytes:
            raise DecodeError("bad_field:kp", f"expected bytes, got {type(kp).__name__}")
        if len(kp) != nbytes:
            raise DecodeError("bad_kp_length", f"{len(kp)} bytes, expected {nbytes} for {joints} joints")
        persons.append((track, kp))
    if len({t for t, _ in persons}) != len(persons):
        raise DecodeError("duplicate_track")
    if persons:
        block = np.frombuffer(b"".join(kp for _, kp in persons), dtype=KP_DTYPE)
        if not np.isfinite(block).all():
            raise DecodeError("non_finite_keypoints")
        block = block.astype(np.float32, copy=False).reshape(len(persons), joints, 3)
    people = tuple(Person(track, block[i]) for i, (track, _) in enumerate(persons))
    return Frame(stream, seq, t_capture, width, height, layout, people, pose_ms, joints)


def _parse_start(obj: Mapping[str, Any]) -> StreamStart:
    stream = _stream(obj, "start")
    t = _float(obj, "t", "start")
    meta = _get(obj, "meta", "start")
    if type(meta) is not dict:
        raise DecodeError("bad_field:meta", f"expected map, got {type(meta).__name__}")
    if len(meta) > MAX_META_ITEMS:
        raise DecodeError("bad_field:meta", f"more than {MAX_META_ITEMS} items")
    for key, value in meta.items():
        if type(key) is not str or not 0 < len(key) <= MAX_NAME_LEN:
            raise DecodeError("bad_field:meta", f"bad key {key!r:.40}")
        if value is not None and type(value) not in (str, int, float, bool):
            raise DecodeError("bad_field:meta", f"{key}: {type(value).__name__} is not a scalar")
        if type(value) is float and not math.isfinite(value):
            raise DecodeError("bad_field:meta", f"{key}: not finite")
        if type(value) is int and not _INT64_MIN <= value <= _INT64_MAX:
            raise DecodeError("bad_field:meta", f"{key}: out of int64 range")
    return StreamStart(stream, t, dict(meta))


def _parse_end(obj: Mapping[str, Any]) -> StreamEnd:
    return StreamEnd(_stream(obj, "end"), _float(obj, "t", "end"), _str(obj, "reason", "end", MAX_TEXT_LEN))


def _parse_heartbeat(obj: Mapping[str, Any]) -> Heartbeat:
    return Heartbeat(_stream(obj, "heartbeat"), _float(obj, "t", "heartbeat"))


_PARSERS: dict[str, Callable[[Mapping[str, Any]], Message]] = {
    "frame": _parse_frame, "start": _parse_start, "end": _parse_end, "heartbeat": _parse_heartbeat,
}

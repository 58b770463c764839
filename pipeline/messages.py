"""Versioned msgpack wire format between the capture, inference and recording stages.

Every message is one msgpack map carrying ``"v"`` (the protocol version) and ``"type"``.
Five types exist: ``frame`` (the keypoints of one video frame), ``frames`` (several
consecutive frames of one stream, see :class:`FrameBatch`), ``start`` and ``end`` (the
bounds of a stream, ``start`` carrying its metadata) and ``heartbeat``.

Version 2 added ``frames``; everything else is unchanged from version 1, so version 1
messages (old recordings, old senders) still decode, and a ``frames`` message claiming
version 1 is refused. :func:`encode` writes version 2.

Frames carry each person's keypoints as raw little-endian float32 bytes of a ``(V, 3)``
array ``(x, y, confidence)`` with x and y divided by the image width and height, as in the
Kinetics-skeleton JSON; absent joints have confidence 0. Bytes decode with one
``np.frombuffer`` instead of a list of floats per joint, which keeps both ends cheap.
A ``frames`` batch carries its per-frame values as columns of raw little-endian bytes
(int64 ``seq``, float64 ``t_capture`` and ``pose_ms``, uint8 person ``counts``, int64
``tracks``) and the keypoints of all its persons as one float32 block, so decoding a batch
costs a handful of numpy calls however many frames it holds.

:func:`decode` treats its input as hostile: anything malformed raises :class:`DecodeError`
and nothing else, and the msgpack size limits stop a forged length from allocating memory.
Long-running workers use :class:`Decoder`, which counts and logs bad input instead.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import msgpack
import numpy as np

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)

MAX_MESSAGE_BYTES = 1 << 20
MAX_STREAM_LEN = 128
MAX_NAME_LEN = 64
MAX_TEXT_LEN = 1024
MAX_PERSONS = 64
MAX_JOINTS = 256
MAX_DIM = 65535
MAX_META_ITEMS = 32
MAX_BATCH_FRAMES = 1024
KP_DTYPE = np.dtype("<f4")
SEQ_DTYPE = np.dtype("<i8")
TIME_DTYPE = np.dtype("<f8")
COUNT_DTYPE = np.dtype("u1")

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_STREAM_RE = re.compile(rf"[A-Za-z0-9_.:@+\-]{{1,{MAX_STREAM_LEN}}}")

# Every length msgpack may declare is capped before it allocates anything. A bin (a frame
# batch's keypoint block) may be as long as a whole message, which is checked first.
UNPACK_LIMITS: dict[str, int] = {
    "max_bin_len": MAX_MESSAGE_BYTES,
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


@dataclass(frozen=True, slots=True, eq=False)
class FrameBatch:
    """Consecutive frames of one stream in one message (replays, recordings, a sender behind).

    Columns instead of objects: ``seq`` (int64), ``t_capture`` and ``pose_ms`` (float64) hold
    one value per frame and ``counts`` the number of persons of each frame; ``tracks``
    (int64, K) and ``keypoints`` (float32, ``(K, V, 3)``) hold the persons of all frames back
    to back, K being ``counts.sum()``. Width, height, layout and joints are shared. Sequence
    numbers increase strictly. :meth:`frames` and :meth:`from_frames` convert to and from
    :class:`Frame`.
    """

    stream: str
    width: int
    height: int
    layout: str
    joints: int
    seq: np.ndarray
    t_capture: np.ndarray
    pose_ms: np.ndarray
    counts: np.ndarray
    tracks: np.ndarray
    keypoints: np.ndarray

    def __post_init__(self) -> None:
        for name in ("width", "height", "joints"):
            object.__setattr__(self, name, _as_int(getattr(self, name), name))
        for name, dtype in (("seq", np.int64), ("t_capture", np.float64), ("pose_ms", np.float64),
                            ("counts", np.int64), ("tracks", np.int64), ("keypoints", np.float32)):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype))
        n = self.seq.shape
        if len(n) != 1 or self.t_capture.shape != n or self.pose_ms.shape != n or self.counts.shape != n:
            raise ValueError("seq, t_capture, pose_ms and counts must be 1-D of one length")
        k = int(self.counts.sum())
        if self.tracks.shape != (k,) or self.keypoints.shape != (k, self.joints, 3):
            raise ValueError(f"{k} persons need tracks of shape ({k},) and keypoints of shape ({k}, {self.joints}, 3), "
                             f"got {self.tracks.shape} and {self.keypoints.shape}")

    def __len__(self) -> int:
        return len(self.seq)

    def offsets(self) -> np.ndarray:
        """``(N + 1,)`` start of each frame's persons in ``tracks``/``keypoints``, then K."""
        out = np.zeros(len(self.counts) + 1, np.int64)
        np.cumsum(self.counts, out=out[1:])
        return out

    def frame(self, i: int) -> Frame:
        """Frame ``i`` as a :class:`Frame` (its keypoints are views into this batch)."""
        start = int(self.counts[:i].sum())
        stop = start + int(self.counts[i])
        persons = tuple(_new_person(int(t), self.keypoints[j])
                        for j, t in zip(range(start, stop), self.tracks[start:stop].tolist()))
        return _new_frame(self.stream, int(self.seq[i]), float(self.t_capture[i]), self.width, self.height,
                        self.layout, persons, float(self.pose_ms[i]), self.joints)

    def frames(self) -> list[Frame]:
        """Every frame as a :class:`Frame`, in order."""
        offsets = self.offsets().tolist()
        tracks = self.tracks.tolist()
        out = []
        for i, (seq, t, pose_ms) in enumerate(zip(self.seq.tolist(), self.t_capture.tolist(), self.pose_ms.tolist())):
            persons = tuple(_new_person(tracks[j], self.keypoints[j]) for j in range(offsets[i], offsets[i + 1]))
            out.append(_new_frame(self.stream, seq, t, self.width, self.height, self.layout, persons, pose_ms,
                                self.joints))
        return out

    def select(self, which: np.ndarray | Sequence[int]) -> FrameBatch:
        """The batch of the frames picked by a boolean mask or by indices, in order."""
        idx = np.arange(len(self))[np.asarray(which)]
        offsets = self.offsets()
        persons = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in idx.tolist()] or [np.zeros(0, int)])
        return FrameBatch(self.stream, self.width, self.height, self.layout, self.joints, self.seq[idx],
                          self.t_capture[idx], self.pose_ms[idx], self.counts[idx], self.tracks[persons],
                          self.keypoints[persons])

    @classmethod
    def from_frames(cls, frames: Sequence[Frame]) -> FrameBatch:
        """One batch of frames that share stream, width, height, layout and joints."""
        if not frames:
            raise ValueError("a frame batch needs at least one frame")
        first = frames[0]
        head = (first.stream, first.width, first.height, first.layout, first.joints)
        for f in frames:
            if (f.stream, f.width, f.height, f.layout, f.joints) != head:
                raise ValueError(f"frame {f.seq} differs from frame {first.seq} in stream, size, layout or joints")
        persons = [p for f in frames for p in f.persons]
        kp = np.stack([p.keypoints for p in persons]) if persons else np.zeros((0, first.joints, 3), np.float32)
        return cls(*head, np.array([f.seq for f in frames], np.int64), np.array([f.t_capture for f in frames]),
                   np.array([f.pose_ms for f in frames]), np.array([len(f.persons) for f in frames], np.int64),
                   np.array([p.track for p in persons], np.int64), kp)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrameBatch):
            return NotImplemented
        return (self.stream, self.width, self.height, self.layout, self.joints) == \
            (other.stream, other.width, other.height, other.layout, other.joints) and all(
                np.array_equal(getattr(self, name), getattr(other, name))
                for name in ("seq", "t_capture", "pose_ms", "counts", "tracks", "keypoints"))

    __hash__ = None  # type: ignore[assignment]


def batch_frames(frames: Iterable[Frame], max_frames: int = 64,
                 max_bytes: int = MAX_MESSAGE_BYTES // 2) -> Iterator[FrameBatch]:
    """Group consecutive frames into batches of at most ``max_frames`` frames and about
    ``max_bytes`` of keypoints; a change of stream, size, layout or joints starts a new batch."""
    if not 1 <= max_frames <= MAX_BATCH_FRAMES:
        raise ValueError(f"max_frames must be in 1..{MAX_BATCH_FRAMES}")
    group: list[Frame] = []
    size = 0
    head: tuple | None = None
    for f in frames:
        f_head = (f.stream, f.width, f.height, f.layout, f.joints)
        f_size = len(f.persons) * f.joints * 3 * KP_DTYPE.itemsize + 32
        if group and (f_head != head or len(group) >= max_frames or size + f_size > max_bytes):
            yield FrameBatch.from_frames(group)
            group, size = [], 0
        group.append(f)
        head = f_head
        size += f_size
    if group:
        yield FrameBatch.from_frames(group)


Message = Union[Frame, FrameBatch, StreamStart, StreamEnd, Heartbeat]


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
    elif isinstance(msg, FrameBatch):
        if len(msg.counts) and (msg.counts.min() < 0 or msg.counts.max() > MAX_PERSONS):
            raise ValueError(f"cannot encode frames message: person counts must be in 0..{MAX_PERSONS}")
        wire = {
            "v": PROTOCOL_VERSION, "type": "frames", "stream": msg.stream, "width": msg.width,
            "height": msg.height, "layout": msg.layout, "joints": msg.joints,
            "seq": msg.seq.astype(SEQ_DTYPE, copy=False).tobytes(),
            "t_capture": msg.t_capture.astype(TIME_DTYPE, copy=False).tobytes(),
            "pose_ms": msg.pose_ms.astype(TIME_DTYPE, copy=False).tobytes(),
            "counts": msg.counts.astype(COUNT_DTYPE).tobytes(),
            "tracks": msg.tracks.astype(SEQ_DTYPE, copy=False).tobytes(),
            "kp": msg.keypoints.astype(KP_DTYPE, copy=False).tobytes(),
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
        obj = _unpackb(data)
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
    if version not in SUPPORTED_VERSIONS:
        raise DecodeError("unsupported_version", str(version))
    kind = obj.get("type")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None or (version < 2 and kind == "frames"):
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


def _trusted_builder(cls: type) -> Callable[..., Any]:
    """A function building ``cls`` from already validated field values, in field order.

    It skips ``__init__`` and its ``__post_init__`` checks and conversions, which cost more
    than the whole decoding of a frame otherwise; only the parsers, after validating, use it.
    The body is generated (as dataclasses do) to set each slot with one descriptor call.
    """
    names = cls.__slots__
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    namespace.update({f"_set_{name}": getattr(cls, name).__set__ for name in names})
    body = "".join(f"    _set_{name}(obj, {name})\n" for name in names)
    exec(f"def build({', '.join(names)}):\n    obj = _new(_cls)\n{body}    return obj\n", namespace)
    return namespace["build"]


_new_person = _trusted_builder(Person)
_new_frame = _trusted_builder(Frame)
_new_batch = _trusted_builder(FrameBatch)
_unpackb = functools.partial(msgpack.unpackb, raw=False, strict_map_key=True, **UNPACK_LIMITS)
_KNOWN_STREAMS: set[str] = set()  # ids already found valid, so the regex runs once per stream
_MAX_KNOWN_STREAMS = 4096


def _known_stream(stream: str) -> bool:
    if stream in _KNOWN_STREAMS:
        return True
    if not is_valid_stream_id(stream):
        return False
    if len(_KNOWN_STREAMS) >= _MAX_KNOWN_STREAMS:
        _KNOWN_STREAMS.clear()
    _KNOWN_STREAMS.add(stream)
    return True


def _parse_frame(obj: Mapping[str, Any]) -> Frame:
    """A frame message: the common well-formed case on a fast path, anything else checked field by field."""
    frame = _parse_frame_fast(obj)
    return frame if frame is not None else _parse_frame_checked(obj)


def _parse_frame_fast(obj: Mapping[str, Any]) -> Frame | None:
    """The frame if every field is plainly valid, else None (the checked parser then names the fault).

    Accepts only what :func:`_parse_frame_checked` accepts, with the same result.
    """
    try:
        stream, seq, t_capture = obj["stream"], obj["seq"], obj["t_capture"]
        width, height, layout, joints, raw = obj["width"], obj["height"], obj["layout"], obj["joints"], obj["persons"]
    except (KeyError, TypeError):
        return None
    pose_ms = obj.get("pose_ms", 0.0)
    if not (type(seq) is int and 0 <= seq <= _INT64_MAX and type(t_capture) is float and math.isfinite(t_capture)
            and type(width) is int and 1 <= width <= MAX_DIM and type(height) is int and 1 <= height <= MAX_DIM
            and type(layout) is str and 0 < len(layout) <= MAX_NAME_LEN and type(joints) is int
            and 1 <= joints <= MAX_JOINTS and type(pose_ms) is float and math.isfinite(pose_ms) and pose_ms >= 0.0
            and type(raw) is list and len(raw) <= MAX_PERSONS and type(stream) is str
            and _known_stream(stream)):
        return None
    nbytes = joints * 3 * KP_DTYPE.itemsize
    tracks = []
    blobs = []
    for item in raw:
        if type(item) is not dict:
            return None
        track, kp = item.get("track"), item.get("kp")
        if (type(track) is not int or not _INT64_MIN <= track <= _INT64_MAX or type(kp) is not bytes
                or len(kp) != nbytes):
            return None
        tracks.append(track)
        blobs.append(kp)
    persons: tuple[Person, ...] = ()
    if tracks:
        if len(tracks) > 1 and len(set(tracks)) != len(tracks):
            return None
        block = np.frombuffer(blobs[0] if len(blobs) == 1 else b"".join(blobs), dtype=KP_DTYPE)
        if not math.isfinite(block.dot(block)):  # NaN, inf, or an overflow the checked parser sorts out
            return None
        block = block.astype(np.float32, copy=False).reshape(len(tracks), joints, 3)
        persons = tuple([_new_person(track, block[i]) for i, track in enumerate(tracks)])
    return _new_frame(stream, seq, t_capture, width, height, layout, persons, pose_ms, joints)


def _geometry(obj: Mapping[str, Any], kind: str) -> tuple[int, int, str, int]:
    """Image size, skeleton layout and joint count, shared by frames and frame batches."""
    width = _int(obj, "width", kind, 1, MAX_DIM)
    height = _int(obj, "height", kind, 1, MAX_DIM)
    layout = _str(obj, "layout", kind, MAX_NAME_LEN)
    if not layout:
        raise DecodeError("bad_field:layout", "empty")
    return width, height, layout, _int(obj, "joints", kind, 1, MAX_JOINTS)


def _parse_frame_checked(obj: Mapping[str, Any]) -> Frame:
    kind = "frame"
    stream = _stream(obj, kind)
    seq = _int(obj, "seq", kind, 0, _INT64_MAX)
    t_capture = _float(obj, "t_capture", kind)
    width, height, layout, joints = _geometry(obj, kind)
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


def _column(obj: Mapping[str, Any], key: str, kind: str, dtype: np.dtype, n: int | None = None,
            reason: str | None = None) -> np.ndarray:
    """A raw little-endian bytes field as a read-only 1-D array (of ``n`` items when given)."""
    value = _get(obj, key, kind)
    if type(value) is not bytes:
        raise DecodeError(f"bad_field:{key}", f"expected bytes, got {type(value).__name__}")
    if len(value) % dtype.itemsize or (n is not None and len(value) != n * dtype.itemsize):
        expected = f"{n} x {dtype.itemsize}" if n is not None else f"a multiple of {dtype.itemsize}"
        raise DecodeError(reason or f"bad_field:{key}", f"{len(value)} bytes, expected {expected}")
    return np.frombuffer(value, dtype=dtype)


def _parse_frames(obj: Mapping[str, Any]) -> FrameBatch:
    kind = "frames"
    stream = _stream(obj, kind)
    width, height, layout, joints = _geometry(obj, kind)
    # Few numpy calls per column: a batch costs about as much as a few single frames.
    seq = _column(obj, "seq", kind, SEQ_DTYPE)
    n = len(seq)
    if not 1 <= n <= MAX_BATCH_FRAMES:
        raise DecodeError("bad_field:seq", f"{n} frames, expected 1..{MAX_BATCH_FRAMES}")
    if _MIN(seq) < 0 or (n > 1 and _MIN(seq[1:] - seq[:-1]) <= 0):  # all >= 0: no difference overflows
        raise DecodeError("bad_field:seq", "negative or not strictly increasing")
    t_capture = _column(obj, "t_capture", kind, TIME_DTYPE, n)
    if not _all_finite(t_capture):
        raise DecodeError("bad_field:t_capture", "not finite")
    if "pose_ms" in obj:
        pose_ms = _column(obj, "pose_ms", kind, TIME_DTYPE, n)
        if not (_MIN(pose_ms) >= 0 and _all_finite(pose_ms)):
            raise DecodeError("bad_field:pose_ms", "negative or not finite")
    else:
        pose_ms = np.zeros(n, np.float64)
    counts = _column(obj, "counts", kind, COUNT_DTYPE, n)
    most = int(_MAX(counts))
    if most > MAX_PERSONS:
        raise DecodeError("too_many_persons", str(most))
    uniform = most == int(_MIN(counts))
    k = most * n if uniform else int(_SUM(counts, dtype=np.int64))
    tracks = _column(obj, "tracks", kind, SEQ_DTYPE, k)
    kp = _column(obj, "kp", "frames", KP_DTYPE, k * joints * 3, reason="bad_kp_length")
    if k and not _all_finite(kp):
        raise DecodeError("non_finite_keypoints")
    if k > 1 and _has_duplicate_tracks(counts, tracks, most if uniform else None):
        raise DecodeError("duplicate_track")
    return _new_batch(stream, width, height, layout, joints, seq.astype(np.int64, copy=False),
                      t_capture.astype(np.float64, copy=False), pose_ms.astype(np.float64, copy=False),
                      counts.astype(np.int64), tracks.astype(np.int64, copy=False),
                      kp.astype(np.float32, copy=False).reshape(k, joints, 3))


_MIN, _MAX, _SUM = np.minimum.reduce, np.maximum.reduce, np.add.reduce


def _all_finite(values: np.ndarray) -> bool:
    """No NaN or inf: one dot product (NaN and inf propagate, quietly) unless it overflows."""
    if math.isfinite(values.dot(values)):
        return True
    return bool(np.isfinite(values).all())


def _has_duplicate_tracks(counts: np.ndarray, tracks: np.ndarray, per_frame: int | None) -> bool:
    """Whether any frame lists one track id twice (``per_frame``: every frame has that many persons)."""
    if per_frame is not None:
        if per_frame < 2:
            return False
        rows = tracks.reshape(-1, per_frame)
        if per_frame == 2:
            return bool((rows[:, 0] == rows[:, 1]).any())
        rows = np.sort(rows, axis=1)
        return bool((rows[:, 1:] == rows[:, :-1]).any())
    frame_of = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((tracks, frame_of))
    t, f = tracks[order], frame_of[order]
    return bool(((t[1:] == t[:-1]) & (f[1:] == f[:-1])).any())


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
    "frame": _parse_frame, "frames": _parse_frames, "start": _parse_start, "end": _parse_end,
    "heartbeat": _parse_heartbeat,
}

"""The records an inference worker publishes: results, stream ends and worker statistics.

Each record is a msgpack map with ``"type"`` and ``"v"`` (:data:`RESULT_VERSION`) on the
results PUB socket, under the stream id as topic (statistics under :data:`STATS_TOPIC`,
which no stream id can take). :func:`encode_record` writes a record, :func:`decode_record` reads one back
and treats its input as hostile: anything malformed raises :class:`ResultDecodeError` and
nothing else. :meth:`Result.to_json` is the JSON Lines form that ``--output`` writes.

Version 1 (the fields as they were before the records were typed):

- ``result``: ``stream, seq, t_capture, t_result, worker, persons`` (track id per person
  slot, None: empty), ``top`` (``label, index, score``, best first), ``next_frame``
  (per slot ``V`` joints of ``[x, y, c]``, or None without a predictor), ``latency_ms``
  (``pose, transport, queue, inference, total``).
- ``end``: ``stream, reason``.
- ``stats``: ``worker, t, final, stats`` (the worker's counters, see docs/architecture.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np

from .messages import MAX_JOINTS, MAX_PERSONS, MAX_TEXT_LEN, is_valid_stream_id

if TYPE_CHECKING:
    from .scheduler import Job

RESULT_VERSION = 1
STATS_TOPIC = "!stats"  # "!" is not allowed in stream ids
LATENCY_STAGES = ("pose", "transport", "queue", "inference", "total")
MAX_TOP = 64


class ResultDecodeError(ValueError):
    """A results-socket message that is not a valid record."""


@dataclass(frozen=True)
class Label:
    """One class of a result's top-k."""

    label: str
    index: int
    score: float


@dataclass(frozen=True)
class Result:
    """The classification (and predicted next frame) of one stream's window ending at ``seq``."""

    stream: str
    seq: int
    t_capture: float
    t_result: float
    worker: str
    persons: list[int | None]
    top: list[Label]
    next_frame: list[list[list[float]]] | None
    latency_ms: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """The JSON Lines record (``--output``)."""
        return {"stream": self.stream, "seq": self.seq, "t_capture": self.t_capture, "t_result": self.t_result,
                "persons": self.persons,
                "top": [{"label": t.label, "index": t.index, "score": t.score} for t in self.top],
                "next_frame": self.next_frame, "latency_ms": self.latency_ms, "worker": self.worker}


@dataclass(frozen=True)
class StreamEnded:
    """A stream's last record: every result of it was published before."""

    stream: str
    reason: str


@dataclass(frozen=True)
class WorkerStats:
    """An inference worker's counters, published every ``stats_interval_s`` and at exit."""

    worker: str
    t: float
    final: bool
    stats: dict[str, Any]


Record = Union[Result, StreamEnded, WorkerStats]


def batch_results(jobs: Sequence[Job], probs: np.ndarray, next_frames: np.ndarray | None, class_names: Sequence[str],
                  worker: str, t_start: float, top_k: int = 5) -> list[Result]:
    """The results of one classified batch: ``probs`` ``(B, classes)``, ``next_frames``
    ``(B, C, V, M)`` in raw units (or None), the batch started at ``t_start``.

    Whole-batch conversions (one ``tolist`` per batch instead of numpy calls per result).
    """
    inference_ms = round((time.time() - t_start) * 1000, 3)
    k = min(top_k, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    scores = np.round(np.take_along_axis(probs, top, axis=1).astype(np.float64), 6).tolist()
    top = top.tolist()
    frames = None if next_frames is None else \
        np.round(next_frames.transpose(0, 3, 2, 1).astype(np.float64), 5).tolist()
    out = []
    for i, job in enumerate(jobs):
        t_result = time.time()
        latency = {"pose": round(job.pose_ms, 3),
                   "transport": round(max(0.0, (job.t_recv - job.t_capture) * 1000 - job.pose_ms), 3),
                   "queue": round((t_start - job.t_recv) * 1000, 3), "inference": inference_ms,
                   "total": round((t_result - job.t_capture) * 1000, 3)}
        out.append(Result(job.stream, job.seq, job.t_capture, t_result, worker, job.tracks,
                          [Label(class_names[c], c, sc) for c, sc in zip(top[i], scores[i])],
                          None if frames is None else frames[i], latency))
    return out


def record_topic(record: Record) -> str:
    """The PUB topic a record goes out under."""
    return STATS_TOPIC if isinstance(record, WorkerStats) else record.stream


def encode_record(record: Record) -> dict[str, Any]:
    """The msgpack-ready map of a record."""
    if isinstance(record, Result):
        return {"type": "result", "v": RESULT_VERSION, **record.to_json()}
    if isinstance(record, StreamEnded):
        return {"type": "end", "v": RESULT_VERSION, "stream": record.stream, "reason": record.reason}
    return {"type": "stats", "v": RESULT_VERSION, "worker": record.worker, "t": record.t, "final": record.final,
            "stats": record.stats}


def _get(obj: dict, key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in obj:
        raise ResultDecodeError(f"missing {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ResultDecodeError(f"{key!r} has type {type(value).__name__}")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ResultDecodeError(f"{what} is not a finite number")
    return float(value)


def _text(obj: dict, key: str) -> str:
    value = _get(obj, key, str)
    if len(value) > MAX_TEXT_LEN:
        raise ResultDecodeError(f"{key!r} longer than {MAX_TEXT_LEN}")
    return value


def _stream(obj: dict) -> str:
    stream = _get(obj, "stream", str)
    if not is_valid_stream_id(stream):
        raise ResultDecodeError(f"invalid stream id {stream[:40]!r}")
    return stream


def _next_frame(value: Any, slots: int) -> list | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != slots:
        raise ResultDecodeError("'next_frame' needs one skeleton per person slot")
    joints = None
    for skeleton in value:
        if not isinstance(skeleton, list) or not 0 < len(skeleton) <= MAX_JOINTS:
            raise ResultDecodeError("'next_frame' skeleton is not a list of joints")
        if joints is not None and len(skeleton) != joints:
            raise ResultDecodeError("'next_frame' skeletons differ in joint count")
        joints = len(skeleton)
        for joint in skeleton:
            if not isinstance(joint, list) or len(joint) != 3:
                raise ResultDecodeError("'next_frame' joint is not [x, y, c]")
            for v in joint:
                _number(v, "'next_frame' value")
    return value


def _result(obj: dict) -> Result:
    persons = _get(obj, "persons", list)
    if not 0 < len(persons) <= MAX_PERSONS or not all(p is None or (isinstance(p, int) and not isinstance(p, bool))
                                                       for p in persons):
        raise ResultDecodeError("'persons' is not a list of track ids or nulls")
    top = []
    raw_top = _get(obj, "top", list)
    if not 0 < len(raw_top) <= MAX_TOP:
        raise ResultDecodeError(f"'top' needs 1..{MAX_TOP} entries")
    for entry in raw_top:
        if not isinstance(entry, dict):
            raise ResultDecodeError("'top' entry is not a map")
        index = _get(entry, "index", int)
        score = _number(_get(entry, "score", (int, float)), "'top' score")
        if index < 0 or not 0.0 <= score <= 1.0:
            raise ResultDecodeError("'top' entry out of range")
        top.append(Label(_text(entry, "label"), index, score))
    latency = _get(obj, "latency_ms", dict)
    if set(latency) != set(LATENCY_STAGES):
        raise ResultDecodeError(f"'latency_ms' needs exactly {LATENCY_STAGES}")
    seq = _get(obj, "seq", int)
    if seq < 0:
        raise ResultDecodeError("negative 'seq'")
    return Result(_stream(obj), seq, _number(_get(obj, "t_capture", (int, float)), "'t_capture'"),
                  _number(_get(obj, "t_result", (int, float)), "'t_result'"), _text(obj, "worker"), persons, top,
                  _next_frame(obj.get("next_frame"), len(persons)),
                  {k: _number(latency[k], f"latency {k!r}") for k in LATENCY_STAGES})


def decode_record(obj: Any) -> Record:
    """A record from a decoded msgpack map; :class:`ResultDecodeError` for anything invalid."""
    if not isinstance(obj, dict):
        raise ResultDecodeError("not a map")
    if obj.get("v") != RESULT_VERSION:
        raise ResultDecodeError(f"unsupported result version {obj.get('v')!r} (expected {RESULT_VERSION})")
    kind = obj.get("type")
    if kind == "result":
        return _result(obj)
    if kind == "end":
        return StreamEnded(_stream(obj), _text(obj, "reason"))
    if kind == "stats":
        return WorkerStats(_text(obj, "worker"), _number(_get(obj, "t", (int, float)), "'t'"),
                           _get(obj, "final", bool), _get(obj, "stats", dict))
    raise ResultDecodeError(f"unknown record type {kind!r}")

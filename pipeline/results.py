"""The records an inference worker publishes: results, stream ends and worker statistics.

Each record is a msgpack map with ``"type"`` and ``"v"`` (:data:`RESULT_VERSION`) on the
results PUB socket, under the stream id as topic (statistics under :data:`STATS_TOPIC`,
which no stream id can take). :func:`encode_record` writes a record, :func:`decode_record` reads one back
and treats its input as hostile: anything malformed raises :class:`ResultDecodeError` and
nothing else. :meth:`Result.to_json` is the JSON Lines form that ``--output`` writes.

Version 2 (version 1 had one label per stream):

- ``result``: ``stream, seq, t_capture, t_result, worker, latency_ms`` (``pose, transport,
  queue, inference, total``) and ``people``: per person in the window's last frame ``id``
  (track id), ``label`` (the person's steady label: a class name or ``"unknown"``, see
  :mod:`pipeline.smoothing`), ``score`` (this window's probability of its top class), ``top``
  (this window's ``label, score``, best first) and ``next_frame`` (``V`` joints of
  ``[x, y, c]`` in image-normalised coordinates, or None without a predictor); with
  ``inference.future`` and a model that predicts several frames ahead, ``future``: the
  skeletons of frames ``seq + 1 .. seq + H`` (one per input frame of the stream, at its own
  frame rate; the first is ``next_frame``). A window with nobody in it has ``"people": []``.
- ``event`` (as it closes): ``stream, person`` (track id), ``label``, ``start_seq, end_seq``
  (the last frames of the first and last windows with that label), ``t_start, t_end``
  (their capture times) and ``windows``.
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

RESULT_VERSION = 2
UNKNOWN = "unknown"  # the label of a person whose motion is none of the model's actions, or idle
STATS_TOPIC = "!stats"  # "!" is not allowed in stream ids
LATENCY_STAGES = ("pose", "transport", "queue", "inference", "total")
MAX_TOP = 64
MAX_FUTURE = 64  # predicted frames per person


class ResultDecodeError(ValueError):
    """A results-socket message that is not a valid record."""


@dataclass(frozen=True)
class Label:
    """One class of a person's top-k."""

    label: str
    score: float


@dataclass(frozen=True)
class PersonResult:
    """What one person in the window is doing, and where their joints will be next."""

    id: int
    label: str
    score: float
    top: list[Label]
    next_frame: list[list[float]] | None
    future: list[list[list[float]]] | None = None  # frames seq+1..seq+H, when asked for

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "label": self.label, "score": self.score,
               "top": [{"label": t.label, "score": t.score} for t in self.top], "next_frame": self.next_frame}
        if self.future is not None:
            out["future"] = self.future
        return out


@dataclass(frozen=True)
class Result:
    """Each person's classification of one stream's window ending at ``seq``."""

    stream: str
    seq: int
    t_capture: float
    t_result: float
    worker: str
    latency_ms: dict[str, float]
    people: list[PersonResult]

    def to_json(self) -> dict[str, Any]:
        """The JSON Lines record (``--output``)."""
        return {"stream": self.stream, "seq": self.seq, "t_capture": self.t_capture, "t_result": self.t_result,
                "worker": self.worker, "latency_ms": self.latency_ms,
                "people": [p.to_json() for p in self.people]}


@dataclass(frozen=True)
class ActionEvent:
    """One person doing one action from frame ``start_seq`` to ``end_seq`` (windows ending there)."""

    stream: str
    person: int
    label: str
    start_seq: int
    end_seq: int
    t_start: float
    t_end: float
    windows: int

    def to_json(self) -> dict[str, Any]:
        return {"stream": self.stream, "person": self.person, "label": self.label, "start_seq": self.start_seq,
                "end_seq": self.end_seq, "t_start": self.t_start, "t_end": self.t_end, "windows": self.windows}


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


Record = Union[Result, ActionEvent, StreamEnded, WorkerStats]


def record_topic(record: Record) -> str:
    """The PUB topic a record goes out under."""
    return STATS_TOPIC if isinstance(record, WorkerStats) else record.stream


def encode_record(record: Record) -> dict[str, Any]:
    """The msgpack-ready map of a record."""
    if isinstance(record, Result):
        return {"type": "result", "v": RESULT_VERSION, **record.to_json()}
    if isinstance(record, ActionEvent):
        return {"type": "event", "v": RESULT_VERSION, **record.to_json()}
    if isinstance(record, StreamEnded):
        return {"type": "end", "v": RESULT_VERSION, "stream": record.stream, "reason": record.reason}
    return {"type": "stats", "v": RESULT_VERSION, "worker": record.worker, "t": record.t, "final": record.final,
            "stats": record.stats}


def batch_results(jobs: Sequence[Job], people: Sequence[Sequence[int]], probs: np.ndarray,
                  next_frames: np.ndarray | None, known: np.ndarray | None, class_names: Sequence[str], worker: str,
                  t_start: float, top_k: int = 5, future: bool = False) -> list[Result]:
    """The results of one classified batch.

    ``people[j]`` are the track ids of job ``j``'s people, whose rows follow each other in
    ``probs`` ``(R, classes)``, ``next_frames`` ``(R, C, V, 1)`` or ``(R, C, H, V, 1)`` (H frames
    ahead) in raw units (or None) and ``known`` ``(R,)`` (False: the person is labelled unknown;
    None: all known). With ``future`` each person carries all H frames. The batch started at
    ``t_start``. Whole-batch conversions: one ``tolist`` per batch.
    """
    inference_ms = round((time.time() - t_start) * 1000, 3)
    k = min(top_k, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    scores = np.round(np.take_along_axis(probs, top, axis=1).astype(np.float64), 6).tolist()
    top = top.tolist()
    ahead = None
    if next_frames is not None and next_frames.ndim == 5:  # (R, C, H, V, 1)
        if future:
            ahead = np.round(next_frames[..., 0].transpose(0, 2, 3, 1).astype(np.float64), 5).tolist()
        next_frames = next_frames[:, :, 0]
    frames = None if next_frames is None else \
        np.round(next_frames[..., 0].transpose(0, 2, 1).astype(np.float64), 5).tolist()
    known = None if known is None else known.tolist()
    out, row = [], 0
    for job, tracks in zip(jobs, people):
        persons = []
        for track in tracks:
            label = class_names[top[row][0]] if known is None or known[row] else UNKNOWN
            persons.append(PersonResult(track, label, scores[row][0],
                                        [Label(class_names[c], sc) for c, sc in zip(top[row], scores[row])],
                                        None if frames is None else frames[row],
                                        None if ahead is None else ahead[row]))
            row += 1
        t_result = time.time()
        latency = {"pose": round(job.pose_ms, 3),
                   "transport": round(max(0.0, (job.t_recv - job.t_capture) * 1000 - job.pose_ms), 3),
                   "queue": round((t_start - job.t_recv) * 1000, 3), "inference": inference_ms,
                   "total": round((t_result - job.t_capture) * 1000, 3)}
        out.append(Result(job.stream, job.seq, job.t_capture, t_result, worker, latency, persons))
    return out


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


def _skeleton(value: Any) -> list | None:
    if value is None:
        return None
    if not isinstance(value, list) or not 0 < len(value) <= MAX_JOINTS:
        raise ResultDecodeError("'next_frame' is not a list of joints")
    for joint in value:
        if not isinstance(joint, list) or len(joint) != 3:
            raise ResultDecodeError("'next_frame' joint is not [x, y, c]")
        for v in joint:
            _number(v, "'next_frame' value")
    return value


def _future(value: Any) -> list | None:
    if value is None:
        return None
    if not isinstance(value, list) or not 0 < len(value) <= MAX_FUTURE:
        raise ResultDecodeError(f"'future' is not a list of 1..{MAX_FUTURE} skeletons")
    return [_skeleton(frame) for frame in value]


def _score(value: Any, what: str) -> float:
    score = _number(value, what)
    if not 0.0 <= score <= 1.0:
        raise ResultDecodeError(f"{what} out of range")
    return score


def _person(obj: Any) -> PersonResult:
    if not isinstance(obj, dict):
        raise ResultDecodeError("'people' entry is not a map")
    raw_top = _get(obj, "top", list)
    if not 0 < len(raw_top) <= MAX_TOP:
        raise ResultDecodeError(f"'top' needs 1..{MAX_TOP} entries")
    top = []
    for entry in raw_top:
        if not isinstance(entry, dict):
            raise ResultDecodeError("'top' entry is not a map")
        top.append(Label(_text(entry, "label"), _score(_get(entry, "score", (int, float)), "'top' score")))
    return PersonResult(_get(obj, "id", int), _text(obj, "label"), _score(_get(obj, "score", (int, float)), "'score'"),
                        top, _skeleton(obj.get("next_frame")), _future(obj.get("future")))


def _result(obj: dict) -> Result:
    people = _get(obj, "people", list)
    if len(people) > MAX_PERSONS:
        raise ResultDecodeError(f"more than {MAX_PERSONS} people")
    latency = _get(obj, "latency_ms", dict)
    if set(latency) != set(LATENCY_STAGES):
        raise ResultDecodeError(f"'latency_ms' needs exactly {LATENCY_STAGES}")
    seq = _get(obj, "seq", int)
    if seq < 0:
        raise ResultDecodeError("negative 'seq'")
    return Result(_stream(obj), seq, _number(_get(obj, "t_capture", (int, float)), "'t_capture'"),
                  _number(_get(obj, "t_result", (int, float)), "'t_result'"), _text(obj, "worker"),
                  {k: _number(latency[k], f"latency {k!r}") for k in LATENCY_STAGES}, [_person(p) for p in people])


def decode_record(obj: Any) -> Record:
    """A record from a decoded msgpack map; :class:`ResultDecodeError` for anything invalid."""
    if not isinstance(obj, dict):
        raise ResultDecodeError("not a map")
    if obj.get("v") != RESULT_VERSION:
        raise ResultDecodeError(f"unsupported result version {obj.get('v')!r} (expected {RESULT_VERSION})")
    kind = obj.get("type")
    if kind == "result":
        return _result(obj)
    if kind == "event":
        start, end = _get(obj, "start_seq", int), _get(obj, "end_seq", int)
        if not 0 <= start <= end:
            raise ResultDecodeError("event frames out of order")
        return ActionEvent(_stream(obj), _get(obj, "person", int), _text(obj, "label"), start, end,
                           _number(_get(obj, "t_start", (int, float)), "'t_start'"),
                           _number(_get(obj, "t_end", (int, float)), "'t_end'"), _get(obj, "windows", int))
    if kind == "end":
        return StreamEnded(_stream(obj), _text(obj, "reason"))
    if kind == "stats":
        return WorkerStats(_text(obj, "worker"), _number(_get(obj, "t", (int, float)), "'t'"),
                           _get(obj, "final", bool), _get(obj, "stats", dict))
    raise ResultDecodeError(f"unknown record type {kind!r}")

"""Result, end and stats records: round trips, validation, and a fuzzed decoder."""

from __future__ import annotations

import copy
import math

import msgpack
import numpy as np
import pytest

from pipeline.results import (
    RESULT_VERSION, STATS_TOPIC, UNKNOWN, Label, PersonResult, Result, ResultDecodeError, StreamEnded, WorkerStats,
    decode_record, encode_record, record_topic,
)


def a_result(next_frame: bool = True, people: int = 2) -> Result:
    skeleton = [[0.5, 0.25, 0.9]] * 18
    persons = [PersonResult(3, "wave", 0.75, [Label("wave", 0.75), Label("clap", 0.25)],
                            skeleton if next_frame else None),
               PersonResult(5, UNKNOWN, 0.4, [Label("clap", 0.4), Label("wave", 0.35)],
                            skeleton if next_frame else None)][:people]
    return Result("cam0", 41, 100.0, 100.2, "inference-1",
                  {"pose": 18.5, "transport": 2.0, "queue": 3.0, "inference": 95.0, "total": 120.0}, persons)


def a_result_with_future(frames: int = 3) -> Result:
    base = a_result()
    ahead = [[[0.5 + 0.01 * h, 0.25, 0.9]] * 18 for h in range(frames)]
    return Result(base.stream, base.seq, base.t_capture, base.t_result, base.worker, base.latency_ms,
                  [PersonResult(p.id, p.label, p.score, p.top, ahead[0], ahead) for p in base.people])


RECORDS = [a_result(), a_result(next_frame=False), a_result(people=0), a_result_with_future(), StreamEnded("cam0", "eof"),
           WorkerStats("inference", 5.0, True, {"frames_in": 10, "latency_ms": {}})]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_records_round_trip_through_msgpack(record) -> None:
    wire = msgpack.unpackb(msgpack.packb(encode_record(record)), raw=False)
    assert wire["v"] == RESULT_VERSION
    assert decode_record(wire) == record


def test_topics_and_the_json_lines_form() -> None:
    assert record_topic(a_result()) == "cam0" and record_topic(RECORDS[-1]) == STATS_TOPIC
    row = a_result().to_json()
    assert list(row) == ["stream", "seq", "t_capture", "t_result", "worker", "latency_ms", "people"]
    assert row["people"][0]["top"][0] == {"label": "wave", "score": 0.75}
    assert [p["label"] for p in row["people"]] == ["wave", "unknown"]
    assert list(row["people"][0]) == ["id", "label", "score", "top", "next_frame"]
    ahead = a_result_with_future(3).to_json()["people"][0]
    assert len(ahead["future"]) == 3 and ahead["future"][0] == ahead["next_frame"]


def test_batch_results_carry_the_frames_ahead_only_when_asked() -> None:
    from pipeline.results import batch_results
    from pipeline.scheduler import Job

    job = Job("cam0", 9, 1.0, 1.0, 0.0, np.zeros((3, 4, 18, 1), np.float32), [7], 1)
    probs = np.array([[0.2, 0.8]], np.float32)
    ahead = np.zeros((1, 3, 4, 18, 1), np.float32)  # (R, C, H, V, 1): 4 frames ahead
    ahead[0, 0, :, :, 0] = np.arange(4)[:, None]
    plain = batch_results([job], [[7]], probs, ahead, None, ["a", "b"], "w", 1.0)[0].people[0]
    assert plain.future is None and [j[0] for j in plain.next_frame] == [0.0] * 18
    asked = batch_results([job], [[7]], probs, ahead, None, ["a", "b"], "w", 1.0, future=True)[0].people[0]
    assert [frame[0][0] for frame in asked.future] == [0.0, 1.0, 2.0, 3.0] and asked.next_frame == asked.future[0]


@pytest.mark.parametrize("change, reason", [
    (lambda r: r.update(v=1), "version"),
    (lambda r: r.update(type="frame"), "unknown record type"),
    (lambda r: r.pop("seq"), "missing 'seq'"),
    (lambda r: r.update(seq=-1), "negative"),
    (lambda r: r.update(stream="a/b"), "stream id"),
    (lambda r: r.update(t_result=math.nan), "finite"),
    (lambda r: r.update(people={}), "people"),
    (lambda r: r["people"][0].update(top=[]), "top"),
    (lambda r: r["people"][0]["top"][0].update(score=1.5), "range"),
    (lambda r: r["people"][0].update(id=True), "id"),
    (lambda r: r["people"][1].pop("label"), "missing 'label'"),
    (lambda r: r["people"][0].update(next_frame=[[0.1, 0.2]]), "[x, y, c]"),
    (lambda r: r["people"][0]["next_frame"][3].append(1.0), "[x, y, c]"),
    (lambda r: r["latency_ms"].pop("queue"), "latency_ms"),
    (lambda r: r["people"][0].update(future=[]), "future"),
    (lambda r: r["people"][0].update(future=[[[0.1, 0.2, 1.0]]] * 65), "future"),
    (lambda r: r["people"][0].update(future=[[[0.1, 0.2]]]), "[x, y, c]"),
])
def test_invalid_results_are_refused_with_a_reason(change, reason) -> None:
    wire = encode_record(a_result())
    change(wire)
    with pytest.raises(ResultDecodeError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        decode_record(wire)


def _mutate(obj, rng: np.random.Generator):
    """One random change somewhere in a nested record."""
    junk = [None, True, -1, 2 ** 70, 1.5, math.inf, math.nan, "", "x" * 2000, b"\x00", [], {}, [None] * 3,
            {"a": 1}, [[1, 2, 3]] * 70]
    path = [obj]
    while True:
        node = path[-1]
        keys = list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
        if not keys or rng.random() < 0.35:
            break
        key = keys[int(rng.integers(len(keys)))]
        if not isinstance(node[key], (dict, list)) or rng.random() < 0.3:
            action = rng.integers(3)
            if action == 0 and isinstance(node, dict):
                del node[key]
            else:
                node[key] = junk[int(rng.integers(len(junk)))]
            return obj
        path.append(node[key])
    if isinstance(path[-1], dict):
        path[-1][str(rng.integers(100))] = junk[int(rng.integers(len(junk)))]
    return obj


def test_decoder_raises_only_its_own_error_on_20000_mutated_records() -> None:
    rng = np.random.default_rng(7)
    originals = [encode_record(r) for r in RECORDS]
    accepted = refused = 0
    for i in range(20_000):
        wire = _mutate(copy.deepcopy(originals[i % len(originals)]), rng)
        if rng.random() < 0.3:
            wire = _mutate(wire, rng)
        try:
            record = decode_record(wire)
        except ResultDecodeError:
            refused += 1
            continue
        accepted += 1
        assert decode_record(encode_record(record)) == record  # whatever passes is a whole record
    assert refused > 10_000 and accepted > 100

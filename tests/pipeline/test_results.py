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


RECORDS = [a_result(), a_result(next_frame=False), a_result(people=0), StreamEnded("cam0", "eof"),
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

"""Wire format: round trips, rejection of malformed input, and a mutation fuzz."""

from __future__ import annotations

import logging
import math
import random
import struct

import msgpack
import numpy as np
import pytest

from pipeline.messages import (
    MAX_PERSONS, PROTOCOL_VERSION, DecodeError, Decoder, Frame, Heartbeat, Person, StreamEnd, StreamStart,
    decode, encode, frame_from_arrays, is_valid_stream_id, parse, sanitize_stream_id,
)

V = 18


def make_frame(persons: int = 2, seq: int = 7, joints: int = V, seed: int = 0) -> Frame:
    rng = np.random.default_rng(seed)
    kps = [rng.random((joints, 3), dtype=np.float32) for _ in range(persons)]
    return frame_from_arrays("cam0", seq, 1_700_000_000.25, 640, 480, "openpose", kps,
                             list(range(10, 10 + persons)), pose_ms=3.5, joints=joints)


def wire(frame: Frame | None = None, **changes: object) -> dict:
    """The frame's wire map with fields replaced (a value of ... deletes the field)."""
    obj = msgpack.unpackb(encode(frame or make_frame()), raw=False)
    for key, value in changes.items():
        if value is ...:
            del obj[key]
        else:
            obj[key] = value
    return obj


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_frame_round_trip_keeps_every_field_and_the_keypoints_bitwise() -> None:
    frame = make_frame()
    out = decode(encode(frame))
    assert isinstance(out, Frame)
    assert (out.stream, out.seq, out.t_capture, out.width, out.height, out.layout, out.joints, out.pose_ms) == \
        ("cam0", 7, 1_700_000_000.25, 640, 480, "openpose", V, 3.5)
    assert [p.track for p in out.persons] == [10, 11]
    for got, sent in zip(out.persons, frame.persons, strict=True):
        assert got.keypoints.dtype == np.float32 and got.keypoints.shape == (V, 3)
        assert got.keypoints.tobytes() == sent.keypoints.tobytes()
    assert out == frame


def test_frame_without_persons_round_trips_with_its_joint_count() -> None:
    frame = Frame("cam0", 0, 1.0, 10, 10, "coco", (), joints=17)
    out = decode(encode(frame))
    assert out.persons == () and out.joints == 17
    assert out.keypoints().shape == (0, 17, 3)


def test_keypoints_on_the_wire_are_little_endian_float32_rows_of_x_y_confidence() -> None:
    kp = np.arange(V * 3, dtype=np.float32).reshape(V, 3) / 100
    obj = wire(frame_from_arrays("s", 0, 0.0, 2, 2, "openpose", [kp], [5]))
    raw = obj["persons"][0]["kp"]
    assert struct.unpack("<3f", raw[:12]) == pytest.approx((0.0, 0.01, 0.02))
    assert len(raw) == V * 3 * 4


@pytest.mark.parametrize("msg", [
    StreamStart("cam0", 12.5, {"fps": 30.0, "source": "video.mp4", "layout": "openpose", "width": 640,
                               "height": 480, "live": False, "note": None}),
    StreamEnd("cam0", 13.0, "eof"),
    Heartbeat("worker-1", 14.0),
])
def test_control_messages_round_trip(msg: object) -> None:
    data = encode(msg)
    obj = msgpack.unpackb(data, raw=False)
    assert obj["v"] == PROTOCOL_VERSION and obj["type"] in ("start", "end", "heartbeat")
    assert decode(data) == msg


def test_numpy_scalars_are_accepted_when_building_messages() -> None:
    frame = frame_from_arrays("s", np.int64(3), np.float64(2.0), np.int32(4), 4, "l",
                              [np.zeros((2, 3))], [np.int64(9)])
    out = decode(encode(frame))
    assert out.seq == 3 and out.persons[0].track == 9
    start = decode(encode(StreamStart("s", 0.0, {"fps": np.float32(25.0)})))
    assert start.meta == {"fps": 25.0} and type(start.meta["fps"]) is float


def test_encode_refuses_what_decode_would_refuse() -> None:
    bad_kp = np.zeros((V, 3), np.float32)
    bad_kp[3, 0] = np.nan
    with pytest.raises(ValueError, match="non_finite"):
        encode(frame_from_arrays("s", 0, 0.0, 1, 1, "l", [bad_kp], [1]))
    with pytest.raises(ValueError, match="stream"):
        encode(Heartbeat("a/b", 0.0))
    with pytest.raises(ValueError, match="joints"):
        encode(Frame("s", 0, 0.0, 1, 1, "l", ()))
    with pytest.raises(TypeError):
        Person(True, np.zeros((V, 3)))
    with pytest.raises(ValueError):
        Person(1, np.zeros((V, 2)))


BAD_MESSAGES = {
    "truncated": lambda: encode(make_frame())[:-5],
    "trailing_bytes": lambda: encode(make_frame()) + b"\x00",
    "not_msgpack": lambda: b"\xc1\x00\x01",
    "not_a_map": lambda: pack([1, 2, 3]),
    "empty": lambda: b"",
    "missing_field:v": lambda: pack(wire(v=...)),
    "unsupported_version": lambda: pack(wire(v=2)),
    "bad_field:v": lambda: pack(wire(v=True)),
    "unknown_type": lambda: pack(wire(type="video")),
    "missing_field:seq": lambda: pack(wire(seq=...)),
    "bad_field:seq": lambda: pack(wire(seq=-1)),
    "bad_field:width": lambda: pack(wire(width=True)),
    "bad_field:height": lambda: pack(wire(height=70000)),
    "bad_field:joints": lambda: pack(wire(joints=0)),
    "bad_field:t_capture": lambda: pack(wire(t_capture=math.nan)),
    "bad_field:pose_ms": lambda: pack(wire(pose_ms=-1.0)),
    "bad_field:stream": lambda: pack(wire(stream="x" * 129)),
    "bad_field:layout": lambda: pack(wire(layout=7)),
    "bad_field:persons": lambda: pack(wire(persons={"track": 1})),
    "bad_kp_length": lambda: pack(wire(joints=17)),
    "bad_field:kp": lambda: pack(wire(persons=[{"track": 1, "kp": "text"}])),
    "bad_field:track": lambda: pack(wire(persons=[{"track": 1.0, "kp": b"\0" * V * 12}])),
    "duplicate_track": lambda: pack(wire(persons=[{"track": 1, "kp": b"\0" * V * 12}] * 2)),
    "non_finite_keypoints": lambda: pack(wire(persons=[{
        "track": 1, "kp": np.full((V, 3), np.inf, np.float32).tobytes()}])),
    "size_limit": lambda: pack(wire(joints=1, persons=[{"track": i, "kp": b"\0" * 12}
                                                       for i in range(MAX_PERSONS + 1)])),
    "bad_field:meta": lambda: pack({"v": 1, "type": "start", "stream": "s", "t": 0.0, "meta": {"a": [1]}}),
    "bad_field:reason": lambda: pack({"v": 1, "type": "end", "stream": "s", "t": 0.0, "reason": None}),
}


@pytest.mark.parametrize("reason", sorted(BAD_MESSAGES))
def test_bad_message_raises_decode_error_with_its_reason(reason: str) -> None:
    data = BAD_MESSAGES[reason]()
    with pytest.raises(DecodeError) as info:
        decode(data)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("data, reason", [
    (b"\xdd\xff\xff\xff\xff", "size_limit"),  # array declaring 4 G items
    (b"\xdf\xff\xff\xff\xff", "size_limit"),  # map declaring 4 G entries
    (b"\xc6\xff\xff\xff\xff", "truncated"),  # bin declaring 4 GiB, not present
    (b"\xdb\x7f\xff\xff\xff", "truncated"),  # str declaring 2 GiB, not present
    (b"\xc5\x10\x00" + bytes(4096), "size_limit"),  # bin larger than any keypoint block
    (b"\xda\x08\x00" + b"a" * 2048, "size_limit"),  # str larger than any text field
    (b"\x91" * 5000, "not_msgpack"),  # nesting deep enough to exhaust the unpacker's stack
    (b"\xd6\xff\x00\x00\x00\x00", "ext_type"),  # msgpack timestamp extension
    (b"\x81\x01\x02", "not_msgpack"),  # non-string map key
    (b"\xa2\xff\xfe", "not_msgpack"),  # invalid UTF-8
    (b"\x00" * (2 << 20), "too_large"),
])
def test_hostile_sizes_and_encodings_are_refused_without_allocating(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(data)
    assert info.value.reason == reason


@pytest.mark.parametrize("value", ["text", None, 12, [b"x"]])
def test_non_bytes_input_is_a_decode_error(value: object) -> None:
    with pytest.raises(DecodeError, match="not_bytes"):
        decode(value)  # type: ignore[arg-type]


def test_too_many_persons_is_refused_even_past_the_unpacker_limits() -> None:
    obj = wire(joints=1, persons=[{"track": i, "kp": b"\0" * 12} for i in range(MAX_PERSONS + 1)])
    with pytest.raises(DecodeError) as info:
        parse(obj)
    assert info.value.reason == "too_many_persons"
    obj["persons"] = obj["persons"][:MAX_PERSONS]
    assert len(parse(obj).persons) == MAX_PERSONS


def test_bool_is_not_accepted_where_an_int_is_expected() -> None:
    with pytest.raises(DecodeError, match="bad_field:seq"):
        decode(pack(wire(seq=False)))
    assert decode(pack(wire(seq=0))).seq == 0


def test_integer_timestamps_are_accepted_as_floats() -> None:
    assert decode(pack(wire(t_capture=5))).t_capture == 5.0


def test_decoded_keypoints_cannot_be_modified_through_the_message() -> None:
    kp = decode(encode(make_frame())).persons[0].keypoints
    with pytest.raises(ValueError):
        kp[0, 0] = 1.0


def test_stream_ids_are_checked_and_sanitizable() -> None:
    assert is_valid_stream_id("cam-0_front.1@host:2")
    for bad in ("", "a/b", "..", "a b", "x" * 129, 5):
        assert not is_valid_stream_id(bad)
    assert sanitize_stream_id("my video (1).mp4") == "my_video_1_.mp4"
    assert is_valid_stream_id(sanitize_stream_id("/../\n"))


def test_decoder_counts_good_and_bad_by_reason_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    dec = Decoder("test", log_first=2, log_every=5)
    good = encode(make_frame())
    with caplog.at_level(logging.WARNING, logger="pipeline.messages"):
        assert isinstance(dec.decode(good), Frame)
        for _ in range(10):
            assert dec.decode(b"\xc1") is None
        assert dec.decode(good[:-1]) is None
        assert dec.decode(None) is None  # type: ignore[arg-type]
    assert (dec.ok, dec.bad) == (1, 12)
    assert dec.by_reason == {"not_msgpack": 10, "truncated": 1, "not_bytes": 1}
    assert dec.stats()["bad"] == 12
    # Logged: bad #1, #2 (first two), then #5 and #10 (every fifth).
    assert len([r for r in caplog.records if "dropped bad message" in r.getMessage()]) == 4


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    op = rng.randrange(5)
    if op == 0:
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif op == 1:
        del buf[rng.randrange(len(buf)):]
    elif op == 2:
        pos = rng.randrange(len(buf))
        buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif op == 3:
        pos = rng.randrange(len(buf))
        del buf[pos:pos + rng.randint(1, 8)]
    else:
        pos = rng.randrange(len(buf))
        buf[pos] = rng.choice([0xc0, 0xc2, 0xc3, 0xdc, 0xdd, 0xde, 0xdf, 0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb, 0xcb])
    return bytes(buf)


def test_fuzzed_messages_only_ever_raise_decode_error() -> None:
    rng = random.Random(1234)
    seeds = [encode(make_frame(persons=p, joints=j)) for p, j in ((0, 5), (1, 18), (3, 25))]
    seeds += [encode(StreamStart("cam0", 1.0, {"fps": 30.0, "live": True, "source": "x"})),
              encode(StreamEnd("cam0", 2.0, "eof")), encode(Heartbeat("w", 3.0))]
    outcomes = {"ok": 0, "bad": 0}
    for _ in range(2000):
        data = _mutate(rng.choice(seeds), rng)
        try:
            msg = decode(data)
        except DecodeError:
            outcomes["bad"] += 1
        else:
            outcomes["ok"] += 1
            assert isinstance(msg, (Frame, StreamStart, StreamEnd, Heartbeat))
            if isinstance(msg, Frame):
                assert all(np.isfinite(p.keypoints).all() and p.keypoints.shape == (msg.joints, 3)
                           for p in msg.persons)
    assert outcomes["bad"] > 1000 and outcomes["ok"] > 0

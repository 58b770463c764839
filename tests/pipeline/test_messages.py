"""Wire format: round trips, rejection of malformed input, frame batches, version 1 input."""

from __future__ import annotations

import logging
import math
import random
import struct

import msgpack
import numpy as np
import pytest

from pipeline.messages import (
    MAX_BATCH_FRAMES, MAX_MESSAGE_BYTES, MAX_PERSONS, PROTOCOL_VERSION, DecodeError, Decoder, Frame, FrameBatch,
    Heartbeat, Person, StreamEnd, StreamStart, _parse_frame_checked, _parse_frame_fast, batch_frames, decode,
    encode, frame_from_arrays, is_valid_stream_id, parse, sanitize_stream_id,
)

V = 18


def make_frame(persons: int = 2, seq: int = 7, joints: int = V, seed: int = 0) -> Frame:
    rng = np.random.default_rng(seed)
    kps = [rng.random((joints, 3), dtype=np.float32) for _ in range(persons)]
    return frame_from_arrays("cam0", seq, 1_700_000_000.25, 640, 480, "openpose", kps,
                             list(range(10, 10 + persons)), pose_ms=3.5, joints=joints)


def wire(frame: Frame | FrameBatch | None = None, **changes: object) -> dict:
    """The message's wire map with fields replaced (a value of ... deletes the field)."""
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
    "unsupported_version": lambda: pack(wire(v=3)),
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
    (b"\xc5\x10\x00" + bytes(4096), "not_a_map"),  # a bin may be as long as a message (a batch's keypoints)
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


# ---- version 1 input -------------------------------------------------------------------------

def test_version_1_messages_still_decode_to_the_same_messages() -> None:
    frame = make_frame()
    assert decode(pack(wire(frame, v=1))) == frame
    for msg in (StreamStart("cam0", 1.0, {"fps": 30.0}), StreamEnd("cam0", 2.0, "eof"), Heartbeat("cam0", 3.0)):
        obj = msgpack.unpackb(encode(msg), raw=False)
        assert obj["v"] == PROTOCOL_VERSION == 2
        assert decode(pack(dict(obj, v=1))) == msg


def test_a_frames_batch_claiming_version_1_is_refused() -> None:
    obj = msgpack.unpackb(encode(FrameBatch.from_frames([make_frame()])), raw=False)
    assert decode(pack(obj)).stream == "cam0"
    with pytest.raises(DecodeError, match="unknown_type"):
        decode(pack(dict(obj, v=1)))


# ---- frame batches ---------------------------------------------------------------------------

def make_frames(n: int = 10, seed: int = 0, counts: list[int] | None = None, first_seq: int = 100) -> list[Frame]:
    """Consecutive frames of one stream with 0..3 persons whose tracks come and go."""
    rng = np.random.default_rng(seed)
    counts = counts if counts is not None else [int(c) for c in rng.integers(0, 4, n)]
    return [frame_from_arrays("cam0", first_seq + i, 1_700_000_000.0 + i / 30, 640, 480, "openpose",
                              [rng.random((V, 3), dtype=np.float32) for _ in range(c)],
                              [int(t) for t in rng.choice(50, c, replace=False)], pose_ms=float(i), joints=V)
            for i, c in enumerate(counts)]


def batch_wire(batch: FrameBatch | None = None, **changes: object) -> dict:
    return wire(batch or FrameBatch.from_frames(make_frames()), **changes)


def test_batch_round_trip_gives_back_every_frame_bitwise() -> None:
    frames = make_frames(12)
    batch = FrameBatch.from_frames(frames)
    out = decode(encode(batch))
    assert isinstance(out, FrameBatch) and out == batch and len(out) == 12
    assert out.frames() == frames
    assert [out.frame(i) for i in range(12)] == frames
    assert out.keypoints.dtype == np.float32 and out.keypoints.shape == (int(out.counts.sum()), V, 3)
    with pytest.raises(ValueError):
        out.keypoints[0, 0, 0] = 1.0  # read-only views of the message


def test_batch_of_frames_without_persons_and_of_one_frame() -> None:
    empty = make_frames(3, counts=[0, 0, 0])
    assert decode(encode(FrameBatch.from_frames(empty))).frames() == empty
    one = make_frames(1, counts=[2])
    assert decode(encode(FrameBatch.from_frames(one))).frames() == one


def test_batch_columns_are_raw_little_endian_bytes() -> None:
    batch = FrameBatch.from_frames(make_frames(4, counts=[1, 2, 0, 1]))
    obj = batch_wire(batch)
    assert obj["type"] == "frames" and obj["v"] == 2
    assert struct.unpack("<4q", obj["seq"]) == (100, 101, 102, 103)
    assert obj["counts"] == bytes([1, 2, 0, 1])
    assert len(obj["tracks"]) == 4 * 8 and len(obj["kp"]) == 4 * V * 3 * 4
    assert struct.unpack("<4d", obj["pose_ms"]) == (0.0, 1.0, 2.0, 3.0)


def test_select_keeps_the_chosen_frames_with_their_persons() -> None:
    frames = make_frames(8)
    batch = FrameBatch.from_frames(frames)
    assert batch.select(np.array([1, 4, 7])).frames() == [frames[1], frames[4], frames[7]]
    mask = np.zeros(8, bool)
    mask[[0, 5]] = True
    assert batch.select(mask).frames() == [frames[0], frames[5]]


def test_from_frames_refuses_frames_of_different_streams_or_sizes() -> None:
    a, b = make_frames(2)
    with pytest.raises(ValueError, match="differs"):
        FrameBatch.from_frames([a, Frame("other", 5, 0.0, 640, 480, "openpose", (), joints=V)])
    with pytest.raises(ValueError, match="differs"):
        FrameBatch.from_frames([a, Frame("cam0", 5, 0.0, 320, 240, "openpose", (), joints=V)])
    with pytest.raises(ValueError, match="at least one"):
        FrameBatch.from_frames([])


def test_batch_frames_splits_by_count_bytes_and_header() -> None:
    frames = make_frames(10, counts=[2] * 10)
    assert [len(b) for b in batch_frames(frames, max_frames=4)] == [4, 4, 2]
    per_frame = 2 * V * 3 * 4 + 32
    assert [len(b) for b in batch_frames(frames, max_frames=64, max_bytes=3 * per_frame)] == [3, 3, 3, 1]
    mixed = frames[:3] + [Frame("cam0", 200, 0.0, 320, 240, "openpose", (), joints=V)] + frames[3:5]
    assert [len(b) for b in batch_frames(mixed)] == [3, 1, 2]
    assert [f for b in batch_frames(mixed, max_frames=2) for f in b.frames()] == mixed
    with pytest.raises(ValueError):
        next(batch_frames(frames, max_frames=MAX_BATCH_FRAMES + 1))


def test_the_largest_batch_fits_in_a_message() -> None:
    frames = make_frames(MAX_BATCH_FRAMES, counts=[2] * MAX_BATCH_FRAMES)
    data = encode(FrameBatch.from_frames(frames))
    assert len(data) <= MAX_MESSAGE_BYTES and len(decode(data)) == MAX_BATCH_FRAMES


def _bytes(values: list, dtype: str) -> bytes:
    return np.array(values, dtype=dtype).tobytes()


BAD_BATCHES = {
    "missing_field:seq": lambda: batch_wire(seq=...),
    "missing_field:counts": lambda: batch_wire(counts=...),
    "bad_field:seq": lambda: batch_wire(seq=[100, 101]),
    "bad_field:seq/odd_length": lambda: batch_wire(seq=b"\0" * 12),
    "bad_field:seq/empty": lambda: batch_wire(seq=b""),
    "bad_field:seq/too_many": lambda: batch_wire(seq=_bytes(list(range(MAX_BATCH_FRAMES + 1)), "<i8")),
    "bad_field:seq/not_increasing": lambda: batch_wire(seq=_bytes([100, 102, 101, 103, 104, 105, 106, 107, 108, 109],
                                                                  "<i8")),
    "bad_field:seq/repeated": lambda: batch_wire(seq=_bytes([100] * 10, "<i8")),
    "bad_field:seq/negative": lambda: batch_wire(seq=_bytes([-1] + list(range(9)), "<i8")),
    "bad_field:seq/negative_later": lambda: batch_wire(seq=_bytes(list(range(9)) + [-(1 << 63) + 1], "<i8")),
    "bad_field:t_capture": lambda: batch_wire(t_capture=_bytes([0.0] * 9 + [math.nan], "<f8")),
    "bad_field:t_capture/length": lambda: batch_wire(t_capture=_bytes([0.0] * 9, "<f8")),
    "bad_field:pose_ms": lambda: batch_wire(pose_ms=_bytes([0.0] * 9 + [-1.0], "<f8")),
    "bad_field:pose_ms/inf": lambda: batch_wire(pose_ms=_bytes([0.0] * 9 + [math.inf], "<f8")),
    "bad_field:counts": lambda: batch_wire(counts=[1] * 10),
    "bad_field:tracks": lambda: batch_wire(tracks=b"\0" * 8),
    "too_many_persons": lambda: batch_wire(counts=bytes([MAX_PERSONS + 1] + [0] * 9)),
    "bad_kp_length": lambda: batch_wire(joints=17),
    "non_finite_keypoints": lambda: batch_wire(kp=b"\0\0\xc0\x7f" + batch_wire()["kp"][4:]),
    "duplicate_track": lambda: batch_wire(FrameBatch.from_frames(make_frames(3, counts=[2, 3, 1])),
                                          tracks=_bytes([1, 2, 3, 4, 3, 9], "<i8")),
    "duplicate_track/uniform": lambda: batch_wire(FrameBatch.from_frames(make_frames(3, counts=[2, 2, 2])),
                                                  tracks=_bytes([1, 2, 3, 4, 5, 5], "<i8")),
    "duplicate_track/uniform3": lambda: batch_wire(FrameBatch.from_frames(make_frames(2, counts=[3, 3])),
                                                   tracks=_bytes([1, 2, 3, 4, 5, 4], "<i8")),
    "bad_field:layout": lambda: batch_wire(layout=""),
    "bad_field:stream": lambda: batch_wire(stream="a/b"),
}


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
def test_bad_batch_raises_decode_error_with_its_reason(case: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(pack(BAD_BATCHES[case]()))
    assert info.value.reason == case.split("/")[0]


def test_batch_without_pose_ms_decodes_with_zeros() -> None:
    out = decode(pack(batch_wire(pose_ms=...)))
    assert isinstance(out, FrameBatch) and not out.pose_ms.any() and len(out) == 10


def test_mutated_batches_only_ever_raise_decode_error_and_valid_ones_stay_exact() -> None:
    rng = np.random.default_rng(7)
    valid = [encode(FrameBatch.from_frames(make_frames(int(n), seed=int(n)))) for n in (1, 2, 5, 17)]
    decoded = 0
    for _ in range(5000):
        buf = bytearray(valid[int(rng.integers(0, len(valid)))])
        for _ in range(int(rng.integers(1, 4))):
            buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
        try:
            out = decode(bytes(buf))
        except DecodeError:
            continue
        decoded += 1
        if isinstance(out, FrameBatch):  # whatever still decodes must be a consistent batch
            assert decode(encode(out)) == out and len(out.frames()) == len(out)
    assert decoded > 0


def test_fast_frame_path_accepts_only_what_the_checked_parser_accepts_with_the_same_result() -> None:
    rng = np.random.default_rng(3)
    valid = [encode(make_frame(persons=p, seed=p)) for p in (0, 1, 2, 3)]
    fast = 0
    for i in range(4000):
        buf = bytearray(valid[i % 4])
        for _ in range(int(rng.integers(0, 3))):
            buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
        try:
            obj = msgpack.unpackb(bytes(buf), raw=False)
        except Exception:  # not msgpack any more: nothing to compare
            continue
        if not isinstance(obj, dict):
            continue
        got = _parse_frame_fast(obj)
        if got is None:
            continue
        fast += 1
        assert got == _parse_frame_checked(obj)
    assert fast > 1000

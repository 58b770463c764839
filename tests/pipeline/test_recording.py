"""Recording files: exact round trip, atomic finish, crash recovery, refusal of non-recordings."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import msgpack
import numpy as np
import pytest

from pipeline.messages import (
    Frame, FrameBatch, Heartbeat, StreamEnd, StreamStart, decode, encode, frame_from_arrays,
)
from pipeline.recording import (
    RecordingWriter, iter_recording, iter_recording_raw, read_recording, recording_path,
)

META = {"fps": 30.0, "source": "clip.mp4", "layout": "openpose", "width": 640, "height": 480, "joints": 18,
        "live": False}


def start(stream: str = "clip") -> StreamStart:
    return StreamStart(stream, 100.0, dict(META))


def frames(n: int, stream: str = "clip") -> list[bytes]:
    rng = np.random.default_rng(n)
    return [encode(frame_from_arrays(stream, i, 100.0 + i / 30, 640, 480, "openpose",
                                     [rng.random((18, 3), dtype=np.float32) for _ in range(i % 3)],
                                     list(range(i % 3)), joints=18))
            for i in range(n)]


def record(tmp_path: Path, data: list[bytes], stream: str = "clip") -> Path:
    with RecordingWriter(recording_path(tmp_path, stream), start(stream)) as writer:
        for item in data:
            writer.write(item)
    return writer.path


def test_round_trip_returns_start_frames_end_and_the_exact_bytes(tmp_path: Path) -> None:
    data = frames(40)
    path = record(tmp_path, data)
    assert path == tmp_path / "clip.skel" and path.exists()
    assert not path.with_name("clip.skel.part").exists()
    rec = read_recording(path)
    assert rec.start == start() and rec.end is not None and rec.end.reason == "eof"
    assert [f.seq for f in rec.frames] == list(range(40))
    raw = [item for item, msg in iter_recording_raw(path) if isinstance(msg, Frame)]
    assert raw == data
    blob = path.read_bytes()
    assert blob.startswith(encode(start())) and b"".join(data) in blob


def test_file_is_plain_concatenated_msgpack(tmp_path: Path) -> None:
    path = record(tmp_path, frames(3))
    with open(path, "rb") as f:
        types = [obj["type"] for obj in msgpack.Unpacker(f, raw=False)]
    assert types == ["start", "frame", "frame", "frame", "end"]


def test_part_file_is_used_until_close(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "clip.skel", start(), flush_every=1)
    writer.write(frames(1)[0])
    assert not (tmp_path / "clip.skel").exists()
    assert (tmp_path / "clip.skel.part").stat().st_size > 0  # flushed already
    assert writer.close("stopped") == tmp_path / "clip.skel"
    assert read_recording(tmp_path / "clip.skel").end.reason == "stopped"
    assert writer.close() == tmp_path / "clip.skel"


def test_an_end_message_written_through_write_finishes_the_file(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "s.skel")
    writer.write(encode(start("s")))
    writer.write(encode(Heartbeat("s", 1.0)))  # not recorded
    writer.write(encode(StreamEnd("s", 2.0, "source finished")))
    assert writer.closed and (tmp_path / "s.skel").exists()
    assert [type(m).__name__ for m in iter_recording(tmp_path / "s.skel")] == ["StreamStart", "StreamEnd"]


def test_writer_refuses_bad_sequences(tmp_path: Path) -> None:
    first = RecordingWriter(tmp_path / "a.skel")
    with pytest.raises(ValueError, match="first message must be a start"):
        first.write(frames(1)[0])
    first.close()
    with pytest.raises(ValueError, match="lacks fps"):
        RecordingWriter(tmp_path / "b.skel", StreamStart("b", 0.0, {"source": "x"}))
    assert list(tmp_path.iterdir()) == []
    writer = RecordingWriter(tmp_path / "c.skel", start("c"))
    with pytest.raises(ValueError, match="stream 'other'"):
        writer.write(frames(1, stream="other")[0])
    with pytest.raises(ValueError):
        writer.write(b"\xc1garbage")
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(frames(1, stream="c")[0])
    with pytest.raises(FileExistsError):
        RecordingWriter(tmp_path / "c.skel", start("c"))


def test_closing_without_a_start_leaves_nothing(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "x.skel")
    assert writer.close() is None
    assert list(tmp_path.iterdir()) == []


def test_exception_inside_the_with_block_still_finishes_the_recording(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with RecordingWriter(tmp_path / "clip.skel", start()) as writer:
            writer.write(frames(2)[1])
            raise RuntimeError("camera unplugged")
    assert read_recording(tmp_path / "clip.skel").end.reason == "error: RuntimeError"


@pytest.mark.parametrize("cut", [1, 7, 50])
def test_truncated_tail_keeps_every_complete_message_and_warns_once(
        tmp_path: Path, cut: int, caplog: pytest.LogCaptureFixture) -> None:
    data = frames(10)
    blob = encode(start()) + b"".join(data)
    path = tmp_path / "clip.skel.part"
    path.write_bytes(blob[:-cut])
    with caplog.at_level(logging.WARNING, logger="pipeline.recording"):
        rec = read_recording(path)
    assert rec.start == start() and rec.end is None
    assert [f.seq for f in rec.frames] == list(range(9))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and "truncated" in warnings[0]


def test_zero_filled_tail_after_a_crash_is_treated_as_truncation(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "clip.skel"
    path.write_bytes(encode(start()) + b"".join(frames(4)) + bytes(300))
    with caplog.at_level(logging.WARNING, logger="pipeline.recording"):
        assert len(read_recording(path).frames) == 4
    assert len(caplog.records) == 1 and "zero-filled" in caplog.records[0].getMessage()


def test_complete_file_reads_without_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = record(tmp_path, frames(5))
    with caplog.at_level(logging.WARNING, logger="pipeline.recording"):
        read_recording(path)
    assert caplog.records == []


@pytest.mark.parametrize("content", [
    b"",
    b"\x89PNG\r\n\x1a\n" + bytes(range(200)),
    b"plain text, not msgpack at all\n" * 5,
    msgpack.packb({"hello": "world"}),
    encode(Heartbeat("w", 0.0)),
    encode(start())[:10],
])
def test_a_file_that_is_not_a_recording_raises_value_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.skel"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="notes.skel"):
        read_recording(path)


def test_corruption_in_the_middle_raises_instead_of_silently_skipping(tmp_path: Path) -> None:
    data = frames(5)
    path = tmp_path / "clip.skel"
    path.write_bytes(encode(start()) + data[0] + b"\xc1\xc1\xc1" + b"".join(data[1:]))
    with pytest.raises(ValueError, match=r"clip.skel: corrupt record at byte"):
        read_recording(path)
    path.write_bytes(encode(start()) + data[0] + frames(1, stream="other")[0])
    with pytest.raises(ValueError, match="unexpected Frame"):
        read_recording(path)


def test_recording_path_rejects_unsafe_stream_ids(tmp_path: Path) -> None:
    assert recording_path(tmp_path, "cam.0") == tmp_path / "cam.0.skel"
    with pytest.raises(ValueError):
        recording_path(tmp_path, "../escape")


def test_batches_are_recorded_as_sent_and_read_back_as_frames(tmp_path: Path) -> None:
    data = frames(12)
    decoded = [decode(d) for d in data]
    batches = [encode(FrameBatch.from_frames(decoded[:5])), data[5], encode(FrameBatch.from_frames(decoded[6:]))]
    path = record(tmp_path, batches)
    rec = read_recording(path)
    assert rec.frames == decoded and rec.end is not None
    raw = [item for item, _ in iter_recording_raw(path)]
    assert raw[1:4] == batches  # the exact bytes, batches kept whole


def test_a_version_1_recording_still_reads(tmp_path: Path) -> None:
    def v1(data: bytes) -> bytes:
        return msgpack.packb(dict(msgpack.unpackb(data, raw=False), v=1), use_bin_type=True)

    data = frames(5)
    path = tmp_path / "old.skel"
    path.write_bytes(v1(encode(start("old"))) + b"".join(v1(encode(replace(decode(d), stream="old"))) for d in data)
                     + v1(encode(StreamEnd("old", 200.0, "eof"))))
    rec = read_recording(path)
    assert [f.seq for f in rec.frames] == list(range(5)) and rec.start.meta == META and rec.end.reason == "eof"


def test_writer_counts_the_frames_of_batches(tmp_path: Path) -> None:
    decoded = [decode(d) for d in frames(7)]
    with RecordingWriter(recording_path(tmp_path, "clip"), start()) as writer:
        writer.write(FrameBatch.from_frames(decoded[:4]))
        writer.write(decoded[4])
        writer.write(FrameBatch.from_frames(decoded[5:]))
        assert writer.frames == 7


def test_every_take_gets_a_new_name_and_keeps_its_label(tmp_path: Path) -> None:
    """A second take of a stream never replaces the first, nor one still being written (its .part)."""
    labelled = StreamStart("camera0", 100.0, {**META, "label": "wave"})
    paths = []
    for _ in range(2):
        with RecordingWriter(recording_path(tmp_path, "camera0"), labelled) as writer:
            writer.write(frames(2, stream="camera0")[1])
        paths.append(writer.path)
    writing = RecordingWriter(recording_path(tmp_path, "camera0"), labelled)
    assert recording_path(tmp_path, "camera0") == tmp_path / "camera0-4.skel"  # -3 is being written
    writing.close()
    paths.append(writing.path)
    assert paths == [tmp_path / "camera0.skel", tmp_path / "camera0-2.skel", tmp_path / "camera0-3.skel"]
    assert all(read_recording(p).start.meta["label"] == "wave" for p in paths)


def test_a_file_that_takes_the_name_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    writer = RecordingWriter(recording_path(tmp_path, "clip"), start())
    (tmp_path / "clip.skel").write_bytes(b"someone else's")
    assert writer.close() == tmp_path / "clip-2.skel"
    assert (tmp_path / "clip.skel").read_bytes() == b"someone else's"
    assert read_recording(tmp_path / "clip-2.skel").end is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip-2.skel", "clip.skel"]

"""The pipeline's own skeleton recording format: wire messages back to back.

One file per stream, ``<stream>.skel``: the ``start`` message (fps, source, layout, width,
height, joints), every frame message exactly as it arrived (single frames or frame
batches; recordings of either kind, and of protocol version 1, read alike), then the ``end``
message.
msgpack maps are self-delimiting, so the file is read as a stream of messages and a
replay can resend the original bytes bit for bit.

The writer fills ``<name>.part`` and renames it into place on close, so a finished name
always means a finished recording. A recording never replaces another: :func:`recording_path`
gives a stream's next free name (``<stream>.skel``, then ``<stream>-2.skel``, ...), and the
final rename refuses to overwrite a file that appeared meanwhile, taking the next free name.
Takes for training carry their class in the start meta (``label``) and lie in a folder named
after it (``run_pipeline.py --record DIR --label NAME``). After a crash, the ``.part`` file still reads: every
complete message is returned and the cut-off last record is dropped with one warning.
"""

from __future__ import annotations

import logging
import mmap
import os
import time
from pathlib import Path
from typing import BinaryIO, Iterator, NamedTuple

import msgpack

from .messages import (
    MAX_MESSAGE_BYTES, UNPACK_LIMITS, DecodeError, Frame, FrameBatch, Heartbeat, Message, StreamEnd, StreamStart,
    decode, encode, is_valid_stream_id, parse,
)

log = logging.getLogger(__name__)

SUFFIX = ".skel"
PART_SUFFIX = ".part"
REQUIRED_META = ("fps", "source", "layout", "width", "height", "joints")


class Recording(NamedTuple):
    """A whole recording: its start, its frames in file order (batches unpacked), its end (None if missing)."""

    start: StreamStart | None
    frames: list[Frame]
    end: StreamEnd | None


def _taken(path: Path) -> bool:
    return path.exists() or path.with_name(path.name + PART_SUFFIX).exists()


def recording_path(directory: str | Path, stream: str) -> Path:
    """The first free name of ``directory/<stream>.skel``, ``<stream>-2.skel``, ... (a name is taken
    by a finished recording or by one being written); the stream id must be valid (it becomes a
    file name)."""
    if not is_valid_stream_id(stream):
        raise ValueError(f"invalid stream id {stream!r}")
    path, n = Path(directory) / f"{stream}{SUFFIX}", 1
    while _taken(path):
        n += 1
        path = Path(directory) / f"{stream}-{n}{SUFFIX}"
    return path


class RecordingWriter:
    """Appends wire messages of one stream to ``path + '.part'``; :meth:`close` finalises.

    ``start`` may be given here or as the first message passed to :meth:`write`. Its meta
    must include fps, source, layout, width, height and joints. Frames are written as the
    exact bytes given; heartbeats are not recorded; an ``end`` message closes the writer.
    Output is flushed to the OS every ``flush_every`` messages or ``flush_interval_s``.
    """

    def __init__(self, path: str | Path, start: StreamStart | bytes | None = None, *, flush_every: int = 30,
                 flush_interval_s: float = 1.0, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.part_path = self.path.with_name(self.path.name + PART_SUFFIX)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists (pass overwrite=True to replace it)")
        self.overwrite = overwrite
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self.stream: str | None = None
        self.frames = 0
        self.closed = False
        self._unflushed = 0
        self._last_flush = time.monotonic()
        self._file: BinaryIO = open(self.part_path, "wb")
        if start is not None:
            try:
                self.write(start)
            except BaseException:
                self.close()
                raise

    def write(self, msg: bytes | Message) -> None:
        """Append one message (raw wire bytes are written unchanged)."""
        if self.closed:
            raise ValueError(f"{self.path}: recording already closed")
        data = msg if isinstance(msg, bytes) else encode(msg)
        decoded = decode(data)
        if isinstance(decoded, Heartbeat):
            return
        if self.stream is None:
            self._check_start(decoded)
            self.stream = decoded.stream
        elif isinstance(decoded, StreamStart):
            raise ValueError(f"{self.path}: a second start message")
        elif decoded.stream != self.stream:
            raise ValueError(f"{self.path}: message of stream {decoded.stream!r} in a recording of {self.stream!r}")
        self._file.write(data)
        self._unflushed += 1
        if isinstance(decoded, Frame):
            self.frames += 1
        elif isinstance(decoded, FrameBatch):
            self.frames += len(decoded)
        if isinstance(decoded, StreamEnd):
            self._finish()
            return
        now = time.monotonic()
        if self._unflushed >= self.flush_every or now - self._last_flush >= self.flush_interval_s:
            self._file.flush()
            self._unflushed = 0
            self._last_flush = now

    def close(self, reason: str = "eof", t: float | None = None) -> Path | None:
        """Write the end message, sync, and rename to the final name; returns that path.

        Without a start message nothing useful was recorded: the part file is removed and
        None returned. Closing twice is harmless.
        """
        if self.closed:
            return self.path if self.path.exists() else None
        if self.stream is None:
            self.closed = True
            self._file.close()
            self.part_path.unlink(missing_ok=True)
            log.warning("%s: closed before a start message; nothing recorded", self.path)
            return None
        self.write(StreamEnd(self.stream, time.time() if t is None else t, reason))
        return self.path

    def abandon(self) -> None:
        """Stop after a write failed (a full disk): close the file as it is. The ``.part`` file
        stays, readable like the file of a crashed run (its cut last record is ignored)."""
        self.closed = True
        try:
            self._file.close()
        except OSError:
            pass  # the buffered tail cannot go either

    def _check_start(self, msg: Message) -> None:
        if not isinstance(msg, StreamStart):
            raise ValueError(f"{self.path}: the first message must be a start message, got {type(msg).__name__}")
        missing = [key for key in REQUIRED_META if key not in msg.meta]
        if missing:
            raise ValueError(f"{self.path}: start meta lacks {', '.join(missing)}")

    def _finish(self) -> None:
        self.closed = True
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._rename()
        try:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)

    def _rename(self) -> None:
        """``.part`` to the final name; without ``overwrite`` a file that took the name meanwhile
        stays, and this recording takes the stream's next free name (logged)."""
        if self.overwrite:
            os.replace(self.part_path, self.path)
            return
        while True:
            try:
                os.link(self.part_path, self.path)  # fails instead of replacing
            except FileExistsError:
                taken, self.path = self.path, recording_path(self.path.parent, self.stream or "stream")
                log.warning("%s appeared while recording; this recording goes to %s", taken, self.path)
                continue
            except OSError:  # a file system without hard links
                if self.path.exists():
                    raise
                os.replace(self.part_path, self.path)
                return
            self.part_path.unlink()
            return

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.close("eof" if exc_type is None else f"error: {exc_type.__name__}")


def iter_recording_raw(path: str | Path) -> Iterator[tuple[bytes, Message]]:
    """Every complete message of a recording as ``(exact bytes, decoded message)``.

    Raises ValueError naming the file when it is not a recording or is corrupt in the
    middle; a cut-off or zero-filled tail (a crash mid-write) ends the iteration with one
    warning instead.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path}: empty file, not a pipeline recording")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        unpacker = msgpack.Unpacker(mm, raw=False, strict_map_key=True, max_buffer_size=MAX_MESSAGE_BYTES,
                                    **UNPACK_LIMITS)
        pos = 0
        stream: str | None = None
        ended = False
        problem = ""
        while True:
            try:
                obj = next(unpacker)
                msg = parse(obj)
            except StopIteration:
                break
            except Exception as exc:  # any malformed record: decide below whether it is a crash tail
                if pos > 0 and not mm[pos:].rstrip(b"\0"):
                    problem = f"zero-filled tail of {size - pos} bytes"
                    pos = size
                    break
                what = "not a pipeline recording" if pos == 0 else f"corrupt record at byte {pos}"
                detail = exc.reason if isinstance(exc, DecodeError) else type(exc).__name__
                raise ValueError(f"{path}: {what} ({detail})") from None
            end = unpacker.tell()
            if stream is None:
                if not isinstance(msg, StreamStart):
                    raise ValueError(f"{path}: not a pipeline recording (first message is {type(msg).__name__})")
                stream = msg.stream
            elif ended or isinstance(msg, StreamStart) or msg.stream != stream:
                raise ValueError(f"{path}: corrupt record at byte {pos} (unexpected {type(msg).__name__})")
            ended = isinstance(msg, StreamEnd)
            yield mm[pos:end], msg
            pos = end
        if stream is None:
            raise ValueError(f"{path}: not a pipeline recording (no complete start message)")
        if pos < size and not problem:
            problem = f"dropped truncated last record ({size - pos} bytes)"
        if not ended:
            problem = f"{problem}; no end message" if problem else "no end message"
        if problem:
            log.warning("%s: incomplete recording: %s", path, problem)


def iter_recording(path: str | Path) -> Iterator[Message]:
    """Every complete message of a recording, decoded and validated (see :func:`iter_recording_raw`)."""
    for _, msg in iter_recording_raw(path):
        yield msg


def read_recording(path: str | Path) -> Recording:
    """Load a whole recording; heartbeats, if any, are skipped."""
    start: StreamStart | None = None
    end: StreamEnd | None = None
    frames: list[Frame] = []
    for msg in iter_recording(path):
        if isinstance(msg, Frame):
            frames.append(msg)
        elif isinstance(msg, FrameBatch):
            frames.extend(msg.frames())
        elif isinstance(msg, StreamStart):
            start = msg
        elif isinstance(msg, StreamEnd):
            end = msg
    return Recording(start, frames, end)

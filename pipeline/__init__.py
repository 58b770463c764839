"""Streaming plumbing without torch: settings, wire messages, ZeroMQ transport, per-stream state and
window rules, result records, person slots and recordings."""

from .messages import (
    PROTOCOL_VERSION, DecodeError, Decoder, Frame, FrameBatch, Heartbeat, Message, Person, StreamEnd, StreamStart,
    batch_frames, decode, encode, frame_from_arrays,
)
from .recording import Recording, RecordingWriter, iter_recording, read_recording
from .ring_buffer import RingBuffer
from .tracker import SlotAssigner
from .transport import FrameReceiver, FrameSender, ResultPublisher, ResultSubscriber, check_bind_endpoint

__all__ = [
    "PROTOCOL_VERSION", "DecodeError", "Decoder", "Frame", "FrameBatch", "Heartbeat", "Message", "Person",
    "StreamEnd", "StreamStart", "batch_frames", "decode", "encode", "frame_from_arrays", "Recording",
    "RecordingWriter", "iter_recording", "read_recording", "RingBuffer", "SlotAssigner",
    "FrameReceiver", "FrameSender", "ResultPublisher", "ResultSubscriber", "check_bind_endpoint",
]

"""Replay recorded skeletons through the pipeline, exactly as live frames would arrive.

    python -m workers.replay PATH [--connect EP] [--fps F | --fast] [--index N] [--stream ID] [--batch N]

PATH is one of: a pipeline recording (``.skel``), a Kinetics-skeleton per-clip JSON, or an
st-gcn ``*_data.npy`` dataset (one sample, ``--index``). Frames keep their keypoints and
track ids; their capture time is the time they are sent, so latencies mean what they do live.
Frames go one per message while the replay keeps its pace; a fast replay, or one that fell
behind, sends every frame that is due in batch messages of up to ``--batch`` frames, which
the inference worker ingests many times faster (bench/transport.py).

Restarted with the same ``--state-file`` (the supervisor restarts a killed replay, and every
replay pinned to an inference worker it restarts), a replay sends its stream again from the
first frame: at full speed up to the last frame any earlier run sent, then at its pace. An
inference worker that still holds the stream drops the frames it has (stale), so it gets exactly
those that died with the killed sender's queue; a restarted one rebuilds the stream's ring
buffer and window clock as they were, so every window falls where it did (the results sink drops
the windows it already has, see ``workers/sinks.py``). With ``--delivered-through SEQ`` (the
supervisor passes the sink's last result of the stream) the restarted worker does not classify
the windows up to SEQ again: it only rebuilds them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.cli import add_debug_flag, run_cli, setup_logging
from pipeline.endpoints import split_list
from pipeline.messages import MAX_BATCH_FRAMES, Frame, Person, batch_frames, sanitize_stream_id
from pipeline.recording import read_recording
from pipeline.settings import load_settings
from stgcn.graph import get_layout, layout_for_joints
from workers.config import add_curve_args, add_sender_args, add_settings_args, client_curve, stop_on_signals
from workers.emitter import StreamEmitter, read_resume_seq

log = logging.getLogger("workers.replay")
DEFAULT_BATCH = 128


class ReplayError(ValueError):
    """A file that cannot be replayed; the message names it."""


def load_frames(path: str | Path, index: int = 0, npy_offset: float = 0.0
                ) -> tuple[dict, list[Frame]]:
    """Stream metadata and frames (stream id ``replay``) of any supported file."""
    path = Path(path)
    if not path.exists():
        raise ReplayError(f"{path}: no such file")
    name = path.name
    if name.endswith(".skel") or name.endswith(".skel.part"):
        rec = read_recording(path)
        if not rec.frames:
            raise ReplayError(f"{path}: recording holds no frames")
        meta = dict(rec.start.meta) if rec.start else {}
        meta.setdefault("fps", 30.0)
        return meta, rec.frames
    if name.endswith(".json"):
        from stgcn.convert.kinetics import load_kinetics_clip

        try:
            clip, info = load_kinetics_clip(path, with_meta=True)
        except Exception as exc:  # the loader raises its own error type naming the file
            raise ReplayError(str(exc).splitlines()[0]) from None
        frames = [Frame("replay", int(idx), 0.0, 340, 256, "openpose", tuple(Person(i, kp) for i, kp in enumerate(persons)),
                        joints=18) for idx, persons in zip(info["frame_index"], clip)]
        return {"fps": 30.0, "width": 340, "height": 256, "label": str(info.get("label"))}, frames
    if name.endswith(".npy"):
        try:
            data = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise ReplayError(f"{path}: not a readable npy file ({exc})") from None
        if data.ndim != 5:
            raise ReplayError(f"{path}: expected (N, C, T, V, M) data, got shape {data.shape}")
        if not 0 <= index < data.shape[0]:
            raise ReplayError(f"{path}: --index {index} outside 0..{data.shape[0] - 1}")
        sample = np.array(data[index], dtype=np.float32)  # (C, T, V, M)
        c, t, v, m = sample.shape
        unknown = ReplayError(f"{path}: {c} channels x {v} joints match no known layout")
        if c != 3:
            raise unknown
        try:
            layout = layout_for_joints(v)
        except ValueError:
            raise unknown from None
        dims = get_layout(layout).dims
        valid = np.flatnonzero(np.abs(sample).reshape(c, t, -1).sum(axis=(0, 2)) > 0)
        frames = []
        for k in range(int(valid[-1]) + 1 if len(valid) else 0):
            persons = []
            for p in range(m):
                kp = sample[:, k, :, p].T.copy()
                present = kp[:, 2] > 0 if dims == 2 else np.any(kp != 0, axis=1)
                if present.any():
                    if npy_offset:
                        kp[present, :2] += npy_offset
                    persons.append(Person(p, kp))
            frames.append(Frame("replay", k, 0.0, 640, 480, layout, tuple(persons), joints=v))
        return {"fps": 30.0, "width": 640, "height": 480, "index": index}, frames
    raise ReplayError(f"{path}: unknown file type (expected .skel, .json or .npy)")


def due_groups(frames: list[Frame], fps: float | None, start_seq: int = -1,
               max_frames: int = DEFAULT_BATCH, fast_through: int = -1) -> Iterator[list[Frame]]:
    """The frames after ``start_seq`` in groups of those due: at ``fps``, each frame when its
    time comes (several at once only after falling behind); without ``fps``, ``max_frames``
    at a time. Frames up to ``fast_through`` (sent before by an earlier run) are all due at once;
    the pace starts after them."""
    todo = [f for f in frames if f.seq > start_seq]
    fast = sum(1 for f in todo if f.seq <= fast_through)
    for i in range(0, fast, max_frames):
        yield todo[i:min(fast, i + max_frames)]
    t0 = time.monotonic()
    i = fast
    while i < len(todo):
        j = min(len(todo), i + max_frames)
        if fps:
            delay = t0 + (i - fast) / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            j = min(j, max(i + 1, fast + int((time.monotonic() - t0) * fps) + 1))
        yield todo[i:j]
        i = j


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.replay", description=__doc__.split("\n")[0])
    parser.add_argument("path", help=".skel recording, Kinetics JSON clip or st-gcn *_data.npy")
    add_settings_args(parser)
    add_debug_flag(parser)
    add_sender_args(parser)
    parser.add_argument("--stream", help="stream id (default: from the file name)")
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--fps", type=float, help="replay at this rate (default: the recorded rate)")
    rate.add_argument("--fast", action="store_true", help="as fast as the pipeline takes them")
    parser.add_argument("--index", type=int, default=0, help="sample of an npy dataset")
    parser.add_argument("--npy-offset", type=float, default=0.0,
                        help="added to x, y of npy data (0.5 undoes the Kinetics minus-0.5 preprocessing)")
    parser.add_argument("--delivered-through", type=int, metavar="SEQ",
                        help="the stream's results up to frame SEQ were delivered: a restarted inference worker "
                             "rebuilds those windows without classifying them again")
    parser.add_argument("--state-file", help="resume file: a restarted replay sends its frames again, at full "
                        "speed up to the last one sent, then at its pace")
    parser.add_argument("--label", help="the action the take shows, in the stream's metadata (replaces a recorded one)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                        help=f"most frames per message when fast or behind (1..{MAX_BATCH_FRAMES}; 1: one per message; "
                        f"default {DEFAULT_BATCH})")
    add_curve_args(parser, server=False)
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= MAX_BATCH_FRAMES:
        parser.error(f"--batch must be in 1..{MAX_BATCH_FRAMES}")
    setup_logging(args.debug, args.quiet)
    stop = stop_on_signals()

    def replay() -> int:
        settings = load_settings(args.config)
        meta, frames = load_frames(args.path, args.index, args.npy_offset)
        curve = client_curve(args, settings)
        stream = args.stream or sanitize_stream_id(Path(args.path).name.split(".")[0])
        layout = frames[0].layout
        meta.update(source=str(args.path), layout=layout, joints=frames[0].joints or get_layout(layout).num_node,
                    width=frames[0].width, height=frames[0].height)
        if args.label:
            meta["label"] = args.label
        if args.delivered_through is not None:
            meta["delivered_through"] = args.delivered_through
        fps = None if args.fast else (args.fps or float(meta.get("fps") or 30.0))
        sent_before = read_resume_seq(args.state_file)
        emitter = StreamEmitter(split_list(args.connect) or settings.endpoints.frames, stream, meta, live=False,
                                stop=stop, state_file=args.state_file, **curve)
        log.info("replaying %s as stream %s to %s: %d frames at %s", args.path, stream, emitter.endpoint,
                 len(frames), f"{fps:g} fps" if fps else "full speed")
        emitter.start()
        reason = "eof"
        if sent_before is not None:
            log.info("stream %s: restarted; frames up to %d go again at full speed (the inference worker "
                     "drops those it has, a restarted one rebuilds the stream's windows)", stream, sent_before)
        for group in due_groups(frames, fps, -1, args.batch, -1 if sent_before is None else sent_before):
            now = time.time()
            group = [replace(frame, stream=stream, t_capture=now) for frame in group]
            if not all(emitter.frame(msg) for msg in (group if len(group) == 1 else batch_frames(group, args.batch))):
                reason = "stopped"
                break
        emitter.end(reason)
        return 0

    return run_cli("replay", replay, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

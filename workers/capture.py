"""Capture worker: camera or video -> MediaPipe poses -> OpenPose-18 skeletons -> ZeroMQ.

    python -m workers.capture --camera 0 | --video PATH [--connect EP] [--stream ID]
                              [--num-poses N] [--pose-model FILE.task]
                              [--results EP --save-video OUT.mp4] [--show]

Keypoints go out as image coordinates divided by the image size with a confidence, the
Kinetics-skeleton convention; the inference worker applies the model's own normalisation.
A camera is a live source (frames are dropped, oldest first, when the pipeline is behind);
a video file is lossless (the worker waits for the pipeline).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.cli import add_debug_flag, run_cli, setup_logging
from pipeline.endpoints import split_list
from pipeline.messages import frame_from_arrays, sanitize_stream_id
from pipeline.settings import Settings, load_settings
from workers.config import add_curve_args, add_sender_args, add_settings_args, client_curve, stop_on_signals
from workers.emitter import StreamEmitter, read_resume_seq
from workers.video_source import SourceError, open_source

log = logging.getLogger("workers.capture")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.capture", description=__doc__.split("\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", type=int, help="camera index")
    src.add_argument("--video", help="video file")
    add_settings_args(parser)
    add_debug_flag(parser)
    add_sender_args(parser)
    parser.add_argument("--stream", help="stream id (default: camera<N> or the video's name)")
    parser.add_argument("--num-poses", type=int, help="people to look for per frame (default from config)")
    parser.add_argument("--pose-model", help="MediaPipe pose landmarker .task file (default: the bundled one)")
    parser.add_argument("--results", action="append",
                        help="results endpoint(s), for --save-video / --show overlays (repeatable)")
    parser.add_argument("--save-video", help="write the annotated video here (.mp4 or .avi)")
    parser.add_argument("--show", action="store_true", help="show the annotated stream in a window")
    parser.add_argument("--state-file", help="resume file: a restarted worker continues after its last frame")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--realtime", action="store_true",
                        help="play --video at its frame rate as a live source (late frames passed over, as a camera)")
    parser.add_argument("--label", help="the action this take shows: sent in the stream's metadata, kept by recordings")
    add_curve_args(parser, server=False)
    args = parser.parse_args(argv)
    setup_logging(args.debug, args.quiet)
    stop = stop_on_signals()

    opened: dict = {}

    def open_all() -> int:
        """Settings, source and pose estimator: what can fail on bad input, one line each."""
        opened["settings"] = settings = load_settings(args.config, capture__num_poses=args.num_poses,
                                                      capture__pose_model=args.pose_model or None)
        opened["curve"] = client_curve(args, settings)
        opened["source"] = source = open_source(camera=args.camera, video=args.video,  # before MediaPipe
                                                realtime=args.realtime)
        try:
            from workers.pose import PoseEstimator

            opened["estimator"] = PoseEstimator(settings.capture.pose_model, num_poses=settings.capture.num_poses)
        except BaseException:
            source.close()
            raise
        opened["stream"] = stream = args.stream or (f"camera{args.camera}" if args.camera is not None
                                                    else sanitize_stream_id(Path(args.video).name.split(".")[0]))
        opened["overlay"] = None
        if args.save_video or args.show:
            from workers.overlay import Overlay

            try:
                opened["overlay"] = Overlay(split_list(args.results) or settings.endpoints.results, stream,
                                            source.width, source.height, source.fps, args.save_video, args.show,
                                            **opened["curve"])
            except BaseException:
                opened["estimator"].close()
                source.close()
                raise
        return 0

    code = run_cli("capture", open_all, debug=args.debug, errors=(SourceError, ValueError, OSError))
    if code:
        return code
    return capture(args, stop, **opened)


def capture(args: argparse.Namespace, stop: threading.Event, settings: Settings, curve: dict, source: Any,
            estimator: Any, stream: str, overlay: Any) -> int:
    """Estimate, track and send every frame of ``source`` until it ends or ``stop`` is set."""
    from workers.pose import PersonTracker

    tracker = PersonTracker()
    resume = read_resume_seq(args.state_file)
    if resume is not None and not source.live:
        source.seek(resume + 1)
        log.info("stream %s: resuming after frame %d", stream, resume)
    meta = {"fps": source.fps, "source": source.name, "layout": "openpose", "width": source.width,
            "height": source.height, "joints": 18}
    if args.label:
        meta["label"] = args.label
    emitter = StreamEmitter(split_list(args.connect) or settings.endpoints.frames, stream, meta,
                            live=source.live, stop=stop, state_file=args.state_file,
                            live_queue=settings.capture.live_queue, **curve)
    emitter.start()
    reason, n = "eof", 0
    seq_base = (resume + 1) if (resume is not None and source.live) else 0
    try:
        for index, image, ts_ms in source:
            if stop.is_set():
                reason = "stopped"
                break
            t_capture = time.time()
            t0 = time.perf_counter()
            people = estimator.estimate(image, ts_ms)
            tracks = tracker.update(people)
            pose_ms = (time.perf_counter() - t0) * 1000
            frame = frame_from_arrays(stream, seq_base + index, t_capture, source.width, source.height,
                                      "openpose", people, tracks, pose_ms, joints=18)
            if overlay is not None:
                overlay.add(frame, image)
            if not emitter.frame(frame):
                reason = "stopped"
                break
            n += 1
            if args.max_frames and n >= args.max_frames:
                break
        if source.decode_failures:
            reason = f"error: {source.decode_failures} frame(s) could not be decoded"
    finally:
        emitter.end(reason)
        estimator.close()
        source.close()
        if overlay is not None:
            overlay.close()
    late = f" ({source.late_frames} file frames passed over: pose estimation fell behind)" if source.realtime else ""
    log.info("stream %s: %d frames captured%s", stream, n, late)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MediaPipe pose estimation that yields OpenPose-18 skeletons, one per person.

MediaPipe BlazePose gives 33 landmarks per person; ST-GCN's Kinetics checkpoints expect the
18-joint OpenPose layout with absent joints written as ``x = y = conf = 0``.
:func:`mediapipe_to_openpose` does that conversion and :class:`PoseEstimator` runs the
MediaPipe Tasks ``PoseLandmarker`` on video frames.

Several people need more than one MediaPipe call: in VIDEO mode a landmarker with
``num_poses > 1`` keeps tracking the first person and suppresses detections overlapping it,
and IMAGE mode misses small or overlapping people in most frames. The default ``"auto"`` mode
therefore keeps one VIDEO-mode landmarker per person ("slot"). Each slot tracks its person on
the full frame (landmark model only, smoothed). Free slots look for new people on a copy of
the frame with the already tracked people greyed out, so the detector cannot pick them again;
a failed search waits ``rediscover_every`` frames before the next one.

The bundled model ``workers/models/pose_landmarker_full.task`` holds the BlazePose "full"
detector and landmark TFLite models of the mediapipe 0.10.21 wheel (Apache-2.0).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from workers.person_tracker import PersonTracker

__all__ = [
    "DEFAULT_POSE_MODEL",
    "MEDIAPIPE_TO_OPENPOSE",
    "PersonTracker",
    "PoseEstimator",
    "mediapipe_to_openpose",
]

logger = logging.getLogger(__name__)

DEFAULT_POSE_MODEL = Path(__file__).resolve().parent / "models" / "pose_landmarker_full.task"
DEFAULT_MIN_CONFIDENCE = 0.3

# OpenPose-18 index -> MediaPipe landmark indices whose mean gives the joint (neck: 11 and 12).
MEDIAPIPE_TO_OPENPOSE: tuple[tuple[int, ...], ...] = (
    (0,),  # 0 nose
    (11, 12),  # 1 neck = midpoint of the shoulders
    (12,),  # 2 right shoulder
    (14,),  # 3 right elbow
    (16,),  # 4 right wrist
    (11,),  # 5 left shoulder
    (13,),  # 6 left elbow
    (15,),  # 7 left wrist
    (24,),  # 8 right hip
    (26,),  # 9 right knee
    (28,),  # 10 right ankle
    (23,),  # 11 left hip
    (25,),  # 12 left knee
    (27,),  # 13 left ankle
    (5,),  # 14 right eye
    (2,),  # 15 left eye
    (8,),  # 16 right ear
    (7,),  # 17 left ear
)
_SRC_A = np.array([src[0] for src in MEDIAPIPE_TO_OPENPOSE])
_SRC_B = np.array([src[-1] for src in MEDIAPIPE_TO_OPENPOSE])

NUM_MEDIAPIPE_LANDMARKS = 33
NUM_OPENPOSE_JOINTS = len(MEDIAPIPE_TO_OPENPOSE)

Mode = Literal["auto", "video", "image"]
_MODES = ("auto", "video", "image")
_MASK_GREY = 127
_MASK_MARGIN = 0.1
_DUPLICATE_DISTANCE = 0.1
_TORSO = np.array([11, 12, 23, 24])


def mediapipe_to_openpose(
    landmarks: np.ndarray, min_confidence: float = DEFAULT_MIN_CONFIDENCE
) -> np.ndarray:
    """Convert one person's MediaPipe landmarks to an OpenPose-18 ``(18, 3)`` float32 array.

    ``landmarks`` is ``(33, 5)`` (x, y, z, visibility, presence) or ``(33, 4)`` (x, y,
    visibility, presence) with x, y normalised by the image width and height. A joint's
    confidence is ``min(visibility, presence)``; the neck is the shoulders' midpoint with the
    lower shoulder confidence. Joints below ``min_confidence`` or outside the image are set to
    ``x = y = conf = 0``, as OpenPose and the Kinetics skeleton data mark absent joints.
    """
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.ndim != 2 or lm.shape[0] != NUM_MEDIAPIPE_LANDMARKS or lm.shape[1] not in (4, 5):
        raise ValueError(f"expected landmarks of shape (33, 5) or (33, 4), got {lm.shape}")
    xy = (lm[_SRC_A, :2] + lm[_SRC_B, :2]) / 2.0
    conf_all = np.minimum(lm[:, -2], lm[:, -1])
    conf = np.minimum(conf_all[_SRC_A], conf_all[_SRC_B])
    inside = np.all((xy >= 0.0) & (xy <= 1.0), axis=1)
    present = (conf >= min_confidence) & inside
    out = np.zeros((NUM_OPENPOSE_JOINTS, 3), dtype=np.float32)
    out[present, :2] = xy[present]
    out[present, 2] = conf[present]
    return out


def _result_landmarks(result: vision.PoseLandmarkerResult) -> list[np.ndarray]:
    """MediaPipe result -> one ``(33, 5)`` array (x, y, z, visibility, presence) per person."""
    people = []
    for pose in result.pose_landmarks:
        people.append(
            np.array(
                [
                    (
                        lm.x,
                        lm.y,
                        lm.z,
                        1.0 if lm.visibility is None else lm.visibility,
                        1.0 if lm.presence is None else lm.presence,
                    )
                    for lm in pose
                ],
                dtype=np.float32,
            )
        )
    return people


def _pixel_xy(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    return landmarks[:, :2] * np.array([width, height], dtype=np.float32)


def _is_duplicate(a: np.ndarray, b: np.ndarray, width: int, height: int) -> bool:
    """True when two landmark sets describe the same person (mean distance < 10 % of size)."""
    pa, pb = _pixel_xy(a, width, height), _pixel_xy(b, width, height)
    size = max(float(np.ptp(pa[:, 0])), float(np.ptp(pa[:, 1])), 1e-6)
    return float(np.linalg.norm(pa - pb, axis=1).mean()) / size < _DUPLICATE_DISTANCE


def _mask_box(landmarks: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel box around a person's landmarks, widened by ``_MASK_MARGIN`` of its larger side."""
    p = _pixel_xy(landmarks, width, height)
    (x0, y0), (x1, y1) = p.min(axis=0), p.max(axis=0)
    dx = dy = max(x1 - x0, y1 - y0) * _MASK_MARGIN
    return (
        int(max(0, x0 - dx)),
        int(max(0, y0 - dy)),
        int(min(width, x1 + dx + 1)),
        int(min(height, y1 + dy + 1)),
    )


class _Slot:
    """A VIDEO-mode landmarker with its own strictly increasing clock."""

    def __init__(self, landmarker: vision.PoseLandmarker) -> None:
        self.landmarker = landmarker
        self.last_ts = -1
        self.active = False

    def detect(self, image: mp.Image, timestamp_ms: int) -> list[np.ndarray]:
        ts = max(int(timestamp_ms), self.last_ts + 1)
        self.last_ts = ts
        return _result_landmarks(self.landmarker.detect_for_video(image, ts))


class PoseEstimator:
    """Per-frame multi-person pose estimation returning OpenPose-18 ``(18, 3)`` arrays.

    ``mode``: ``"auto"`` (one tracking VIDEO landmarker per person plus masked re-detection,
    see the module docstring; the only mode that keeps several people reliably),
    ``"video"`` (one MediaPipe VIDEO landmarker with ``num_poses``; fast, finds one person
    in practice) or ``"image"`` (IMAGE mode on every frame, no tracking or smoothing).
    ``model_path`` None means the bundled model. ``min_confidence`` is the joint threshold
    of :func:`mediapipe_to_openpose`. ``min_person_size`` (auto mode) rejects a newly found
    person whose confident landmarks span less than this fraction of the frame height: small
    false detections on clutter (barbell plates, sandals) that would otherwise be tracked.
    New finds that surround or sit on a greyed-out person are rejected too (ghosts of the
    mask). Not thread-safe.
    """

    def __init__(
        self,
        model_path: str | Path | None = DEFAULT_POSE_MODEL,
        num_poses: int = 5,
        mode: Mode = "auto",
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        min_detection_confidence: float = 0.3,
        min_presence_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        rediscover_every: int = 5,
        min_person_size: float = 0.15,
    ) -> None:
        if num_poses < 1:
            raise ValueError(f"num_poses must be >= 1, got {num_poses}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self.model_path = Path(DEFAULT_POSE_MODEL if model_path is None else model_path)
        self.num_poses = num_poses
        self.mode = mode
        self.min_confidence = min_confidence
        self.rediscover_every = max(1, rediscover_every)
        self.min_person_size = min_person_size
        self._thresholds = (
            min_detection_confidence,
            min_presence_confidence,
            min_tracking_confidence,
        )
        self._check_model_file()
        if mode == "auto":
            self._slots = [_Slot(self._create("VIDEO", 1)) for _ in range(num_poses)]
        else:
            running = "VIDEO" if mode == "video" else "IMAGE"
            self._slots = [_Slot(self._create(running, num_poses))]
        self._last_ts: int | None = None
        self._clamped_timestamps = 0
        self._wait = 0
        self._closed = False

    def _check_model_file(self) -> None:
        if not self.model_path.is_file():
            raise FileNotFoundError(f"pose model file not found: {self.model_path}")

    def _create(self, running_mode: str, num_poses: int) -> vision.PoseLandmarker:
        detection, presence, tracking = self._thresholds
        options = vision.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=getattr(vision.RunningMode, running_mode),
            num_poses=num_poses,
            min_pose_detection_confidence=detection,
            min_pose_presence_confidence=presence,
            min_tracking_confidence=tracking,
        )
        try:
            return vision.PoseLandmarker.create_from_options(options)
        except (RuntimeError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(
                f"{self.model_path} is not a usable MediaPipe pose landmarker .task file ({reason})"
            ) from None

    @property
    def clamped_timestamps(self) -> int:
        """How many calls came with a timestamp not above the previous one (raised by 1 ms)."""
        return self._clamped_timestamps

    def estimate(self, frame_bgr: np.ndarray, timestamp_ms: int) -> list[np.ndarray]:
        """OpenPose-18 ``(18, 3)`` float32 skeletons (x, y normalised, conf) of the people found."""
        return [
            mediapipe_to_openpose(lm, self.min_confidence)
            for lm in self.estimate_landmarks(frame_bgr, timestamp_ms)
        ]

    def estimate_landmarks(self, frame_bgr: np.ndarray, timestamp_ms: int) -> list[np.ndarray]:
        """Raw MediaPipe ``(33, 5)`` landmarks (x, y, z, visibility, presence), one per person."""
        if self._closed:
            raise RuntimeError("PoseEstimator is closed")
        frame = np.asarray(frame_bgr)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"expected a BGR uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}"
            )
        ts = self._next_timestamp(int(timestamp_ms))
        rgb = np.ascontiguousarray(frame[:, :, ::-1])
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        if self.mode == "image":
            return _result_landmarks(self._slots[0].landmarker.detect(image))
        if self.mode == "video":
            return self._slots[0].detect(image, ts)
        return self._track(rgb, image, ts)

    def _next_timestamp(self, ts: int) -> int:
        if self._last_ts is not None and ts <= self._last_ts:
            if self._clamped_timestamps == 0:
                logger.warning(
                    "non-increasing timestamp %d ms after %d ms; using %d ms",
                    ts,
                    self._last_ts,
                    self._last_ts + 1,
                )
            self._clamped_timestamps += 1
            ts = self._last_ts + 1
        self._last_ts = ts
        return ts

    def _track(self, rgb: np.ndarray, image: mp.Image, ts: int) -> list[np.ndarray]:
        """Auto mode: advance every tracking slot, then let free slots search for new people."""
        height, width = rgb.shape[:2]
        people: list[np.ndarray] = []
        for slot in self._slots:
            if not slot.active:
                continue
            found = slot.detect(image, ts)
            if found and not any(_is_duplicate(found[0], p, width, height) for p in people):
                people.append(found[0])
                continue
            if found:
                self._reset(slot, rgb, ts)
            slot.active = False
        free = [slot for slot in self._slots if not slot.active]
        if free and self._wait <= 0:
            self._discover(free, rgb, ts, people)
        self._wait -= 1
        return people

    def _discover(
        self, free: list[_Slot], rgb: np.ndarray, ts: int, people: list[np.ndarray]
    ) -> None:
        """Run free slots on the frame with known people greyed out; stop at the first miss."""
        height, width = rgb.shape[:2]
        masked = rgb.copy()
        boxes = [_mask_box(person, width, height) for person in people]
        for x0, y0, x1, y1 in boxes:
            masked[y0:y1, x0:x1] = _MASK_GREY
        for slot in free:
            found = slot.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=masked.copy()), ts)
            if not found or not self._plausible_new(found[0], boxes, people, width, height):
                if found:
                    self._reset(slot, rgb, ts)
                self._wait = self.rediscover_every
                return
            slot.active = True
            people.append(found[0])
            boxes.append(_mask_box(found[0], width, height))
            x0, y0, x1, y1 = boxes[-1]
            masked[y0:y1, x0:x1] = _MASK_GREY

    def _plausible_new(
        self,
        person: np.ndarray,
        boxes: list[tuple[int, int, int, int]],
        people: list[np.ndarray],
        width: int,
        height: int,
    ) -> bool:
        """Reject small finds, duplicates and ghosts of the mask.

        A ghost is a skeleton the detector builds around a greyed-out box: its torso centre
        lies in the box or its confident landmarks surround the box's centre.
        """
        visible = np.minimum(person[:, 3], person[:, 4]) >= self.min_confidence
        if int(visible.sum()) < 2:
            return False
        visible_xy = _pixel_xy(person[visible], width, height)
        extent = float(np.ptp(visible_xy, axis=0).max()) / height
        if extent < self.min_person_size:
            return False
        if any(_is_duplicate(person, p, width, height) for p in people):
            return False
        cx, cy = _pixel_xy(person[_TORSO], width, height).mean(axis=0)
        if any(x0 <= cx < x1 and y0 <= cy < y1 for x0, y0, x1, y1 in boxes):
            return False
        (px0, py0), (px1, py1) = visible_xy.min(axis=0), visible_xy.max(axis=0)
        return not any(
            px0 <= (x0 + x1) / 2 <= px1 and py0 <= (y0 + y1) / 2 <= py1
            for x0, y0, x1, y1 in boxes
        )

    def _reset(self, slot: _Slot, rgb: np.ndarray, ts: int) -> None:
        """Make a slot drop its track: a blank frame ends MediaPipe's tracking; recreate if not."""
        blank = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.zeros_like(rgb))
        if slot.detect(blank, ts + 1):
            slot.landmarker.close()
            slot.landmarker = self._create("VIDEO", 1)
            slot.last_ts = -1
        slot.active = False

    def close(self) -> None:
        """Release the MediaPipe landmarkers; further ``estimate`` calls raise RuntimeError."""
        if self._closed:
            return
        self._closed = True
        for slot in self._slots:
            slot.landmarker.close()

    def __enter__(self) -> PoseEstimator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""Stable person slots: which tracked person goes into which M column of the ST-GCN input.

ST-GCN reads each person slot as one body over time, so a person must keep the slot it
has. Like the Kinetics-skeleton data, only the M most confident people (sum of joint
confidences) are kept when more are visible; a newcomer only displaces a slotted person
when it is clearly more confident (by ``margin``), so two similar people do not flap
between slots. Track ids come from the capture worker.

Most frames show the same people as the frame before, all of them slotted, and then the
assignment cannot change: such frames take a fast path that only copies keypoints, and
:meth:`SlotAssigner.assign_many` copies whole runs of them (a frame batch) at once.
"""

from __future__ import annotations

import logging
from typing import Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)

_MIN, _MAX, _SUM = np.minimum.reduce, np.maximum.reduce, np.add.reduce


class PersonLike(Protocol):
    """Anything with a track id and ``(V, 3)`` keypoints, such as messages.Person."""

    track: int
    keypoints: np.ndarray


class SlotAssigner:
    """Maps the persons of successive frames of one stream to ``num_slots`` fixed slots.

    A slot whose person is not seen is kept for up to ``max_missing`` frames (zeros in the
    output meanwhile), unless a visible newcomer needs it: an absent person scores 0.
    """

    def __init__(self, num_slots: int = 2, max_missing: int = 15, margin: float = 0.10,
                 joints: int | None = None) -> None:
        if num_slots < 1:
            raise ValueError("num_slots must be >= 1")
        self.num_slots = num_slots
        self.max_missing = max_missing
        self.margin = margin
        self.joints = joints
        self.slots: list[int | None] = [None] * num_slots
        self._missing = [0] * num_slots
        self._stable: tuple[int, ...] | None = None  # the track ids (in frame order) of a fixed point
        self._stable_slots: list[int | None] = []
        self._stable_cols: list[tuple[int, int]] = []  # (slot, index of its person in the frame)

    def reset(self) -> None:
        """Release every slot (a new segment of the stream)."""
        self.slots = [None] * self.num_slots
        self._missing = [0] * self.num_slots
        self._stable = None

    def assign(self, persons: Sequence[PersonLike], joints: int | None = None) -> np.ndarray:
        """Place this frame's persons in slots; returns the ``(3, V, M)`` float32 frame.

        Channels are x, y, confidence; empty slots are zeros. ``joints`` is needed only
        while no person has been seen yet. The result may be a transposed view of a new
        ``(M, V, 3)`` array.
        """
        tracks = [int(p.track) for p in persons]
        kps = []
        for person in persons:
            kp = np.asarray(person.keypoints, dtype=np.float32)
            if kp.ndim != 2 or kp.shape[1] != 3:
                raise ValueError(f"keypoints must have shape (V, 3), got {kp.shape}")
            kps.append(kp)
        if joints is not None and joints != self.joints:
            self._stable = None
            self.joints = joints
        if self.joints is None and kps:
            self.joints = kps[0].shape[0]
        if self.joints is None:
            raise ValueError("joint count unknown: pass joints= before the first person is seen")
        out = np.zeros((self.num_slots, self.joints, 3), np.float32)
        self._assign_one(tracks, kps, out)
        return out.transpose(2, 1, 0)

    def assign_many(self, counts: np.ndarray, tracks: np.ndarray, keypoints: np.ndarray,
                    joints: int | None = None) -> np.ndarray:
        """Assign N consecutive frames given as columns (as in a ``FrameBatch``); returns the
        contiguous ``(3, N, V, M)`` float32 clip, exactly what N calls of :meth:`assign` would give.

        ``counts`` (N) is each frame's number of persons, ``tracks`` (K) and ``keypoints``
        ``(K, V, 3)`` the persons of all frames back to back. Runs of frames with the same
        track ids as their predecessor are copied with one slice per slot once the
        assignment is at its fixed point.
        """
        counts = np.asarray(counts, dtype=np.int64)
        tracks = np.asarray(tracks, dtype=np.int64)
        kp = np.asarray(keypoints, dtype=np.float32)
        n = len(counts)
        if counts.ndim != 1:
            raise ValueError("counts must be a 1-D array of person counts")
        fewest, most = (int(_MIN(counts)), int(_MAX(counts))) if n else (0, 0)
        if fewest < 0:
            raise ValueError("person counts must be >= 0")
        k = most * n if fewest == most else int(_SUM(counts))
        if kp.ndim != 3 or kp.shape[0] != k or kp.shape[2] != 3 or tracks.shape != (k,):
            raise ValueError(f"{k} persons need tracks of shape ({k},) and keypoints of shape ({k}, V, 3), "
                             f"got {tracks.shape} and {kp.shape}")
        if joints is not None and joints != self.joints:
            self._stable = None
            self.joints = joints
        if self.joints is None and k:
            self.joints = kp.shape[1]
        if self.joints is None:
            raise ValueError("joint count unknown: pass joints= before the first person is seen")
        v = self.joints
        if k and kp.shape[1] != v:
            raise ValueError(f"all persons must have {v} joints")
        clip = np.zeros((3, n, v, self.num_slots), np.float32)  # the ring buffer's layout: one plain copy there
        out = clip.transpose(1, 3, 2, 0)  # (N, M, V, 3) view: frame i slot s takes a person's (V, 3) keypoints
        if n == 0:
            return clip
        if fewest == most:  # runs of frames whose track ids equal the previous frame's
            p = most
            rows = tracks.reshape(n, p)
            starts = [0]
            if p and n > 1:
                changed = rows[1:] != rows[:-1]
                if changed.any():
                    starts += (np.flatnonzero(changed.any(axis=1)) + 1).tolist()
            for a, b in zip(starts, starts[1:] + [n]):
                row = rows[a].tolist()
                self._assign_one(row, [kp[j] for j in range(a * p, (a + 1) * p)], out[a])
                if b - a > 1 and self._stable == tuple(row) and self.slots == self._stable_slots:
                    for slot, col in self._stable_cols:
                        clip[:, a + 1:b, :, slot] = kp[(a + 1) * p + col:b * p:p].transpose(2, 0, 1)
                else:
                    for i in range(a + 1, b):
                        self._assign_one(rows[i].tolist(), [kp[j] for j in range(i * p, (i + 1) * p)], out[i])
        else:
            offsets = [0] + np.cumsum(counts).tolist()
            track_list = tracks.tolist()
            for i in range(n):
                lo, hi = offsets[i], offsets[i + 1]
                self._assign_one(track_list[lo:hi], [kp[j] for j in range(lo, hi)], out[i])
        return clip

    def _assign_one(self, tracks: list[int], kps: list[np.ndarray], out: np.ndarray) -> None:
        """Assign one frame's persons (validated ``(V', 3)`` float32 arrays), writing the
        slotted ones into ``out`` ``(M, V, 3)`` (zeros on entry)."""
        v = out.shape[1]
        if self._stable is not None and tuple(tracks) == self._stable and self.slots == self._stable_slots:
            for slot, col in self._stable_cols:
                kp = kps[col]
                if kp.shape[0] != v:
                    raise ValueError(f"all persons must have {v} joints")
                out[slot] = kp
            return
        best: dict[int, tuple[float, np.ndarray]] = {}
        for track, kp in zip(tracks, kps):
            score = float(kp[:, 2].sum())
            if track not in best or score > best[track][0]:
                best[track] = (score, kp)
        if any(kp.shape[0] != v for _, kp in best.values()):
            raise ValueError(f"all persons must have {v} joints")

        slot_score = [0.0] * self.num_slots
        for i, owner in enumerate(self.slots):
            if owner is not None and owner in best:
                self._missing[i] = 0
                slot_score[i] = best[owner][0]
            elif owner is not None:
                self._missing[i] += 1
                if self._missing[i] > self.max_missing:
                    log.debug("track %s released slot %d after %d missing frames", owner, i, self._missing[i])
                    self.slots[i] = None

        slotted = set(self.slots)
        newcomers = sorted((t for t in best if t not in slotted), key=lambda t: -best[t][0])
        placed: set[int] = set()
        for track in newcomers:
            score = best[track][0]
            free = [i for i, t in enumerate(self.slots) if t is None]
            if free:
                target = free[0]
            else:
                candidates = [i for i in range(self.num_slots) if i not in placed]
                if not candidates:
                    break
                target = min(candidates, key=lambda i: slot_score[i])
                if score <= slot_score[target] * (1.0 + self.margin):
                    break
                log.debug("track %d (%.2f) displaces track %s (%.2f) in slot %d",
                          track, score, self.slots[target], slot_score[target], target)
            self.slots[target] = track
            self._missing[target] = 0
            slot_score[target] = score
            placed.add(target)

        for i, owner in enumerate(self.slots):
            if owner is not None and owner in best:
                out[i] = best[owner][1]
        self._stable = None
        if len(best) == len(tracks) and all(o is None or o in best for o in self.slots) and \
                all(t in self.slots for t in tracks):
            # every person is slotted and every slot's person is here: the next frame with the
            # same track ids changes nothing (no newcomer, nobody missing)
            self._stable = tuple(tracks)
            self._stable_slots = list(self.slots)
            self._stable_cols = [(i, tracks.index(o)) for i, o in enumerate(self.slots) if o is not None]

"""Stable person slots: which tracked person goes into which M column of the ST-GCN input.

ST-GCN reads each person slot as one body over time, so a person must keep the slot it
has. Like the Kinetics-skeleton data, only the M most confident people (sum of joint
confidences) are kept when more are visible; a newcomer only displaces a slotted person
when it is clearly more confident (by ``margin``), so two similar people do not flap
between slots. Track ids come from the capture worker.
"""

from __future__ import annotations

import logging
from typing import Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)


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

    def reset(self) -> None:
        """Release every slot (a new segment of the stream)."""
        self.slots = [None] * self.num_slots
        self._missing = [0] * self.num_slots

    def assign(self, persons: Sequence[PersonLike], joints: int | None = None) -> np.ndarray:
        """Place this frame's persons in slots; returns the ``(3, V, M)`` float32 frame.

        Channels are x, y, confidence; empty slots are zeros. ``joints`` is needed only
        while no person has been seen yet.
        """
        best: dict[int, tuple[float, np.ndarray]] = {}
        for person in persons:
            kp = np.asarray(person.keypoints, dtype=np.float32)
            if kp.ndim != 2 or kp.shape[1] != 3:
                raise ValueError(f"keypoints must have shape (V, 3), got {kp.shape}")
            score = float(kp[:, 2].sum())
            track = int(person.track)
            if track not in best or score > best[track][0]:
                best[track] = (score, kp)
        v = self._joints(best, joints)
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

        out = np.zeros((3, v, self.num_slots), np.float32)
        for i, owner in enumerate(self.slots):
            if owner is not None and owner in best:
                out[:, :, i] = best[owner][1].T
        return out

    def _joints(self, best: dict[int, tuple[float, np.ndarray]], joints: int | None) -> int:
        if joints is not None:
            self.joints = joints
        elif best and self.joints is None:
            self.joints = next(iter(best.values()))[1].shape[0]
        if self.joints is None:
            raise ValueError("joint count unknown: pass joints= before the first person is seen")
        return self.joints

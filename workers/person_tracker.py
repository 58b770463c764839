"""Stable person ids across frames for OpenPose-18 skeletons.

The classifier keeps one skeleton sequence per person, so each person must keep the same id
while the estimator returns people in varying order. :class:`PersonTracker` matches each new
skeleton to the tracks of the previous frames by Hungarian assignment on a pose distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

_UNMATCHABLE = 1e6


@dataclass
class _Track:
    track_id: int
    pose: np.ndarray
    missed: int = 0


def pose_distance(track_pose: np.ndarray, pose: np.ndarray, min_common: int = 3) -> float:
    """Mean distance of the joints present in both ``(18, 3)`` poses, over the track's size.

    The size is the larger side of the box around the track's present joints. Returns ``inf``
    when fewer than ``min_common`` joints are present in both.
    """
    common = (track_pose[:, 2] > 0) & (pose[:, 2] > 0)
    if int(common.sum()) < min_common:
        return float("inf")
    present = track_pose[track_pose[:, 2] > 0, :2]
    size = max(float(np.ptp(present[:, 0])), float(np.ptp(present[:, 1])), 1e-3)
    return float(np.linalg.norm(track_pose[common, :2] - pose[common, :2], axis=1).mean()) / size


class PersonTracker:
    """Assigns stable integer ids to the people of consecutive frames.

    A person is matched to a track when their :func:`pose_distance` is at most ``max_cost``, plus
    ``gap_growth`` for every frame the track went unseen: a person the estimator lost for a few
    frames has moved meanwhile (a skateboarder lost for 4-6 frames reappeared 0.69-0.73 body sizes
    away and used to get a new id each time). Unmatched people open new tracks with fresh ids
    (never reused) and a track not matched for more than ``max_missed`` consecutive frames is retired.
    """

    def __init__(self, max_cost: float = 0.6, max_missed: int = 15, gap_growth: float = 0.05) -> None:
        self.max_cost = max_cost
        self.max_missed = max_missed
        self.gap_growth = gap_growth
        self._tracks: list[_Track] = []
        self._next_id = 0

    @property
    def active_ids(self) -> list[int]:
        """Ids of the tracks currently kept (matched recently enough)."""
        return [t.track_id for t in self._tracks]

    def update(self, persons: list[np.ndarray]) -> list[int]:
        """Track ids for ``persons`` (list of ``(18, 3)`` arrays), in the same order."""
        ids = [-1] * len(persons)
        matched_tracks: set[int] = set()
        if self._tracks and persons:
            cost = np.array(
                [[pose_distance(t.pose, np.asarray(p)) for p in persons] for t in self._tracks]
            )
            cost = np.where(np.isfinite(cost), cost, _UNMATCHABLE)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if cost[r, c] <= self.max_cost + self.gap_growth * self._tracks[r].missed:
                    track = self._tracks[r]
                    track.pose = np.array(persons[c], dtype=np.float32)
                    track.missed = 0
                    ids[c] = track.track_id
                    matched_tracks.add(r)
        for r, track in enumerate(self._tracks):
            if r not in matched_tracks:
                track.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.max_missed]
        for c, person in enumerate(persons):
            if ids[c] < 0:
                track = _Track(self._next_id, np.array(person, dtype=np.float32))
                self._next_id += 1
                self._tracks.append(track)
                ids[c] = track.track_id
        return ids

    def reset(self) -> None:
        """Forget all tracks (ids keep counting up)."""
        self._tracks = []

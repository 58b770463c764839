"""Exact accounting of a pipeline run's JSON Lines: which windows each stream should have yielded,
and what came out instead (lost, duplicated, extra, out of order, gaps).

The expected windows of a stream come from the project's own rules: its frames go through
:class:`pipeline.streams.StreamState` (ring buffer, person slots and window clock of
:mod:`pipeline.windows`) exactly as in the inference worker, and each due window, plus the tail
window a stream's end classifies, is one ``(seq, person ids)`` pair; the ids are the track ids
present at the window's last frame, as :class:`workers.batches.BatchInFlight` classifies them.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.messages import Frame
from pipeline.streams import StreamState
from pipeline.windows import WindowRules

Window = tuple[int, tuple[int, ...]]


def expected_windows(frames: Sequence[Frame], rules: WindowRules, joints: int, persons: int) -> list[Window]:
    """The windows a stream of ``frames`` yields, in order, ending with its tail window."""
    state = StreamState(rules, joints, persons, live=False)
    out: list[Window] = []

    def take() -> None:
        job = state.job()
        present = np.flatnonzero(job.window[2, -1].max(axis=0) > 0)
        out.append((job.seq, tuple(sorted(int(job.tracks[m]) for m in present))))

    for frame in frames:
        state.add_frame(frame, 0.0)
        if state.due:
            take()
    if state.has_tail:
        take()
    return out


def read_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a JSON Lines file and how many lines did not parse (a cut last line counts)."""
    rows, bad = [], 0
    path = Path(path)
    if not path.exists():
        return rows, bad
    text = path.read_text()
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    if text and not text.endswith("\n"):
        bad += 1  # a last line without its newline was cut mid-write, even when it parses
    return rows, bad


def results_by_stream(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The result records of each stream, in file order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("type") == "result":
            out.setdefault(row["stream"], []).append(row)
    return out


def _got(rows: Sequence[dict[str, Any]]) -> list[Window]:
    return [(int(r["seq"]), tuple(sorted(int(p["id"]) for p in r["people"]))) for r in rows]


def _in_order(windows: Sequence[Window]) -> bool:
    """Seqs strictly increasing, and so each person's windows too."""
    seqs = [s for s, _ in windows]
    return all(a < b for a, b in zip(seqs, seqs[1:]))


def account_lossless(rows: Sequence[dict[str, Any]], expected: Sequence[Window]) -> dict[str, Any]:
    """A lossless stream: every expected window exactly once, in order, with the expected people."""
    got = _got(rows)
    counts, want = Counter(got), Counter(expected)
    seq_counts = Counter(s for s, _ in got)
    last = max((s for s, _ in got), default=-1)
    missing = want - counts
    return {"expected": len(expected), "classified": len(got),
            "lost": sum(missing.values()),
            "lost_before_last": sum(n for (s, _), n in missing.items() if s <= last),  # gaps, not a cut tail
            "duplicates": sum(n - 1 for n in seq_counts.values() if n > 1),
            "extra": sum((counts - want).values()),
            "in_order": _in_order(got),
            "persons": sum(len(ids) for _, ids in expected)}


def account_live(rows: Sequence[dict[str, Any]], expected_seqs: Sequence[int], fps: float) -> dict[str, Any]:
    """A live source: duplicates (must be 0), order, windows lost or moved by gaps, the longest gap
    between consecutive results in frames and seconds (result time)."""
    seqs = [int(r["seq"]) for r in rows]
    times = [float(r["t_result"]) for r in rows]
    seq_counts = Counter(seqs)
    want = set(expected_seqs)
    return {"expected": len(expected_seqs), "classified": len(seqs),
            "duplicates": sum(n - 1 for n in seq_counts.values() if n > 1),
            "in_order": all(a < b for a, b in zip(seqs, seqs[1:])),
            "missing": len(want - set(seqs)), "moved": len(set(seqs) - want),
            "max_gap_frames": int(max(np.diff(seqs), default=0)) if seqs else None,
            "max_gap_s": round(float(max(np.diff(times), default=0.0)), 3) if times else None,
            "first_seq": seqs[0] if seqs else None, "last_seq": seqs[-1] if seqs else None,
            "fps": fps}

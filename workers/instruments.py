"""The inference worker's counters and timing probes, summarised for its stats records.

Counters (frames, bad input, windows, latency percentiles per stage) are always kept; they
cost a few additions per frame. With ``diagnostics`` on (``inference.diagnostics``, as
``bench/e2e.py`` sets it) the worker also times every frame's arrival and frames read
together with their stream's previous one (bunched), every loop iteration by phase with its
thread's wait for a CPU (Linux schedstat), and the garbage collector's pauses; off, none of
that runs on the hot path.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.results import LATENCY_STAGES
from workers.heap import GcPauses
from workers.schedstat import ThreadWait


def _p50_p99(values: deque) -> dict[str, float]:
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": round(float(p50), 2), "p99": round(float(p99), 2)}


@dataclass
class LoopProbe:
    """Loop iterations by phase, the longest since the last stats record, and CPU waits."""

    iterations: deque = field(default_factory=lambda: deque(maxlen=2000))
    longest: dict[str, Any] = field(default_factory=lambda: {"ms": 0.0})
    cpu_wait: ThreadWait = field(default_factory=ThreadWait)
    _waited: float | None = None

    def begin(self) -> None:
        self._waited = self.cpu_wait.ms()

    def end(self, read: float, finish: float, start: float, stats: float, end: float, messages: int) -> None:
        """One iteration from its phase boundaries (perf_counter seconds)."""
        after = self.cpu_wait.ms()
        waited = None if self._waited is None or after is None else after - self._waited
        ms = (end - read) * 1000
        self.iterations.append(ms)
        if ms > self.longest["ms"]:
            self.longest = {"ms": round(ms, 2), "read_ms": round((finish - read) * 1000, 2), "messages": messages,
                            "finish_ms": round((start - finish) * 1000, 2),
                            "start_ms": round((stats - start) * 1000, 2), "stats_ms": round((end - stats) * 1000, 2),
                            "cpu_wait_ms": None if waited is None else round(waited, 2), "at": round(time.time(), 3)}

    def summary(self) -> dict[str, Any]:
        if not self.iterations:
            return {}
        total = self.cpu_wait.ms()
        return {**_p50_p99(self.iterations), "longest": self.longest,
                "cpu_wait_ms": None if total is None else round(total, 1)}


class Instruments:
    """What the worker measures about itself; :meth:`summary` is its stats record's body."""

    def __init__(self, diagnostics: bool = False) -> None:
        self.diagnostics = diagnostics
        self.frames_in = 0
        self.bad_frames = 0
        self.stale = 0
        self.delivered_before = 0  # windows not classified again: delivered before a restart
        self.windows = 0
        self.batches = 0
        self.latency = {s: deque(maxlen=2000) for s in LATENCY_STAGES}
        self.arrival: deque = deque(maxlen=2000)  # every frame's capture -> receipt, ms (diagnostics)
        self.bunched = 0  # frames read together with their stream's previous frame (diagnostics)
        self.loop = LoopProbe() if diagnostics else None
        self.gc: GcPauses | None = None

    def start(self, frozen: int) -> None:
        """At the start of the loop, after ``frozen`` start-up objects left the collector."""
        if self.diagnostics:
            self.gc = GcPauses(frozen)
            self.loop.cpu_wait.close()
            self.loop.cpu_wait = ThreadWait()  # of the thread that polls

    def arrived(self, t_recv: float, t_capture: float, pose_ms: float, bunched: bool) -> None:
        """A frame was read (diagnostics only)."""
        self.arrival.append((t_recv - t_capture) * 1000 - pose_ms)
        self.bunched += bunched

    def observe(self, latency_ms: dict[str, float]) -> None:
        for stage, value in latency_ms.items():
            self.latency[stage].append(value)

    def new_interval(self) -> None:
        """After a stats record: the next one reports its own interval's longest iteration."""
        if self.loop is not None:
            self.loop.longest = {"ms": 0.0}

    def summary(self, *, streams: int, bad_messages: int, skipped: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "streams": streams, "frames_in": self.frames_in, "bad_messages": bad_messages,
            "bad_frames": self.bad_frames, "stale_frames": self.stale, "skipped_windows": skipped,
            "delivered_before": self.delivered_before,
            "windows": self.windows, "batches": self.batches,
            "latency_ms": {s: _p50_p99(v) for s, v in self.latency.items() if v}}
        if self.diagnostics:
            out["arrival_ms"] = {**_p50_p99(self.arrival), "max": round(max(self.arrival), 2),
                                 "bunched": self.bunched} if self.arrival else {}
            out["loop_ms"] = self.loop.summary()
            if self.gc is not None:
                out["gc"] = self.gc.summary()
        return out

    def close(self) -> None:
        if self.gc is not None:
            self.gc.close()
        if self.loop is not None:
            self.loop.cpu_wait.close()


def describe(stats: dict[str, Any], final: bool = False) -> str:
    """One short log line of a stats record's counters."""
    total = stats["latency_ms"].get("total")
    return (f"{'final ' if final else ''}stats: {stats['streams']} streams, {stats['frames_in']} frames in, "
            f"{stats['windows']} windows, {stats['skipped_windows']} skipped, {stats['bad_messages']} bad messages, "
            f"{stats['bad_frames']} bad frames"
            + (f", {stats['delivered_before']} delivered before a restart" if stats.get("delivered_before") else "")
            + (f", frame-to-result p99 {total['p99']:.0f} ms" if total else ""))

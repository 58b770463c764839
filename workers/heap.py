"""Garbage-collector pauses of long-running workers: freeze the start-up heap, count what is left.

A full (generation 2) collection walks every container object in the process. With torch, its
compiler and the model loaded that is hundreds of thousands of objects, and a worker making
thousands of small results a second triggers such walks again and again: each one a stall
(77 ms with torch loaded on a 2-core CPU machine) that every stream waits for. ``freeze()`` moves everything alive after
start-up out of the collector's reach (it stays alive, it is just never walked again);
``GcPauses`` measures the collections that remain, for the worker's stats. It keeps the frozen
count it is given: ``gc.get_freeze_count()`` walks the whole frozen list, 60-120 ms for a worker's
heap on the GPU machine, a stall every stream would wait for at each stats line.
"""

from __future__ import annotations

import gc
import time
from typing import Any


def freeze() -> int:
    """Collect once, then exempt every surviving object from later collections; how many were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GcPauses:
    """Counts collections per generation and their pause times (``gc.callbacks``) until closed."""

    def __init__(self, frozen: int = 0) -> None:
        self.frozen = frozen  # objects exempted at start-up (what freeze() returned)
        self.count = [0, 0, 0]
        self.max_ms = 0.0
        self.total_ms = 0.0
        self._t0 = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        ms = (time.perf_counter() - self._t0) * 1000
        self.count[info["generation"]] += 1
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)

    def summary(self) -> dict[str, Any]:
        return {"collections": list(self.count), "max_ms": round(self.max_ms, 2), "total_ms": round(self.total_ms, 1),
                "frozen": self.frozen}

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

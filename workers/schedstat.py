"""Time spent runnable but waiting for a CPU (Linux ``schedstat``), per thread or per process.

A worker's own clocks cannot tell slow code from a worker that was not running: on a busy or
oversubscribed (virtual) machine the scheduler holds runnable threads back, and every stream
waits. The kernel counts that wait for each task in ``/proc/<pid>/task/<tid>/schedstat`` (the
second field, nanoseconds); these read it. Elsewhere they return None.
"""

from __future__ import annotations

import os
from pathlib import Path


class ThreadWait:
    """The calling thread's run-queue wait since this reader was made, read cheaply (one ``pread``)
    as often as once per loop."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None
        self._start = self._read() or 0.0

    def _read(self) -> float | None:
        if self._fd is None:
            return None
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) / 1e6
        except (OSError, IndexError, ValueError):
            return None

    def ms(self) -> float | None:
        """Milliseconds this thread has waited for a CPU since the reader was made; None where not available."""
        now = self._read()
        return None if now is None else now - self._start

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def process_wait_ms(pid: int) -> float | None:
    """Milliseconds all threads of ``pid`` (alive now) have waited for a CPU; None if unreadable."""
    total, found = 0, False
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[1])
            found = True
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e6 if found else None

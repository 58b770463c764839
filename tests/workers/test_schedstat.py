"""Run-queue wait from Linux schedstat: zero-ish when a CPU is free, growing when CPUs are oversubscribed."""

import os
import subprocess
import sys
import time

import pytest

from workers.schedstat import ThreadWait, process_wait_ms

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"), reason="Linux schedstat")


def test_thread_wait_is_cumulative_milliseconds():
    wait = ThreadWait()
    first = wait.ms()
    time.sleep(0.05)  # sleeping is not waiting for a CPU
    second = wait.ms()
    wait.close()
    assert 0 <= first <= second < first + 50
    assert wait.ms() is None


def test_oversubscribed_processes_wait_for_a_cpu():
    spin = "import time\nend = time.time() + 3\nwhile time.time() < end: pass"
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2 * (os.cpu_count() or 2) + 1)]
    try:
        time.sleep(1.5)
        waits = [process_wait_ms(p.pid) for p in spinners]
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert all(w is not None for w in waits)
    assert sum(waits) > 100  # more busy processes than CPUs: together they waited a large share of 1.5 s
    assert process_wait_ms(2**22 + 12345) is None  # no such process

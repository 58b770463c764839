"""Batching policy: live streams keep their newest window, file streams keep every window."""

import numpy as np

from pipeline.scheduler import Job, Scheduler


def job(stream, seq, t=0.0):
    return Job(stream, seq, 0.0, 0.0, 0.0, np.zeros((3, 4, 18, 2), np.float32), [None, None], 0, t_queued=t)


def test_live_jobs_supersede_and_file_jobs_queue_in_order():
    s = Scheduler(max_batch=3, max_wait_ms=10, max_pending=4)
    for seq in range(5):
        s.add(job("cam", seq), live=True)
    for seq in range(3):
        s.add(job("file", seq), live=False)
    assert len(s) == 4 and s.skipped == 4 and s.full
    batch = s.take()
    assert [(j.stream, j.seq) for j in batch] == [("cam", 4), ("file", 0), ("file", 1)]
    assert s.has("file") and not s.has("cam")
    assert [(j.stream, j.seq) for j in s.take()] == [("file", 2)]
    assert s.take() == []


def test_ready_after_max_wait_or_full_batch():
    s = Scheduler(max_batch=2, max_wait_ms=50, max_pending=10)
    assert not s.ready()
    s.add(job("a", 0, t=100.0), live=False)
    assert not s.ready(now=100.01) and s.ready(now=100.06)
    s.add(job("b", 0, t=100.0), live=True)
    assert s.ready(now=100.0)
    s.drop_stream("a")
    assert not s.has("a") and len(s) == 1

"""Chaos, full disks and a stalled consumer (issue 19): real processes, real ZeroMQ on loopback, real
recordings (the Kinetics clip, looped) and a real video; exact accounting by :mod:`bench.accounting`.

1. ``python -m bench.chaos`` for 30 s: random SIGKILLs and pauses of the inference worker, the
   replays, the capture worker and an outside sink; every window of the replayed streams exactly
   once, in order; no duplicate of the live one; every line whole; no process left.
2. Messages read while the inference worker's scheduler fills up are kept (they were dropped:
   windows of lossless streams were lost whenever the worker fell ``max_pending`` windows behind).
3. ``--output``, ``--record`` and training checkpoints on a small full tmpfs: one error line, what
   was written stays valid, the pipeline keeps classifying.
4. A subscriber that falls behind counts every record the publisher dropped for it; a sink
   stalled on a full stdout pipe and a subscriber that reads late hold nothing up.
5. ``run_pipeline.py`` killed with SIGKILL: its workers stop (none is left behind).
No assertion on speed; waits poll for a condition under a generous deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.accounting import account_lossless, expected_windows, read_jsonl, results_by_stream
from bench.chaos import KINETICS_CLIP, looped_recording
from pipeline.settings import load_settings
from pipeline.windows import WindowRules
from tests.test_reliability_streaming import pgrep, unique_config, wait_for

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
LONG_FRAMES = 900
CLIP_STREAM = KINETICS_CLIP.name.split(".")[0]


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """The real Kinetics clip looped to 900 frames, as a pipeline recording, and its frames."""
    path = tmp_path_factory.mktemp("clip") / "looped.skel"
    return path, looped_recording(path, "looped", LONG_FRAMES)


def expected(frames, stride: int, window: int = 16, config: Path | None = None):
    """The windows a stream of ``frames`` yields under the pipeline's rules (tiny model: window 16)."""
    settings = load_settings(config, inference__stride=stride).inference
    return expected_windows(frames, WindowRules.serving(window, settings, "cpu"), 18, settings.persons)


def pipeline(*args, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run_pipeline.py", "--device", "cpu", *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "error" in line.lower()]


# ---- 1. chaos ------------------------------------------------------------------------------

def test_chaos_run_loses_and_duplicates_nothing(tmp_path, tiny_weights):
    out = tmp_path / "chaos.json"
    proc = subprocess.run([sys.executable, "-m", "bench.chaos", "--seconds", "30", "--seed", "19", "--weights",
                           str(tiny_weights), "--stride", "8", "--fault-every", "3", "--pause-max", "3", "--warmup", "4", "--out",
                           str(out), "--no-progress"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=170)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    s = result["summary"]
    print(json.dumps(s))
    assert "chaos seed 19" in proc.stdout
    assert s["exit_code"] == 0 and s["tracebacks"] == 0, proc.stderr[-3000:]
    assert {"inference", "replay", "sink"} <= set(s["faults_by_kind"]), s["faults_by_kind"]
    assert s["kills"] >= 2 and s["restarts_by_supervisor"] >= 1
    lossless = [v for v in result["streams"].values() if v["kind"] == "lossless"]
    assert len(lossless) == 2 and all(v["expected"] > 100 for v in lossless)
    assert s["lost"] == 0 and s["extra"] == 0 and s["duplicates"] == 0 and s["in_order"], result["streams"]
    live = [v for v in result["streams"].values() if v["kind"] == "live"]
    assert len(live) == 1 and live[0]["classified"] > 0 and live[0]["duplicates"] == 0 and live[0]["in_order"]
    assert s["bad_lines"] == 0 and all(sink["not_in_main_output"] == 0 for sink in result["sinks"])
    assert s["orphans"] == []
    assert proc.returncode == 0


# ---- 2. a full scheduler keeps what it read --------------------------------------------------

def test_messages_read_while_the_scheduler_fills_up_are_kept(tmp_path, tiny_weights):
    from workers.replay import load_frames

    _, frames = load_frames(KINETICS_CLIP)
    config, _ = unique_config(tmp_path)
    Path(config).write_text("inference:\n  max_pending: 4\n")  # full after a few windows: reads stop often
    out = tmp_path / "r.jsonl"
    proc = pipeline("--replay", KINETICS_CLIP, "--replay-fast", "--stride", "2", "--weights", tiny_weights, "--config",
                    config, "--output", out, "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = account_lossless(results_by_stream(read_jsonl(out)[0])[CLIP_STREAM], expected(frames, 2, config=Path(config)))
    print(got)
    assert got["expected"] > 80
    assert got["lost"] == 0 and got["duplicates"] == 0 and got["extra"] == 0 and got["in_order"]


# ---- 3. full disks -------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path, request):
    """A tmpfs of ``request.param`` (e.g. 64k) mounted for the test, unmounted after it."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={request.param}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("small_disk", ["32k"], indirect=True)
def test_full_disk_under_output_cuts_it_at_a_whole_line_and_classifying_goes_on(tmp_path, tiny_weights, small_disk):
    from workers.replay import load_frames

    _, frames = load_frames(KINETICS_CLIP)
    out = small_disk / "r.jsonl"
    proc = pipeline("--replay", KINETICS_CLIP, "--replay-fast", "--stride", "4", "--weights", tiny_weights, "--output",
                    out, "--quiet")
    want = expected(frames, 4)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and str(out) in errors[0] and "No space left" in errors[0], errors
    rows, bad = read_jsonl(out)
    assert bad == 0 and 0 < len(rows) < len(want), "the file holds whole lines only, fewer than the run's"
    assert f"{CLIP_STREAM}: {len(want)} results" in proc.stdout, "every window was still classified"


@pytest.mark.parametrize("small_disk", ["64k"], indirect=True)
def test_full_disk_under_record_keeps_the_part_written_and_classifying_goes_on(tmp_path, tiny_weights, small_disk):
    from pipeline.recording import read_recording
    from workers.replay import load_frames

    _, frames = load_frames(KINETICS_CLIP)
    out, rec = tmp_path / "r.jsonl", small_disk / "rec"
    proc = pipeline("--replay", KINETICS_CLIP, "--replay-fast", "--stride", "4", "--weights", tiny_weights, "--output",
                    out, "--record", rec, "--quiet")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "No space left" in errors[0] and "recording stopped" in errors[0], errors
    got = account_lossless(results_by_stream(read_jsonl(out)[0])[CLIP_STREAM], expected(frames, 4))
    assert got["lost"] == 0 and got["duplicates"] == 0, "the stream was classified to its end"
    kept = read_recording(rec / f"{CLIP_STREAM}.skel.part")
    assert 0 < len(kept.frames) < len(frames)
    assert [f.seq for f in kept.frames] == [f.seq for f in frames[:len(kept.frames)]], "a valid prefix"
    assert "cut short" in proc.stdout


@pytest.mark.parametrize("small_disk", ["60m"], indirect=True)
def test_full_disk_under_training_checkpoints_is_one_error_line(tmp_path, small_disk):
    import torch

    from tests.stgcn.test_train import write_config

    data = tmp_path / "utd"
    subprocess.run([sys.executable, "-m", "stgcn.convert", "utd-mhad", str(ROOT.parent / "shared" / "data" / "utd-mhad"),
                    str(data), "--layout", "openpose", "--frames", "64", "--subjects", "1", "2", "--limit", "8",
                    "--no-progress"], cwd=ROOT, env=ENV, check=True, capture_output=True, timeout=120)
    cfg = write_config(tmp_path / "tiny.yaml", data, 2, batch_size=4, steps=[2], seed=3)
    work = small_disk / "w"  # 60 MB: the first epoch's checkpoints (38 + 13 MB) fit, the second's do not
    proc = subprocess.run([sys.executable, "-m", "stgcn.train", str(cfg), "--device", "cpu", "--work-dir", str(work)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=170)
    assert proc.returncode != 0
    assert torch.load(work / "last.pt", map_location="cpu", weights_only=True)["meta"]["epoch"] == 0, \
        "the checkpoint written before the disk filled still loads"
    assert not list(work.glob("*.tmp")), "no partial checkpoint left"
    assert "Traceback" not in proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "No space left" in errors[0], errors


# ---- 4. stalled consumers ------------------------------------------------------------------

def test_a_subscriber_that_falls_behind_counts_every_record_it_missed():
    from pipeline.endpoints import free_endpoint
    from pipeline.results import Label, PersonResult, Result
    from pipeline.transport import ResultPublisher, ResultSubscriber

    endpoint = free_endpoint()
    pub = ResultPublisher(endpoint)
    sub = ResultSubscriber(endpoint, rcvhwm=10, rcvbuf=4096)  # reads nothing while 5,000 records go out
    try:
        person = PersonResult(1, "a", 0.5, [Label("a", 0.5)], [[0.5, 0.5, 1.0]] * 18)
        wait_for(lambda: (pub.publish(Result("s", 0, 0.0, 0.0, "w", dict.fromkeys(
            ("pose", "transport", "queue", "inference", "total"), 0.0), [person])), sub.recv(timeout_ms=50))[1],
            30, "the subscription")
        sent = 5000
        for seq in range(1, sent + 1):
            pub.publish(Result("s", seq, 0.0, 0.0, "w", dict.fromkeys(
                ("pose", "transport", "queue", "inference", "total"), 0.0), [person]))
        got = []
        while (record := sub.recv(timeout_ms=2000)) is not None:
            got.append(record.seq)
        received = [s for s in got if s > 0]
        assert received and sub.missed == received[-1] - len(received), \
            "the gaps before the last record received are counted; a dropped tail only when a later record arrives"
        sent += 1  # the next record, after the subscriber caught up, shows the gap before it
        pub.publish(Result("s", sent, 0.0, 0.0, "w", dict.fromkeys(
            ("pose", "transport", "queue", "inference", "total"), 0.0), [person]))
        got.append(sub.recv(timeout_ms=10_000).seq)
        print(f"{len(got)} received, {sub.missed} missed of {sent}")
        assert got[-1] == sent and sub.missed > 0, "the publisher dropped records for it"
        assert len([s for s in got if s > 0]) + sub.missed == sent, "every record it did not get is counted"
    finally:
        sub.close()
        pub.close()


def test_stalled_consumers_hold_nothing_up(tmp_path, tiny_weights, long_clip):
    from pipeline.endpoints import free_endpoint
    from pipeline.results import STATS_TOPIC, WorkerStats
    from pipeline.transport import ResultSubscriber

    path, frames = long_clip
    endpoint, out = free_endpoint(), tmp_path / "r.jsonl"
    # a sink printing a line per result to a pipe nobody reads: blocked once the pipe is full
    blocked = subprocess.Popen([sys.executable, "-m", "workers.sinks", "--connect", endpoint, "--output",
                                str(tmp_path / "blocked.jsonl")], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    slow = ResultSubscriber(endpoint, rcvhwm=10, rcvbuf=4096)  # reads nothing until the run is under way
    run = None
    try:
        time.sleep(2.0)  # both connected before the first results
        run = subprocess.Popen([sys.executable, "run_pipeline.py", "--device", "cpu", "--replay", str(path),
                                "--replay-fast", "--stride", "4", "--weights", str(tiny_weights), "--output",
                                str(out), "--results-endpoint", endpoint, "--quiet"], cwd=ROOT, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: len(read_jsonl(out)[0]) >= 100 or run.poll() is not None, 150, "100 lines of results")
        received = []
        while run.poll() is None:
            record = slow.recv(timeout_ms=100)
            if record is not None and not isinstance(record, WorkerStats):
                received.append(record)
        while (record := slow.recv(timeout_ms=2000)) is not None:
            if not isinstance(record, WorkerStats):
                received.append(record)
        _, err = run.communicate(timeout=60)
        assert run.returncode == 0, err[-3000:]
        assert blocked.poll() is None, "the blocked sink is still there, stuck on its pipe"
        rows, _ = read_jsonl(out)
        got = account_lossless(results_by_stream(rows)["looped"], expected(frames, 4))
        assert got["lost"] == 0 and got["duplicates"] == 0, got
        missed = sum(n for topic, n in slow.missed_by_topic.items() if topic != STATS_TOPIC)
        print(f"{len(rows)} lines written; the slow subscriber got {len(received)} records and missed {missed}")
        assert len(received) + missed == len(rows) + 1, "each record got or counted (results, events, the end)"
        blocked.send_signal(signal.SIGTERM)
        blocked.communicate(timeout=60)  # reading its pipe lets it go on to its end
        assert blocked.returncode == 0
        assert read_jsonl(tmp_path / "blocked.jsonl")[1] == 0, "its file whole"
    finally:
        slow.close()
        for proc in (blocked, run):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()


# ---- 5. the supervisor killed --------------------------------------------------------------

def test_killed_supervisor_leaves_no_worker(tmp_path, tiny_weights, long_clip):
    path, _ = long_clip
    config, tag = unique_config(tmp_path)
    out = tmp_path / "r.jsonl"
    proc = subprocess.Popen([sys.executable, "run_pipeline.py", "--device", "cpu", "--replay", str(path), "--weights",
                             str(tiny_weights), "--config", config, "--output", str(out), "--quiet"], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: out.exists() and out.stat().st_size > 0, 90, "the first result")
        assert len(pgrep(tag)) >= 3, "supervisor, inference worker and replay running"
        proc.kill()
        proc.wait(10)
        wait_for(lambda: pgrep(tag) == [], 30, "every worker of the killed supervisor to stop")
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in pgrep(tag):
            os.kill(pid, signal.SIGKILL)

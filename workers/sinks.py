"""Result sinks: a compact line per result on the console and JSON Lines to a file.

    python -m workers.sinks [--connect EP] [--output results.jsonl] [--expect N] [--quiet]

Subscribes to the inference worker's results. With ``--expect N`` it exits once N streams
have ended; otherwise it runs until SIGINT/SIGTERM. Every JSON line is written whole and
flushed, so a stopped sink leaves a file that ends at a record boundary; when the disk fills,
one error line says so, the file is cut back to its last whole line and the sink goes on
without it (the run's exit status says the output is incomplete).

A stream's results arrive in increasing ``seq``: a result at or before the stream's last one is
a window classified again after a restart (a restarted inference worker rebuilds a replayed
stream from its first frame, see ``workers/replay.py``) and is dropped, counted, with the events
that follow it. A sink that falls behind loses records at the publisher (ZeroMQ PUB); the gaps
in each publisher's per-stream record numbers count them, and the sink reports the count.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import IO, Sequence

from pipeline.cli import add_debug_flag, run_cli, setup_logging
from pipeline.endpoints import split_list
from pipeline.results import ActionEvent, Record, Result, StreamEnded, WorkerStats
from pipeline.settings import load_settings
from pipeline.transport import CurveKeyPair, ResultSubscriber
from workers.config import add_curve_args, add_settings_args, client_curve, stop_on_signals

log = logging.getLogger("workers.sinks")


def _person_text(person) -> str:
    best = person.top[0]
    if person.label == best.label:
        return f"id {person.id}: {person.label} {best.score:.2f}"
    return f"id {person.id}: {person.label} (best guess {best.label} {best.score:.2f})"


def format_line(result: Result) -> str:
    """``[stream] #seq  id 3: wave 0.93 | id 5: unknown (best guess clap 0.31)  latency 42 ms``."""
    people = " | ".join(_person_text(p) for p in result.people) or "no person"
    return f"[{result.stream}] #{result.seq:<5d} {people}  latency {result.latency_ms['total']:.0f} ms"


class ResultSink:
    """Consumes results; prints and/or writes JSON Lines; counts per stream."""

    def __init__(self, endpoint: str | Sequence[str], output: str | Path | None = None, quiet: bool = False,
                 expect: int | None = None, print_every: int = 1, server_public: bytes | None = None,
                 client_keys: CurveKeyPair | None = None, reuse_ids: bool = True) -> None:
        """``reuse_ids``: a stream id may start over after its end (a later run's stream of that
        name); False (one run's sink) keeps dropping windows of an ended stream classified again."""
        self.sub = ResultSubscriber(endpoint, server_public=server_public, client_keys=client_keys)
        self.output = Path(output) if output else None
        self.out: IO[str] | None = open(output, "w", buffering=1) if output else None
        self.written = 0
        self.write_failed: str | None = None
        self._whole = 0  # bytes of the output file up to its last whole line
        self.reuse_ids = reuse_ids
        self.last_seq: dict[str, int] = {}
        self.duplicates = 0
        self._again: set[str] = set()  # streams whose last result was one classified again
        self.stats: dict[str, WorkerStats] = {}  # each inference worker's latest stats record
        self.quiet, self.expect, self.print_every = quiet, expect, max(1, print_every)
        self.counts: dict[str, int] = {}
        self.ended: set[str] = set()
        self.stop = threading.Event()

    def handle(self, record: Record) -> None:
        if isinstance(record, WorkerStats):
            self.stats[record.worker] = record
            return
        stream = record.stream
        if isinstance(record, StreamEnded):
            self.ended.add(stream)
            self._again.discard(stream)
            if self.reuse_ids:
                self.last_seq.pop(stream, None)
            if not self.quiet:
                print(f"[{stream}] ended ({record.reason}): {self.counts.get(stream, 0)} results", flush=True)
            return
        if isinstance(record, ActionEvent):
            if stream in self._again:
                return  # closed by a window classified again: sent before
            self._write({"type": "event", **record.to_json()})
            if not self.quiet:
                print(f"[{stream}] id {record.person}: {record.label} from #{record.start_seq} to #{record.end_seq} "
                      f"({record.t_end - record.t_start:.1f} s)", flush=True)
            return
        if record.seq <= self.last_seq.get(stream, -1):
            self.duplicates += 1
            self._again.add(stream)
            return
        self.last_seq[stream] = record.seq
        self._again.discard(stream)
        n = self.counts[stream] = self.counts.get(stream, 0) + 1
        self._write({"type": "result", **record.to_json()})
        if not self.quiet and (n - 1) % self.print_every == 0:
            print(format_line(record), flush=True)

    def _write(self, row: dict) -> None:
        if self.out is None:
            return
        line = json.dumps(row) + "\n"
        try:
            self.out.write(line)
        except OSError as exc:
            self._stop_writing(exc)
            return
        self.written += 1
        self._whole += len(line.encode())

    def _stop_writing(self, exc: OSError) -> None:
        """The output cannot take more (a full disk): cut it back to its last whole line, say so
        once, and go on without it."""
        assert self.out is not None
        self.write_failed = f"{self.output}: {exc.strerror or exc}; the file ends after its {self.written} whole lines"
        print(f"error: results output {self.write_failed}; results from here on are not written", file=sys.stderr,
              flush=True)
        try:
            self.out.close()
        except OSError:
            pass  # the buffered rest cannot go either; the file is cut below
        self.out = None
        try:
            os.truncate(self.output, self._whole)
        except OSError as cut:
            log.error("could not cut %s back to its last whole line: %s", self.output, cut)

    def run(self) -> None:
        while not self.stop.is_set():
            record = self.sub.recv(timeout_ms=100)
            if record is not None:
                self.handle(record)
            if self.expect is not None and len(self.ended) >= self.expect:
                break
        self.close()

    def close(self) -> None:
        if self.out is not None:
            try:
                self.out.close()
            except OSError as exc:
                self._stop_writing(exc)
            else:
                print(f"results written to {self.output} ({self.written} lines)", flush=True)
            self.out = None
        if self.duplicates:
            print(f"{self.duplicates} window(s) classified again after a restart were dropped (already written)",
                  flush=True)
        if self.sub.missed:
            print(f"{self.sub.missed} record(s) missed: this sink fell behind the publisher", flush=True)
        self.sub.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.sinks", description=__doc__.split("\n")[0])
    add_settings_args(parser)
    add_debug_flag(parser)
    parser.add_argument("--connect", action="append",
                        help="results endpoint (default from config); repeated or comma-separated: "
                        "every inference worker's, merged")
    parser.add_argument("--output", help="write every result as a JSON line here")
    parser.add_argument("--expect", type=int, help="exit after this many streams have ended")
    parser.add_argument("--print-every", type=int, default=1, help="print one result line in N per stream")
    add_curve_args(parser, server=False)
    args = parser.parse_args(argv)
    setup_logging(args.debug, args.quiet)

    def sink() -> int:
        settings = load_settings(args.config)
        consumer = ResultSink(split_list(args.connect) or settings.endpoints.results, args.output, args.quiet,
                              args.expect, args.print_every, **client_curve(args, settings))
        stop_on_signals(consumer.stop)
        consumer.run()
        return 1 if consumer.write_failed else 0

    return run_cli("sinks", sink, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

"""Result sinks: a compact line per result on the console and JSON Lines to a file.

    python -m workers.sinks [--connect EP] [--output results.jsonl] [--expect N] [--quiet]

Subscribes to the inference worker's results. With ``--expect N`` it exits once N streams
have ended; otherwise it runs until SIGINT/SIGTERM. Every JSON line is written whole and
flushed, so a stopped sink leaves a file that ends at a record boundary.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from pathlib import Path
from typing import IO, Any, Sequence

from pipeline.endpoints import split_list
from pipeline.transport import CurveKeyPair, ResultSubscriber
from workers.config import (add_common_args, add_curve_args, client_curve, load_pipeline_config, setup_logging,
                            stop_on_signals)

log = logging.getLogger("workers.sinks")
RESULT_KEYS = ("stream", "seq", "t_capture", "t_result", "persons", "top", "next_frame", "latency_ms", "worker")


def format_line(result: dict[str, Any]) -> str:
    """``[stream] #seq  label 0.93 | label 0.04 | label 0.01  (1 person, 42 ms)``."""
    top = " | ".join(f"{t['label']} {t['score']:.2f}" for t in result["top"][:3])
    people = sum(1 for p in result.get("persons") or [] if p is not None)
    total = result.get("latency_ms", {}).get("total", float("nan"))
    return f"[{result['stream']}] #{result['seq']:<5d} {top}  ({people} person{'s' * (people != 1)}, {total:.0f} ms)"


class ResultSink:
    """Consumes results; prints and/or writes JSON Lines; counts per stream."""

    def __init__(self, endpoint: str | Sequence[str], output: str | Path | None = None, quiet: bool = False,
                 expect: int | None = None, print_every: int = 1, server_public: bytes | None = None,
                 client_keys: CurveKeyPair | None = None) -> None:
        self.sub = ResultSubscriber(endpoint, server_public=server_public, client_keys=client_keys)
        self.out: IO[str] | None = open(output, "w", buffering=1) if output else None
        self.quiet, self.expect, self.print_every = quiet, expect, max(1, print_every)
        self.counts: dict[str, int] = {}
        self.ended: set[str] = set()
        self.stop = threading.Event()

    def handle(self, result: dict[str, Any]) -> None:
        stream = str(result.get("stream"))
        if result.get("type") == "end":
            self.ended.add(stream)
            if not self.quiet:
                print(f"[{stream}] ended ({result.get('reason')}): {self.counts.get(stream, 0)} results", flush=True)
            return
        n = self.counts[stream] = self.counts.get(stream, 0) + 1
        if self.out is not None:
            self.out.write(json.dumps({k: result.get(k) for k in RESULT_KEYS}) + "\n")
        if not self.quiet and (n - 1) % self.print_every == 0:
            print(format_line(result), flush=True)

    def run(self) -> None:
        while not self.stop.is_set():
            got = self.sub.recv(timeout_ms=100)
            if got is not None:
                self.handle(got[1])
            if self.expect is not None and len(self.ended) >= self.expect:
                break
        self.close()

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
        self.sub.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.sinks", description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--connect", action="append",
                        help="results endpoint (default from config); repeated or comma-separated: "
                        "every inference worker's, merged")
    parser.add_argument("--output", help="write every result as a JSON line here")
    parser.add_argument("--expect", type=int, help="exit after this many streams have ended")
    parser.add_argument("--quiet", action="store_true", help="no console lines")
    parser.add_argument("--print-every", type=int, default=1, help="print one result line in N per stream")
    add_curve_args(parser, server=False)
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    try:
        cfg = load_pipeline_config(args.config)
        sink = ResultSink(split_list(args.connect) or cfg["endpoints"]["results"], args.output, args.quiet,
                          args.expect, args.print_every, **client_curve(args, cfg))
    except (ValueError, OSError) as exc:
        print(f"sinks: error: {exc}", file=sys.stderr)
        return 2
    stop_on_signals(sink.stop)
    sink.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

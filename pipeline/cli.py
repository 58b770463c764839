"""What every command line of the project shares: logging set-up and one-line errors.

A CLI builds its parser, then hands its body to :func:`run_cli`: an expected error (bad
input, a missing file, a refused setting) becomes one line ``PROG: error: ...`` on stderr
and exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

USER_ERROR = 2  # exit status for bad input; supervisors do not restart a worker that exits with it
SUPERVISOR_ENV = "STGCN_SUPERVISOR_PID"  # set by run_pipeline.py for its workers: they stop when it dies
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks")


def setup_logging(debug: bool = False, quiet: bool = False) -> None:
    """INFO logging to stderr (DEBUG with ``debug``, warnings only with ``quiet``)."""
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT)


def run_cli(prog: str, body: Callable[[], int | None], *, debug: bool = False,
            errors: tuple[type[BaseException], ...] = (ValueError, OSError), code: int = USER_ERROR) -> int:
    """``body()``'s exit status; ``errors`` become one line ``PROG: error: ...`` and ``code``."""
    try:
        return body() or 0
    except errors as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130

"""Shared command-line pieces of the workers: the pipeline config, common flags, logging."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from stgcn.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "pipeline.yaml"


def load_pipeline_config(path: str | Path | None = None) -> dict[str, Any]:
    """The pipeline YAML (default ``configs/pipeline.yaml``)."""
    return load_config(path or DEFAULT_CONFIG)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"pipeline YAML (default {DEFAULT_CONFIG.relative_to(ROOT)})")
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks")


def setup_logging(debug: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """An event set by SIGINT or SIGTERM, so a worker's loop can finish cleanly."""
    stop = stop or threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop

"""Shared command-line pieces of the workers: the pipeline config, common flags, logging."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.transport import CurveKeyPair, allowed_keys_from_dir, is_loopback_endpoint, load_keypair, load_public_key
from stgcn.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "pipeline.yaml"


def load_pipeline_config(path: str | Path | None = None) -> dict[str, Any]:
    """The pipeline YAML (default ``configs/pipeline.yaml``)."""
    return load_config(path or DEFAULT_CONFIG)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"pipeline YAML (default {DEFAULT_CONFIG.relative_to(ROOT)})")
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks")


def add_sender_args(parser: argparse.ArgumentParser) -> None:
    """Where a capture or replay worker sends its stream."""
    parser.add_argument("--connect", action="append",
                        help="inference worker's frames endpoint (default from config); repeated or "
                        "comma-separated: several workers, the stream goes to the one its stable hash picks")


def add_curve_args(parser: argparse.ArgumentParser, server: bool) -> None:
    """CURVE flags: the inference worker is the server, capture/replay/sinks are its clients."""
    group = parser.add_argument_group("CURVE encryption and authentication (python -m pipeline.keys makes keys)")
    if server:
        group.add_argument("--server-key", metavar="FILE",
                           help="this worker's secret certificate (server.key_secret); required to bind "
                                "beyond loopback (default from config endpoints.curve.server_key)")
        group.add_argument("--allowed-clients", metavar="DIR",
                           help="folder of the public certificates (*.key) of the clients let in "
                                "(default from config endpoints.curve.allowed_clients)")
    else:
        group.add_argument("--client-key", metavar="FILE",
                           help="this worker's secret certificate (NAME.key_secret; its NAME.key must be in "
                                "the inference worker's --allowed-clients folder)")
        group.add_argument("--server-public", metavar="FILE",
                           help="the inference worker's public certificate (server.key)")


@dataclass(frozen=True)
class ServerCurve:
    """The inference worker's CURVE settings: its key pair and the client keys it admits."""

    keys: CurveKeyPair
    allowed: list[bytes]


def _curve_path(args: argparse.Namespace, flag: str, cfg: dict[str, Any], key: str) -> Path | None:
    """A path from the command line (relative to the working directory) or from the config's
    ``endpoints.curve`` section (relative to the config file)."""
    value = getattr(args, flag, None)
    if value:
        return Path(value)
    value = ((cfg.get("endpoints") or {}).get("curve") or {}).get(key)
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(getattr(args, "config", None) or DEFAULT_CONFIG).parent / path


def server_curve(args: argparse.Namespace, cfg: dict[str, Any], endpoints: list[str]) -> ServerCurve | None:
    """The inference worker's keys, or None on loopback without keys; ValueError with one
    clear line for a non-loopback bind without keys, half a configuration or a bad file."""
    secret = _curve_path(args, "server_key", cfg, "server_key")
    clients = _curve_path(args, "allowed_clients", cfg, "allowed_clients")
    if secret is None and clients is None:
        remote = [ep for ep in endpoints if not is_loopback_endpoint(ep)]
        if remote:
            raise ValueError(f"refusing to bind {remote[0]} beyond loopback without CURVE keys "
                             "(give --server-key and --allowed-clients; python -m pipeline.keys makes them)")
        return None
    if secret is None or clients is None:
        raise ValueError("CURVE needs both --server-key and --allowed-clients")
    allowed = allowed_keys_from_dir(clients)
    if not allowed:
        raise ValueError(f"{clients}: no client public certificates (*.key) in this folder")
    return ServerCurve(load_keypair(secret), allowed)


def client_curve(args: argparse.Namespace, cfg: dict[str, Any]) -> dict[str, Any]:
    """A capture/replay/sinks worker's keys as keyword arguments of its sockets
    (``server_public``, ``client_keys``; empty without CURVE); ValueError for half a
    configuration or a bad file."""
    secret = _curve_path(args, "client_key", cfg, "client_key")
    server = _curve_path(args, "server_public", cfg, "server_public")
    if secret is None and server is None:
        return {}
    if secret is None or server is None:
        raise ValueError("CURVE needs both --client-key and --server-public")
    return {"server_public": load_public_key(server), "client_keys": load_keypair(secret)}


def setup_logging(debug: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """An event set by SIGINT or SIGTERM, so a worker's loop can finish cleanly."""
    stop = stop or threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop

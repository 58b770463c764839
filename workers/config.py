"""Command-line pieces the workers share: the settings flags, sender endpoints, CURVE keys, signals."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from pipeline.cli import SUPERVISOR_ENV
from pipeline.settings import DEFAULT_CONFIG, ROOT, Settings
from pipeline.transport import CurveKeyPair, allowed_keys_from_dir, is_loopback_endpoint, load_keypair, load_public_key


def add_settings_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"pipeline YAML laid over {DEFAULT_CONFIG.relative_to(ROOT)} "
                                         "(only the keys it changes)")
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")


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


def _curve_path(args: argparse.Namespace, flag: str, settings: Settings) -> Path | None:
    """A path from the command line (relative to the working directory) or the settings
    (``endpoints.curve``, relative to the config file that set it)."""
    value = getattr(args, flag, None)
    return Path(value) if value else getattr(settings.endpoints.curve, flag)


def server_curve(args: argparse.Namespace, settings: Settings, endpoints: list[str]) -> ServerCurve | None:
    """The inference worker's keys, or None on loopback without keys; ValueError with one
    clear line for a non-loopback bind without keys, half a configuration or a bad file."""
    secret = _curve_path(args, "server_key", settings)
    clients = _curve_path(args, "allowed_clients", settings)
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


def client_curve(args: argparse.Namespace, settings: Settings) -> dict:
    """A capture/replay/sinks worker's keys as keyword arguments of its sockets
    (``server_public``, ``client_keys``; empty without CURVE); ValueError for half a
    configuration or a bad file."""
    secret = _curve_path(args, "client_key", settings)
    server = _curve_path(args, "server_public", settings)
    if secret is None and server is None:
        return {}
    if secret is None or server is None:
        raise ValueError("CURVE needs both --client-key and --server-public")
    return {"server_public": load_public_key(server), "client_keys": load_keypair(secret)}


def stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """An event set by SIGINT or SIGTERM, so a worker's loop can finish cleanly. A worker of
    ``run_pipeline.py`` also gets SIGTERM when the supervisor dies (even by SIGKILL), so none
    is left behind."""
    stop = stop or threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    die_with_supervisor()
    return stop


def die_with_supervisor() -> None:
    """SIGTERM to this process when its supervisor (``SUPERVISOR_ENV``) exits (Linux: prctl
    PR_SET_PDEATHSIG); at once when it is already gone."""
    parent = os.environ.get(SUPERVISOR_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if str(os.getppid()) != parent:
        os.kill(os.getpid(), signal.SIGTERM)

"""Endpoint helpers shared by the launcher, the workers and the benches."""

from __future__ import annotations

import socket
from typing import Iterable


def free_endpoints(n: int) -> list[str]:
    """``n`` distinct loopback TCP endpoints on ports free now (held until all are picked)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [f"tcp://127.0.0.1:{s.getsockname()[1]}" for s in socks]
    finally:
        for s in socks:
            s.close()


def free_endpoint() -> str:
    """A loopback TCP endpoint on a port that is free now."""
    return free_endpoints(1)[0]


def split_list(values: str | Iterable[str] | None) -> list[str]:
    """Items of comma-separated option values (one string or a repeated option); none when unset."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [item.strip() for value in values for item in value.split(",") if item.strip()]

"""Pinning streams to inference workers: one stream's frames always go to one worker.

A stream's ring buffer lives in exactly one inference worker, so every frame of a stream
must reach the same worker, also after either side restarts. :func:`pick_index` is a
stable hash of the stream id (BLAKE2b, the same in every process, Python version and
machine, unlike ``hash()``), so senders started by hand with the same list of endpoints
agree without talking to each other.
"""

from __future__ import annotations

import hashlib
from typing import Sequence


def pick_index(stream: str, n: int) -> int:
    """The worker (0..n-1) that ``stream`` is pinned to."""
    if n < 1:
        raise ValueError("at least one worker is needed")
    digest = hashlib.blake2b(stream.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def pick_endpoint(stream: str, endpoints: str | Sequence[str]) -> str:
    """The endpoint among ``endpoints`` (kept in the given order) that ``stream`` goes to."""
    if isinstance(endpoints, str):
        return endpoints
    if not endpoints:
        raise ValueError("no endpoint given")
    return endpoints[pick_index(stream, len(endpoints))]


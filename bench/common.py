"""What the benchmarks share: where results go, the machine they ran on, percentile summaries."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
from datetime import date
from pathlib import Path
from typing import Any, Iterable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def machine(device: Any = "cpu", *, with_torch: bool = False) -> str:
    """The machine a figure was measured on: the GPU when ``device`` is CUDA, else the CPU, and the
    machine's CPU cores; ``with_torch`` adds torch's intra-op threads and version."""
    if str(device).startswith("cuda"):
        import torch

        text = f"{torch.cuda.get_device_name(device)} (GPU machine), {os.cpu_count()} CPU cores"
    else:
        text = f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores (this CPU machine)"
    if with_torch:
        import torch

        text += f", {torch.get_num_threads()} threads, torch {torch.__version__}"
    return text


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (100: the maximum), None without values."""
    a = np.asarray(list(values), dtype=float)
    return float(np.percentile(a, q)) if a.size else None


def summary_ms(values: Iterable[float], prefix: str = "") -> dict[str, float | None]:
    """``{prefix}p50_ms``, ``{prefix}p99_ms`` and ``{prefix}max_ms`` of millisecond values (None without values)."""
    a = np.asarray(list(values), dtype=float)
    return {f"{prefix}p50_ms": percentile(a, 50), f"{prefix}p99_ms": percentile(a, 99),
            f"{prefix}max_ms": percentile(a, 100)}


def shown(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def write_results(name: str, payload: dict[str, Any], path: str | Path | None = None) -> Path:
    """``payload`` as JSON in ``bench/results/NAME.json`` (or ``path``), led by ``machine`` (the
    payload's own when it names one, else :func:`machine` of the CPU) and today's ``date``.
    Prints and returns the path."""
    out = {"machine": payload.get("machine") or machine(), "date": date.today().isoformat(), **payload}
    path = Path(path) if path is not None else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {shown(path)}")
    return path


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB from ``/proc/PID/status`` (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Send ``sig`` to a running ``proc`` and wait for it; SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)

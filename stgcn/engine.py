"""Serving-side model runner: raw windows in, class probabilities and next frames out.

The same checkpoint config that training wrote decides the normalisation and window, so a
live stream is prepared exactly as the training data was. The whole step (normalisation,
network, softmax, the predicted frame back to raw units) runs on the model's device.

On CUDA the network (each stream's, for a multi-stream model) is :class:`~stgcn.fast.FastSTGCN`
(BatchNorms folded, joint-major, fp16 weights); on the CPU the original module in float32 (the
folded one is no faster there, measured 11.6 against 12.1 windows/s on 2 cores). fp16 rather than bf16: the same speed,
and on the shipped model's real test windows a tenth of bf16's logit error (1.2e-3 against
1.1e-2 at worst).
On CUDA the step is replayed from CUDA graphs over fixed batch sizes. Other variants (the
original module under autocast, bf16 weights, no graphs) are built from the same public pieces
by the benches that compare them (``python -m bench.inference``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .checkpoint import load_model
from .graph import get_layout
from .open_set import OpenSet
from .streams import select_streams
from .transforms import build_transform

log = logging.getLogger(__name__)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available")
    return torch.device(name)


class _Compiled:
    """``fn`` through ``torch.compile``; eager, with a warning, where compiling fails."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        try:
            import triton  # noqa: F401

            self.compiled: Callable | None = torch.compile(fn, dynamic=True)
        except ImportError:
            self.compiled = None

    def __call__(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as exc:  # noqa: BLE001 - a compiler failure must not stop serving
                log.warning("torch.compile of %s failed, running it eagerly: %s", self.fn.__name__,
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                self.compiled = None
        return self.fn(*args)


class Engine:
    """Batched inference of one checkpoint on raw ``(B, C, W, V, M)`` windows."""

    def __init__(self, weights: str | Path, device: str = "auto", *, persons: int | None = None,
                 window: int | None = None, streams: Sequence[str] | None = None) -> None:
        """``weights`` on ``device`` (``auto``: CUDA when present) for windows of ``persons`` person
        slots and ``window`` frames (default: the checkpoint's window), through the input
        ``streams`` of a multi-stream checkpoint (default: all it has; fewer cost less)."""
        self.device = pick_device(device)
        self.model = select_streams(load_model(weights, device=self.device), streams)
        cfg = self.model.config
        self.streams = list(cfg["model"].get("streams") or ["joint"])
        self.config = cfg
        model_cfg = cfg["model"]
        graph_layout = model_cfg["graph_args"]["layout"]
        self.layout = get_layout(graph_layout).name  # canonical: what frames carry and are compared by
        self.num_class = int(model_cfg["num_class"])
        self.class_names = list(cfg.get("class_names") or [str(i) for i in range(self.num_class)])
        self.transform = build_transform(cfg.get("normalisation"), graph_layout)
        self.window = int(window or cfg["window"])  # a checkpoint serves any length
        self.channels = int(model_cfg.get("in_channels", 3))
        self.joints = int(self.model.A.shape[-1])
        self.persons = int(persons or cfg["persons"])  # person slots of a sample (default: as trained)
        self.predicts = self.model.predictor is not None
        self.history = self.model.predictor.history if self.predicts else 2  # frames the predictor reads
        self.horizon = self.model.predictor.horizon if self.predicts else 0  # frames it predicts
        self.open_set = OpenSet.from_config(cfg.get("open_set"))  # None: every top class stands
        cuda = self.device.type == "cuda"
        self.net = self.model
        self.prepare, self.finish = self._prepare, self._finish
        self.runner = None
        if not cuda:
            return
        from .fast import GraphedEngine, fold

        self.net = fold(self.model, torch.float16)
        # The normalisation and its inverse are many small kernels: on CUDA they are compiled
        # into a few, which is most of what a batch of one costs besides the network.
        self.prepare, self.finish = _Compiled(self._prepare), _Compiled(self._finish)
        try:
            self.runner = GraphedEngine(self.step, self.sample_shape, self.device)
            log.info("CUDA graphs captured for batch sizes %s", list(self.runner.batches))
        except RuntimeError as exc:  # still correct, only slower: say so and run eagerly
            log.warning("CUDA graph capture failed, running eagerly: %s", str(exc).splitlines()[0])

    @property
    def mode(self) -> str:
        """``window``: each result from its whole window (``continual``: :mod:`stgcn.continual_engine`)."""
        return "window"

    def release(self, stream: str) -> None:
        """A stream ended; a window engine keeps nothing of it."""

    @property
    def sample_shape(self) -> tuple[int, int, int, int]:
        return (self.channels, self.window, self.joints, self.persons)

    def input_buffer(self, n: int) -> np.ndarray:
        """A float32 ``(n, C, W, V, M)`` array to build a batch in; on CUDA it is the pinned
        buffer the graphs read, so passing it back to ``__call__`` saves a copy."""
        if self.runner is not None and n <= self.runner.batches[-1]:
            return self.runner.input_buffer(n).numpy()
        return np.empty((n, *self.sample_shape), np.float32)

    def _prepare(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, recent, p, _ = self.transform.prepare(raw, history=self.history)
        return x, recent, p.center[..., -1, :], p.scale

    def _finish(self, logits: torch.Tensor, nxt: torch.Tensor | None, center: torch.Tensor,
                scale: torch.Tensor) -> tuple[torch.Tensor, ...]:
        probs = torch.softmax(logits.float(), dim=1)
        if nxt is None:
            return (probs,)
        if nxt.dim() == 5:  # (B, C, H, V, M): frames t+1..t+H
            return probs, self.transform.inverse_frame(nxt.float().movedim(2, 1), center[:, None], scale[:, None]
                                                       ).movedim(1, 2)
        return probs, self.transform.inverse_frame(nxt.float(), center, scale)

    @torch.no_grad()
    def step(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Raw windows on the device -> probabilities (and next frames in raw units)."""
        x, recent, center, scale = self.prepare(raw)
        out = self.net(x, recent) if self.predicts else (self.net(x), None)
        return self.finish(out[0], out[1], center, scale)

    def submit(self, windows: np.ndarray) -> Callable[[], tuple[np.ndarray, np.ndarray | None]]:
        """Starts a batch; calling the result gives what :meth:`__call__` gives. On CUDA graphs it
        returns before the GPU is done (collect before building the next batch in :meth:`input_buffer`);
        elsewhere the work is done here."""
        raw = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        if self.runner is not None and tuple(raw.shape[1:]) == self.sample_shape:
            pending = self.runner.submit(raw)
        else:
            out = tuple(o.cpu() for o in self.step(raw.to(self.device, non_blocking=True)))
            pending = lambda: out  # noqa: E731

        def collect() -> tuple[np.ndarray, np.ndarray | None]:
            out = pending()
            return out[0].numpy(), (out[1].numpy() if self.predicts else None)
        return collect

    def __call__(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities ``(B, num_class)`` and, with a predictor, next frames ``(B, C, V, M)`` in raw units
        (``(B, C, H, V, M)``: frames t+1..t+H, for a predictor of ``horizon`` H above 1)."""
        return self.submit(windows)()

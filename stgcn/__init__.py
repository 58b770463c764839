"""ST-GCN: graphs, the model, the next-frame predictor, data and training.

Public API: :func:`load_model`, :data:`DEFAULT_WEIGHTS`, :class:`STGCN`, :class:`MultiStream`
(one ST-GCN per input stream, as the shipped model), :class:`Graph`.
Names are imported on first use, so light modules (``stgcn.config``, ``stgcn.graph``) load
without PyTorch: a capture worker that fails on a missing camera says so at once.
"""

from importlib import import_module
from pathlib import Path

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "real_video.pt"

_EXPORTS = {"CheckpointError": "checkpoint", "build_model": "checkpoint", "load_model": "checkpoint",
            "save_checkpoint": "checkpoint", "Graph": "graph", "get_layout": "graph", "STGCN": "model",
            "MultiStream": "streams"}

__all__ = ["DEFAULT_WEIGHTS", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

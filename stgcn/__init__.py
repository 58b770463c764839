"""ST-GCN: graphs, the model, the next-frame predictor, data and training.

Public API: :func:`load_model`, :data:`DEFAULT_WEIGHTS`, :class:`STGCN`, :class:`Graph`.
"""

from pathlib import Path

from .checkpoint import CheckpointError, build_model, load_model, save_checkpoint
from .graph import Graph, get_layout
from .model import STGCN

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "utd_mhad_openpose.pt"

__all__ = ["DEFAULT_WEIGHTS", "STGCN", "CheckpointError", "Graph", "build_model", "get_layout", "load_model",
           "save_checkpoint"]

"""Serving-side model runner: raw windows in, class probabilities and next frames out.

The same checkpoint config that training wrote decides the normalisation and window, so a
live stream is prepared exactly as the training data was.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_model
from .transforms import build_transform

log = logging.getLogger(__name__)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available")
    return torch.device(name)


class Engine:
    """Batched inference of one checkpoint on raw ``(B, C, W, V, M)`` windows."""

    def __init__(self, weights: str | Path, device: str = "auto", amp: bool = True) -> None:
        self.device = pick_device(device)
        self.model = load_model(weights, device=self.device)
        cfg = self.model.config
        self.config = cfg
        model_cfg = cfg["model"]
        self.layout = model_cfg["graph_args"]["layout"]
        self.num_class = int(model_cfg["num_class"])
        self.class_names = list(cfg.get("class_names") or [str(i) for i in range(self.num_class)])
        self.transform = build_transform(cfg.get("normalisation"), self.layout)
        self.window = int(cfg.get("window") or 300)
        self.channels = int(model_cfg.get("in_channels", 3))
        self.joints = int(self.model.A.shape[-1])
        self.predicts = self.model.predictor is not None
        self.amp = amp and self.device.type == "cuda"

    @torch.no_grad()
    def __call__(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities ``(B, num_class)`` and, with a predictor, next frames ``(B, C, V, M)`` in raw units."""
        x, recent, params, _ = self.transform.prepare(windows)
        xt = torch.from_numpy(x).to(self.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            if self.predicts:
                logits, nxt = self.model(xt, torch.from_numpy(recent).to(self.device))
            else:
                logits, nxt = self.model(xt), None
        probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
        if nxt is None:
            return probs, None
        local = nxt.float().cpu().numpy()
        return probs, self.transform.inverse_frame(local, params.center[..., -1, :], params.scale)

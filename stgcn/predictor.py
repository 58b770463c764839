"""Next-frame prediction baselines and the MPJPE metric.

Frames are ``(..., C, V, M)`` tensors or arrays; the first ``coords`` channels are positions
and, for 2D layouts, the last channel is a confidence (0 = absent joint).
"""

from __future__ import annotations

import numpy as np
import torch

Array = torch.Tensor | np.ndarray


def zero_velocity(recent: Array) -> Array:
    """Repeat the last frame: ``recent`` ``(..., C, 2, V, M)`` -> ``(..., C, V, M)``."""
    return recent[..., -1, :, :]


def constant_velocity(recent: Array, coords: int | None = None) -> Array:
    """``x_t + (x_t - x_{t-1})`` on positions; a joint absent at t-1 falls back to zero velocity."""
    last, prev = recent[..., -1, :, :], recent[..., -2, :, :]
    c = last.shape[-3]
    coords = c if coords is None else coords
    lib = torch if isinstance(last, torch.Tensor) else np
    both = present(last, coords) & present(prev, coords)
    out = last.clone() if lib is torch else last.copy()
    moved = 2 * last[..., :coords, :, :] - prev[..., :coords, :, :]
    out[..., :coords, :, :] = lib.where(both[..., None, :, :], moved, last[..., :coords, :, :])
    return out


def present(frame: Array, coords: int) -> Array:
    """Joints present in a frame ``(..., C, V, M)`` -> bool ``(..., V, M)``."""
    if frame.shape[-3] > coords:
        return frame[..., -1, :, :] > 0
    return (frame != 0).any(-3) if isinstance(frame, torch.Tensor) else np.any(frame != 0, axis=-3)


def mpjpe(pred: Array, target: Array, coords: int | None = None, reduce: bool = True
          ) -> Array | tuple[Array, Array]:
    """Mean per-joint position error over joints present in both frames.

    With ``reduce=False`` returns ``(sum of errors, number of joints counted)`` so that
    callers can accumulate over batches exactly.
    """
    coords = target.shape[-3] if coords is None else coords
    lib = torch if isinstance(target, torch.Tensor) else np
    mask = present(pred, coords) & present(target, coords)
    diff = pred[..., :coords, :, :] - target[..., :coords, :, :]
    err = lib.sqrt((diff ** 2).sum(-3))
    total = (err * mask).sum()
    count = mask.sum()
    if not reduce:
        return total, count
    return total / count if count > 0 else total * float("nan")

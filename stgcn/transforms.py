"""Skeleton normalisation shared by training, evaluation and serving.

Every transform maps raw skeletons ``(..., C, T, V, M)`` to what the model reads and back.
Raw 2D skeletons are image coordinates divided by the image width and height with a
confidence channel (MediaPipe output and the Kinetics-skeleton JSON); raw 3D skeletons are
camera-space coordinates. Absent joints (confidence 0, or all-zero 3D points) and absent
people stay exactly zero, so the model sees the same padding in training and in a live stream.

- ``person_centric``: each frame is centred on a torso joint, and each person's window is
  divided by their median torso length, so the model is invariant to where the person stands
  and how far they are from the camera.
- ``kinetics``: the original Kinetics-skeleton preprocessing (x, y minus 0.5).
- ``none``: identity (data already normalised on disk).

The arithmetic is written once, in torch, so the same code normalises training samples (numpy
arrays in DataLoader workers: numpy in, numpy out) and serving batches (tensors on the GPU).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, TypeVar, Union

import numpy as np
import torch

from .graph import Layout, get_layout

Array = Union[np.ndarray, torch.Tensor]
F = TypeVar("F", bound=Callable)

# Per layout: center joint, then (a, b-pair) for the torso length: |joint a - mean(pair)|,
# and a fallback pair whose distance (times a ratio) stands in when the torso is not visible.
_TORSO = {
    "openpose": dict(center=1, top=1, bottom=(8, 11), fallback=(2, 5), ratio=1.6),
    "kinect-v1": dict(center=3, top=1, bottom=(3, 3), fallback=(4, 8), ratio=1.3),
    "ntu-rgb+d": dict(center=0, top=20, bottom=(0, 0), fallback=(4, 8), ratio=1.3),
}


def _tensor(x: Array) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.float()
    return torch.from_numpy(np.asarray(x, dtype=np.float32))


def _numpy_in_numpy_out(fn: F) -> F:
    """Numpy arguments in, numpy results out; tensors stay tensors (on their device)."""

    def back(v):
        if isinstance(v, torch.Tensor):
            return v.numpy()
        if isinstance(v, Params):
            return Params(v.center.numpy(), v.scale.numpy())
        if isinstance(v, tuple):
            return tuple(back(u) for u in v)
        return v

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        as_numpy = any(isinstance(a, np.ndarray) for a in (*args, *kwargs.values()))
        args = tuple(_tensor(a) if isinstance(a, np.ndarray) else a for a in args)
        kwargs = {k: _tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        out = fn(self, *args, **kwargs)
        return back(out) if as_numpy else out

    return wrapper  # type: ignore[return-value]


def nanmedian(x: torch.Tensor, dim: int) -> torch.Tensor:
    """numpy's ``nanmedian``: the mean of the two middle non-NaN values, NaN where all are NaN.

    Written with a sort and a gather (``torch.nanmedian`` takes the lower middle value, and
    ``torch.nanquantile`` does not compile).
    """
    valid = ~torch.isnan(x)
    n = valid.sum(dim=dim, keepdim=True)
    ordered = torch.sort(torch.where(valid, x, torch.inf), dim=dim).values  # NaNs last
    lo = torch.gather(ordered, dim, ((n - 1) // 2).clamp(min=0))
    hi = torch.gather(ordered, dim, (n // 2).clamp(min=0, max=x.shape[dim] - 1))
    return torch.where(n > 0, (lo + hi) / 2, torch.nan).squeeze(dim)


def present_mask(x: torch.Tensor, has_confidence: bool) -> torch.Tensor:
    """Boolean ``(..., T, V, M)`` mask of joints that are present."""
    if has_confidence:
        return x[..., -1, :, :, :] > 0
    return (x != 0).any(dim=-4)


@dataclass
class Params:
    """What a transform did to one window, so a predicted frame can be mapped back."""

    center: Array  # (..., D, T, M) per-frame center in raw units
    scale: Array  # (..., M) per-person scale in raw units


class Transform:
    """Base: identity. Subclasses override :meth:`params`."""

    name = "none"

    def __init__(self, layout: str | dict | Layout = "openpose", has_confidence: bool | None = None,
                 drop_joints: tuple[int, ...] = ()) -> None:
        self.layout = get_layout(layout)
        self.has_confidence = self.layout.dims == 2 if has_confidence is None else has_confidence
        self.drop_joints = tuple(int(j) for j in drop_joints)

    @property
    def coords(self) -> int:
        return self.layout.dims

    def params(self, x: torch.Tensor) -> Params:
        shape = x.shape
        lead = shape[:-4]
        center = x.new_zeros(lead + (self.coords, shape[-3], shape[-1]))
        return Params(center, x.new_ones(lead + (shape[-1],)))

    def __call__(self, x: Array) -> Array:
        return self.apply(x)[0]

    @_numpy_in_numpy_out
    def apply(self, x: Array) -> tuple[Array, Params]:
        """Normalise ``x`` (..., C, T, V, M); returns a new float32 array and the parameters."""
        x = x.clone()
        for j in self.drop_joints:  # joints the model never saw (e.g. face joints absent from its training data)
            x[..., j, :] = 0.0
        p = self.params(x)
        mask = present_mask(x, self.has_confidence)[..., None, :, :, :]
        d = self.coords
        coords = (x[..., :d, :, :, :] - p.center[..., :, :, None, :]) / p.scale[..., None, None, None, :]
        x[..., :d, :, :, :] = torch.where(mask, coords, 0.0)
        return x, p

    @_numpy_in_numpy_out
    def prepare(self, raw: Array, next_frame: Array | None = None, history: int = 2
                ) -> tuple[Array, Array, Params, Array | None]:
        """Everything the model reads for a raw window ``(..., C, T, V, M)`` ending at frame t.

        Returns the normalised window, its last ``history`` frames in *window-local* coordinates
        (one translation, the center of frame t, and the window's scale, so motion of the
        whole body is kept), the parameters, and ``next_frame`` in the same local coordinates
        when given: frame t+1 ``(..., C, V, M)`` or frames t+1..t+H ``(..., C, H, V, M)``, the
        predictor's target.
        """
        x, p = self.apply(raw)
        ref = p.center[..., :, -1, :]
        recent = self._frames_to_local(raw[..., :, -history:, :, :], ref, p.scale)
        target = None
        if next_frame is not None:
            several = next_frame.dim() == raw.dim()  # frames t+1..t+H
            target = (self._frames_to_local if several else self.to_local)(next_frame, ref, p.scale)
        return x, recent, p, target

    def _frames_to_local(self, frames: torch.Tensor, center: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """:meth:`to_local` of frames ``(..., C, K, V, M)`` at once (one center and scale for all)."""
        return self.to_local(frames.movedim(-3, -4), center[..., None, :, :], scale[..., None, :]).movedim(-4, -3)

    def _frame_mask(self, frame: torch.Tensor) -> torch.Tensor:
        if self.has_confidence:
            return frame[..., -1:, :, :] > 0
        return (frame != 0).any(dim=-3, keepdim=True)

    @_numpy_in_numpy_out
    def to_local(self, frame: Array, center: Array, scale: Array) -> Array:
        """Raw frame ``(..., C, V, M)`` to local units: minus a ``(..., D, M)`` center, over the scale."""
        out = frame.clone()
        d = self.coords
        local = (frame[..., :d, :, :] - center[..., :, None, :]) / scale[..., None, None, :]
        out[..., :d, :, :] = torch.where(self._frame_mask(frame), local, 0.0)
        return out

    @_numpy_in_numpy_out
    def inverse_frame(self, frame: Array, center: Array, scale: Array) -> Array:
        """Local frame ``(..., C, V, M)`` back to raw units (the inverse of :meth:`to_local`)."""
        out = frame.clone()
        d = self.coords
        raw = frame[..., :d, :, :] * scale[..., None, None, :] + center[..., :, None, :]
        out[..., :d, :, :] = torch.where(self._frame_mask(frame), raw, 0.0)
        return out

    def config(self) -> dict:
        cfg: dict = {"name": self.name}
        if self.drop_joints:
            cfg["drop_joints"] = list(self.drop_joints)
        return cfg


class KineticsTransform(Transform):
    """The original Kinetics-skeleton preprocessing: x, y minus 0.5, absent joints zero."""

    name = "kinetics"

    def params(self, x: torch.Tensor) -> Params:
        p = super().params(x)
        p.center.fill_(0.5)
        return p


class PersonCentric(Transform):
    """Centre every frame on a torso joint and divide by the person's median torso length."""

    name = "person_centric"

    def __init__(self, layout: str | dict | Layout = "openpose", has_confidence: bool | None = None,
                 drop_joints: tuple[int, ...] = (), center: int | None = None, min_scale: float = 1e-3) -> None:
        super().__init__(layout, has_confidence, drop_joints)
        spec = dict(_TORSO.get(self.layout.name, dict(center=self.layout.center, top=self.layout.center,
                                                      bottom=None, fallback=None, ratio=1.0)))
        if center is not None:
            spec["center"] = center
        self.spec = spec
        self.min_scale = min_scale

    def params(self, x: torch.Tensor) -> Params:
        d, s = self.coords, self.spec
        pts = x[..., :d, :, :, :].movedim(-4, -1)  # (..., T, V, M, D)
        present = present_mask(x, self.has_confidence)  # (..., T, V, M)

        # Per-frame center: the center joint, else the mean of the present joints.
        c_ok = present[..., s["center"], :]
        n = present.sum(dim=-2)
        mean = (pts * present[..., None]).sum(dim=-3) / n.clamp(min=1)[..., None]
        center = torch.where(c_ok[..., None], pts[..., s["center"], :, :], mean)  # (..., T, M, D)
        return Params(center.movedim(-1, -3).contiguous(), self._scale(pts, present))

    def _scale(self, pts: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        s = self.spec
        lengths = []
        if s["bottom"] is not None:
            a, (b0, b1) = s["top"], s["bottom"]
            ok = present[..., a, :] & present[..., b0, :] & present[..., b1, :]
            length = torch.linalg.vector_norm(pts[..., a, :, :] - 0.5 * (pts[..., b0, :, :] + pts[..., b1, :, :]), dim=-1)
            lengths.append(length.masked_fill(~ok, float("nan")))
        if s["fallback"] is not None:
            f0, f1 = s["fallback"]
            ok = present[..., f0, :] & present[..., f1, :]
            length = s["ratio"] * torch.linalg.vector_norm(pts[..., f0, :, :] - pts[..., f1, :, :], dim=-1)
            lengths.append(length.masked_fill(~ok, float("nan")))
        if not lengths:
            return pts.new_ones(pts.shape[:-4] + (pts.shape[-2],))
        # Median over frames of the torso length (NaN where never visible); fall back to the
        # shoulder-based estimate, then to 1.
        est = [nanmedian(length, dim=-2) for length in lengths]
        scale = est[0]
        for alt in est[1:]:
            scale = torch.where(torch.isfinite(scale) & (scale > self.min_scale), scale, alt)
        return torch.where(torch.isfinite(scale) & (scale > self.min_scale), scale, 1.0)


TRANSFORMS = {"none": Transform, "kinetics": KineticsTransform, "person_centric": PersonCentric}


def build_transform(cfg: str | dict | None, layout: str | dict | Layout = "openpose") -> Transform:
    """Build a transform from a name or ``{"name": ..., **kwargs}`` (``None`` means identity)."""
    if cfg is None:
        cfg = "none"
    if isinstance(cfg, str):
        cfg = {"name": cfg}
    cfg = dict(cfg)
    name = cfg.pop("name")
    if name not in TRANSFORMS:
        raise ValueError(f"unknown normalisation {name!r}; known: {sorted(TRANSFORMS)}")
    return TRANSFORMS[name](layout, **cfg)

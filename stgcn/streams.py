"""Input streams (joint, bone, joint motion, bone motion) and the network that fuses them.

The multi-stream practice of 2s-AGCN, MS-G3D and PYSKL: the same network is trained on four
views of one normalised skeleton sequence and the class probabilities are averaged. The views
are computed inside the model from the one normalised input, so training, eval, serving and
ONNX export all see the same transform:

- ``bone``: each joint minus its parent, the parent being the neighbour one step nearer the
  layout's center joint (the center's own bone is zero);
- ``*_motion``: each frame minus the frame before (backward difference: the newest frame's motion
  is known as soon as it arrives; the first frame's is zero).

With a confidence channel (2D layouts) a bone or motion value is kept only where both joints
(or both frames) are present, and its confidence is the smaller of the two.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable

import torch
from torch import nn

from .graph import Layout, get_layout
from .model import first_frames

STREAMS = ("joint", "bone", "joint_motion", "bone_motion")


def parents(layout: str | dict | Layout) -> list[int]:
    """Each joint's parent: its neighbour one edge nearer the center joint (the center: itself)."""
    lay = get_layout(layout)
    adj: dict[int, list[int]] = {v: [] for v in range(lay.num_node)}
    for a, b in lay.edges:
        adj[a].append(b)
        adj[b].append(a)
    parent = list(range(lay.num_node))
    seen, todo = {lay.center}, deque([lay.center])
    while todo:
        v = todo.popleft()
        for w in sorted(adj[v]):
            if w not in seen:
                seen.add(w)
                parent[w] = v
                todo.append(w)
    return parent


def _pairwise(a: torch.Tensor, b: torch.Tensor, coords: int) -> torch.Tensor:
    """``a - b`` on the coordinates; with a confidence channel, zero unless both are present."""
    diff = a[:, :coords] - b[:, :coords]
    if a.shape[1] == coords:
        return diff
    conf = torch.minimum(a[:, coords:], b[:, coords:])
    return torch.cat([diff * (conf > 0).to(diff.dtype), conf], dim=1)


def bone(x: torch.Tensor, parent: list[int] | torch.Tensor, coords: int) -> torch.Tensor:
    """Bones of ``(N, C, T, V, M)`` joints (the first ``coords`` channels are coordinates)."""
    return _pairwise(x, x[:, :, :, parent], coords)


def motion(x: torch.Tensor, coords: int) -> torch.Tensor:
    """Backward frame differences of ``(N, C, T, V, M)``; the first frame's are zero."""
    d = _pairwise(x[:, :, 1:], x[:, :, :-1], coords)
    return torch.cat([torch.zeros_like(x[:, :, :1]), d], dim=2)


def stream_input(x: torch.Tensor, name: str, parent: list[int] | torch.Tensor, coords: int) -> torch.Tensor:
    """The view ``name`` (one of :data:`STREAMS`) of normalised joints ``x``."""
    if name == "joint":
        return x
    if name == "bone":
        return bone(x, parent, coords)
    if name == "joint_motion":
        return motion(x, coords)
    if name == "bone_motion":
        return motion(bone(x, parent, coords), coords)
    raise ValueError(f"unknown input stream {name!r}; streams are {', '.join(STREAMS)}")


def fuse(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Streams' logits ``(S, N, K)`` -> the log of their ``weights``-averaged probabilities."""
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.log(torch.einsum("s,snk->nk", weights, probs).clamp_min(1e-12))


def check_streams(names: Iterable[str]) -> list[str]:
    """``names`` as a list, each a known stream, no repeats; one line naming the first bad one."""
    names = list(names)
    for n in names:
        if n not in STREAMS:
            raise ValueError(f"unknown input stream {n!r}; streams are {', '.join(STREAMS)}")
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"streams {names}: give each of {', '.join(STREAMS)} at most once, at least one")
    return names


class MultiStream(nn.Module):
    """One network per input stream; eval output is the log of the weighted mean probability.

    ``forward(x)`` in eval mode returns ``log(sum_i w_i softmax(logits_i))`` (weights sum to 1), so
    a softmax of it is the ensemble's probability and argmax/cross-entropy work unchanged. In
    training mode it returns each stream's logits stacked ``(S, N, K)``, so each stream learns from
    its own loss. ``forward(x, recent)`` also returns the next frame from the first stream's
    predictor head (the joint stream's: it predicts joints); in training mode only that stream runs.
    """

    def __init__(self, nets: dict[str, nn.Module], parent: list[int], coords: int,
                 weights: list[float] | None = None) -> None:
        super().__init__()
        self.names = check_streams(nets)
        self.nets = nn.ModuleDict(nets)
        self.coords = int(coords)
        w = torch.tensor(weights if weights is not None else [1.0] * len(self.names), dtype=torch.float32)
        if w.shape != (len(self.names),) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"stream weights {weights}: one non-negative weight per stream, not all zero")
        self.register_buffer("weights", w / w.sum(), persistent=False)
        # on the model's device: a list index would be copied from the host on every call (and
        # cannot be inside a CUDA graph)
        self.register_buffer("parent_index", torch.tensor(list(parent), dtype=torch.long), persistent=False)
        self.causal = any(getattr(net, "causal", False) for net in self.nets.values())  # pools from first frames

    @property
    def first(self) -> nn.Module:
        return self.nets[self.names[0]]

    @property
    def A(self) -> torch.Tensor:  # noqa: N802 - the graph every stream shares, as on STGCN
        return self.first.A

    @property
    def predictor(self) -> nn.Module | None:
        return self.first.predictor

    @property
    def data_bn(self) -> nn.Module:
        return self.first.data_bn

    def forward(self, x: torch.Tensor, recent: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.training and recent is not None:
            return self.first(stream_input(x, self.names[0], self.parent_index, self.coords), recent)
        logits, pred = [], None
        # each slot's first frame, from the joints (a motion stream's first frame is zero motion)
        first = first_frames(x) if self.causal else None
        for i, name in enumerate(self.names):
            xi = stream_input(x, name, self.parent_index, self.coords)
            if i == 0 and recent is not None:
                out, pred = self.first(xi, recent, first=first)
            else:
                out = self.nets[name](xi, first=first)
            logits.append(out)
        stacked = torch.stack(logits)
        if self.training:
            return stacked
        fused = fuse(stacked, self.weights)
        return fused if recent is None else (fused, pred)

    def mapped(self, fn: Callable[[nn.Module], nn.Module], names: Iterable[str] | None = None) -> "MultiStream":
        """The ensemble of ``fn(net)`` for the streams ``names`` (default all; weights renormalised),
        e.g. the GPU-folded networks, or fewer streams for a cheaper serving choice."""
        names = self.names if names is None else check_streams(names)
        missing = [n for n in names if n not in self.names]
        if missing:
            raise ValueError(f"streams {missing} are not in this model (it has {', '.join(self.names)})")
        w = [float(self.weights[self.names.index(n)]) for n in names]
        out = MultiStream({n: fn(self.nets[n]) for n in names}, self.parent_index.tolist(), self.coords, w)
        return out.to(self.weights.device).train(self.training)


def select_streams(model: nn.Module, names: Iterable[str] | None) -> nn.Module:
    """A loaded checkpoint's model (with its ``config``) run through the input streams ``names``
    only; ``None`` or all of its streams: the model itself."""
    have = list(model.config["model"].get("streams") or ["joint"])
    if names is None or list(names) == have:
        return model
    if not isinstance(model, MultiStream):
        raise ValueError(f"a single-stream (joint) model cannot serve streams {list(names)}")
    sub = model.mapped(lambda net: net, names)
    model_cfg = {**model.config["model"], "streams": list(names)}
    if "stream_weights" in model_cfg:
        model_cfg["stream_weights"] = [float(w) for w in sub.weights]
    sub.config = {**model.config, "model": model_cfg}
    return sub

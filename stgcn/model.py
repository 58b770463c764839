"""The ST-GCN network, layer for layer the original, plus an optional next-frame predictor head.

State-dict keys match the original release (``data_bn``, ``st_gcn_networks.i.gcn.conv``,
``.tcn.0/2/3``, ``.residual.0/1``, ``edge_importance.i``, ``fcn``, buffer ``A``), so the
published checkpoints load with strict key matching. The predictor head lives under
``predictor.*`` and exists only when asked for.

``temporal_padding="causal"`` pads each temporal convolution with 8 past frames instead of 4 on
each side: every output then reads only frames up to its own, so the newest output is about the
newest frame. Same weights and keys; the continual form of a causal network answers without the
76-frame delay of the centred one (``stgcn/continual.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .graph import Graph
from .graph_product import graph_product
from .predictor import present

BLOCKS = ((64, 1), (64, 1), (64, 1), (64, 1), (128, 2), (128, 1), (128, 1), (256, 2), (256, 1), (256, 1))


class ConvTemporalGraphical(nn.Module):
    """Graph convolution: a 1x1 conv to K partitions, then aggregation over the adjacency."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(in_channels, out_channels * kernel_size, kernel_size=1)

    def forward(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        if x.stride(1) == 1 and x.shape[1] > 1:
            # NHWC (channels-last): each frame's (V*K, C) block is contiguous, so the aggregation is
            # the adjacency applied to every frame's block (stgcn.graph_product), giving NHWC again.
            # The conv's bias goes in after the aggregation, as its sum over each joint's neighbours.
            y = F.conv2d(x, self.conv.weight)
            n, kc, t, v = y.shape
            c, w = kc // k, A.shape[2]
            y = y.permute(0, 2, 3, 1).reshape(n * t, v * k, c)
            a = A.permute(2, 1, 0).reshape(w, v * k)
            bias = A.sum(1).t() @ self.conv.bias.view(k, c)
            out = graph_product(a.to(y.dtype), y, bias.to(y.dtype))
            return out.view(n, t, w, c).permute(0, 3, 1, 2)
        x = self.conv(x)
        n, kc, t, v = x.shape
        return torch.einsum("nkctv,kvw->nctw", x.view(n, k, kc // k, t, v), A)


PADDINGS = ("centred", "causal")
PREDICTOR_BASES = ("last", "linear")  # what the decoder's offsets add to: the last frame, or a filter of the last steps
# The filter's weights are this many times its parameters, so at the backbone's learning rate they
# move 100 times faster: steps are hundredths of a torso, and plain weights were still near zero
# after two epochs where they should reach about 1.
FILTER_GAIN = 10.0


def first_frames(x: torch.Tensor) -> torch.Tensor:
    """Each person slot's first frame with any joint in ``x`` ``(N, C, T, V, M)`` (a short clip is
    right-aligned in its window, zeros before it); T for an empty slot. ``(N, M)``."""
    present = x.abs().amax(dim=(1, 3)) > 0  # (N, T, M)
    return torch.where(present.any(dim=1), present.int().argmax(dim=1), x.shape[2])


def pool_since_start(per_time: torch.Tensor, first: torch.Tensor, stride: int) -> torch.Tensor:
    """The mean over time of a causal network's outputs ``per_time`` ``(N, M, C, T')``, counting
    only the outputs from each person slot's ``first`` frame on (output i ends at frame
    ``i * stride``, the network's total temporal stride): the outputs over the zeros before a short
    clip read nothing of it and would dilute it; these are the outputs the continual state keeps
    (it starts at the person's first frame). A slot with no frame keeps every output (an empty
    slot's constant)."""
    newest = torch.arange(per_time.shape[-1], device=per_time.device) * stride  # each output's newest frame
    valid = newest[None, None] >= first[..., None]  # (N, M, T')
    valid = valid | ~valid.any(dim=-1, keepdim=True)
    w = valid.to(per_time.dtype)
    return (per_time * w[:, :, None]).sum(dim=-1) / w.sum(dim=-1)[:, :, None]


class TemporalConv(nn.Conv2d):
    """A block's ``(k, 1)`` temporal convolution, zero-padded on both sides (the original) or by
    ``k - 1`` frames before only (``causal``): the same module and keys either way."""

    def __init__(self, channels: int, kernel: int, stride: int, causal: bool = False) -> None:
        super().__init__(channels, channels, (kernel, 1), (stride, 1), (0 if causal else (kernel - 1) // 2, 0))
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal:
            x = F.pad(x, (0, 0, self.kernel_size[0] - 1, 0))
        return super().forward(x)


class STGCNBlock(nn.Module):
    """Spatial graph conv, temporal conv (9x1), residual; as ``st_gcn`` in the original."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], stride: int = 1,
                 dropout: float = 0.0, residual: bool = True, causal: bool = False) -> None:
        super().__init__()
        t_kernel, k = kernel_size
        self.gcn = ConvTemporalGraphical(in_channels, out_channels, k)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            TemporalConv(out_channels, t_kernel, stride, causal),
            nn.BatchNorm2d(out_channels),
            nn.Dropout(dropout, inplace=True),
        )
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        res = 0 if self.residual is None else self.residual(x)
        x = self.tcn(self.gcn(x, A)) + res
        return self.relu(x)


class NextFramePredictor(nn.Module):
    """Decodes the coming frames as offsets from frame t, per joint and person.

    Reads the backbone's features at the last time step (a receptive field over the recent
    past of the whole body) plus the last ``history`` frames in window-local coordinates (the
    last position and its displacement from each earlier frame: enough to smooth a noisy
    track or extrapolate a smooth one), through a small per-joint MLP shared by the joints.
    It outputs ``horizon`` frames t+1..t+H as offsets from frame t; confidence channels are
    carried over from frame t. ``history=2, horizon=1`` is the original next-frame head.

    ``base="linear"`` adds to those offsets a linear filter of each joint's last ``history - 1``
    steps (one weight per step and frame ahead, shared by joints and coordinates, learned; a
    step with an absent end counts as still), scaled per joint and frame ahead by a gate in
    (0, 2) that the MLP also outputs (1 at the start). The filter learns how far motion carries
    on at the data's frame rate (on smooth tracks most of the predictable part:
    docs/prediction.md); the gate lets a jittery track, whose steps are mostly noise, extrapolate
    less than a smooth one; the MLP adds what the body tells. It starts at zero velocity.
    """

    def __init__(self, feat_channels: int, in_channels: int, coords: int, hidden: int = 128,
                 step: float = 0.02, horizon: int = 1, history: int = 2, base: str = "last") -> None:
        super().__init__()
        if horizon < 1 or history < 2:
            raise ValueError(f"predictor horizon {horizon} must be >= 1 and history {history} >= 2")
        if base not in PREDICTOR_BASES:
            raise ValueError(f"predictor base {base!r}: expected one of {', '.join(PREDICTOR_BASES)}")
        self.coords, self.horizon, self.history = coords, int(horizon), int(history)
        # Frame-to-frame motion is a few hundredths of the input's scale: outputs are scaled so
        # that the head trains at the backbone's learning rate (h frames ahead: h steps).
        self.register_buffer("step", step * torch.arange(1, self.horizon + 1, dtype=torch.float32), persistent=False)
        width = feat_channels + history * in_channels
        self.net = nn.Sequential(
            nn.BatchNorm1d(width),  # features and coordinates on one scale
            nn.Conv1d(width, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv1d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv1d(hidden, (coords + (base == "linear")) * self.horizon, 1),  # offsets [, gates]
        )
        nn.init.zeros_(self.net[-1].weight)  # start at the zero-velocity baseline
        nn.init.zeros_(self.net[-1].bias)
        self.filter = None
        if base == "linear":  # (H, K-1): frame t+h's offset per step, newest step first, over FILTER_GAIN
            self.filter = nn.Parameter(torch.zeros(self.horizon, self.history - 1))

    def forward(self, feat: torch.Tensor, recent: torch.Tensor) -> torch.Tensor:
        """``feat`` (N*M, F, V) and ``recent`` (N, C, K, V, M), K >= ``history`` -> the next frame
        (N, C, V, M), or the next ``horizon`` frames (N, C, H, V, M) when it is above 1."""
        recent = recent[:, :, -self.history:]
        n, c, k, v, m = recent.shape
        last = recent[:, :, -1]
        moves = last[:, :, None] - recent[:, :, :-1]  # (N, C, K-1, V, M): displacement since each frame
        r = torch.cat([last[:, :, None], moves], dim=2).permute(0, 4, 2, 1, 3).reshape(n * m, k * c, v)
        raw = self.net(torch.cat([feat, r.to(feat.dtype)], dim=1))  # (N*M, H*(coords [+ 1]), V)
        raw = raw.view(n, m, self.horizon, -1, v).permute(0, 3, 2, 4, 1).to(last.dtype)  # (N, coords [+1], H, V, M)
        delta = raw[:, : self.coords] * self.step.to(last.dtype)[:, None, None]
        if self.filter is not None:
            delta = delta + 2 * torch.sigmoid(raw[:, self.coords:]) * self.extrapolate(recent)
        here = present(last, self.coords)[:, None, None]  # (N, 1, 1, V, M)
        out = last[:, :, None].repeat(1, 1, self.horizon, 1, 1)
        moved = last[:, : self.coords, None] + delta
        out[:, : self.coords] = torch.where(here, moved, out[:, : self.coords])
        return out[:, :, 0] if self.horizon == 1 else out

    def extrapolate(self, recent: torch.Tensor) -> torch.Tensor:
        """The linear filter's offsets ``(N, coords, H, V, M)`` from the last ``history`` frames."""
        seen = present(recent.movedim(1, 2), self.coords)  # (N, K, V, M)
        steps = recent[:, : self.coords, 1:] - recent[:, : self.coords, :-1]
        steps = (steps * (seen[:, 1:] & seen[:, :-1])[:, None]).flip(2)  # (N, coords, K-1, V, M), newest first
        return torch.einsum("nckvm,hk->nchvm", steps, FILTER_GAIN * self.filter.to(steps.dtype))


class STGCN(nn.Module):
    """Spatial temporal graph convolutional network (Yan et al., AAAI 2018).

    Input ``(N, C, T, V, M)``; ``forward(x)`` returns logits ``(N, num_class)``;
    ``forward(x, recent)`` with the last frames in local coordinates ``(N, C, K, V, M)`` (K at
    least ``predictor_history``) also returns the predicted next frame ``(N, C, V, M)``, or the
    next ``predictor_horizon`` frames ``(N, C, H, V, M)`` when it is above 1.
    """

    def __init__(self, in_channels: int = 3, num_class: int = 400, graph_args: dict | None = None,
                 edge_importance_weighting: bool = True, dropout: float = 0.0,
                 predictor: bool = False, coords: int | None = None, predictor_hidden: int = 128,
                 predictor_detach: bool = False, predictor_horizon: int = 1, predictor_history: int = 2,
                 temporal_padding: str = "centred", predictor_base: str = "last") -> None:
        super().__init__()
        if temporal_padding not in PADDINGS:
            raise ValueError(f"temporal_padding {temporal_padding!r}: expected one of {', '.join(PADDINGS)}")
        self.causal = temporal_padding == "causal"
        graph_args = dict(graph_args or {"layout": "openpose", "strategy": "spatial"})
        self.graph = Graph(**graph_args)
        self.register_buffer("A", torch.tensor(self.graph.A, dtype=torch.float32))
        k, v = self.A.shape[0], self.A.shape[1]
        kernel_size = (9, k)
        self.data_bn = nn.BatchNorm1d(in_channels * v)
        layers, c_in = [], in_channels
        for i, (c_out, stride) in enumerate(BLOCKS):
            layers.append(STGCNBlock(c_in, c_out, kernel_size, stride,
                                     dropout=0.0 if i == 0 else dropout, residual=i != 0, causal=self.causal))
            c_in = c_out
        self.st_gcn_networks = nn.ModuleList(layers)
        self.time_stride = math.prod(stride for _, stride in BLOCKS)  # input frames per output of the last block
        if edge_importance_weighting:
            self.edge_importance = nn.ParameterList([nn.Parameter(torch.ones(self.A.shape)) for _ in layers])
        else:
            self.edge_importance = [1.0] * len(layers)
        self.fcn = nn.Conv2d(c_in, num_class, kernel_size=1)
        self.predictor = None
        self.predictor_detach = predictor_detach  # train the head on the classifier's features, not into them
        if predictor:
            coords = coords if coords is not None else in_channels
            self.predictor = NextFramePredictor(c_in, in_channels, coords, predictor_hidden,
                                                horizon=predictor_horizon, history=predictor_history,
                                                base=predictor_base)

    @property
    def channels_last(self) -> bool:
        """Whether ``model.to(memory_format=torch.channels_last)`` put the network in NHWC (training on GPUs)."""
        return self.st_gcn_networks[0].tcn[2].weight.stride(1) == 1

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone feature map ``(N*M, 256, T', V)``."""
        n, c, t, v, m = x.shape
        x = x.permute(0, 4, 3, 1, 2).contiguous().view(n * m, v * c, t)
        x = self.data_bn(x)
        x = x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).contiguous().view(n * m, c, t, v)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for block, importance in zip(self.st_gcn_networks, self.edge_importance):
            x = block(x, self.A * importance)
        return x

    def forward(self, x: torch.Tensor, recent: torch.Tensor | None = None, first: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``first``: each slot's first frame (:func:`first_frames`, default from ``x``; a derived
        input stream such as motion passes the joints')."""
        n, m = x.shape[0], x.shape[-1]
        feat = self.features(x)
        if self.causal:
            per_time = feat.mean(dim=3).view(n, m, feat.shape[1], feat.shape[2])
            first = first_frames(x) if first is None else first
            pooled = pool_since_start(per_time, first, self.time_stride).mean(dim=1).view(n, -1, 1, 1)
        else:
            pooled = F.avg_pool2d(feat, feat.shape[2:]).view(n, m, -1, 1, 1).mean(dim=1)
        logits = self.fcn(pooled).view(n, -1)
        if recent is None:
            return logits
        if self.predictor is None:
            raise RuntimeError("this model has no next-frame predictor head")
        last = feat[:, :, -1]
        return logits, self.predictor(last.detach() if self.predictor_detach else last, recent)

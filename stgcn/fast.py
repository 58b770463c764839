"""Inference-only ST-GCN: the same weights, rearranged for GPU throughput.

``FastSTGCN`` computes exactly the eval-mode function of an :class:`~stgcn.model.STGCN`:

- every BatchNorm is folded into the convolution before it (the graph BN into the graph
  convolution's weights and a per-joint bias, the residual BN into the residual conv);
- activations are joint-major and channels-last, ``(V, N*M, T, C)`` in memory. Then the
  graph convolution is one plain matrix product ``(V*N*M*T, C_in) @ (C_in, K*C)``, and the
  aggregation over joints one more, by the ``(V, K*V)`` adjacency, with the graph bias and
  ReLU (:mod:`stgcn.aggregate`, one Triton kernel on CUDA): no permutes, no copies, no
  batched tiny matrices; the temporal convolution sees an NHWC tensor ``(V, C, N*M, T)`` and
  a (1, 9) kernel;
- on CUDA the temporal convolution, its bias, the residual and the ReLU are one cuDNN call
  (``cudnn_convolution_add_relu``);
- weights are cast once to fp16 (or bf16); pooling, the classifier and the outputs are float32.

:class:`GraphedEngine` wraps a whole serving step (normalisation, model, softmax, the
predicted frame back to raw units) in CUDA graphs captured for a few fixed batch sizes,
fed from pinned host buffers.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .aggregate import aggregate
from .model import STGCN, STGCNBlock, first_frames, pool_since_start
from .streams import MultiStream

GRAPH_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _bn_affine(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``x * scale + shift``."""
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def _conv_add_relu(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, z: torch.Tensor | None,
                   stride: int, pad: int) -> torch.Tensor:
    """``relu(conv(x) + bias + z)``: one cuDNN call on CUDA."""
    if x.is_cuda:
        args = ((1, stride), (0, pad), (1, 1), 1)
        if z is None:
            return torch.cudnn_convolution_relu(x, w, bias, *args)
        return torch.cudnn_convolution_add_relu(x, w, z, 1.0, bias, *args)
    out = F.conv2d(x, w, bias, stride=(1, stride), padding=(0, pad))
    return torch.relu(out if z is None else out + z)


class FastBlock(nn.Module):
    """One ST-GCN block with its BatchNorms folded; activations ``(V, N*M, T, C)``."""

    def __init__(self, block: STGCNBlock, A: torch.Tensor, dtype: torch.dtype) -> None:
        super().__init__()
        A = A.double()  # (K, V, V), edge importance applied
        k, v, _ = A.shape
        conv = block.gcn.conv
        c = conv.out_channels // k
        s1, h1 = _bn_affine(block.tcn[0])
        w = conv.weight.double()[:, :, 0, 0].view(k, c, -1) * s1[None, :, None]  # (K, C, C_in)
        self.k, self.c = k, c
        self.register_buffer("w_gcn", w.permute(2, 0, 1).reshape(-1, k * c).to(dtype).contiguous())  # (C_in, K*C)
        b = conv.bias.double().view(k, c) if conv.bias is not None else torch.zeros(k, c, dtype=torch.float64)
        bias = s1[None, :] * torch.einsum("kc,kw->wc", b, A.sum(dim=1)) + h1[None, :]  # (W, C)
        self.register_buffer("b_gcn", bias.float())
        # Rows (k, v) of the stacked conv outputs, aggregated to joint w: a2[w, k*V + v] = A[k, v, w].
        self.register_buffer("a2", A.permute(2, 0, 1).reshape(v, k * v).to(dtype).contiguous())
        tconv = block.tcn[2]
        s2, h2 = _bn_affine(block.tcn[3])
        self.stride, self.pad = tconv.stride[0], tconv.padding[0]
        # a causal convolution's zero frames before each sequence, written by the aggregation
        self.before = tconv.kernel_size[0] - 1 if tconv.causal else 0
        w_tcn = tconv.weight.double() * s2[:, None, None, None]
        b_tcn = tconv.bias.double() * s2 + h2
        self.residual = "none" if block.residual is None else (
            "identity" if isinstance(block.residual, nn.Identity) else "conv")
        if self.residual == "conv":
            rconv, rbn = block.residual
            sr, hr = _bn_affine(rbn)
            w_res = (rconv.weight.double() * sr[:, None, None, None]).transpose(2, 3)
            self.register_buffer("w_res", w_res.to(dtype).contiguous(memory_format=torch.channels_last))
            b_tcn = b_tcn + rconv.bias.double() * sr + hr  # one bias for both branches
        self.register_buffer("w_tcn", w_tcn.transpose(2, 3).to(dtype).contiguous(memory_format=torch.channels_last))
        self.register_buffer("b_tcn", b_tcn.to(dtype))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        v, nm, t, c_in = h.shape
        y = torch.mm(h.view(v * nm * t, c_in), self.w_gcn)  # (V*N*M*T, K*C)
        g = aggregate(self.a2, y, self.b_gcn, self.k, t, self.before)  # (W, N*M*(T+before)*C)
        # NHWC views (V, C, N*M, T): the temporal conv is a (1, 9) kernel along T.
        g = g.view(v, nm, t + self.before, self.c).permute(0, 3, 1, 2)
        x = h.permute(0, 3, 1, 2)
        z = {"none": None, "identity": x}.get(self.residual)
        if self.residual == "conv":
            z = F.conv2d(x, self.w_res, None, stride=(1, self.stride))
        out = _conv_add_relu(g, self.w_tcn, self.b_tcn, z, self.stride, self.pad)
        return out.permute(0, 2, 3, 1).contiguous()  # a view when cuDNN kept NHWC


class FastSTGCN(nn.Module):
    """The eval-mode function of ``model`` (logits, and the next frame with a predictor head)."""

    @torch.no_grad()
    def __init__(self, model: STGCN, dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        model = model.eval()
        self.dtype = dtype
        v = model.A.shape[-1]
        s, h = _bn_affine(model.data_bn)  # channels indexed v * C + c
        c = s.numel() // v
        self.register_buffer("in_scale", s.view(v, c).t().contiguous().view(1, c, 1, v, 1).float())
        self.register_buffer("in_shift", h.view(v, c).t().contiguous().view(1, c, 1, v, 1).float())
        self.blocks = nn.ModuleList(FastBlock(block, model.A * imp, dtype)
                                    for block, imp in zip(model.st_gcn_networks, model.edge_importance))
        self.causal, self.time_stride = model.causal, model.time_stride
        self.fcn = nn.Linear(model.fcn.in_channels, model.fcn.out_channels).to(model.A.device)
        self.fcn.weight.copy_(model.fcn.weight[:, :, 0, 0])
        self.fcn.bias.copy_(model.fcn.bias)
        self.predictor = None
        if model.predictor is not None:
            self.predictor = copy.deepcopy(model.predictor).eval().to(dtype)
        self.requires_grad_(False)  # inference only

    def forward(self, x: torch.Tensor, recent: torch.Tensor | None = None, first: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x`` float32 ``(N, C, T, V, M)``; returns float32 logits (and next frame); ``first`` as
        in :meth:`STGCN.forward`."""
        if recent is not None and self.predictor is None:
            raise RuntimeError("this model has no next-frame predictor head")
        n, c, t, v, m = x.shape
        h = (x * self.in_scale + self.in_shift).permute(3, 0, 4, 2, 1).to(self.dtype).reshape(v, n * m, t, c)
        h = h.contiguous()  # (V, N*M, T, C)
        for block in self.blocks:
            h = block(h)
        if self.causal:
            per_time = h.float().mean(dim=0).view(n, m, h.shape[2], -1).transpose(2, 3)  # (N, M, C, T')
            first = first_frames(x) if first is None else first
            pooled = pool_since_start(per_time, first, self.time_stride).mean(dim=1)
        else:
            pooled = h.float().mean(dim=(0, 2)).view(n, m, -1).mean(dim=1)
        logits = self.fcn(pooled)
        if recent is None:
            return logits
        last = h[:, :, -1].permute(1, 2, 0).contiguous()  # (N*M, 256, V)
        return logits, self.predictor(last, recent)


def fold(model: STGCN | MultiStream, dtype: torch.dtype = torch.float16) -> nn.Module:
    """The eval-mode function of ``model`` with each of its ST-GCNs as a :class:`FastSTGCN`."""
    if isinstance(model, MultiStream):
        return model.mapped(lambda net: FastSTGCN(net, dtype)).eval()
    return FastSTGCN(model, dtype)


class GraphedEngine:
    """A serving step ``fn(raw windows) -> outputs`` replayed from CUDA graphs.

    One graph per batch size in ``batches``; a batch is padded up to the next size. Inputs
    come from a pinned host buffer by one non-blocking copy, outputs go back the same way; a
    caller that builds its batch in :meth:`input_buffer` saves the one host copy left.
    """

    def __init__(self, fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], sample_shape: tuple[int, ...],
                 device: torch.device, batches: tuple[int, ...] = GRAPH_BATCHES, warmup: int = 2) -> None:
        self.device = device
        self.batches = tuple(sorted(batches))
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, ...],
                                     torch.Tensor, tuple[torch.Tensor, ...]]] = {}
        stream = torch.cuda.Stream(device)
        for b in sorted(self.batches, reverse=True):  # largest first: the smaller ones reuse its pool
            dev_in = torch.zeros((b, *sample_shape), device=device)
            dev_in[:, -1] = 1.0  # present joints, so warm-up takes the ordinary path
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                for _ in range(warmup):
                    fn(dev_in)
            torch.cuda.current_stream(device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                dev_out = fn(dev_in)
            host_in = torch.empty(dev_in.shape, pin_memory=True)
            host_out = tuple(torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in dev_out)
            self.graphs[b] = (graph, dev_in, dev_out, host_in, host_out)

    def size_for(self, n: int) -> int:
        return next((b for b in self.batches if b >= n), self.batches[-1])

    def input_buffer(self, n: int) -> torch.Tensor:
        """The pinned host tensor that a batch of ``n`` (at most the largest size) is read from."""
        return self.graphs[self.size_for(n)][3][:n]

    def submit(self, windows: torch.Tensor) -> Callable[[], tuple[torch.Tensor, ...]]:
        """Starts a batch and returns at once; calling the result waits for its host outputs.

        The caller overlaps its own work with the GPU's. A batch's pinned buffers are reused by
        the next batch of its size: collect a batch before building the next in :meth:`input_buffer`.
        """
        n = windows.shape[0]
        if n > self.batches[-1]:
            parts = [self(windows[i:i + self.batches[-1]]) for i in range(0, n, self.batches[-1])]
            out = tuple(torch.cat(p) for p in zip(*parts))
            return lambda: out
        graph, dev_in, dev_out, host_in, host_out = self.graphs[self.size_for(n)]
        if windows.data_ptr() != host_in.data_ptr():
            host_in[:n].copy_(windows)
        dev_in[:n].copy_(host_in[:n], non_blocking=True)
        graph.replay()
        for host, dev in zip(host_out, dev_out):
            host[:n].copy_(dev[:n], non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(self.device))

        def collect() -> tuple[torch.Tensor, ...]:
            done.synchronize()
            return tuple(host[:n].clone() for host in host_out)
        return collect

    def __call__(self, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Host float32 windows ``(n, *sample_shape)`` -> host outputs (each ``(n, ...)``)."""
        return self.submit(windows)()

"""The graph aggregation of a folded ST-GCN block: ``relu(A @ Y + bias)`` over joints.

``Y`` is ``(K*V, N)``: the graph convolution's K outputs for every joint, stacked, with N the
flattened (sample, frame, channel) axis; ``A`` is ``(W, K*V)``, the adjacency with edge
importance; the bias is ``(W, C)`` per joint and channel (channel = column mod C). With
W = 18 and K*V = 54 the product is a thin one that is bound by memory: on CUDA one Triton
kernel streams ``Y`` once, with the bias and the ReLU in its epilogue (cuBLAS, given this
shape, launches a dozen slower kernels and needs two more passes for the bias and ReLU).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs: the torch fallback below
    triton = None


def aggregate_reference(a: torch.Tensor, y: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``relu(a @ y + bias)`` in plain torch; ``bias`` (W, C) repeats along N."""
    w, c = bias.shape
    out = torch.mm(a, y).view(w, -1, c)
    return torch.relu(out + bias[:, None, :].to(out.dtype)).view(w, -1)


if triton is not None:

    @triton.jit
    def _aggregate_kernel(a_ptr, y_ptr, bias_ptr, out_ptr, n, c,
                          J: tl.constexpr, W: tl.constexpr, BJ: tl.constexpr, BW: tl.constexpr,
                          BN: tl.constexpr):
        cols = tl.program_id(0).to(tl.int64) * BN + tl.arange(0, BN)
        rows_j = tl.arange(0, BJ)
        rows_w = tl.arange(0, BW)
        col_ok = cols < n
        a = tl.load(a_ptr + rows_w[:, None] * J + rows_j[None, :],
                    mask=(rows_w[:, None] < W) & (rows_j[None, :] < J), other=0.0)
        y = tl.load(y_ptr + rows_j[:, None].to(tl.int64) * n + cols[None, :],
                    mask=(rows_j[:, None] < J) & col_ok[None, :], other=0.0)
        acc = tl.dot(a, y)
        out_ok = (rows_w[:, None] < W) & col_ok[None, :]
        bias = tl.load(bias_ptr + rows_w[:, None] * c + (cols % c)[None, :], mask=out_ok, other=0.0)
        acc = tl.maximum(acc + bias, 0.0)
        tl.store(out_ptr + rows_w[:, None].to(tl.int64) * n + cols[None, :],
                 acc.to(out_ptr.dtype.element_ty), mask=out_ok)


def aggregate(a: torch.Tensor, y: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``relu(a @ y + bias)``: ``a`` (W, J), ``y`` (J, N) contiguous, ``bias`` (W, C) float32."""
    if triton is None or not y.is_cuda:
        return aggregate_reference(a, y, bias)
    w, j = a.shape
    n = y.shape[1]
    out = y.new_empty(w, n)
    block_n = 256
    _aggregate_kernel[(triton.cdiv(n, block_n),)](
        a, y, bias, out, n, bias.shape[1], J=j, W=w, BJ=max(16, triton.next_power_of_2(j)),
        BW=max(16, triton.next_power_of_2(w)), BN=block_n, num_warps=4)
    return out

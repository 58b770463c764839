"""The graph aggregation of a folded ST-GCN block: ``relu(A @ Y + bias)`` over joints.

``Y`` is ``(K*V, N)``: the graph convolution's K outputs for every joint, with N the flattened
(sample, frame, channel) axis; ``A`` is ``(W, K*V)``, the adjacency with edge importance; the
bias is ``(W, C)`` per joint and channel (channel = column mod C). With W = 18 and K*V = 54 the
product is thin and bound by memory: on CUDA one Triton kernel streams ``Y`` once, straight
from the ``(V, R, K, C)`` layout that a single graph-conv matrix product writes, with the bias
and the ReLU in its epilogue (cuBLAS, given this shape, launches a dozen slower kernels and
needs two more passes for the bias and the ReLU).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs: the torch fallback below
    triton = None


def stacked(y: torch.Tensor, k: int, v: int) -> torch.Tensor:
    """The graph conv output ``(V*R, K*C)`` as the ``(K*V, R*C)`` matrix the product reads."""
    c = y.shape[1] // k
    return y.view(v, -1, k, c).permute(2, 0, 1, 3).reshape(k * v, -1)


def aggregate_reference(a: torch.Tensor, y: torch.Tensor, bias: torch.Tensor, k: int, frames: int = 1,
                        pad: int = 0) -> torch.Tensor:
    """``relu(a @ Y + bias)`` in plain torch; ``bias`` (W, C) repeats along N; ``pad`` as in :func:`aggregate`."""
    w, c = bias.shape
    out = torch.mm(a, stacked(y, k, a.shape[1] // k)).view(w, -1, c)
    out = torch.relu(out + bias[:, None, :].to(out.dtype))
    if pad:
        out = torch.nn.functional.pad(out.view(w, -1, frames, c), (0, 0, pad, 0))
    return out.reshape(w, -1)


if triton is not None:

    @triton.autotune(configs=[triton.Config({"BN": bn}, num_warps=nw) for bn in (128, 256, 512) for nw in (4, 8)],
                     key=["n", "c", "J"])
    @triton.jit
    def _aggregate_kernel(a_ptr, y_ptr, bias_ptr, out_ptr, n, c, rows, frames, pad, n_out,
                          J: tl.constexpr, K: tl.constexpr, W: tl.constexpr, BJ: tl.constexpr, BW: tl.constexpr,
                          BN: tl.constexpr):
        cols = tl.program_id(0).to(tl.int64) * BN + tl.arange(0, BN)  # n = (r, c)
        j = tl.arange(0, BJ)  # j = (k, v)
        rows_w = tl.arange(0, BW)
        col_ok = cols < n
        a = tl.load(a_ptr + rows_w[:, None] * J + j[None, :], mask=(rows_w[:, None] < W) & (j[None, :] < J), other=0.0)
        # y is the graph conv's (V, R, K, C) output: element (k, v; r, c) at ((v*R + r)*K + k)*C + c.
        v_idx = (j % (J // K)).to(tl.int64)
        k_idx = j // (J // K)
        r, cc = cols // c, cols % c
        offs = v_idx[:, None] * (rows * K * c) + (k_idx * c)[:, None] + (r * (K * c) + cc)[None, :]
        y = tl.load(y_ptr + offs, mask=(j[:, None] < J) & col_ok[None, :], other=0.0)
        acc = tl.dot(a, y)
        out_ok = (rows_w[:, None] < W) & col_ok[None, :]
        bias = tl.load(bias_ptr + rows_w[:, None] * c + cc[None, :], mask=out_ok, other=0.0)
        acc = tl.maximum(acc + bias, 0.0)
        # row r = (sequence, frame) goes to row sequence * (frames + pad) + frame + pad of the output
        r_out = (r // frames) * (frames + pad) + r % frames + pad
        tl.store(out_ptr + rows_w[:, None].to(tl.int64) * n_out + (r_out * c + cc)[None, :],
                 acc.to(out_ptr.dtype.element_ty), mask=out_ok)


def aggregate(a: torch.Tensor, y: torch.Tensor, bias: torch.Tensor, k: int, frames: int = 1,
              pad: int = 0) -> torch.Tensor:
    """``relu(a @ Y + bias)`` -> ``(W, R*C)``: ``a`` (W, K*V); ``y`` (V*R, K*C), the graph conv's
    output as one matrix product writes it; ``bias`` (W, C) float32. With ``pad``, the rows R are
    sequences of ``frames`` frames and each is written after ``pad`` zero frames (a causal temporal
    convolution's padding, without a copy): ``(W, R / frames * (frames + pad) * C)``."""
    if triton is None or not y.is_cuda:
        return aggregate_reference(a, y, bias, k, frames, pad)
    w, j = a.shape
    c = bias.shape[1]
    rows = y.shape[0] // (j // k)
    n = rows * c
    n_out = rows // frames * (frames + pad) * c
    out = y.new_empty(w, n_out)
    if pad:
        out.view(w, rows // frames, frames + pad, c)[:, :, :pad].zero_()
    grid = lambda meta: (triton.cdiv(n, meta["BN"]),)  # noqa: E731
    _aggregate_kernel[grid](a, y, bias, out, n, c, rows, frames, pad, n_out, J=j, K=k, W=w,
                            BJ=max(16, triton.next_power_of_2(j)), BW=max(16, triton.next_power_of_2(w)))
    return out

"""The graph convolution's aggregation in NHWC, for training: ``out[b] = a @ y[b]`` for every frame.

In channels-last the graph conv writes each frame's ``(V*K, C)`` block contiguously, so the
aggregation over joints is one small ``(W, V*K)`` matrix applied to 38,400 such blocks (batch
64, two persons, 300 frames). ``torch.matmul`` folds that into one GEMM only after permuting
copies of the activations and of the output, forward and backward, and the GEMM it then picks
for a thin 18-row operand is slow. Here, on CUDA, Triton kernels read each block once and write
the result in place: the product with the graph conv's bias added (folded onto the joints, so
the conv writes no biased copy), its gradient for the frames (the same kernel with ``a``
transposed) and its gradients for ``a`` (the adjacency times edge importance) and the bias,
summed over frames in per-program partials (deterministic). It is a ``torch.library`` custom
op, so ``torch.compile`` keeps it whole. On CPU it is ``torch.matmul``.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs: torch.matmul below
    triton = None

_CONFIGS = [(bb, nw) for bb in (8, 32) for nw in (4, 8)]


def _blocks(*dims: int) -> list[int]:
    return [max(16, triton.next_power_of_2(d)) for d in dims]


if triton is not None:

    @triton.autotune(configs=[triton.Config({"BB": bb}, num_warps=nw) for bb, nw in _CONFIGS],
                     key=["M", "J", "C"])
    @triton.jit
    def _product_kernel(a_ptr, y_ptr, bias_ptr, out_ptr, B, M: tl.constexpr, J: tl.constexpr, C: tl.constexpr,
                        BM: tl.constexpr, BJ: tl.constexpr, BC: tl.constexpr, BB: tl.constexpr,
                        IEEE: tl.constexpr, HAS_BIAS: tl.constexpr):
        m = tl.arange(0, BM)
        j = tl.arange(0, BJ)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        a = tl.load(a_ptr + m[:, None] * J + j[None, :], mask=(m[:, None] < M) & (j[None, :] < J), other=0.0)
        y_mask = (j[:, None] < J) & (c[None, :] < C)
        out_mask = (m[:, None] < M) & (c[None, :] < C)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + m[:, None] * C + c[None, :], mask=out_mask, other=0.0).to(tl.float32)
        first = tl.program_id(0).to(tl.int64) * BB
        for i in range(BB):
            b = first + i
            if b < B:
                y = tl.load(y_ptr + b * (J * C) + j[:, None] * C + c[None, :], mask=y_mask, other=0.0)
                acc = tl.dot(a, y, input_precision="ieee" if IEEE else "tf32")
                if HAS_BIAS:
                    acc += bias
                tl.store(out_ptr + b * (M * C) + m[:, None] * C + c[None, :],
                         acc.to(out_ptr.dtype.element_ty), mask=out_mask)

    @triton.autotune(configs=[triton.Config({"BB": bb}, num_warps=nw) for bb, nw in _CONFIGS],
                     key=["M", "J", "C"], reset_to_zero=["part_a_ptr", "part_bias_ptr"])
    @triton.jit
    def _grad_kernel(g_ptr, y_ptr, part_a_ptr, part_bias_ptr, B, M: tl.constexpr, J: tl.constexpr,
                     C: tl.constexpr, BM: tl.constexpr, BJ: tl.constexpr, BC: tl.constexpr, BB: tl.constexpr,
                     IEEE: tl.constexpr):
        m = tl.arange(0, BM)
        j = tl.arange(0, BJ)
        c = tl.arange(0, BC)
        g_mask = (m[:, None] < M) & (c[None, :] < C)
        acc = tl.zeros((BM, BJ), dtype=tl.float32)
        acc_bias = tl.zeros((BM, BC), dtype=tl.float32)
        first = tl.program_id(0).to(tl.int64) * BB
        for i in range(BB):
            b = first + i
            if b < B:
                g = tl.load(g_ptr + b * (M * C) + m[:, None] * C + c[None, :], mask=g_mask, other=0.0)
                yt = tl.load(y_ptr + b * (J * C) + j[None, :] * C + c[:, None],
                             mask=(j[None, :] < J) & (c[:, None] < C), other=0.0)
                acc += tl.dot(g, yt, input_precision="ieee" if IEEE else "tf32")
                acc_bias += g.to(tl.float32)
        tl.store(part_a_ptr + tl.program_id(0) * (M * J) + m[:, None] * J + j[None, :], acc,
                 mask=(m[:, None] < M) & (j[None, :] < J))
        tl.store(part_bias_ptr + tl.program_id(0) * (M * C) + m[:, None] * C + c[None, :], acc_bias, mask=g_mask)


def _on_triton(t: torch.Tensor) -> bool:
    return triton is not None and t.is_cuda


@torch.library.custom_op("stgcn::graph_product", mutates_args=())
def graph_product(a: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a`` (M, J) times every ``y[b]`` (J, C), plus ``bias`` (M, C) -> ``(B, M, C)``; all of one dtype."""
    if not _on_triton(y):
        out = torch.matmul(a, y)
        return out if bias is None else out + bias
    a, y = a.contiguous(), y.contiguous()
    (b, j, c), m = y.shape, a.shape[0]
    out = y.new_empty(b, m, c)
    bm, bj = _blocks(m, j)
    bc = min(128, _blocks(c)[0])
    grid = lambda meta: (triton.cdiv(b, meta["BB"]), triton.cdiv(c, bc))  # noqa: E731
    _product_kernel[grid](a, y, out if bias is None else bias.contiguous(), out, b, M=m, J=j, C=c, BM=bm, BJ=bj,
                          BC=bc, IEEE=y.dtype == torch.float32, HAS_BIAS=bias is not None)
    return out


@graph_product.register_fake
def _(a: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return y.new_empty(y.shape[0], a.shape[0], y.shape[2])


@torch.library.custom_op("stgcn::graph_product_grads", mutates_args=())
def graph_product_grads(g: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients of :func:`graph_product` for ``a`` and for ``bias`` from the output's ``g``:
    ``sum_b g[b] @ y[b].T`` (M, J) and ``sum_b g[b]`` (M, C)."""
    if not _on_triton(y):
        return torch.einsum("bmc,bjc->mj", g, y), g.sum(0)
    g, y = g.contiguous(), y.contiguous()
    (b, j, c), m = y.shape, g.shape[1]
    bm, bj, bc = _blocks(m, j, c)
    parts = triton.cdiv(b, min(bb for bb, _ in _CONFIGS))
    part_a = torch.zeros(parts, m, j, device=y.device, dtype=torch.float32)
    part_bias = torch.zeros(parts, m, c, device=y.device, dtype=torch.float32)
    grid = lambda meta: (triton.cdiv(b, meta["BB"]),)  # noqa: E731
    _grad_kernel[grid](g, y, part_a, part_bias, b, M=m, J=j, C=c, BM=bm, BJ=bj, BC=bc,
                       IEEE=y.dtype == torch.float32)
    return part_a.sum(0).to(y.dtype), part_bias.sum(0).to(y.dtype)


@graph_product_grads.register_fake
def _(g: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return y.new_empty(g.shape[1], y.shape[1]), y.new_empty(g.shape[1], y.shape[2])


def _setup_context(ctx, inputs, output) -> None:
    a, y, _ = inputs
    ctx.save_for_backward(a, y)


def _backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    a, y = ctx.saved_tensors
    grad_a = grad_bias = grad_y = None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[2]:
        grad_a, grad_bias = graph_product_grads(grad, y)
    if ctx.needs_input_grad[1]:
        grad_y = graph_product(a.t(), grad)
    return grad_a, grad_y, grad_bias


graph_product.register_autograd(_backward, setup_context=_setup_context)

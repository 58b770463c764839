"""The NHWC aggregation op of training: Triton kernels on CUDA, ``torch.matmul`` on CPU."""

import pytest
import torch

from stgcn.graph_product import graph_product
from tests.stgcn.test_model import rel_err


def _reference(a: torch.Tensor, y: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.matmul(a, y) + bias


def _product_and_grads(fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    inputs = tuple(t.detach().requires_grad_() for t in inputs)
    out = fn(*inputs)
    g = torch.randn(out.shape, generator=torch.Generator(out.device).manual_seed(1), device=out.device).to(out.dtype)
    return (out.detach(), *torch.autograd.grad(out, inputs, g))


def _inputs(b: int, m: int, j: int, c: int, device: str = "cpu", dtype=torch.float64) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator(device).manual_seed(0)
    return tuple(torch.randn(shape, generator=gen, device=device, dtype=dtype) for shape in ((m, j), (b, j, c), (m, c)))


def test_cpu_op_is_matmul_plus_bias_forward_and_backward():
    inputs = _inputs(40, 18, 54, 64)
    for got, ref in zip(_product_and_grads(graph_product, *inputs), _product_and_grads(_reference, *inputs)):
        assert rel_err(got, ref) < 1e-12


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m,j,c,b", [(18, 54, 64, 1001), (25, 75, 256, 333), (18, 54, 3, 7)])
def test_triton_kernels_match_matmul_forward_and_backward(dtype, m, j, c, b):
    inputs = _inputs(b, m, j, c, "cuda", torch.float32)
    refs = _product_and_grads(_reference, *(t.double() for t in inputs))
    gots = _product_and_grads(graph_product, *(t.to(dtype) for t in inputs))
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for name, got, ref in zip(("product", "grad a", "grad y", "grad bias"), gots, refs):
        assert got.dtype == dtype and rel_err(got.double(), ref) < tol, name

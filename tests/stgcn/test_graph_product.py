"""The NHWC aggregation op of training: Triton kernels on CUDA, ``torch.matmul`` on CPU."""

import pytest
import torch

from stgcn.graph_product import graph_product
from tests.stgcn.test_model import rel_err


def _product_and_grads(a: torch.Tensor, y: torch.Tensor, g: torch.Tensor, fn) -> tuple[torch.Tensor, ...]:
    a, y = a.detach().requires_grad_(), y.detach().requires_grad_()
    out = fn(a, y)
    return (out, *torch.autograd.grad(out, (a, y), g))


def test_cpu_op_is_matmul_forward_and_backward():
    gen = torch.Generator().manual_seed(0)
    a, y = torch.randn(18, 54, generator=gen, dtype=torch.float64), torch.randn(40, 54, 64, generator=gen,
                                                                                  dtype=torch.float64)
    g = torch.randn(40, 18, 64, generator=gen, dtype=torch.float64)
    for got, ref in zip(_product_and_grads(a, y, g, graph_product), _product_and_grads(a, y, g, torch.matmul)):
        assert rel_err(got, ref) < 1e-12


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m,j,c,b", [(18, 54, 64, 1001), (25, 75, 256, 333), (18, 54, 3, 7)])
def test_triton_kernels_match_matmul_forward_and_backward(dtype, m, j, c, b):
    gen = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(m, j, device="cuda", generator=gen)
    y = torch.randn(b, j, c, device="cuda", generator=gen)
    g = torch.randn(b, m, c, device="cuda", generator=gen)
    refs = _product_and_grads(a.double(), y.double(), g.double(), torch.matmul)
    gots = _product_and_grads(a.to(dtype), y.to(dtype), g.to(dtype), graph_product)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for name, got, ref in zip(("product", "grad a", "grad y"), gots, refs):
        assert got.dtype == dtype and rel_err(got.double(), ref) < tol, name

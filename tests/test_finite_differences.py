import pytest
import torch

from inverse_graphics.rendering.finite_differences import finite_difference_render


def _quadratic(A: torch.Tensor, b: torch.Tensor):
    """f(p) = (A p) * p + b p, per row: an (M, D) -> (M, 5) map with a known Jacobian."""
    calls = []

    def render(p):
        calls.append(p.shape[0])
        return torch.cat([(p @ A.T) * p[:, :1], p @ b.T], -1)

    return render, calls


def test_central_differences_are_exact_on_a_quadratic_in_one_batched_call():
    g = torch.Generator().manual_seed(0)
    A, b = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(2, 4, generator=g, dtype=torch.float64)
    render, calls = _quadratic(A, b)
    params = torch.randn(5, 4, generator=g, dtype=torch.float64)
    weights = torch.randn(5, 5, generator=g, dtype=torch.float64)

    p = params.clone().requires_grad_()
    (finite_difference_render(render, p, "central", step=0.1) * weights).sum().backward()
    q = params.clone().requires_grad_()
    (render(q) * weights).sum().backward()
    assert torch.allclose(p.grad, q.grad, atol=1e-10)
    assert calls == [5, 2 * 4 * 5, 5]  # forward, one batched backward call (2 D M renders), analytic


def test_spsa_is_unbiased():
    g = torch.Generator().manual_seed(1)
    A, b = torch.randn(3, 6, generator=g, dtype=torch.float64), torch.randn(2, 6, generator=g, dtype=torch.float64)
    render, calls = _quadratic(A, b)
    params = torch.randn(2, 6, generator=g, dtype=torch.float64)
    p = params.clone().requires_grad_()
    finite_difference_render(render, p, "central", step=0.05).sum().backward()
    central = p.grad.clone()

    estimates = []
    for k in range(400):
        p = params.clone().requires_grad_()
        finite_difference_render(render, p, "spsa", step=0.05, samples=4, generator=g).sum().backward()
        estimates.append(p.grad.clone())
    estimates = torch.stack(estimates)
    assert calls[-1] == 2 * 4 * 2  # SPSA: 2k renders per scene whatever D
    single_error = ((estimates - central).flatten(1).norm(dim=1) / central.norm()).mean()
    mean_error = (estimates.mean(0) - central).norm() / central.norm()
    assert mean_error < 0.1
    assert mean_error < single_error / 5  # averaging removes the noise, not a bias


def test_bad_arguments_are_named():
    render = lambda p: p  # noqa: E731
    with pytest.raises(ValueError, match="method"):
        finite_difference_render(render, torch.zeros(1, 2), "forward")
    with pytest.raises(ValueError, match=r"\(M, D\)"):
        finite_difference_render(render, torch.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        finite_difference_render(render, torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="step"):
        finite_difference_render(render, torch.zeros(1, 1), step=0.0)

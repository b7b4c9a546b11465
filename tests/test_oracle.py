"""The exact Gaussian oracle: its ε̂ is E[ε | x_t], its ODE solution is where DDIM with every step lands."""

import pytest
import torch

from course_lib.oracle import GaussianData
from course_lib.samplers import sample_loop, timesteps
from course_lib.schedules import NoiseSchedule


def _data(seed=0, n=400, shape=(1, 4, 4)):
    """A correlated Gaussian sample: random mixing of independent pixels with spread scales."""
    g = torch.Generator().manual_seed(seed)
    d = shape[0] * shape[1] * shape[2]
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) * torch.logspace(-2, 0, d, dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ mix.T + 0.3
    return x.reshape(n, *shape)


def test_fit_recovers_mean_and_covariance():
    x = _data()
    g = GaussianData.fit(x)
    flat = x.reshape(len(x), -1)
    torch.testing.assert_close(g.mean, flat.mean(0))
    cov = g.basis @ torch.diag(g.variances) @ g.basis.T
    torch.testing.assert_close(cov, torch.cov(flat.T), atol=1e-10, rtol=1e-8)


def test_eps_is_the_posterior_mean_of_the_noise():
    """Against a regression on samples: E[ε | x_t] is linear in x_t for Gaussian data, so least squares of ε on
    (x_t, 1) over many draws of (x_0, ε) recovers it. Independent of the eigen-decomposition."""
    s = NoiseSchedule.cosine(100)
    g = GaussianData.fit(_data())
    gen = torch.Generator().manual_seed(1)
    n, d = 200_000, 16
    x0 = g.mean + (torch.randn(n, d, generator=gen, dtype=torch.float64) * g.variances.sqrt()) @ g.basis.T
    eps = torch.randn(n, d, generator=gen, dtype=torch.float64)
    for t in (0, 30, 70, 99):
        a = float(s.alphas_cumprod[t])
        xt = a**0.5 * x0 + (1 - a) ** 0.5 * eps
        design = torch.cat([xt, torch.ones(n, 1, dtype=torch.float64)], 1)
        coef = torch.linalg.lstsq(design, eps).solution
        probe = xt[:64]  # points where the fit has data
        want = torch.cat([probe, torch.ones(64, 1, dtype=torch.float64)], 1) @ coef
        got = g.eps(s, probe.reshape(64, 1, 4, 4), t).reshape(64, d)
        assert (got - want).abs().max() < 0.05, (t, (got - want).abs().max())
        if a > 0.5:  # where the image still shows, the posterior mean is not the noise that was drawn
            assert (got - eps[:64]).abs().max() > 0.1


def test_ode_solution_is_where_ddim_with_every_step_lands():
    """DDIM with all T steps is a first-order solver of the same ODE: it lands next to the closed form, and
    with fewer steps it lands further away (the known-wrong answer must differ)."""
    s = NoiseSchedule.cosine(1000)
    g = GaussianData.fit(_data())
    x_T = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    exact = g.ode_solution(s, x_T, 999)
    fine = sample_loop(g.eps_fn(s), s, x_T, timesteps(s, 1000), "ddim")
    coarse = sample_loop(g.eps_fn(s), s, x_T, timesteps(s, 10), "ddim")
    err_fine, err_coarse = (fine - exact).abs().max().item(), (coarse - exact).abs().max().item()
    assert err_fine < 0.02 and err_coarse > 5 * err_fine
    # from an intermediate state, too: the ODE keeps each coordinate's quantile
    seen = {}
    sample_loop(g.eps_fn(s), s, x_T, timesteps(s, 1000), "ddim", callback=lambda i, t, x: seen.setdefault(i, x))
    mid = g.ode_solution(s, seen[499], 499)  # step 499 went from t = 500 to t = 499
    assert (mid - exact).abs().max() < 0.02


def test_bad_input():
    g = GaussianData.fit(_data())
    s = NoiseSchedule.cosine(100)
    with pytest.raises(ValueError, match="at least 2 images"):
        GaussianData.fit(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"shape \(1, 4, 4\)"):
        g.eps(s, torch.zeros(2, 1, 8, 8), 5)
    with pytest.raises(ValueError, match=r"t must be an int timestep in 0\.\.99"):
        g.eps(s, torch.zeros(2, 1, 4, 4), 100)
    with pytest.raises(ValueError, match="symmetric"):
        GaussianData(torch.zeros(1, 1, 2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="positive semi-definite"):
        GaussianData(torch.zeros(1, 1, 2), torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match=r"cov must be a \(2, 2\)"):
        GaussianData(torch.zeros(1, 1, 2), torch.eye(3))
    with pytest.raises(ValueError, match="must be finite"):
        GaussianData(torch.full((1, 1, 2), float("nan")), torch.eye(2))
    with pytest.raises(ValueError, match="must be finite"):
        GaussianData(torch.zeros(1, 1, 2), torch.diag(torch.tensor([1.0, float("inf")])))
    with pytest.raises(ValueError, match="images must be finite"):
        GaussianData.fit(torch.tensor([[[[0.0, float("nan")]]], [[[1.0, 2.0]]]]))
    with pytest.raises(ValueError, match="empty batch"):
        g.eps(s, torch.zeros(0, 1, 4, 4), 5)

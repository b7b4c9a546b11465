r"""An exact noise predictor, for measuring a sampler's own error apart from any network's.

A trained ε_θ is wrong in its own ways, so comparing samplers on it mixes two errors: the
network's and the solver's. Data drawn from a Gaussian N(μ, Σ) remove the first. With
x_t = sqrt(abar_t) x_0 + sqrt(1 − abar_t) ε, the noisy data are Gaussian too,
N(sqrt(abar_t) μ, abar_t Σ + (1 − abar_t) I), and in the eigenbasis Σ = U diag(s) Uᵀ every
coordinate z = Uᵀ(x_t − sqrt(abar_t) μ) is independent, so the best ε-predictor is exact:

    E[ε | x_t] = U · sqrt(1 − abar_t) z / (abar_t s + 1 − abar_t).

The probability-flow ODE (the one DDIM and DPM-Solver solve) moves each coordinate while keeping
its quantile, z / sqrt(abar_t s + 1 − abar_t) constant, so it too has a closed form: from x_t at
timestep t it lands on

    x_0 = μ + U · z sqrt(s / (abar_t s + 1 − abar_t)).

A sampler's distance from that x_0 is its truncation error alone. Fit to Fashion-MNIST (μ and Σ of
the training images), the Gaussian keeps the data's spectrum: a few directions of large variance and
hundreds below the noise level of the last steps, where an early jump to the clean image blurs.
"""

from __future__ import annotations

import torch

from .schedules import NoiseSchedule, check_images


class GaussianData:
    """N(μ, Σ) over images of shape (C, H, W), with its exact ε-predictor and ODE solution.

    mean: (C, H, W); cov: (D, D) symmetric positive semi-definite, D = C·H·W. Kept in float64.
    """

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        if not isinstance(mean, torch.Tensor) or mean.dim() != 3:
            raise ValueError(f"mean must be a (C, H, W) tensor, got {getattr(mean, 'shape', type(mean).__name__)}")
        d = mean.numel()
        if not isinstance(cov, torch.Tensor) or tuple(cov.shape) != (d, d):
            raise ValueError(f"cov must be a ({d}, {d}) tensor for a mean of shape {tuple(mean.shape)}, "
                             f"got {getattr(cov, 'shape', type(cov).__name__)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(cov).all()):
            raise ValueError("mean and cov must be finite (no NaN or inf)")
        self.shape = tuple(mean.shape)
        self.mean = mean.detach().double().cpu().reshape(-1)
        cov = cov.detach().double().cpu()
        if not torch.allclose(cov, cov.T, atol=1e-8 * max(1.0, cov.abs().max().item())):
            raise ValueError("cov must be symmetric")
        s, self.basis = torch.linalg.eigh(cov)
        if s.min() < -1e-6 * max(1.0, s.max().item()):
            raise ValueError(f"cov must be positive semi-definite; its smallest eigenvalue is {s.min().item():.3g}")
        self.variances = s.clamp(min=0)  # the spectrum s, ascending

    @classmethod
    def fit(cls, images: torch.Tensor) -> GaussianData:
        """The Gaussian with the mean and covariance of ``images`` (N×C×H×W, N ≥ 2)."""
        check_images(images, "images")
        if len(images) < 2:
            raise ValueError(f"fitting a covariance needs at least 2 images, got {len(images)}")
        if not torch.isfinite(images).all():
            raise ValueError("images must be finite (no NaN or inf)")
        flat = images.detach().double().cpu().reshape(len(images), -1)
        return cls(flat.mean(0).reshape(images.shape[1:]), torch.cov(flat.T))

    def _coords(self, x: torch.Tensor, a: float) -> torch.Tensor:
        check_images(x, "x")
        if len(x) == 0:
            raise ValueError("x must hold at least one image, got an empty batch")
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have images of shape {self.shape}, got {tuple(x.shape[1:])}")
        return (x.double().cpu().reshape(len(x), -1) - a**0.5 * self.mean) @ self.basis

    def _abar(self, schedule: NoiseSchedule, t: int) -> float:
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < schedule.num_steps:
            raise ValueError(f"t must be an int timestep in 0..{schedule.num_steps - 1}, got {t!r}")
        return float(schedule.alphas_cumprod[t])

    def eps(self, schedule: NoiseSchedule, x: torch.Tensor, t: int) -> torch.Tensor:
        """E[ε | x_t = x] at timestep t: N×C×H×W in, N×C×H×W out (x's dtype and device)."""
        a = self._abar(schedule, t)
        z = self._coords(x, a)
        e = (z * (1 - a) ** 0.5 / (a * self.variances + 1 - a)) @ self.basis.T
        return e.reshape(x.shape).to(x.dtype).to(x.device)

    def eps_fn(self, schedule: NoiseSchedule):
        """``eps_fn(x, t)`` for :func:`samplers.sample_loop`: the exact predictor on this schedule."""
        return lambda x, t: self.eps(schedule, x, t)

    def ode_solution(self, schedule: NoiseSchedule, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """Where the probability-flow ODE takes x_t (at timestep t) at the clean end: N×C×H×W, float64 on
        x_t's device."""
        a = self._abar(schedule, t)
        z = self._coords(x_t, a)
        x0 = self.mean + (z * (self.variances / (a * self.variances + 1 - a)).sqrt()) @ self.basis.T
        return x0.reshape(x_t.shape).to(x_t.device)

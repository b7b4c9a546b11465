r"""Flow matching with straight paths, also called rectified flow (lesson 10): the objective of SD3.

A straight line joins each image x_0 to its own noise ε, and the network learns the velocity of
travel along it:

    x_t = (1 − t) x_0 + t ε,           t ∈ [0, 1],  ε ~ N(0, I)
    dx_t/dt = ε − x_0                  (the same at every t: the path is straight)
    L(θ) = E_{x_0, ε, t} ‖v_θ(x_t, t) − (ε − x_0)‖²

The minimiser is v*(x, t) = E[ε − x_0 | x_t = x]. Integrating dx/dt = v*(x, t) from t = 1 (pure
noise) down to t = 0 carries N(0, I) onto the data distribution (Lipman et al. 2023; Liu et al.
2023). A sampler is therefore an ODE solver. The simplest is Euler, x_{t−Δ} = x_t − Δ·v_θ(x_t, t).
The paths of v* are not exactly straight, because many (x_0, ε) pairs cross at every x_t. They
are straighter than DDPM's, though, so few steps go further.

Compared with the ε-objective of lessons 04–08 there is no noise schedule: the signal's weight
is 1 − t and the noise's t, which is not variance preserving ((1 − t)² + t² < 1 between the
ends); t is continuous, and the U-Net is unchanged: it reads t · 1000
(:data:`TIME_SCALE`) through its sinusoidal time embedding. SD3 (Esser et al. 2024) draws t from
a logit-normal, t = sigmoid(m + s·n) with n ~ N(0, 1), which puts more training on the middle
noise levels where the velocity is hardest to predict. That is ``t_sampling="logit_normal"``
here; ``"uniform"`` is the plain choice.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import check_labels
from .device import autocast, check_seed, rand, randn

#: The U-Net's time input is t · TIME_SCALE, so t ∈ [0, 1] spans the range its embedding was built for.
TIME_SCALE = 1000.0
T_SAMPLINGS = ("uniform", "logit_normal")

VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]


def flow_interpolate(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 − t) x_0 + t ε with one t per sample: x0, eps N×C×H×W, t (N,) in [0, 1]."""
    _same_shape(x0, eps)
    t = torch.as_tensor(t, device=x0.device)
    if not t.is_floating_point():
        raise ValueError(f"t must be float times in [0, 1], got {t.dtype}: DDPM steps? use t / T")
    t = t.to(x0.dtype)
    if t.shape != (x0.shape[0],):
        raise ValueError(f"t must have shape ({x0.shape[0]},), one time per sample, got {tuple(t.shape)}")
    tt = t.view(-1, *([1] * (x0.dim() - 1)))
    return (1 - tt) * x0 + tt * eps


def _same_shape(x0: torch.Tensor, eps: torch.Tensor) -> None:
    """x0 and eps pair image by image: a broadcast (one ε for the batch) would pass silently."""
    if x0.shape != eps.shape:
        raise ValueError(f"x0 and eps must have the same shape, got {tuple(x0.shape)} and {tuple(eps.shape)}")


def flow_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The velocity along the straight path, dx_t/dt = ε − x_0 (N×C×H×W)."""
    _same_shape(x0, eps)
    return eps - x0


def sample_times(n: int, generator: torch.Generator | None = None, device=None, kind: str = "logit_normal",
                 mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """n training times in (0, 1): ``"uniform"``, or ``"logit_normal"`` t = sigmoid(mean + std·n)."""
    if kind not in T_SAMPLINGS:
        raise ValueError(f"unknown t sampling {kind!r}; expected one of {', '.join(map(repr, T_SAMPLINGS))}")
    if kind == "uniform":
        return rand(n, generator, device)
    return torch.sigmoid(mean + std * randn(n, generator, device))


def flow_matching_loss(model: nn.Module, x0: torch.Tensor, labels: torch.Tensor | None = None,
                       generator: torch.Generator | None = None, context=None, t_sampling: str = "logit_normal",
                       amp: bool = True) -> torch.Tensor:
    r"""‖v_θ(x_t, t) − (ε − x_0)‖² averaged over the batch x0 (N×C×H×W), with fresh t and ε.

    ``labels`` for a class model, ``context`` (a TextEmbedding) for a text model, as in
    ``train.diffusion_loss``. The model sees t · TIME_SCALE.
    """
    n = len(x0)
    t = sample_times(n, generator, x0.device, t_sampling)
    eps = randn(x0.shape, generator, x0.device)
    x_t = flow_interpolate(x0, eps, t)
    with autocast(x0.device) if amp else contextlib.nullcontext():
        if context is not None:
            pred = model(x_t, t * TIME_SCALE, labels, context=context)
        else:
            pred = model(x_t, t * TIME_SCALE) if labels is None else model(x_t, t * TIME_SCALE, labels)
    return F.mse_loss(pred.float(), flow_target(x0, eps))


def flow_times(steps: int, shift: float = 1.0) -> list[float]:
    """The ``steps`` + 1 times an Euler sampler visits, from 1 down to 0.

    Evenly spaced, then warped by SD3's shift, t ← shift·t / (1 + (shift − 1)·t). A shift above 1
    spends more of the steps at high noise.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int ≥ 1, got {steps!r}")
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a positive number, got {shift!r}")
    ts = [1 - i / steps for i in range(steps + 1)]
    return [shift * t / (1 + (shift - 1) * t) for t in ts]


@torch.no_grad()
def euler_sample(velocity: VelocityFn, x1: torch.Tensor, steps: int, shift: float = 1.0) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) from t = 1 (x1, pure noise) to t = 0 with Euler steps → x_0.

    velocity(x, t) takes t as a Python float in [0, 1]. Each step is x ← x + (t_next − t)·v(x, t),
    with t_next < t, so the update moves against the velocity. One network call per step.
    """
    ts = flow_times(steps, shift)
    x = x1
    for t, t_next in zip(ts[:-1], ts[1:]):
        v = velocity(x, t)
        if not isinstance(v, torch.Tensor) or v.shape != x.shape:
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"velocity(x, t) must return a tensor of x's shape {tuple(x.shape)}, got {got}")
        x = x + (t_next - t) * v
    return x


def model_velocity(model: nn.Module, labels: torch.Tensor | None = None) -> VelocityFn:
    """velocity(x, t) for a U-Net trained with :func:`flow_matching_loss` (class labels optional)."""

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((len(x),), t * TIME_SCALE, device=x.device)
        with autocast(x.device):
            out = model(x, tt) if labels is None else model(x, tt, labels)
        return out.float()

    return velocity


@torch.no_grad()
def flow_sample(model: nn.Module, n: int, steps: int = 50, labels: torch.Tensor | None = None, seed: int = 0,
                shift: float = 1.0, device=None) -> torch.Tensor:
    """n images from a flow-matching U-Net: x_1 ~ N(0, I) (seeded), Euler to t = 0, clamped to [-1, 1]."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    cfg = model.config
    device = torch.device(device) if device is not None else next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(check_seed(seed))
    x1 = torch.randn((n, cfg.in_channels, cfg.image_size, cfg.image_size), generator=g, device=device)
    labels = check_labels(labels, n, device)
    was_training = model.training
    model.eval()
    try:
        return euler_sample(model_velocity(model, labels), x1, steps, shift).clamp(-1, 1)
    finally:
        model.train(was_training)

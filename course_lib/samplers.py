r"""Reverse diffusion: turning noise into images one step at a time.

DDPM's ancestral step (Ho et al. 2020, eq. 6–7) draws x_{t−1} from the posterior
q(x_{t−1} | x_t, x̂_0), with x̂_0 the clean image implied by the predicted noise:

    x̂_0       = (x_t − sqrt(1 − abar_t) ε̂) / sqrt(abar_t)
    μ̃_t       = sqrt(abar_{t−1}) β_t / (1 − abar_t) · x̂_0  +  sqrt(α_t) (1 − abar_{t−1}) / (1 − abar_t) · x_t
    β̃_t       = (1 − abar_{t−1}) / (1 − abar_t) · β_t               (the posterior variance)
    x_{t−1}   = μ̃_t + sqrt(β̃_t) z,   z ~ N(0, I), and no noise at the last step (t = 0).

This is diffusers' ``DDPMScheduler.step`` with ``variance_type="fixed_small"`` and
``clip_sample=False``; with ``clip_x0=True`` x̂_0 is clamped to [-1, 1] before it enters
μ̃_t (``clip_sample=True``, as in Ho et al.'s own sampler). Clamping matters most at the
first steps of a cosine schedule: there abar_t/abar_{t−1} = 1 − β_t can be 0.001, so an
error in ε̂ reaches x_{t−1} amplified by sqrt(abar_{t−1}/abar_t) ≈ 30, and an imperfect
model's samples run off to values in the hundreds instead of staying in [-1, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from .device import autocast
from .schedules import NoiseSchedule, check_images, predict_x0


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def ddpm_step(
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: int | torch.Tensor,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    clip_x0: bool = False,
) -> torch.Tensor:
    r"""One ancestral step x_t → x_{t−1} (equations in the module docstring).

    x_t, eps: N×C×H×W; t: an int (the whole batch at one step) or an int64 (N,) tensor;
    noise: the z to use (drawn from ``generator`` if None; ignored where t = 0);
    clip_x0: clamp x̂_0 to [-1, 1] (diffusers' ``clip_sample=True``).
    """
    check_images(x_t, "x_t")
    if eps.shape != x_t.shape:
        raise ValueError(f"eps must have x_t's shape {tuple(x_t.shape)}, got {tuple(eps.shape)}")
    t = schedule.check_timesteps(torch.as_tensor(t), len(x_t)).to(x_t.device)
    if t.numel() == 1:
        t = t.expand(len(x_t))
    abar = schedule.alphas_cumprod
    abar_prev_table = torch.cat([abar.new_ones(1), abar[:-1]])  # abar_{t−1}, with abar_{−1} = 1
    a_t = schedule.gather(abar, t, x_t)
    a_prev = schedule.gather(abar_prev_table, t, x_t)
    beta_t = 1 - a_t / a_prev  # equals schedule.betas[t], written as diffusers does

    x0 = predict_x0(schedule, x_t, eps, t)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
    mean = (a_prev.sqrt() * beta_t / (1 - a_t)) * x0 + ((1 - beta_t).sqrt() * (1 - a_prev) / (1 - a_t)) * x_t
    var = ((1 - a_prev) / (1 - a_t) * beta_t).clamp(min=1e-20)
    if noise is None:
        noise = _noise_like(x_t, generator)
    elif noise.shape != x_t.shape:
        raise ValueError(f"noise must have x_t's shape {tuple(x_t.shape)}, got {tuple(noise.shape)}")
    keep = (t > 0).to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))  # no noise on the last step
    return mean + keep * var.sqrt() * noise


@torch.no_grad()
def sample(
    model: nn.Module,
    schedule: NoiseSchedule,
    n: int,
    shape: tuple[int, int, int] | None = None,
    labels: torch.Tensor | None = None,
    seed: int | None = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    trajectory_every: int | None = None,
    batch_size: int | None = None,
    clip_x0: bool = True,
):
    """Ancestral DDPM sampling: x_T ~ N(0, I), then ``ddpm_step`` for t = T−1 … 0.

    model: ε_θ(x, t[, labels]); n images of ``shape`` (C, H, W), default the model's
    (in_channels, image_size, image_size). Same ``seed`` → same images on a given device.
    Returns N×C×H×W in the model's range (clamped to [-1, 1]), or, with
    ``trajectory_every=k``, a tuple (images, frames) where frames holds x_t every k steps
    (for animations).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if shape is None:
        cfg = getattr(model, "config", None)
        if cfg is None:
            raise ValueError("pass shape=(C, H, W): the model has no config to read it from")
        shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    if len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {shape}")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    if labels is not None:
        labels = torch.as_tensor(labels, device=device).long()
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")

    generator = torch.Generator(device=device)
    generator.manual_seed(0 if seed is None else seed)
    was_training = model.training
    model.eval()
    x = torch.randn((n, *shape), generator=generator, device=device)
    frames = [x.cpu()] if trajectory_every else None
    steps = range(schedule.num_steps - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="DDPM sampling", leave=False)
    bs = batch_size or n
    # clip_x0 (default on): clamp x̂_0 to the data range at every step, see ddpm_step.
    for t in steps:
        tt = torch.full((n,), t, device=device, dtype=torch.long)
        eps = torch.cat(
            [_predict(model, x[i : i + bs], tt[i : i + bs], None if labels is None else labels[i : i + bs])
             for i in range(0, n, bs)]
        )
        x = ddpm_step(schedule, x, eps, tt, generator=generator, clip_x0=clip_x0)
        if trajectory_every and (t % trajectory_every == 0):
            frames.append(x.clamp(-1, 1).cpu())
    model.train(was_training)
    x = x.clamp(-1, 1)
    return (x, frames) if trajectory_every else x


def _predict(model, x, t, labels):
    with autocast(x.device):
        out = model(x, t) if labels is None else model(x, t, labels)
    return out.float()

r"""Noise schedules and the closed-form forward process.

A schedule is the list of per-step noise variances :math:`\beta_t`, t = 0 … T−1. From it

    alpha_t      = 1 − beta_t
    abar_t       = prod_{s ≤ t} alpha_s          (the share of signal variance kept)
    SNR(t)       = abar_t / (1 − abar_t)         (signal-to-noise ratio; 0 dB where abar = ½)

and the forward process jumps straight from x_0 to x_t:

    q(x_t | x_0) = N( sqrt(abar_t) x_0 , (1 − abar_t) I ).

Conventions follow diffusers: t = 0 is the first noising step, t = T−1 the last.
All tables are float64 (exact enough to compare with any reference); they are cast
to the images' dtype and device only where they meet a batch.
"""

from __future__ import annotations

import math

import torch

from .device import table_dtype

SCHEDULE_NAMES = ("linear", "cosine", "scaled_linear")


class NoiseSchedule:
    """The betas of a diffusion process and everything derived from them.

    Build one with :meth:`linear`, :meth:`cosine` or :meth:`scaled_linear`, or
    :meth:`from_name`. Attributes (float64 tensors of shape (T,)): ``betas``,
    ``alphas``, ``alphas_cumprod``, ``snr``; ``num_steps`` is T.
    """

    def __init__(self, betas: torch.Tensor, name: str = "custom", params: dict | None = None):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 1:
            raise ValueError("a schedule needs at least one beta")
        if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
            raise ValueError("every beta must lie strictly between 0 and 1")
        self.name = name
        self.params = dict(params or {})
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)

    # ----------------------------------------------------------------- builders
    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """DDPM's schedule (Ho et al. 2020): beta_t evenly spaced from beta_start to beta_end."""
        _check_steps(num_steps)
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        return cls(betas, "linear", dict(num_steps=num_steps, beta_start=beta_start, beta_end=beta_end))

    @classmethod
    def cosine(cls, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """Nichol & Dhariwal 2021: abar(u) = cos²(π/2 · (u + s)/(1 + s)), u = t/T.

        beta_t = min(1 − abar((t+1)/T) / abar(t/T), max_beta): the clip stops the last
        betas from reaching 1 (diffusers' ``squaredcos_cap_v2``).
        """
        _check_steps(num_steps)

        def abar(u: torch.Tensor) -> torch.Tensor:
            return torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        betas = (1 - abar(u[1:]) / abar(u[:-1])).clamp(max=max_beta)
        return cls(betas, "cosine", dict(num_steps=num_steps, s=s, max_beta=max_beta))

    @classmethod
    def scaled_linear(
        cls, num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
    ) -> NoiseSchedule:
        """Stable Diffusion's schedule: sqrt(beta_t) evenly spaced, then squared."""
        _check_steps(num_steps)
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
        return cls(betas, "scaled_linear", dict(num_steps=num_steps, beta_start=beta_start, beta_end=beta_end))

    @classmethod
    def from_name(cls, name: str, **kwargs) -> NoiseSchedule:
        """``NoiseSchedule.from_name("cosine", num_steps=1000)``."""
        if name not in SCHEDULE_NAMES:
            raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULE_NAMES)}")
        return getattr(cls, name)(**kwargs)

    # ----------------------------------------------------------------- queries
    @property
    def num_steps(self) -> int:
        return self.betas.numel()

    def snr_db(self) -> torch.Tensor:
        """10·log10(SNR(t)), shape (T,)."""
        return 10 * torch.log10(self.snr)

    def zero_db_step(self) -> int:
        """First t where the SNR drops to or below 0 dB, i.e. abar_t ≤ ½ (T if it never does)."""
        below = (self.alphas_cumprod <= 0.5).nonzero()
        return int(below[0]) if len(below) else self.num_steps

    def config(self) -> dict:
        """What rebuilds this schedule: ``NoiseSchedule.from_config(s.config())``."""
        return {"name": self.name, **self.params}

    @classmethod
    def from_config(cls, config: dict) -> NoiseSchedule:
        config = dict(config)
        return cls.from_name(config.pop("name"), **config)

    def check_timesteps(self, t: torch.Tensor, n: int | None = None, values: bool = True) -> torch.Tensor:
        """t as an int64 tensor of shape (N,), every value in 0 … T−1, else a ValueError.

        ``values=False`` skips the range check, for timesteps the caller drew in range itself: on a GPU
        that check reads t back to the host, which makes the host wait for every queued kernel.
        """
        t = torch.as_tensor(t)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"timesteps must be integers, got dtype {t.dtype}")
        if t.dim() == 0:
            t = t.expand(n if n is not None else 1)
        if t.dim() != 1:
            raise ValueError(f"timesteps must have shape (N,), got {tuple(t.shape)}")
        if n is not None and t.numel() not in (1, n):
            raise ValueError(f"timesteps must have shape ({n},) to match the batch, got {tuple(t.shape)}")
        if values and t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_steps):
            raise ValueError(
                f"timesteps must lie in 0..{self.num_steps - 1}, got values {int(t.min())}..{int(t.max())}"
            )
        return t.long()

    def gather(self, table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """table[t] shaped (N,1,1,1) on like's device and dtype, ready to scale a batch."""
        vals = self._on(table, like.device)[t.to(like.device)]
        return vals.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def _on(self, table: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``table`` on ``device``, copied once per device and kept: a copy from the host's pageable memory
        makes a GPU finish its queued work first, which a training step would pay every time. A copy is
        made again if the table was replaced or changed in place (its version counter moved)."""
        if table.device == device:
            return table
        kept = self.__dict__.setdefault("_device_copies", {})
        key = (id(table), str(device))
        hit = kept.get(key)
        if hit is None or hit[0] is not table or hit[1] != table._version:
            hit = kept[key] = (table, table._version, table.to(device, table_dtype(device)))  # MPS: float32
        return hit[2]

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"NoiseSchedule.{self.name}({params})"


def _check_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")


def check_images(x: torch.Tensor, name: str = "x") -> None:
    """Images are N×C×H×W floating-point tensors; anything else is a ValueError."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape N×C×H×W, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be N×C×H×W, got {x.dim()} dims (shape {tuple(x.shape)})")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _check_forward_inputs(schedule, x, t, noise, name, check_t=True):
    """Validated (t, noise) for a forward-process step from ``x``; noise drawn if None."""
    check_images(x, name)
    t = schedule.check_timesteps(t, len(x), values=check_t)
    if noise is None:
        return t, torch.randn_like(x)
    if noise.shape != x.shape:
        raise ValueError(f"noise must have {name}'s shape {tuple(x.shape)}, got {tuple(noise.shape)}")
    return t, noise


def q_sample(
    schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None, check_t: bool = True
):
    r"""Sample x_t ~ q(x_t | x_0) in one jump:  x_t = sqrt(abar_t) x_0 + sqrt(1 − abar_t) ε.

    x0: N×C×H×W; t: int64 (N,) in 0 … T−1; noise: ε ~ N(0, I) of x0's shape (drawn if None).
    ``check_t=False`` skips checking that t lies in 0 … T−1, for a caller that drew t in range (training:
    on a GPU the check would make every step wait for the last). Returns x_t, N×C×H×W.
    """
    t, noise = _check_forward_inputs(schedule, x0, t, noise, "x0", check_t)
    abar = schedule.gather(schedule.alphas_cumprod, t, x0)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def q_step(schedule: NoiseSchedule, x_prev: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None):
    r"""One forward step:  x_t = sqrt(1 − beta_t) x_{t−1} + sqrt(beta_t) ε  (q(x_t | x_{t−1})).

    Applying it for t = 0 … k gives the same distribution as :func:`q_sample` at k.
    """
    t, noise = _check_forward_inputs(schedule, x_prev, t, noise, "x_prev")
    beta = schedule.gather(schedule.betas, t, x_prev)
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise


def predict_x0(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor):
    r"""Invert q_sample given the noise:  x̂_0 = (x_t − sqrt(1 − abar_t) ε̂) / sqrt(abar_t).

    x_t, eps: N×C×H×W; t: int64 (N,) in 0 … T−1. Returns x̂_0, N×C×H×W.
    """
    check_images(x_t, "x_t")
    if eps.shape != x_t.shape:
        raise ValueError(f"eps must have x_t's shape {tuple(x_t.shape)}, got {tuple(eps.shape)}")
    t = schedule.check_timesteps(t, len(x_t))
    abar = schedule.gather(schedule.alphas_cumprod, t, x_t)
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()

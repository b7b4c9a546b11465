r"""Reverse diffusion: turning noise into images, one step or a few big ones at a time.

Throughout, abar_t is the schedule's ``alphas_cumprod[t]``, ε̂ the model's noise prediction
and x̂_0 the clean image it implies:

    x̂_0 = (x_t − sqrt(1 − abar_t) ε̂) / sqrt(abar_t).

**DDPM** (Ho et al. 2020, eq. 6–7) draws x_{t'} (t' < t, the next step the sampler visits;
t' = t − 1 when it visits every step) from the posterior q(x_{t'} | x_t, x̂_0):

    β_t       = 1 − abar_t / abar_{t'}                       (= betas[t] when t' = t − 1)
    μ̃_t       = sqrt(abar_{t'}) β_t / (1 − abar_t) · x̂_0  +  sqrt(1 − β_t) (1 − abar_{t'}) / (1 − abar_t) · x_t
    β̃_t       = (1 − abar_{t'}) / (1 − abar_t) · β_t               (the posterior variance)
    x_{t'}    = μ̃_t + sqrt(β̃_t) z,   z ~ N(0, I), and no noise at the last step (t = 0).

This is diffusers' ``DDPMScheduler.step`` with ``variance_type="fixed_small"`` and
``clip_sample=False`` (after ``set_timesteps`` when t' < t − 1). Ho et al. tried two fixed
variances: β̃_t, the right one if x_0 were a single fixed image, and σ_t² = β_t, the right one if
x_0 were N(0, I) (``variance="large"``, diffusers' ``"fixed_large"``). The DDIM paper's Table 1
gives β_t the better FID with all 1000 steps on CIFAR-10 (3.17 against 4.73) and the far worse
one with few steps. With ``clip_x0=True`` x̂_0 is clamped to [-1, 1] before it enters μ̃_t
(``clip_sample=True``, as in Ho et al.'s own sampler).
Clamping matters most at the first steps of a cosine schedule: there abar_t/abar_{t−1} = 1 − β_t
can be 0.001, so an error in ε̂ reaches x_{t−1} amplified by sqrt(abar_{t−1}/abar_t) ≈ 30, and an
imperfect model's samples run off to values in the hundreds or thousands instead of staying in [-1, 1].

**DDIM** (Song et al. 2021, eq. 12) keeps the same marginals q(x_t | x_0) but a non-Markovian
reverse process, so it may jump from t to any t' < t:

    σ_t       = η · sqrt((1 − abar_{t'}) / (1 − abar_t)) · sqrt(1 − abar_t / abar_{t'})
    x_{t'}    = sqrt(abar_{t'}) x̂_0  +  sqrt(1 − abar_{t'} − σ_t²) ε̂  +  σ_t z.

η = 0 is deterministic (an ODE solver: the same x_T always gives the same image), η = 1 has
DDPM's posterior variance. With η = 0 the update can also be run forwards (t' > t): that is
DDIM inversion, image → its noise.

**DPM-Solver++(2M)** (Lu et al. 2022) solves the same ODE with a second-order multistep
method in λ_t = log(sqrt(abar_t) / sqrt(1 − abar_t)) (half the log-SNR), reusing the previous
step's x̂_0 instead of evaluating the model twice per step; see :func:`dpm_solver_pp_2m_step`.
Its data prediction divides by sqrt(abar_t): on the cosine schedule σ/α at t = T−1 is about 2·10⁴,
and there any error of ε̂ turns x̂_0 into a clamped guess. ``lambda_min=DPM_LAMBDA_MIN`` skips the
top timesteps where λ_t falls below that floor (see :func:`timesteps`). It is off by default, as in
diffusers: on lesson 04's DDPM it made the FD worse (benchmarks/RESULTS.md, fifth GPU loan).

Timesteps count like diffusers': t = 0 … T−1, and a target t' < 0 means "the clean image",
abar_{t'} = 1 (diffusers' ``set_alpha_to_one=True``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .data import check_labels
from .device import autocast, check_seed, randn
from .schedules import NoiseSchedule, check_images

SAMPLERS = ("ddpm", "ddim", "dpm++2m")
#: DDPM's two fixed variances: "small" the posterior β̃_t, "large" β_t (Ho et al. 2020, section 3.2)
VARIANCES = ("small", "large")
SPACINGS = ("leading", "trailing", "linspace", "logsnr")
#: The spacing each sampler takes when none is given: its diffusers scheduler's default (DDPMScheduler and
#: DDIMScheduler "leading"; DPMSolverMultistepScheduler "linspace", which starts at t = T − 1). On lesson 04's
#: DDPM, DPM-Solver++ 20 on its "leading" grid (first step at t = 940) gave FD 23.7 against 8.29 on a grid
#: that starts at t = 999 (benchmarks/RESULTS.md, sixth GPU loan).
DEFAULT_SPACING = {"ddpm": "leading", "ddim": "leading", "dpm++2m": "linspace"}
#: A floor on λ_t = log(α_t/σ_t) (σ/α ≤ e^5.1 ≈ 164) to pass as ``lambda_min``: the value the DPM-Solver
#: authors gave diffusers' ``lambda_min_clipped`` for the cosine schedule (DeepFloyd IF). Not a default:
#: on two trainings of lesson 04's DDPM it raised DPM-Solver++'s FD 1.1–2.2× (benchmarks/RESULTS.md). Other schedules
#: of the course never reach it at T = 1000 (linear: λ_999 = −5.06).
DPM_LAMBDA_MIN = -5.1
#: Where the "logsnr" grid starts its even steps in λ: σ/α = 80, the σ_max of Karras et al. (2022) for images in
#: [-1, 1]. Above it an image is buried under noise 80 times its own scale, and a grid even in λ from the top of
#: the cosine schedule (σ/α ≈ 2·10⁴ at t = 999) would spend a third of its steps there.
LOGSNR_SIGMA_MAX = 80.0

Step = int | torch.Tensor


# --------------------------------------------------------------------------- timesteps
def timesteps(
    schedule_or_T: NoiseSchedule | int, steps: int, spacing: str = "leading", lambda_min: float | None = None
) -> torch.Tensor:
    r"""The ``steps`` timesteps a sampler visits, descending, as an int64 tensor of shape (steps,).

    With T training steps (Lin et al. 2023, Table 2; diffusers' ``timestep_spacing``):

    - ``"leading"``:  t_i = i · ⌊T / steps⌋, i = 0 … steps−1 (always ends at t = 0; the largest
      is below T−1 when steps does not divide T). diffusers' default for DDPM and DDIM.
    - ``"trailing"``: t_i = round(T − i · T/steps) − 1 (always starts at t = T−1, the pure-noise end).
    - ``"linspace"``: round(linspace(0, T−1, steps)) (both ends).
    - ``"logsnr"`` (needs a NoiseSchedule): even steps in λ_t, the half log-SNR; see :func:`logsnr_timesteps`.

    The first three are exactly ``DDIMScheduler(timestep_spacing=spacing, steps_offset=0).set_timesteps(steps)``.
    (For a few step counts, e.g. T = 1000 and steps = 61, diffusers' ``"trailing"`` list carries
    an extra, invalid t = −1 at its end from floating-point overshoot in ``np.arange``; this
    function returns its first ``steps`` entries.)

    ``lambda_min`` (needs a NoiseSchedule): leave out the top timesteps where
    λ_t = log(sqrt(abar_t) / sqrt(1 − abar_t)) < lambda_min, T' = T − (their number) of them kept,
    as diffusers' ``DPMSolverMultistepScheduler(lambda_min_clipped=...)`` does. "trailing" then
    starts at t = T'−1 with the same stride, round(T' − i · T/steps) − 1, exactly as that scheduler;
    "leading" and "linspace" use T' in place of T on the grids above (DPM-Solver's own leading and
    linspace grids differ: :func:`dpm_timesteps`). On the cosine schedule with T = 1000 and
    lambda_min = −5.1 that drops t = 996 … 999, where σ/α runs from 214 to 2·10⁴.
    """
    if spacing == "logsnr":
        return _logsnr_grid_checked(schedule_or_T, steps, lambda_min)
    T, steps, top = _grid_arguments(schedule_or_T, steps, spacing, lambda_min)
    if spacing == "leading":
        if steps > top:
            raise ValueError(_too_many(steps, top, T, spacing, lambda_min))
        return torch.arange(steps - 1, -1, -1, dtype=torch.int64) * (top // steps)
    if spacing == "trailing":
        # top − i·(T/steps), rounded half to even, computed in float64 the way np.arange does
        # (value 1 is start + step; later ones start + i·delta with delta = (start + step) − start).
        step = -(T / steps)
        delta = (top + step) - top
        t = top + torch.arange(steps, dtype=torch.float64) * delta
        if steps > 1:
            t[1] = top + step
        t = torch.round(t).long() - 1
        if t[-1] < 0 and top < T:  # the stride is T/steps, so fewer than `steps` fit below the clip
            raise ValueError(_too_many(steps, top, T, spacing, lambda_min))
        return t
    if steps > top:
        raise ValueError(_too_many(steps, top, T, spacing, lambda_min))
    if steps == 1:
        return torch.zeros(1, dtype=torch.int64)
    t = torch.arange(steps, dtype=torch.float64) * ((top - 1) / (steps - 1))
    t[-1] = top - 1
    return torch.round(t).long().flip(0)


def dpm_timesteps(
    schedule_or_T: NoiseSchedule | int, steps: int, spacing: str = "leading", lambda_min: float | None = None
) -> torch.Tensor:
    r"""The ``steps`` timesteps DPM-Solver++ visits, descending, int64 of shape (steps,): exactly
    ``DPMSolverMultistepScheduler(timestep_spacing=spacing, steps_offset=0, lambda_min_clipped=...)``.

    Its last step always goes from the lowest of them to the clean image, so "leading" and "linspace"
    lay steps + 1 points on [0, T'−1] and drop the last one, t = 0 (a step from t = 0 to the clean
    image would change almost nothing, and DDIM's grids below make it):

    - ``"leading"``:  t_i = (steps − i) · ⌊T' / (steps + 1)⌋, i = 0 … steps−1;
    - ``"linspace"``: round(linspace(0, T'−1, steps + 1)) without its 0;
    - ``"trailing"``: as :func:`timesteps` (it never visits t = 0 for steps < T).
    - ``"logsnr"``: as :func:`timesteps`, ending at t = 0 (diffusers has no such spacing; its
      ``set_timesteps(timesteps=...)`` takes this list).

    T' = T, or the number of timesteps kept by ``lambda_min`` (see :func:`timesteps`). "leading" and
    "linspace" therefore take at most T' − 1 steps.
    """
    if spacing in ("trailing", "logsnr"):
        return timesteps(schedule_or_T, steps, spacing, lambda_min)
    T, steps, top = _grid_arguments(schedule_or_T, steps, spacing, lambda_min)
    if steps > top - 1:
        clip = "" if top == T else f" (the λ clip keeps {top} of them)"
        raise ValueError(
            f"DPM-Solver++ with {spacing!r} spacing visits at most T − 1 = {top - 1} timesteps{clip}, got "
            f"steps={steps}: its grid has steps + 1 points and drops t = 0; use 'trailing' for more"
        )
    if spacing == "leading":
        return torch.arange(steps, 0, -1, dtype=torch.int64) * (top // (steps + 1))
    # np.linspace(0, top − 1, steps + 1) rounded half to even, as np.round does; its last point exactly top − 1
    t = torch.arange(steps + 1, dtype=torch.float64) * ((top - 1) / steps)
    t[-1] = top - 1
    return torch.round(t).long().flip(0)[:-1]


def sampler_timesteps(
    schedule: NoiseSchedule, steps: int | None, spacing: str | None, sampler: str, lambda_min: float | None = None
) -> list[int]:
    """The timesteps ``sampler`` visits: :func:`timesteps` for DDPM and DDIM, :func:`dpm_timesteps` for
    DPM-Solver++ (each as its diffusers scheduler), with an optional λ clip. ``spacing`` None: the
    sampler's own default, :data:`DEFAULT_SPACING` (as its diffusers scheduler's). ``steps`` None means all T
    (DPM-Solver++ with "leading" or "linspace": T − 1, all its grid holds); ``lambda_min`` None or −inf
    means no clip (every sampler's default, as in diffusers), a number such as :data:`DPM_LAMBDA_MIN`
    leaves out the top timesteps with λ_t below it."""
    _check_sampler(sampler)
    if spacing is None:
        spacing = DEFAULT_SPACING[sampler]
    if lambda_min is None:
        lambda_min = -math.inf
    clip = None if lambda_min == -math.inf else lambda_min
    if steps is None:
        if spacing == "logsnr":
            raise ValueError(
                "steps=None asks for all T timesteps, and the 'logsnr' grid is for a few: pass steps= (for "
                "example 20), or take spacing='leading' for every timestep"
            )
        steps = schedule.num_steps if clip is None else _kept_timesteps(schedule, clip)
        if sampler == "dpm++2m" and spacing != "trailing":
            steps -= 1
    if sampler == "dpm++2m":
        return dpm_timesteps(schedule, steps, spacing, clip).tolist()
    return timesteps(schedule, steps, spacing, clip).tolist()


def logsnr_timesteps(schedule: NoiseSchedule, steps: int, sigma_max: float = LOGSNR_SIGMA_MAX) -> torch.Tensor:
    r"""``steps`` timesteps evenly spaced in λ_t = log(α_t/σ_t) = −log(σ_t/α_t), descending, int64 (steps,).

    With α_t = sqrt(abar_t) and σ_t = sqrt(1 − abar_t): lay ``steps`` points evenly in λ from
    λ_hi = max(λ_{T−1}, −log σ_max) down to λ_0, the cleanest timestep; take for each the timestep whose
    λ_t is nearest; then

    - move the first to t = T−1, so that sampling starts from pure noise (where x_T ~ N(0, I) is
      right) and the jump from there to σ/α = σ_max costs one step instead of a third of them;
    - where two points fall on one timestep (near either end of the cosine schedule λ changes fast from one
      timestep to the next), lift the higher one to the next timestep up, so there are exactly ``steps``
      distinct ones. Too many steps crowd the top against t = T−1: a clear error says how many fit.

    A solver that steps in λ (DPM-Solver) has its truncation error set by the step sizes h = Δλ, so even
    steps in λ suit it; its authors' code calls this the "logSNR" step schedule. On the cosine schedule with
    T = 1000 the uniform-in-t grids take h ≈ 7 for the first step and end at t = 49 for 20 steps, where σ/α
    is still 0.09, and the last step jumps from there to the clean image. On a Gaussian with Fashion-MNIST's
    mean and covariance, whose exact ε̂ and ODE solution are known, DPM-Solver++(2M) with 20 steps lands 14×
    closer to the exact image on this grid than on "trailing" (benchmarks/solver_error.py). Not a diffusers
    spacing: pass the list to a diffusers scheduler as ``set_timesteps(timesteps=...)``.
    """
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(
            f"the 'logsnr' spacing needs the NoiseSchedule (to compute λ_t), not just T; got {schedule!r}"
        )
    T = schedule.num_steps
    steps = _check_steps(steps, T)
    if isinstance(sigma_max, bool) or not isinstance(sigma_max, (int, float)) or not 0 < sigma_max < math.inf:
        raise ValueError(f"sigma_max must be a positive number (σ/α where the even steps start), got {sigma_max!r}")
    lam, floor = _lambdas(schedule), -math.log(sigma_max)
    if floor >= lam[0].item():
        raise ValueError(
            f"sigma_max must be above σ/α at t = 0 ({math.exp(-lam[0].item()):.3g} on this schedule), where the "
            f"even steps end; got {sigma_max!r}"
        )
    grid = _logsnr_grid(lam, steps, floor)
    if grid is None:
        fit, too_many = 1, steps  # bisect for the message: more steps only crowd the ends more
        while too_many - fit > 1:
            mid = (fit + too_many) // 2
            fit, too_many = (mid, too_many) if _logsnr_grid(lam, mid, floor) is not None else (fit, mid)
        raise ValueError(
            f"the 'logsnr' spacing lays at most {fit} distinct timesteps on this schedule (T = {T}), got "
            f"steps={steps}; use fewer steps, or 'trailing' for more"
        )
    return grid


def _lambdas(schedule: NoiseSchedule) -> torch.Tensor:
    """λ_t = log(sqrt(abar_t) / sqrt(1 − abar_t)) for t = 0 … T−1, float64, falling with t."""
    abar = schedule.alphas_cumprod.double()
    return 0.5 * (torch.log(abar) - torch.log1p(-abar))


def _logsnr_grid(lam: torch.Tensor, steps: int, lam_floor: float) -> torch.Tensor | None:
    """The "logsnr" grid for λ_t (falling with t), or None when ``steps`` distinct timesteps do not fit."""
    T = len(lam)
    if steps == 1:
        return torch.tensor([T - 1])
    lam_hi = max(lam[-1].item(), lam_floor)
    points = torch.linspace(lam_hi, lam[0].item(), steps, dtype=torch.float64)
    rising = lam.flip(0)  # λ by descending t, so rising: index j is t = T − 1 − j
    j = torch.searchsorted(rising, points).clamp(1, T - 1)
    j = torch.where((points - rising[j - 1]).abs() <= (rising[j] - points).abs(), j - 1, j)  # the nearer neighbour
    t = T - 1 - j
    t[0] = T - 1
    for i in range(steps - 2, 0, -1):  # from the clean end up: lift repeats one timestep each
        t[i] = max(int(t[i]), int(t[i + 1]) + 1)
    return t if int(t[1]) < T - 1 else None


def _logsnr_grid_checked(schedule_or_T, steps, lambda_min) -> torch.Tensor:
    if lambda_min is not None and lambda_min != -math.inf:
        raise ValueError(
            "lambda_min applies to the 'leading', 'trailing' and 'linspace' grids; 'logsnr' already starts its "
            f"even steps at σ/α = {LOGSNR_SIGMA_MAX:g} (logsnr_timesteps(..., sigma_max=...) moves that)"
        )
    return logsnr_timesteps(schedule_or_T, steps)


def _grid_arguments(schedule_or_T, steps, spacing: str, lambda_min) -> tuple[int, int, int]:
    """Checked (T, steps, T') for a timestep grid: T' = T, or the timesteps the λ clip keeps."""
    T = schedule_or_T.num_steps if isinstance(schedule_or_T, NoiseSchedule) else schedule_or_T
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"schedule_or_T must be a NoiseSchedule or a positive int, got {schedule_or_T!r}")
    steps = _check_steps(steps, T)
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; expected one of {', '.join(map(repr, SPACINGS))}")
    return T, steps, T if lambda_min is None else _kept_timesteps(schedule_or_T, lambda_min)


def _kept_timesteps(schedule: NoiseSchedule, lambda_min: float) -> int:
    """T minus the number of timesteps with λ_t < lambda_min (λ falls with t, so those are the top ones)."""
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError("lambda_min needs the NoiseSchedule (to compute λ_t), not just T")
    if isinstance(lambda_min, bool) or not isinstance(lambda_min, (int, float)) or math.isnan(lambda_min):
        raise ValueError(f"lambda_min must be a number (or None for no clip), got {lambda_min!r}")
    lam = _lambdas(schedule)
    kept = int((lam >= lambda_min).sum())
    if kept < 1:
        raise ValueError(f"every timestep has λ_t < lambda_min = {lambda_min}; λ_0 = {lam[0].item():.2f}")
    return kept


def _too_many(steps: int, top: int, T: int, spacing: str, lambda_min) -> str:
    return (
        f"{steps} {spacing} steps do not fit below the λ clip (lambda_min = {lambda_min} keeps t < {top} of "
        f"T = {T}); use fewer steps, or lambda_min=-math.inf for no clip"
    )


def _check_steps(steps, T: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an int in 1..{T} (the schedule's T), got {steps!r}")
    return steps


# --------------------------------------------------------------------------- helpers
def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return randn(x.shape, generator, x.device, x.dtype)  # a CPU generator serves GPU tensors too


def _as_step(schedule: NoiseSchedule, t, n: int, name: str, final_ok: bool = False) -> Step:
    """A timestep as a Python int (the whole batch at one step) or an int64 (N,) tensor.

    An int keeps every coefficient on the host (Python floats), so a sampling loop that
    passes ints never waits for the device. With ``final_ok``, values < 0 mean "the clean
    image" (abar = 1) and come back as −1.
    """
    T = schedule.num_steps
    if isinstance(t, bool):
        raise ValueError(f"{name} must be an int or an int64 (N,) tensor, got a bool")
    if t is None:
        land = " (the step to land on; a negative value means the clean image)" if final_ok else ""
        raise ValueError(f"{name} must be an int or an int64 (N,) tensor{land}, got None")
    if isinstance(t, (int, np.integer)):
        t = int(t)
        if final_ok and t < 0:
            return -1
        if not 0 <= t < T:
            lo = "a negative value (the clean image) or " if final_ok else ""
            raise ValueError(f"{name} must be {lo}in 0..{T - 1}, got {t}")
        return t
    t = torch.as_tensor(t)
    if final_ok and not (t.dtype.is_floating_point or t.dtype == torch.bool):
        checked = schedule.check_timesteps(t.clamp(min=0), n)  # shape, dtype and upper bound
        t = t.long().clamp(min=-1)
        return t.expand_as(checked) if t.dim() == 0 else t
    return schedule.check_timesteps(t, n)


def _abar(schedule: NoiseSchedule, t: Step, like: torch.Tensor):
    """abar_t: a Python float for an int t (1.0 for t < 0), else an (N,1,1,1) tensor like ``like``."""
    if isinstance(t, int):
        return 1.0 if t < 0 else float(schedule.alphas_cumprod[t])
    table = schedule._on(schedule.alphas_cumprod, like.device)  # kept per device; float32 on MPS (no float64)
    t = t.to(like.device)
    vals = torch.where(t >= 0, table[t.clamp(min=0)], torch.ones((), dtype=table.dtype, device=like.device))
    return vals.view(-1, *([1] * (like.dim() - 1)))


def _c(coef, like: torch.Tensor):
    """A coefficient ready to scale ``like``: Python floats as they are, tensors in like's dtype.

    Coefficients are computed in float64 and cast only here: 1 − abar_t/abar_{t−1} loses four
    digits to cancellation near t = 0, too many for float32.
    """
    return coef if isinstance(coef, float) else coef.to(like.dtype)


def _sqrt(v):
    """sqrt(max(v, 0)) of a Python float or a tensor (rounding may leave −1e-17 where 0 is meant)."""
    return math.sqrt(max(v, 0.0)) if isinstance(v, float) else v.clamp(min=0).sqrt()


def _check_pair(x_t: torch.Tensor, other: torch.Tensor, name: str) -> None:
    check_images(x_t, "x_t")
    if not isinstance(other, torch.Tensor) or other.shape != x_t.shape:
        got = tuple(other.shape) if isinstance(other, torch.Tensor) else type(other).__name__
        raise ValueError(f"{name} must have x_t's shape {tuple(x_t.shape)}, got {got}")


def _check_before(t: Step, t_prev: Step, what: str) -> None:
    """t_prev must come after t in sampling order (t_prev < t)."""
    if isinstance(t, int) and isinstance(t_prev, int):
        bad = t_prev >= t
    else:
        bad = bool((torch.as_tensor(t_prev).cpu() >= torch.as_tensor(t).cpu()).any())
    if bad:
        raise ValueError(f"t_prev must be smaller than t {what}")


def _check_variance(variance, sampler: str = "ddpm") -> None:
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; expected one of {', '.join(map(repr, VARIANCES))}")
    if variance != "small" and sampler != "ddpm":
        raise ValueError(f"variance applies to sampler='ddpm' only, got variance={variance!r} with sampler={sampler!r}")


def _check_eta(eta) -> float:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta >= 0 or math.isinf(eta):
        raise ValueError(f"eta must be a finite number ≥ 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta!r}")
    return float(eta)


def _x0_from_eps(x_t, eps, a_t, clip_x0: bool):
    x0 = (x_t - _c(_sqrt(1 - a_t), x_t) * eps) / _c(_sqrt(a_t), x_t)
    return x0.clamp(-1, 1) if clip_x0 else x0


# --------------------------------------------------------------------------- one step
def ddpm_step(
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: int | torch.Tensor,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    clip_x0: bool = False,
    t_prev: int | torch.Tensor | None = None,
    variance: str = "small",
) -> torch.Tensor:
    r"""One ancestral step x_t → x_{t'} (equations in the module docstring).

    x_t, eps: N×C×H×W; t: an int (the whole batch at one step) or an int64 (N,) tensor;
    t_prev: the step to land on, t' < t (default t − 1; < 0 means the clean image), so a
    sampler may skip steps with β recomputed from abar ratios ("DDPM at 50 steps");
    noise: the z to use (drawn from ``generator`` if None; ignored where t = 0);
    clip_x0: clamp x̂_0 to [-1, 1] (diffusers' ``clip_sample=True``); variance: "small", the
    posterior β̃_t (the default), or "large", β_t. Returns N×C×H×W.
    """
    _check_variance(variance)
    _check_pair(x_t, eps, "eps")
    t = _as_step(schedule, t, len(x_t), "t")
    if t_prev is None:
        t_prev = t - 1
    else:
        t_prev = _as_step(schedule, t_prev, len(x_t), "t_prev", final_ok=True)
        _check_before(t, t_prev, "(DDPM only steps towards the clean image)")
    a_t, a_prev = _abar(schedule, t, x_t), _abar(schedule, t_prev, x_t)
    beta_t = 1 - a_t / a_prev  # = schedule.betas[t] when t' = t − 1, written as diffusers does

    x0 = _x0_from_eps(x_t, eps, a_t, clip_x0)
    coef_x0 = _sqrt(a_prev) * beta_t / (1 - a_t)
    coef_xt = _sqrt(1 - beta_t) * (1 - a_prev) / (1 - a_t)
    mean = _c(coef_x0, x_t) * x0 + _c(coef_xt, x_t) * x_t
    var = (1 - a_prev) / (1 - a_t) * beta_t if variance == "small" else beta_t
    var = max(var, 1e-20) if isinstance(var, float) else var.clamp(min=1e-20)
    if noise is None:
        noise = _noise_like(x_t, generator)
    else:
        _check_pair(x_t, noise, "noise")
    if isinstance(t, int):
        keep = 1.0 if t > 0 else 0.0  # no noise on the last step
    else:
        keep = (t > 0).to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1))).to(x_t.device)
    return mean + keep * _c(_sqrt(var), x_t) * noise


def ddim_step(
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: int | torch.Tensor,
    t_prev: int | torch.Tensor,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    clip_x0: bool = False,
) -> torch.Tensor:
    r"""One DDIM step x_t → x_{t'} (Song et al. 2021, eq. 12):

        x̂_0    = (x_t − sqrt(1 − abar_t) ε̂) / sqrt(abar_t)
        σ_t    = η · sqrt((1 − abar_{t'}) / (1 − abar_t)) · sqrt(1 − abar_t / abar_{t'})
        x_{t'} = sqrt(abar_{t'}) x̂_0 + sqrt(1 − abar_{t'} − σ_t²) ε̂ + σ_t z

    x_t, eps: N×C×H×W; t: an int in 0 … T−1 or an int64 (N,) tensor; t_prev: likewise, and
    t_prev < 0 means abar_{t'} = 1 (the last step lands on x̂_0; diffusers' ``set_alpha_to_one``).
    eta ≥ 0: 0 is deterministic, 1 has DDPM's posterior variance. With eta = 0, t_prev > t is
    allowed: the same update run forwards is DDIM inversion. noise: the z (drawn from
    ``generator`` when None and eta > 0; drawn on every step with eta > 0, as diffusers does, so
    a seeded run uses the same random numbers). clip_x0: clamp x̂_0 to [-1, 1] *and* recompute
    the direction from it, ε̂ ← (x_t − sqrt(abar_t) x̂_0) / sqrt(1 − abar_t), so both terms
    describe the same clean image (the DDIM of OpenAI's guided-diffusion; diffusers'
    ``clip_sample=True`` with ``step(..., use_clipped_model_output=True)``). A clamped x̂_0 beside
    the raw ε̂ mixes two images; under guidance with the cosine schedule that cost the quick
    text model a third of its accuracy at s = 3 (benchmarks/RESULTS.md). Returns x_{t'}, N×C×H×W.

    Equals diffusers' ``DDIMScheduler.step(eps, t, x_t, eta, variance_noise=noise)`` with
    ``clip_sample=False`` when t_prev = t − T // steps (its "leading" spacing).
    """
    _check_pair(x_t, eps, "eps")
    eta = _check_eta(eta)
    t = _as_step(schedule, t, len(x_t), "t")
    t_prev = _as_step(schedule, t_prev, len(x_t), "t_prev", final_ok=True)
    if eta > 0:
        _check_before(t, t_prev, "when eta > 0 (only deterministic DDIM, eta = 0, runs forwards)")
    a_t, a_prev = _abar(schedule, t, x_t), _abar(schedule, t_prev, x_t)

    x0 = _x0_from_eps(x_t, eps, a_t, clip_x0)
    if clip_x0:  # the ε̂ that the clamped x̂_0 implies
        eps = (x_t - _c(_sqrt(a_t), x_t) * x0) / _c(_sqrt(1 - a_t), x_t)
    sigma = eta * _sqrt((1 - a_prev) / (1 - a_t)) * _sqrt(1 - a_t / a_prev) if eta > 0 else 0.0
    x_prev = _c(_sqrt(a_prev), x_t) * x0 + _c(_sqrt(1 - a_prev - sigma**2), x_t) * eps
    if eta > 0:
        if noise is None:
            noise = _noise_like(x_t, generator)
        else:
            _check_pair(x_t, noise, "noise")
        x_prev = x_prev + _c(sigma, x_t) * noise
    return x_prev


def _lambda(a):
    """λ = log(sqrt(abar) / sqrt(1 − abar)), for a Python float or a tensor (+inf at abar = 1)."""
    if isinstance(a, float):
        return math.inf if a >= 1.0 else 0.5 * (math.log(a) - math.log(1 - a))
    return 0.5 * (torch.log(a) - torch.log(1 - a))


def dpm_solver_pp_2m_step(
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    x0_hat: torch.Tensor,
    t: int | torch.Tensor,
    t_prev: int | torch.Tensor,
    x0_hat_last: torch.Tensor | None = None,
    t_last: int | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""One DPM-Solver++(2M) step x_t → x_{t'} (Lu et al. 2022, Algorithm 2, midpoint form).

    With α = sqrt(abar), σ = sqrt(1 − abar), λ = log(α/σ), and h = λ_{t'} − λ_t > 0:

        first order (= deterministic DDIM):  x_{t'} = (σ_{t'}/σ_t) x_t + α_{t'} (1 − e^{−h}) x̂_0(t)
        second order (multistep): the same with x̂_0(t) replaced by
            D = x̂_0(t) + (x̂_0(t) − x̂_0(t_last)) / (2 r),    r = (λ_t − λ_{t_last}) / h,

    a linear extrapolation in λ of the data prediction through the previous step's x̂_0, which
    costs no extra model call. The final jump to t' < 0 (abar = 1, λ = +∞) is first order and
    lands exactly on x̂_0(t) (diffusers' ``final_sigmas_type="zero"``, ``lower_order_final``).

    x_t, x0_hat: N×C×H×W, x0_hat the data prediction at t, e.g. x̂_0 = (x_t − σ_t ε̂)/α_t;
    t: int or (N,) int64; t_prev < t (negative = clean image); x0_hat_last, t_last: the previous
    step's prediction and timestep (t_last > t), or None for a first-order step.
    """
    _check_pair(x_t, x0_hat, "x0_hat")
    t = _as_step(schedule, t, len(x_t), "t")
    t_prev = _as_step(schedule, t_prev, len(x_t), "t_prev", final_ok=True)
    _check_before(t, t_prev, "(DPM-Solver steps towards the clean image)")
    if (x0_hat_last is None) != (t_last is None):
        raise ValueError("pass both x0_hat_last and t_last (second order) or neither (first order)")
    a_t, a_prev = _abar(schedule, t, x_t), _abar(schedule, t_prev, x_t)
    if isinstance(t_prev, int) and t_prev < 0:
        return x0_hat.clone()
    final = None if isinstance(t_prev, int) else (t_prev < 0).to(x_t.device).view(-1, *([1] * (x_t.dim() - 1)))
    if final is not None:  # keep the finite formula finite where abar_{t'} = 1; those rows take x̂_0 below
        a_prev = torch.where(final, a_t, a_prev)
    h = _lambda(a_prev) - _lambda(a_t)
    d = x0_hat
    if x0_hat_last is not None:
        _check_pair(x_t, x0_hat_last, "x0_hat_last")
        t_last = _as_step(schedule, t_last, len(x_t), "t_last")
        _check_before(t_last, t, "for the previous step: t must be smaller than t_last")
        r = (_lambda(a_t) - _lambda(_abar(schedule, t_last, x_t))) / h
        d = x0_hat + _c(1 / (2 * r), x_t) * (x0_hat - x0_hat_last)
    exp_neg_h = math.exp(-h) if isinstance(h, float) else torch.exp(-h)
    x_prev = _c(_sqrt(1 - a_prev) / _sqrt(1 - a_t), x_t) * x_t + _c(_sqrt(a_prev) * (1 - exp_neg_h), x_t) * d
    return x_prev if final is None else torch.where(final, x0_hat, x_prev)


# --------------------------------------------------------------------------- whole trajectories
EpsFn = Callable[[torch.Tensor, int], torch.Tensor]


def sample_loop(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    ts: Sequence[int] | torch.Tensor,
    sampler: str = "ddim",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    clip_x0: bool = False,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    variance: str = "small",
) -> torch.Tensor:
    r"""Run a sampler from x_T through the descending timesteps ``ts`` to x_0.

    eps_fn(x, t) → ε̂ with x N×C×H×W and t a Python int; any callable works (a trained U-Net,
    an oracle that knows x_0, an analytic formula). Step i goes from ts[i] to ts[i+1], the
    last from ts[−1] to the clean image (t' = −1). ``sampler``: "ddpm" (posterior between
    the visited steps, with ``variance`` "small" or "large", see :func:`ddpm_step`), "ddim" (with
    ``eta``) or "dpm++2m" (first step first order, then second order, last step first order).
    callback(i, t, x) is called after each step with the new x.
    Coefficients are computed on the host from int timesteps, so the loop never waits for the
    device. Returns x_0 (not clamped), N×C×H×W.
    """
    _check_sampler(sampler)
    eta = _check_eta(eta)
    if eta > 0 and sampler != "ddim":
        raise ValueError(f"eta applies to sampler='ddim' only, got eta={eta} with sampler={sampler!r}")
    _check_variance(variance, sampler)
    check_images(x_T, "x_T")
    ts = [int(t) for t in (ts.tolist() if isinstance(ts, torch.Tensor) else ts)]
    if not ts or any(b >= a for a, b in zip(ts, ts[1:])) or ts[-1] < 0 or ts[0] >= schedule.num_steps:
        raise ValueError(f"ts must be a non-empty, strictly descending list in 0..{schedule.num_steps - 1}")
    x = x_T
    x0_last, t_last = None, None
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        eps = eps_fn(x, t)
        if sampler == "ddpm":
            x = ddpm_step(schedule, x, eps, t, generator=generator, clip_x0=clip_x0, t_prev=t_prev, variance=variance)
        elif sampler == "ddim":
            x = ddim_step(schedule, x, eps, t, t_prev, eta=eta, generator=generator, clip_x0=clip_x0)
        else:
            _check_pair(x, eps, "eps")
            x0 = _x0_from_eps(x, eps, _abar(schedule, t, x), clip_x0)
            x = dpm_solver_pp_2m_step(schedule, x, x0, t, t_prev, x0_last, t_last)
            x0_last, t_last = x0, t
        if callback is not None:
            callback(i, t, x)
    return x


def ddim_invert(
    model: nn.Module | Callable,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    steps: int,
    spacing: str = "leading",
    labels: torch.Tensor | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    r"""DDIM inversion: the noise x_T that deterministic DDIM (eta = 0) turns back into ``x0``.

    The η = 0 update read forwards, along the ascending timesteps t_0 < t_1 < … of
    ``timesteps(schedule, steps, spacing)``:

        x_{t_{i+1}} = sqrt(abar_{t_{i+1}}) x̂_0 + sqrt(1 − abar_{t_{i+1}}) ε̂,
        x̂_0 = (x_{t_i} − sqrt(1 − abar_{t_i}) ε̂) / sqrt(abar_{t_i}),   ε̂ = ε_θ(x_{t_i}, t_i),

    starting from x_0 itself (abar = 1) with ε̂ = ε_θ(x_0, t_0). Sampling evaluates ε_θ at the
    other end of each step, so the round trip is exact only as far as ε_θ changes little over
    one step: the error shrinks as ``steps`` grows. model: ε_θ(x, t[, labels]), an nn.Module or
    any callable; x0: N×C×H×W. Returns x_T at t = timesteps(...)[0], N×C×H×W.
    """
    check_images(x0, "x0")
    check_schedule(schedule)
    batch_size = check_batch_size(batch_size)
    ts = timesteps(schedule, steps, spacing).flip(0).tolist()  # ascending
    labels = check_labels(labels, len(x0), x0.device)
    eps_fn = _model_eps_fn(model, labels, batch_size, x0.device)
    was_training = getattr(model, "training", None)
    if isinstance(model, nn.Module):
        model.eval()
    it = range(len(ts))
    if progress:
        from .progress import progress_bar

        it = progress_bar(it, desc="DDIM inversion")
    x = x0
    with torch.no_grad():
        for i in it:
            t_from, t_to = (ts[i - 1] if i > 0 else -1), ts[i]
            eps = eps_fn(x, t_from if i > 0 else t_to)
            a_from, a_to = _abar(schedule, t_from, x), _abar(schedule, t_to, x)
            x0_hat = _x0_from_eps(x, eps, a_from, clip_x0=False)
            x = _c(_sqrt(a_to), x) * x0_hat + _c(_sqrt(1 - a_to), x) * eps
    if isinstance(model, nn.Module):
        model.train(was_training)
    return x


def _check_sampler(sampler) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(map(repr, SAMPLERS))}")


def _model_eps_fn(model, labels, batch_size, device) -> EpsFn:
    """eps_fn(x, t) for a model ε_θ(x, t[, labels]): t as an (N,) tensor on the device, in batches.

    An int t becomes int64; a float t (diffusers' Euler interpolates between steps) float32.
    """

    def eps_fn(x: torch.Tensor, t: int | float) -> torch.Tensor:
        n = len(x)
        tt = torch.full((n,), t, device=x.device, dtype=torch.long if isinstance(t, int) else torch.float32)
        bs = batch_size or n
        return torch.cat(
            [_predict(model, x[i : i + bs], tt[i : i + bs], None if labels is None else labels[i : i + bs])
             for i in range(0, n, bs)]
        )

    return eps_fn


def _prompts(prompt, n: int, what: str) -> list[str]:
    """One prompt per image: a string is repeated n times, a list must hold n strings."""
    if isinstance(prompt, str):
        return [prompt] * n
    if isinstance(prompt, Sequence) and len(prompt) == n and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    got = f"a sequence of length {len(prompt)}" if isinstance(prompt, Sequence) else type(prompt).__name__
    raise ValueError(f"{what} must be a string or a list of n = {n} strings, got {got}")


def _conditioned_eps_fn(model, n, labels, prompt, negative_prompt, scale, text_encoder, batch_size, device):
    """eps_fn(x, t) for plain, class-conditional, text-conditional and guided sampling."""
    from .guidance import guided_eps

    cfg = getattr(model, "config", None)
    context_dim = getattr(cfg, "context_dim", None)
    num_classes = getattr(cfg, "num_classes", None)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"guidance_scale must be a finite number, got {scale!r}")
    if scale < 0:  # as lesson 07's slider: s < 0 steers away from the prompt, which no lesson teaches
        raise ValueError(f"guidance_scale must be ≥ 0 (0 unconditional, 1 conditional, > 1 guided), got {scale!r}; "
                         "to steer away from something, use negative_prompt=")
    if prompt is not None and context_dim is None:
        raise ValueError("prompt= needs a text-conditioned model (UNetConfig.context_dim); this one has none")
    if negative_prompt is not None and prompt is None:
        raise ValueError("negative_prompt= needs a prompt= as well")
    if context_dim is not None:
        if prompt is None:
            raise ValueError("this model is text-conditioned: pass prompt= ('' samples unconditionally)")
        if labels is not None:
            raise ValueError("pass prompt= to a text-conditioned model, not labels=")
        from .text import CAPTION_MAX_LENGTH, load_text_encoder

        encoder = text_encoder or load_text_encoder(device=device)
        cond = encoder.encode(_prompts(prompt, n, "prompt"), max_length=CAPTION_MAX_LENGTH).to(device)
        if cond.dim != context_dim:
            raise ValueError(f"the text encoder gives {cond.dim}-wide tokens; the model expects {context_dim}")
        if negative_prompt is None:
            negatives = [""]  # the null condition the model was trained with
        elif isinstance(negative_prompt, str):
            negatives = [negative_prompt]
        else:
            negatives = _prompts(negative_prompt, n, "negative_prompt")
        uncond = encoder.encode(negatives, max_length=CAPTION_MAX_LENGTH).to(device)

        def call(x, t, c):
            with autocast(x.device):
                return model(x, t, context=c).float()

    elif labels is not None:
        if num_classes is None:
            raise ValueError("labels= needs a class-conditional model (UNetConfig.num_classes); this one has none")
        cond = labels
        uncond = torch.full((1,), num_classes, dtype=torch.long, device=device)

        def call(x, t, c):
            return _predict(model, x, t, c)

    else:
        if scale != 1.0:
            raise ValueError("guidance_scale needs a condition: labels= for a class model, prompt= for a text model")
        return _model_eps_fn(model, None, batch_size, device)

    def eps_fn(x: torch.Tensor, t: int | float) -> torch.Tensor:
        tt = torch.full((len(x),), t, device=x.device, dtype=torch.long if isinstance(t, int) else torch.float32)
        bs = batch_size or len(x)
        parts = []
        for i in range(0, len(x), bs):
            c = cond[i : i + bs]
            u = uncond if len(uncond) == 1 else uncond[i : i + bs]
            parts.append(guided_eps(call, x[i : i + bs], tt[i : i + bs], c, u, float(scale)))
        return torch.cat(parts)

    return eps_fn


def check_batch_size(batch_size) -> int | None:
    """How many images go through the model at once: an int ≥ 1, or None for all of them."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int ≥ 1 (images per model call) or None (all), got {batch_size!r}")
    return int(batch_size)


def check_schedule(schedule) -> NoiseSchedule:
    """The noise schedule a sampler walks: a :class:`NoiseSchedule` (the model's training schedule)."""
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be the NoiseSchedule the model was trained with (e.g. "
                        f"NoiseSchedule.cosine(1000)), got {type(schedule).__name__}")
    return schedule


def _prepare(model, n, shape, labels, device):
    """Checked (shape, device, labels) for sampling n images from ``model``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if shape is None:
        cfg = getattr(model, "config", None)
        if cfg is None:
            raise ValueError("pass shape=(C, H, W): the model has no config to read it from")
        shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {shape}")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    return shape, device, check_labels(labels, n, device)


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
    *,
    sampler: str = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    spacing: str | None = None,
    lambda_min: float | None = None,
    variance: str = "small",
    x_T: torch.Tensor | None = None,
    prompt: str | Sequence[str] | None = None,
    negative_prompt: str | Sequence[str] | None = None,
    guidance_scale: float = 1.0,
    text_encoder=None,
):
    """Sample n images: x_T ~ N(0, I), then ``sampler`` over ``steps`` timesteps down to x_0.

    Conditioning and classifier-free guidance (lesson 07): ``labels`` (N,) for a class model
    (``num_classes``), ``prompt`` (one string for all, or n strings) for a text model
    (``context_dim``). With ``guidance_scale`` s ≠ 1 every step uses
    ε̃ = ε(x, t, ∅) + s·(ε(x, t, c) − ε(x, t, ∅)), where ∅ is the "no class" token, or the
    encoded ``negative_prompt`` (default: the empty prompt, the null condition of training);
    both predictions come from one batched call (``guidance.guided_eps``). s = 1 is plain
    conditional sampling, s = 0 unconditional. ``text_encoder``: default the course's
    (``text.load_text_encoder()``).

    model: ε_θ(x, t[, labels]); n images of ``shape`` (C, H, W), default the model's
    (in_channels, image_size, image_size). sampler: "ddpm" (ancestral; the default; ``variance``
    "small" = β̃_t or "large" = β_t), "ddim" (with ``eta``, 0 = deterministic) or "dpm++2m"; steps: how many model calls,
    1 … T (None = all T), visited as ``sampler_timesteps(schedule, steps, spacing, sampler, lambda_min)``; spacing
    "leading", "trailing", "linspace" or "logsnr" (even steps in λ, :func:`logsnr_timesteps`), None = the sampler's
    diffusers default (:data:`DEFAULT_SPACING`: "leading" for DDPM and DDIM, "linspace" for DPM-Solver++)
    (lambda_min None: no clip; :data:`DPM_LAMBDA_MIN` is the DPM-Solver authors' floor, see
    :func:`sampler_timesteps`); x_T: start from
    this noise (e.g. from :func:`ddim_invert`) instead of drawing it. clip_x0 (default on):
    clamp x̂_0 to [-1, 1] at every step, see ``ddpm_step``. Same ``seed`` → same images on a
    given device. Returns N×C×H×W clamped to [-1, 1], or, with ``trajectory_every=k``, a tuple
    (images, frames) where frames holds x_T and then x_t every k steps before the end (for
    animations; with all T steps that is every t divisible by k).
    """
    _check_sampler(sampler)
    check_schedule(schedule)
    seed, batch_size = check_seed(seed), check_batch_size(batch_size)
    if trajectory_every is not None and (
        isinstance(trajectory_every, bool) or not isinstance(trajectory_every, int) or trajectory_every < 0
    ):
        raise ValueError(f"trajectory_every must be an int ≥ 1 (keep every k-th step), 0 or None, "
                         f"got {trajectory_every!r}")
    eta = _check_eta(eta)
    if eta > 0 and sampler != "ddim":
        raise ValueError(f"eta applies to sampler='ddim' only, got eta={eta} with sampler={sampler!r}")
    _check_variance(variance, sampler)
    ts = sampler_timesteps(schedule, steps, spacing, sampler, lambda_min)
    shape, device, labels = _prepare(model, n, shape, labels, device)
    eps_fn = _conditioned_eps_fn(
        model, n, labels, prompt, negative_prompt, guidance_scale, text_encoder, batch_size, device
    )

    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    was_training = model.training
    model.eval()
    if x_T is None:
        x = torch.randn((n, *shape), generator=generator, device=device)
    else:
        if not isinstance(x_T, torch.Tensor) or tuple(x_T.shape) != (n, *shape):
            got = tuple(x_T.shape) if isinstance(x_T, torch.Tensor) else type(x_T).__name__
            raise ValueError(f"x_T must have shape {(n, *shape)}, got {got}")
        x = x_T.to(device=device, dtype=torch.float32)
    frames = [x.cpu()] if trajectory_every else None
    bar = None
    if progress:
        from .progress import progress_bar

        bar = progress_bar(total=len(ts), desc=f"{sampler.upper()} sampling")

    def callback(i, t, x):
        if bar is not None:
            bar.update()
        if trajectory_every and (len(ts) - 1 - i) % trajectory_every == 0:
            frames.append(x.clamp(-1, 1).cpu())

    try:
        x = sample_loop(eps_fn, schedule, x, ts, sampler, eta, generator, clip_x0, callback, variance)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    x = x.clamp(-1, 1)
    return (x, frames) if trajectory_every else x


def _predict(model, x, t, labels):
    with autocast(x.device):
        out = model(x, t) if labels is None else model(x, t, labels)
    return out.float()

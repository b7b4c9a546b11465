r"""The bridge to diffusers: the course's schedules as diffusers schedulers, and its U-Net sampled by them.

A diffusers scheduler is a config (the betas, how to space the timesteps, what the model
predicts) plus a ``step(model_output, t, x)`` that is one solver update. The course's
``NoiseSchedule`` holds the same betas, so

    make_scheduler("dpm++2m", NoiseSchedule.cosine())

is diffusers' ``DPMSolverMultistepScheduler`` on the course's cosine schedule, and
:func:`sample_with_diffusers` runs the usual diffusers loop

    x = σ_init · z;  for t in scheduler.timesteps:  x = scheduler.step(ε_θ(scale(x, t), t), t, x)

with the course's own U-Net as ε_θ. diffusers keeps its tables in float32 while the course
keeps float64, so the two agree to float32 rounding (about 1e-6 relative in abar).

diffusers is imported inside the functions: importing it takes seconds, and most lessons
never need it.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from .device import check_seed
from .samplers import (
    SPACINGS,
    _check_eta,
    _conditioned_eps_fn,
    _prepare,
    check_batch_size,
    check_schedule,
    timesteps,
)
from .schedules import NoiseSchedule

SCHEDULER_NAMES = ("ddim", "dpm++2m", "euler", "ddpm")

_DIFFUSERS_BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


def to_diffusers_config(schedule: NoiseSchedule) -> dict:
    """The diffusers scheduler config that rebuilds ``schedule``'s betas.

    linear / scaled_linear → ``beta_schedule`` of the same name with the same beta_start/beta_end;
    cosine with s = 0.008 and max_beta = 0.999 → ``"squaredcos_cap_v2"`` (diffusers fixes those
    two numbers); any other schedule → its betas as ``trained_betas``. Always
    ``num_train_timesteps`` = T, ``prediction_type="epsilon"`` (the course's models predict ε),
    ``clip_sample=False``, ``set_alpha_to_one=True`` (the last step lands on abar = 1) and
    ``steps_offset=0``; a scheduler ignores keys it does not know (see :func:`make_scheduler`).
    """
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    p = schedule.params
    config = {"num_train_timesteps": schedule.num_steps}
    if schedule.name in ("linear", "scaled_linear"):
        config.update(beta_schedule=schedule.name, beta_start=p["beta_start"], beta_end=p["beta_end"])
    elif schedule.name == "cosine" and p.get("s") == 0.008 and p.get("max_beta") == 0.999:
        config.update(beta_schedule="squaredcos_cap_v2")
    else:
        config.update(beta_schedule="linear", trained_betas=schedule.betas.tolist())
    config.update(clip_sample=False, prediction_type="epsilon", set_alpha_to_one=True, steps_offset=0)
    return config


def _scheduler_class(name: str):
    if name not in SCHEDULER_NAMES:
        raise ValueError(f"unknown scheduler {name!r}; expected one of {', '.join(map(repr, SCHEDULER_NAMES))}")
    import diffusers

    return {
        "ddim": (diffusers.DDIMScheduler, {}),
        "dpm++2m": (
            diffusers.DPMSolverMultistepScheduler,
            {"algorithm_type": "dpmsolver++", "solver_order": 2},
        ),
        "euler": (diffusers.EulerDiscreteScheduler, {}),
        "ddpm": (diffusers.DDPMScheduler, {"variance_type": "fixed_small"}),
    }[name]


def make_scheduler(name: str, schedule: NoiseSchedule, spacing: str | None = None, **kwargs):
    """A diffusers scheduler on the course's schedule.

    name: "ddim" (DDIMScheduler), "dpm++2m" (DPMSolverMultistepScheduler with
    ``algorithm_type="dpmsolver++"``, ``solver_order=2`` and no λ clip, as the course's sampler;
    ``lambda_min_clipped=samplers.DPM_LAMBDA_MIN`` turns it on), "euler" (EulerDiscreteScheduler) or
    "ddpm" (DDPMScheduler, ``variance_type="fixed_small"``). spacing: the
    ``timestep_spacing`` ("leading", "trailing" or "linspace"; None keeps the scheduler's
    default: "leading" for DDIM and DDPM, "linspace" for DPM-Solver and Euler; the course's "logsnr"
    is no diffusers spacing, see :func:`sample_with_diffusers`). kwargs: any
    other config option of that scheduler, e.g. ``clip_sample=True``.
    """
    cls, fixed = _scheduler_class(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f"{cls.__name__} has no option {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}")
    if kwargs.get("timestep_spacing") == "logsnr":
        spacing = "logsnr"  # refused below, as spacing="logsnr" is
    if spacing is not None:
        if spacing not in SPACINGS:
            raise ValueError(f"unknown spacing {spacing!r}; expected one of {', '.join(map(repr, SPACINGS))}")
        if spacing == "logsnr":
            raise ValueError(
                "diffusers has no 'logsnr' timestep_spacing: make the scheduler without it and pass the course's "
                "grid, scheduler.set_timesteps(timesteps=samplers.timesteps(schedule, steps, 'logsnr').tolist()) "
                "(sample_with_diffusers(..., spacing='logsnr') does this)"
            )
        kwargs["timestep_spacing"] = spacing
    config = {k: v for k, v in to_diffusers_config(schedule).items() if k in accepted}
    return cls(**{**config, **fixed, **kwargs})


@torch.no_grad()
def sample_with_diffusers(
    model: nn.Module,
    schedule: NoiseSchedule,
    scheduler_name: str,
    n: int,
    steps: int,
    seed: int | None = 0,
    shape: tuple[int, int, int] | None = None,
    labels: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    *,
    spacing: str | None = None,
    eta: float = 0.0,
    batch_size: int | None = None,
    progress: bool = False,
    prompt=None,
    negative_prompt=None,
    guidance_scale: float = 1.0,
    text_encoder=None,
    **scheduler_kwargs,
) -> torch.Tensor:
    """Sample the course's model with a diffusers scheduler (see :func:`make_scheduler`).

    The loop: x = init_noise_sigma · z with z drawn exactly as ``samplers.sample`` draws it
    (same seed, same device → same z), then for each t in ``scheduler.timesteps``:
    x = scheduler.step(ε_θ(scheduler.scale_model_input(x, t), t), t, x).prev_sample,
    passing the seeded generator to ``step`` for the stochastic schedulers and ``eta`` to DDIM.
    model: ε_θ(x, t[, labels]); steps: ``set_timesteps(steps)``, or with ``spacing="logsnr"``
    ``set_timesteps(timesteps=<the course's logsnr grid>)``; shape (C, H, W) defaults to the
    model's. ``labels`` or ``prompt``/``negative_prompt``, ``guidance_scale`` and ``text_encoder``
    condition and guide exactly as in ``samplers.sample``. Returns N×C×H×W clamped to [-1, 1],
    like ``sample``: with "ddim" (eta = 0, the default "leading" spacing) it equals
    ``sample(..., sampler="ddim", steps=steps, clip_x0=False)`` to float32 rounding.
    """
    cls, _ = _scheduler_class(scheduler_name)
    check_schedule(schedule)
    seed, batch_size = check_seed(seed), check_batch_size(batch_size)
    eta = _check_eta(eta)
    if eta > 0 and scheduler_name != "ddim":
        raise ValueError(f"eta applies to the 'ddim' scheduler only, got eta={eta} with {scheduler_name!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= schedule.num_steps:
        raise ValueError(f"steps must be an int in 1..{schedule.num_steps} (the schedule's T), got {steps!r}")
    shape, device, labels = _prepare(model, n, shape, labels, device)
    # set_timesteps keeps the list on the CPU: reading t from it never waits for the GPU
    if spacing == "logsnr":  # the course's grid, handed over as a list (diffusers has no such spacing)
        if "timesteps" not in inspect.signature(cls.set_timesteps).parameters:
            raise ValueError(
                f"{cls.__name__} takes no list of timesteps, so it cannot visit the 'logsnr' grid; use "
                f"'dpm++2m', 'euler' or 'ddpm', or the course's own sample(..., spacing='logsnr')"
            )
        ignored = sorted({"lambda_min_clipped", "timestep_spacing"} & set(scheduler_kwargs))
        if ignored:
            raise ValueError(
                f"{', '.join(ignored)} would be ignored with spacing='logsnr': the course's grid is handed over as "
                "a list (it starts its even steps at σ/α = 80, see samplers.logsnr_timesteps)"
            )
        scheduler = make_scheduler(scheduler_name, schedule, **scheduler_kwargs)
        scheduler.set_timesteps(timesteps=timesteps(schedule, steps, "logsnr").tolist())
    else:
        scheduler = make_scheduler(scheduler_name, schedule, spacing=spacing, **scheduler_kwargs)
        scheduler.set_timesteps(steps)

    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    was_training = model.training
    model.eval()
    x = torch.randn((n, *shape), generator=generator, device=device) * scheduler.init_noise_sigma
    eps_fn = _conditioned_eps_fn(model, n, labels, prompt, negative_prompt, guidance_scale, text_encoder,
                                 batch_size, device)
    step_kwargs = {}
    if scheduler_name == "ddim":
        # with clip_sample, take ε from the clipped x̂_0 (as the course's ddim_step does)
        step_kwargs = {"eta": eta, "use_clipped_model_output": bool(scheduler.config.clip_sample)}
    ts = scheduler.timesteps
    if progress:
        from .progress import progress_bar

        ts = progress_bar(ts, desc=f"diffusers {scheduler_name}")
    try:
        for t in ts:
            t_model = t.item()  # a CPU scalar: an int, or a float for Euler's interpolated steps
            x_in = scheduler.scale_model_input(x, t)
            eps = eps_fn(x_in, int(t_model) if float(t_model).is_integer() else float(t_model))
            x = scheduler.step(eps, t, x, generator=generator, **step_kwargs).prev_sample
    finally:
        model.train(was_training)
    return x.clamp(-1, 1)


r"""Graded exercises of lesson 08: DDIM and faster samplers.

* 08.1 ``ddim_update``: one DDIM step from abar_t, abar_{t'}, x_t, ε̂, η and z;
* 08.2 ``spaced_timesteps``: the timesteps a few-step sampler visits, in diffusers' three spacings;
* 08.3 ``ddim_error_curve``: the DDIM step estimator: with an imperfect oracle on a 1-D signal,
  the reconstruction error against the number of steps, and the knee where doubling the steps
  gains less than 10%.

The references are written from the equations, independently of :mod:`course_lib.samplers`
(tests/test_grading_lesson08.py checks that they agree with it and with diffusers).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
import torch

from course_lib.grading.checks import FRESH_NOISE, as_float_array, case_generator, diagnose, fresh_noise
from course_lib.grading.exercise import KIND_WORDS, Case, Exercise, SubCheck, compare, register
from course_lib.schedules import NoiseSchedule

LESSON = "08_ddim_and_fast_samplers"


_gen = partial(case_generator, stride=1009)  # this lesson's case seeds

__all__: list[str] = []


# =============================================================================================
# 08.1 ddim_update
# =============================================================================================


def _ddim_parts(abar_t: float, abar_prev: float, x_t, eps, eta: float):
    x0_hat = (x_t - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)
    if eta == 0:
        return x0_hat, 0.0
    sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar_t)) * math.sqrt(max(1 - abar_t / abar_prev, 0.0))
    return x0_hat, sigma


def _ddim_update(
    abar_t: float, abar_prev: float, x_t: torch.Tensor, eps: torch.Tensor, eta: float, noise: torch.Tensor
) -> torch.Tensor:
    r"""One DDIM step x_t → x_{t'} (Song et al. 2021, eq. 12), t' < t:

        x̂_0    = (x_t − sqrt(1 − abar_t) ε̂) / sqrt(abar_t)
        σ      = η · sqrt((1 − abar_{t'}) / (1 − abar_t)) · sqrt(1 − abar_t / abar_{t'})
        x_{t'} = sqrt(abar_{t'}) x̂_0 + sqrt(1 − abar_{t'} − σ²) ε̂ + σ z

    abar_t, abar_prev: Python floats in (0, 1], abar_prev > abar_t (abar_prev = 1 is the
    clean image); x_t, eps (ε̂), noise (z): tensors of one shape; eta ≥ 0. Returns x_{t'}.
    """
    x0_hat, sigma = _ddim_parts(abar_t, abar_prev, x_t, eps, eta)
    direction = math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
    return math.sqrt(abar_prev) * x0_hat + direction + sigma * noise


def _ddim_cases(seed: int) -> list[Case]:
    g = _gen(seed, 81)
    cos, lin = NoiseSchedule.cosine(1000).alphas_cumprod, NoiseSchedule.linear(1000).alphas_cumprod
    cases = []

    def add(abar, t, t_prev, eta, shape, label):
        a_t = float(abar[t])
        a_prev = 1.0 if t_prev < 0 else float(abar[t_prev])
        x_t, eps, z = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
        cases.append(Case((a_t, a_prev, x_t, eps, eta, z), label=label))

    t = int(torch.randint(100, 1000, (1,), generator=g))
    add(cos, t, t - 50, 0.0, (2, 1, 4, 4), f"eta = 0 (deterministic), t = {t} → {t - 50}")
    t = int(torch.randint(100, 1000, (1,), generator=g))
    add(cos, t, t - 100, 1.0, (3, 1, 3, 3), f"eta = 1 (DDPM-like), t = {t} → {t - 100}")
    eta = round(float(torch.rand((), generator=g)) * 0.6 + 0.2, 3)
    t = int(torch.randint(200, 800, (1,), generator=g))
    add(lin, t, t - 20, eta, (1, 2, 5, 3), f"eta = {eta}, linear schedule, t = {t} → {t - 20}")
    add(cos, 999, 949, 1.0, (2, 1, 4, 4), "eta = 1 from the pure-noise end t = 999 → 949")
    t = int(torch.randint(1, 60, (1,), generator=g))
    add(cos, t, -1, 1.0, (2, 3, 2, 2), f"the last step t = {t} → the clean image (abar = 1): σ = 0")
    add(lin, 1, 0, 0.5, (4, 1, 2, 2), "eta = 0.5, neighbouring steps t = 1 → 0")
    return cases


def _ddim_mistakes(case: Case) -> dict[str, torch.Tensor]:
    a_t, a_prev, x_t, eps, eta, z = case.args
    x0, sigma = _ddim_parts(a_t, a_prev, x_t, eps, eta)

    def step(x0_hat=x0, s=sigma, dir_var=None, noise=z):
        dv = 1 - a_prev - s**2 if dir_var is None else dir_var
        return math.sqrt(a_prev) * x0_hat + math.sqrt(max(dv, 0.0)) * eps + s * noise

    out: dict[str, torch.Tensor] = {}
    if sigma > 0:
        out["σ multiplies z, not σ²: the noise term is σ·z"] = step(noise=sigma * z)
        out["the direction's weight is sqrt(1 − abar_{t'} − σ²), not sqrt(1 − abar_{t'}) − σ"] = step(
            dir_var=(math.sqrt(1 - a_prev) - sigma) ** 2
        )
        out["the direction term is sqrt(1 − abar_{t'} − σ²)·ε̂: subtract σ² under the root"] = step(dir_var=1 - a_prev)
        out["add σ·z: with eta > 0 the step is stochastic"] = step(noise=torch.zeros_like(z))
        out[
            "this is the η = 0 step whatever η is: with η > 0, σ ≠ 0, so add σ·z and subtract σ² under the "
            "direction's root (DDIM is deterministic only at η = 0)"
        ] = step(s=0.0)
        if eta != sigma:  # η·z in the noise term, σ right under the root
            out["the noise term is σ·z with the whole σ, not η·z: η only scales σ"] = step(noise=(eta / sigma) * z)
        out["σ has both factors: η·sqrt((1 − abar_{t'})/(1 − abar_t))·sqrt(1 − abar_t/abar_{t'})"] = step(
            s=eta * math.sqrt(1 - a_t / a_prev)
        )
        r = (1 - a_prev) / (1 - a_t)
        out[
            "σ = η·sqrt((1 − abar_{t'})/(1 − abar_t))·sqrt(1 − abar_t/abar_{t'}): take the square root of "
            "1 − abar_t/abar_{t'} too"
        ] = step(s=eta * math.sqrt(r) * (1 - a_t / a_prev))
        out["σ has the ratio (1 − abar_{t'})/(1 − abar_t): your ratio is upside down"] = step(
            s=eta * math.sqrt(1 / r) * math.sqrt(1 - a_t / a_prev)
        )
        if eta != 1.0:
            out["σ grows with η, not η²: σ = η·sqrt((1 − abar_{t'})/(1 − abar_t))·sqrt(1 − abar_t/abar_{t'})"] = step(
                s=eta * sigma
            )
    if eta != 1.0 and a_prev < 1:  # η left out: σ at η = 1 whatever η is
        s1 = math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(max(1 - a_t / a_prev, 0.0))
        out["σ is η·sqrt((1 − abar_{t'})/(1 − abar_t))·sqrt(1 − abar_t/abar_{t'}): you left η out"] = step(s=s1)
    out["x_{t'} starts from sqrt(abar_{t'})·x̂_0: take the square root of abar_{t'}"] = step(
        x0_hat=x0 * math.sqrt(a_prev)
    )
    out["x̂_0 = (x_t − sqrt(1 − abar_t)·ε̂)/sqrt(abar_t): divide by sqrt(abar_t), not abar_t"] = step(
        x0_hat=(x_t - math.sqrt(1 - a_t) * eps) / a_t
    )
    if a_prev < 1:  # the direction term with z: sqrt(1 − abar_{t'} − σ²)·z + σ·z
        out["the direction term points along ε̂, sqrt(1 − abar_{t'} − σ²)·ε̂; z enters only as σ·z"] = (
            math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * z + sigma * z
        )
    out["this exercise does not clamp x̂_0 (clip_sample off): keep it as it is"] = step(x0_hat=x0.clamp(-1, 1))
    out["x̂_0 = (x_t − sqrt(1 − abar_t)·ε̂)/sqrt(abar_t): mind both square roots"] = step(
        x0_hat=(x_t - (1 - a_t) * eps) / a_t
    )
    out["abar_t belongs to x_t (the noisier end) and abar_{t'} to the result: they are swapped"] = (
        _ddim_update(a_prev, a_t, x_t, eps, 0.0, z) if a_prev < 1 else x_t * float("nan")
    )
    return out


def _ddim_coefficients(got: Any, a_t, a_prev, x_t, eps, z, sigma: float) -> str:
    """'' unless ``got`` has the step's form, sqrt(abar_{t'})·x̂_0 + α·ε̂ + β·z, with other α and β: then the
    slip is in σ or in where σ enters, and the sentence gives the learner's α and β beside the right ones. Found
    by least squares on what is left after the x̂_0 term (exact to rounding when the form is right)."""
    arr = as_float_array(got)
    if arr is None or arr.shape != tuple(x_t.shape) or not np.isfinite(arr).all():
        return ""
    x0, _ = _ddim_parts(a_t, a_prev, x_t, eps, 0.0)
    rest = (arr - math.sqrt(a_prev) * x0.numpy()).reshape(-1)
    basis = np.stack([eps.numpy().reshape(-1), z.numpy().reshape(-1)], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(basis, rest, rcond=None)
    if np.abs(basis @ np.array([alpha, beta]) - rest).max() > 1e-6 * max(1.0, np.abs(rest).max()):
        return ""  # not that form: some other slip
    right_alpha = math.sqrt(max(1 - a_prev - sigma**2, 0.0))
    return (
        f"your step has the right form, sqrt(abar_{{t'}})·x̂_0 + α·ε̂ + β·z, and x̂_0 is right, but α = {alpha:.4g} "
        f"and β = {beta:.4g} where α = sqrt(1 − abar_{{t'}} − σ²) = {right_alpha:.4g} and β = σ = {sigma:.4g}: "
        "recompute σ = η·sqrt((1 − abar_{t'})/(1 − abar_t))·sqrt(1 − abar_t/abar_{t'}) term by term"
    )


def _ddim_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    checks = compare(got, expected, rtol=1e-4, atol=1e-6, label=case.label)
    values = next((c for c in checks if c.name == "values"), None)
    if values is not None and not values.passed and values.message:
        diag = diagnose(got, {k: v.numpy() for k, v in _ddim_mistakes(case).items()})
        a_t, a_prev, x_t, eps, eta, z = case.args
        x0, sigma = _ddim_parts(a_t, a_prev, x_t, eps, eta)
        if not diag and sigma > 0:
            diag = _ddim_coefficients(got, a_t, a_prev, x_t, eps, z, sigma)
        if not diag and sigma > 0:
            mean = _ddim_update(a_t, a_prev, x_t, eps, eta, torch.zeros_like(z))
            diag = FRESH_NOISE if fresh_noise(got, mean, sigma, z) else ""
        if diag:
            values.message = f"wrong values ({case.label}): {diag}"
    return checks


register(
    Exercise(
        id="08.1",
        library_versions=("course_lib.samplers.ddim_step",),
        lesson=LESSON,
        name="ddim_update",
        title="write one DDIM step",
        reference=_ddim_update,
        cases=_ddim_cases,
        points=3,
        judge=_ddim_judge,
        hint="estimate x̂_0 first, then rebuild x_{t'} from x̂_0, the ε̂ direction (what is left of the "
        "variance after σ²) and σ·z",
    )
)


# =============================================================================================
# 08.2 spaced_timesteps
# =============================================================================================

SPACINGS = ("leading", "trailing", "linspace")


def _spaced_timesteps(T: int, steps: int, spacing: str) -> torch.Tensor:
    r"""The ``steps`` timesteps a sampler visits, descending, int64 (steps,) (Lin et al. 2023, Table 2):

        leading:   t_i = i·⌊T/steps⌋,                 i = 0 … steps−1   (ends at 0)
        trailing:  t_i = round(T − i·T/steps) − 1,     i = 0 … steps−1   (starts at T−1)
        linspace:  t_i = round(i·(T−1)/(steps−1)),     i = 0 … steps−1   (both ends; [0] if steps = 1)

    each list then reversed so that it runs from the noisiest step down. These are diffusers'
    ``timestep_spacing`` options (``steps_offset=0``).
    """
    if spacing == "leading":
        t = np.arange(steps) * (T // steps)
    elif spacing == "trailing":
        t = np.round(T - np.arange(steps) * (T / steps)) - 1
    elif spacing == "linspace":
        t = np.round(np.linspace(0, T - 1, steps))
    else:
        raise ValueError(f"unknown spacing {spacing!r}; expected one of {SPACINGS}")
    return torch.from_numpy(np.sort(t.astype(np.int64))[::-1].copy())


def _has_half(T: int, steps: int, spacing: str) -> bool:
    """Whether rounding meets an exact .5 (np.round's half-to-even vs Python's int(x + 0.5))."""
    if spacing == "trailing":
        raw = T - np.arange(steps) * (T / steps)
    elif spacing == "linspace" and steps > 1:
        raw = np.linspace(0, T - 1, steps)
    else:
        return False
    return bool(np.any(np.abs(raw - np.floor(raw) - 0.5) < 1e-6))


def _spacing_cases(seed: int) -> list[Case]:
    g = _gen(seed, 82)
    cases = [
        Case((1000, 50, "leading"), label="T = 1000, 50 steps, leading"),
        Case((1000, 10, "trailing"), label="T = 1000, 10 steps, trailing"),
    ]
    # random T and steps, three per spacing, away from exact halves and from strides that divide T: a wrong
    # formula (floor for round, T // steps for T/steps, T for T − 1) shows on a few inputs of each spacing, not one
    while len(cases) < 11:
        spacing = SPACINGS[(len(cases) - 2) % 3]
        T = int(torch.randint(50, 1001, (1,), generator=g))
        steps = int(torch.randint(3, 40, (1,), generator=g))
        if T % steps == 0 or _has_half(T, steps, spacing):
            continue
        cases.append(Case((T, steps, spacing), label=f"T = {T}, {steps} steps, {spacing}", weight=2.0))
    cases += [
        Case((250, 1, "trailing"), label="one step, trailing: it must start from T−1"),
        Case((250, 1, "linspace"), label="one step, linspace"),
        Case((20, 20, "leading"), label="every step (steps = T), leading"),
    ]
    return cases


def _spacing_probe(answer: Any, case: Case) -> dict:
    out = answer(*case.args, **case.kwargs)
    is_tensor = isinstance(out, torch.Tensor)
    return {
        "timesteps": out,
        "int64_tensor": bool(is_tensor and out.dtype == torch.int64),
    }


def _spacing_mistakes(case: Case) -> dict[str, np.ndarray]:
    T, steps, spacing = case.args
    ref = _spaced_timesteps(T, steps, spacing).numpy()
    out = {"return the timesteps in descending order: sampling runs from the noisiest step down": ref[::-1]}
    if spacing == "leading":
        out["steps_offset is 0 here: leading starts at t = 0, t_i = i·⌊T/steps⌋"] = ref + 1
        out["leading: the stride is ⌊T/steps⌋ (integer division), t_i = i·⌊T/steps⌋"] = np.round(
            np.arange(steps) * (T / steps)
        )[::-1]
        out["leading: t_i = i·⌊T/steps⌋ starts at 0; do not shift the list to end at T−1"] = ref + (T - 1 - ref[0])
        out["leading: divide first, then multiply: i·(T // steps), not (i·T) // steps"] = (
            np.arange(steps) * T // steps
        )[::-1]
        if steps > 1:  # one step: the two grids cannot be told apart from other slips
            out["that is DPM-Solver's grid (steps + 1 points, t = 0 dropped); DDIM's leading grid ends at t = 0"] = (
                np.arange(1, steps + 1) * (T // (steps + 1))
            )[::-1]
    if spacing == "trailing":
        out["trailing: subtract 1 after rounding, t_i = round(T − i·T/steps) − 1 (T−1 is the last index)"] = ref + 1
        out["trailing: round to the nearest step, do not floor"] = np.floor(T - np.arange(steps) * (T / steps)) - 1
        out[
            "trailing: the stride is T/steps, a float, rounded after: round(T − i·T/steps) − 1, not the integer "
            "stride T // steps"
        ] = T - 1 - np.arange(steps) * (T // steps)
        out[
            "np.arange(T, 0, −T/steps) can overshoot by one entry (floating point; diffusers' formula does too): keep "
            "the first `steps` values"
        ] = np.concatenate([ref, [-1]])
        out[
            "trailing: the stride is T/steps from T, t_i = round(T − i·T/steps) − 1; a linspace from T−1 to 0 is the "
            "'linspace' spacing"
        ] = np.round(np.linspace(T - 1, 0, steps))
    if spacing == "linspace":
        out["linspace: from 0 to T−1 (the last index), not to T"] = np.round(np.linspace(0, T, steps))[::-1]
        out["linspace: round to the nearest step, do not floor"] = np.floor(np.linspace(0, T - 1, steps))[::-1]
        if steps > 1:
            out["that is DPM-Solver's grid (steps + 1 points, t = 0 dropped); DDIM's linspace grid ends at t = 0"] = (
                np.round(np.linspace(0, T - 1, steps + 1))[1:][::-1]
            )
        else:
            out["linspace with one step is [0], the low end: linspace(0, T − 1, 1) starts there"] = np.array([T - 1])
    return out


def _spacing_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    where = f" ({case.label})"
    if not isinstance(got, dict) or "timesteps" not in got:
        return [SubCheck("values", False, 2, f"could not read the result{where}")]
    checks = compare(got["timesteps"], expected["timesteps"], rtol=0, atol=0, label=case.label)
    failed = next((c for c in checks if not c.passed and c.message and c.name in ("shape", "values")), None)
    if failed is not None:  # a wrong length can be a known slip too (one entry too many)
        diag = diagnose(got["timesteps"], _spacing_mistakes(case), rtol=0, atol=0)
        if diag:
            failed.message = f"wrong timesteps{where}: {diag}"
    ok = bool(got.get("int64_tensor"))
    checks.append(
        SubCheck(
            "int64 tensor",
            ok,
            1,
            ""
            if ok
            else "return an int64 torch tensor (e.g. torch.tensor(list, dtype=torch.long)): "
            "timesteps index the schedule's tables",
        )
    )
    return checks


register(
    Exercise(
        id="08.2",
        library_versions=(
            "course_lib.samplers.timesteps",
            "course_lib.samplers.sampler_timesteps",  # (dpm_timesteps is another grid: a slip, named as such)
        ),
        lesson=LESSON,
        name="spaced_timesteps",
        title="write the three timestep spacings",
        reference=_spaced_timesteps,
        cases=_spacing_cases,
        points=3,
        probe=_spacing_probe,
        judges_type=True,
        judge=_spacing_judge,
        hint="leading steps by ⌊T/steps⌋ up from 0, trailing by T/steps down from T (then −1), linspace "
        "spreads steps points over 0 … T−1; round to the nearest integer, then sort descending",
    )
)


# =============================================================================================
# 08.3 ddim_error_curve: the DDIM step estimator
# =============================================================================================


def _oracle_eps(x: torch.Tensor, abar_t: float, known: torch.Tensor, kappa: float) -> torch.Tensor:
    """The imperfect oracle: ε̂ = (1 + κ)·(x − sqrt(abar_t)·b)/sqrt(1 − abar_t), b what it knows of x_0."""
    return (1 + kappa) * (x - math.sqrt(abar_t) * known) / math.sqrt(1 - abar_t)


def _ddim_error_curve(
    alphas_cumprod: torch.Tensor,
    x0: torch.Tensor,
    known: torch.Tensor,
    noise: torch.Tensor,
    step_counts: list[int],
    kappa: float,
) -> dict:
    r"""Reconstruction error of deterministic DDIM against the number of steps, and its knee.

    For each N in ``step_counts`` (N divides T): the trailing timesteps t_i = T − 1 − i·T/N,
    i = 0 … N−1; start x_{t_0} = sqrt(abar_{T−1}) x_0 + sqrt(1 − abar_{T−1}) z; at each visited
    t, ε̂ = (1 + κ)(x_t − sqrt(abar_t) b)/sqrt(1 − abar_t) (an oracle that knows x_0 only as b
    and over-states the noise by κ), then the η = 0 DDIM update to the next visited step, the
    last one to the clean image (abar = 1):

        x̂_0 = (x_t − sqrt(1 − abar_t) ε̂)/sqrt(abar_t),   x_{t'} = sqrt(abar_{t'}) x̂_0 + sqrt(1 − abar_{t'}) ε̂.

    error_N = sqrt(mean((x̂ − x_0)²)) of the result. knee: the first N (in list order) whose
    doubling, the next entry, lowers the error by less than 10% (error_next > 0.9·error_N);
    the last entry if none does. alphas_cumprod: float64 (T,); x0, known (b), noise (z):
    float64 (L,); step_counts: doubling ints. Returns {"errors": float64 (K,), "knee": int}.
    """
    T = len(alphas_cumprod)
    abar = alphas_cumprod.tolist()
    errors = []
    for n in step_counts:
        stride = T // n
        ts = [T - 1 - i * stride for i in range(n)]
        x = math.sqrt(abar[T - 1]) * x0 + math.sqrt(1 - abar[T - 1]) * noise
        for i, t in enumerate(ts):
            a_t = abar[t]
            a_next = abar[ts[i + 1]] if i + 1 < n else 1.0
            eps = _oracle_eps(x, a_t, known, kappa)
            x0_hat = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
            x = math.sqrt(a_next) * x0_hat + math.sqrt(1 - a_next) * eps
        errors.append(float(((x - x0) ** 2).mean().sqrt()))
    knee = step_counts[-1]
    for i in range(len(step_counts) - 1):
        if errors[i + 1] > 0.9 * errors[i]:
            knee = step_counts[i]
            break
    return {"errors": torch.tensor(errors, dtype=torch.float64), "knee": int(knee)}


def _blur(x: torch.Tensor, width: int) -> torch.Tensor:
    """A moving average over 2·width + 1 samples, edges repeated: what the oracle knows of x_0."""
    k = 2 * width + 1
    padded = torch.cat([x[:1].expand(width), x, x[-1:].expand(width)])
    return padded.unfold(0, k, 1).mean(dim=1)


def _curve_cases(seed: int) -> list[Case]:
    g = _gen(seed, 83)
    cases: list[Case] = []
    specs = [
        (NoiseSchedule.cosine(256), 64, [1, 2, 4, 8, 16, 32, 64, 128, 256], "cosine T = 256, a square wave"),
        (NoiseSchedule.linear(512), 48, [2, 4, 8, 16, 32, 64, 128], "linear T = 512, a sum of sines"),
        (NoiseSchedule.cosine(128), 33, [1, 2, 4, 8, 16, 32, 64, 128], "cosine T = 128, odd length"),
        (NoiseSchedule.scaled_linear(256), 16, [4, 8, 16, 32, 64], "scaled-linear T = 256, short list"),
        (NoiseSchedule.cosine(64), 24, [1, 2], "cosine T = 64, two step counts: no doubling gains little"),
    ]
    fallback = len(specs) - 1  # the case for the rule's fallback: no knee found, the last N
    tries = 0
    while len(cases) < len(specs):
        schedule, length, counts, label = specs[len(cases)]
        u = torch.linspace(0, 1, length, dtype=torch.float64)
        if len(cases) % 2 == 0:
            f = float(torch.randint(2, 5, (1,), generator=g))
            x0 = 0.8 * torch.sign(torch.sin(2 * math.pi * f * u + 0.3))
        else:
            ph = torch.rand(3, generator=g, dtype=torch.float64) * 2 * math.pi
            x0 = (
                0.4 * torch.sin(2 * math.pi * u + ph[0])
                + 0.3 * torch.sin(6 * math.pi * u + ph[1])
                + 0.2 * torch.sin(14 * math.pi * u + ph[2])
            )
        known = _blur(x0, 1 + len(cases) % 2)
        noise = torch.randn(length, generator=g, dtype=torch.float64)
        kappa = round(float(torch.rand((), generator=g)) * 0.3 + 0.1, 3)
        errs = _ddim_error_curve(schedule.alphas_cumprod, x0, known, noise, counts, kappa)["errors"]
        ratios = (errs[1:] / errs[:-1]).numpy()
        tries += 1
        if np.any(np.abs(ratios - 0.9) < 0.01) and tries < 50:  # keep clear of ties at the 10% line
            continue
        if len(cases) == fallback and np.any(ratios > 0.9) and tries < 50:
            continue
        cases.append(Case((schedule.alphas_cumprod, x0, known, noise, counts, kappa), label=f"{label}, κ = {kappa}"))
    return cases


def _curve_probe(answer: Any, case: Case) -> Any:
    out = answer(*case.args, **case.kwargs)
    if isinstance(out, dict):
        errors = out.get("errors")
        dtype = str(errors.dtype).removeprefix("torch.") if isinstance(errors, (torch.Tensor, np.ndarray)) else None
        knee = out.get("knee")
        whole = isinstance(knee, (int, np.integer)) and not isinstance(knee, bool) or (
            isinstance(knee, torch.Tensor) and knee.numel() == 1 and not knee.is_floating_point()
        )
        return {k: out[k] for k in ("errors", "knee") if k in out} | {
            "__keys__": sorted(map(str, out)),
            "__dtype__": dtype,
            "__errors_type__": "Tensor" if isinstance(errors, torch.Tensor) else type(errors).__name__,
            "__knee_int__": bool(whole),
        }
    return out


def _curve_mistakes(case: Case) -> dict[str, np.ndarray]:
    abar, x0, known, noise, counts, kappa = case.args
    T = len(abar)
    out = {}

    def rms(d):
        return float((d**2).mean().sqrt())

    def run(ts_fn, start_at_first=False, final=True, perfect=False, last=1.0, k=kappa, carry=False, from_z=False,
            measure=rms):
        errs = []
        x = None
        for n in counts:
            ts = ts_fn(n)
            a0 = float(abar[ts[0] if start_at_first else T - 1])
            if x is None or not carry:
                x = noise.clone() if from_z else math.sqrt(a0) * x0 + math.sqrt(1 - a0) * noise
            for i, t in enumerate(ts):
                a_t = float(abar[t])
                if i + 1 < len(ts):
                    a_next = float(abar[ts[i + 1]])
                elif final:
                    a_next = last
                else:
                    break
                eps = _oracle_eps(x, a_t, x0 if perfect else known, k)
                x0_hat = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
                x = math.sqrt(a_next) * x0_hat + math.sqrt(1 - a_next) * eps
            errs.append(measure(x - x0))
        return np.array(errs)

    out["use trailing timesteps t_i = T − 1 − i·T/N (from the pure-noise end), not leading i·T/N"] = run(
        lambda n: [(n - 1 - i) * (T // n) for i in range(n)], start_at_first=True
    )
    out[
        "use trailing timesteps t_i = T − 1 − i·T/N, not leading i·T/N: the first step must be at T − 1, where x starts"
    ] = run(lambda n: [(n - 1 - i) * (T // n) for i in range(n)])
    out["take the last step all the way to the clean image (abar = 1), then measure the error"] = run(
        lambda n: [T - 1 - i * (T // n) for i in range(n)], final=False
    )
    trailing = lambda n: [T - 1 - i * (T // n) for i in range(n)]  # noqa: E731
    out[
        "the oracle over-states the noise by the factor (1 + κ): ε̂ = (1 + κ)·(x_t − sqrt(abar_t)·b)/sqrt(1 − abar_t)"
    ] = run(trailing, k=0.0)
    out["the oracle knows only the blurred copy b (`known`), not x0 itself: that is the error floor"] = run(
        trailing, perfect=True
    )
    out["the last step goes to the clean image, abar = 1, not to abar_0"] = run(trailing, last=float(abar[0]))
    out["start every N afresh from x_{T−1} = sqrt(abar_{T−1})·x0 + sqrt(1 − abar_{T−1})·z, not from the last run"] = (
        run(trailing, carry=True)
    )
    out["trailing timesteps are T − 1 − i·T/N (every N divides T), not a rounded linspace from T − 1 to 0"] = run(
        lambda n: [int(v) for v in np.round(np.linspace(T - 1, 0, n))]
    )
    right = _ddim_error_curve(abar, x0, known, noise, counts, kappa)["errors"].numpy()
    out["the error is the root of the MEAN squared difference (RMS), not of the sum"] = right * math.sqrt(len(x0))
    out["the error is the RMS, sqrt(mean((x̂ − x_0)²)): take the square root of the mean squared error"] = right**2
    # √mean(x − x₀)² read as (√mean(x − x₀))²: the size of the mean error, which signs cancel in
    out["the RMS error squares before it averages: sqrt(mean((x − x0)²)), not |mean(x − x0)|"] = run(
        trailing, measure=lambda d: abs(float(d.mean()))
    )
    out["the error is the RMS, sqrt(mean((x − x0)²)), not the mean absolute difference mean(|x − x0|)"] = run(
        trailing, measure=lambda d: float(d.abs().mean())
    )
    out["start from the noised x_0, x_{T−1} = sqrt(abar_{T−1})·x0 + sqrt(1 − abar_{T−1})·z, not from z alone"] = run(
        trailing, from_z=True
    )
    out["trailing timesteps are t_i = T − 1 − i·T/N, not T − i·T/N: yours are one step late"] = run(
        lambda n: [min(T - i * (T // n), T - 1) for i in range(n)]
    )
    return out


_THRESHOLD_RULE = "a doubling gains less than 10% when error_2N > 0.9·error_N, with 0.9 exactly"


def _knee_of(errors: np.ndarray, counts: list[int], threshold: float = 0.9) -> int:
    for i in range(len(counts) - 1):
        if errors[i + 1] > threshold * errors[i]:
            return counts[i]
    return counts[-1]


def _curve_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    where = f" ({case.label})"
    counts = case.args[4]
    if not isinstance(got, dict) or "errors" not in got or "knee" not in got:
        have = f"a dict with keys {got.get('__keys__')}" if isinstance(got, dict) else type(got).__name__
        return [
            SubCheck("errors", False, 3, f"return a dict with keys 'errors' and 'knee', got {have}{where}"),
            SubCheck("knee", False, 1, ""),
        ]
    checks = compare(got["errors"], expected["errors"], rtol=1e-4, atol=1e-9, label=case.label)
    for c in checks:
        c.name = f"errors: {c.name}"
    dtype = got.get("__dtype__")
    kind = got.get("__errors_type__", "Tensor")
    if kind != "Tensor":  # a list or an array where the exercise asks for a float64 tensor
        words = KIND_WORDS.get(kind, kind)
        checks.append(SubCheck("errors: a torch tensor", False, 0.5, f"return errors as a float64 torch tensor, "
                               f"got {words}: torch.tensor(errors, dtype=torch.float64)"))
    else:
        dtype_ok = dtype in ("float64", "double")
        dtype_msg = (
            f"errors must be float64, as the inputs are, got {dtype}{where}: torch.tensor(a list of floats) and "
            "torch.zeros(n) make float32 unless given dtype=torch.float64, and float32 keeps half the digits"
        )
        checks.append(SubCheck("errors: dtype", dtype_ok, 0.5, "" if dtype_ok else dtype_msg))
    if got.get("__knee_int__") is False:
        knee = got.get("knee")
        what = "None" if knee is None else "a float" if isinstance(knee, float) else type(knee).__name__
        checks.append(SubCheck("knee: an int", False, 0.5, "return knee as an int, a step count: int(…) once you "
                               f"have picked it from step_counts, not {what}"))
    values = next((c for c in checks if c.name == "errors: values"), None)
    if values is not None and not values.passed and values.message:
        diag = diagnose(got["errors"], _curve_mistakes(case), rtol=1e-4, atol=1e-9)
        if diag:
            values.message = f"wrong errors{where}: {diag}"
    knee, exp_knee = got["knee"], int(expected["knee"])
    try:
        knee_val = float(np.asarray(knee, dtype=np.float64).reshape(-1)[0]) if np.size(knee) == 1 else None
    except (TypeError, ValueError):
        knee_val = None
    if knee_val is not None and not math.isfinite(knee_val):  # None arrives as NaN
        knee_val = None
    knee_ok = knee_val == exp_knee
    msg = ""
    if not knee_ok:
        shown = f"{knee_val:g}" if knee_val is not None else repr(knee)
        msg = f"expected the knee at N = {exp_knee}, got {shown}{where}"
        exp_err = np.asarray(expected["errors"], dtype=np.float64)
        try:  # judge the knee rule on the learner's own errors, so that a wrong curve is not blamed on it
            own = np.asarray(got["errors"], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            own = None
        ref = own if own is not None and own.shape == exp_err.shape and np.isfinite(own).all() else exp_err

        def other_threshold(k) -> bool:  # a knee that a threshold near 0.9, but not 0.9, gives on these errors
            return any(_knee_of(ref, counts, t) == k for t in (0.8, 0.85, 0.95, 0.99))

        if knee_val is None:
            msg += (
                ": return the knee as one int, a step count from step_counts (never None: the last N is the fallback)"
            )
        elif knee_val == counts.index(_knee_of(ref, counts)) and knee_val not in counts:
            msg += ": return the step count N itself, step_counts[i], not its index i"
        elif ref is own and knee_val == _knee_of(own, counts):
            msg += ": your knee follows from your own errors, so the rule is right; fix the errors and it will follow"
        elif knee_val == _knee_of(ref, counts[1:] + [counts[-1]]):
            msg += ": the knee is the N whose doubling gains little, not the doubled one"
            if other_threshold(knee_val):  # on these errors another threshold gives the same N
                msg += f" (or a threshold other than 0.9 gave it: {_THRESHOLD_RULE})"
        elif knee_val == counts[0] and _knee_of(ref, counts) == counts[-1]:
            msg += (
                ": when no doubling gains less than 10% (error_2N > 0.9·error_N never holds), the knee is the last N "
                "in step_counts"
            )
        elif knee_val == _knee_of(ref, counts, threshold=0.1):
            msg += ": 'gains less than 10%' means error_2N > 0.9·error_N"
        elif other_threshold(knee_val):
            msg += f": your knee is what another threshold gives on these errors: {_THRESHOLD_RULE}"
    checks.append(SubCheck("knee", knee_ok, 2, msg))
    return checks


register(
    Exercise(
        id="08.3",
        lesson=LESSON,
        name="ddim_error_curve",
        title="estimate how many DDIM steps are enough",
        reference=_ddim_error_curve,
        cases=_curve_cases,
        points=4,
        probe=_curve_probe,
        judges_type=True,
        judge=_curve_judge,
        hint="for each N: start from the noised x_0 at T−1, run the η = 0 DDIM update through the trailing "
        "steps and on to abar = 1, take the RMS error; the knee is the first N with error_2N > 0.9·error_N",
        time_limit=20.0,
    )
)

r"""Graded exercises of lesson 01, noise schedules (``solutions/01_noise_schedules.ipynb``).

01.1  ``snr_db(alphas_cumprod)``                     SNR in decibels from abar
01.2  ``cosine_alphas_cumprod(num_steps, s, max_beta)`` the clipped cosine schedule's abar
01.3  ``compare_schedules(steps, num_steps)``          the schedule comparator (CURRICULUM.md)

The references below are written from the formulas, not from :mod:`course_lib.schedules`, so
that the library and the exercises check each other (tests/test_grading_lesson01.py compares
them). Every judge adds a diagnosis to a failed value check when the answer matches a known
mistake (natural log, 20·log10, no clip, the crossing one step off …).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from course_lib.grading.checks import as_float_array, with_diagnosis
from course_lib.grading.exercise import Case, Exercise, SubCheck, compare, register
from course_lib.schedules import NoiseSchedule

LESSON = "01_noise_schedules"

__all__ = ["LESSON"]


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _ratio_close(got: np.ndarray, exp: np.ndarray, factor: float, rtol: float = 1e-3) -> bool:
    """True when got ≈ factor · exp wherever exp is clearly away from 0 (and there is such a place)."""
    got, exp = np.asarray(got, dtype=np.float64), np.asarray(exp, dtype=np.float64)
    if got.shape != exp.shape:
        return False
    mask = np.abs(exp) > 1e-3
    if not mask.any():
        return False
    return bool(np.allclose(got[mask], factor * exp[mask], rtol=rtol, atol=1e-6))


def _db_diagnosis(got, exp) -> str:
    """A sentence naming the decibel mistake that turns ``exp`` into ``got``, or ''."""
    try:
        got = np.asarray(got, dtype=np.float64)
        exp = np.asarray(exp, dtype=np.float64)
    except (TypeError, ValueError):
        return ""
    if got.shape != exp.shape:
        return ""
    # 10·ln x = ln(10) · 10·log10 x
    if _ratio_close(got, exp, math.log(10)):
        return "your values look like 10·ln(SNR): decibels use log10, not the natural log"
    if _ratio_close(got, exp, math.log(10) / 10):
        return "your values look like ln(SNR): decibels are 10·log10(SNR)"
    if _ratio_close(got, exp, 2.0):
        return "your values are twice the expected ones: 20·log10 is for amplitudes, SNR is a power ratio, use 10·log10"
    if _ratio_close(got, exp, 0.1):
        return "your values are a tenth of the expected ones: log10(SNR) is in bels, multiply by 10 for decibels"
    if _ratio_close(got, exp, -1.0):
        return "your values have the wrong sign: SNR is signal over noise, abar / (1 − abar)"
    if _ratio_close(got, exp, 0.5):
        return (
            "your values are half the expected ones: that is the ratio of amplitudes, sqrt(abar)/sqrt(1 − abar), in "
            "10·log10; SNR is the power ratio abar / (1 − abar)"
        )
    if _ratio_close(got, exp, math.log(10) / math.log(2)):
        return "your values look like 10·log2(SNR): decibels use log10"
    abar = 1.0 / (1.0 + 10.0 ** (-exp / 10.0))  # the abar behind each expected SNR
    if np.allclose(got, 10.0 * np.log10(abar), rtol=1e-4, atol=1e-4):
        return "your values look like 10·log10(abar): the SNR divides the signal by the noise, abar / (1 − abar)"
    return ""


# ---------------------------------------------------------------------------------------------
# 01.1  snr_db
# ---------------------------------------------------------------------------------------------


def _snr_db(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    r"""SNR in decibels:  SNR_dB(t) = 10·log10( abar_t / (1 − abar_t) ).

    alphas_cumprod: abar, shape (T,), every value in (0, 1). Returns shape (T,), float64.
    Written as 10·log10(abar) − 10·log10(1 − abar), the same number without forming the ratio.
    """
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    return 10.0 * torch.log10(abar) - 10.0 * torch.log10(1.0 - abar)


def _snr_db_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    random_abar = torch.rand(7, generator=g, dtype=torch.float64) * 0.98 + 0.01
    T_cos = 2 * int(torch.randint(5, 50, (1,), generator=g)) + 1  # odd, 11 … 99
    return [
        Case((random_abar,), label="7 random abar in (0.01, 0.99)"),
        Case((torch.tensor([0.5], dtype=torch.float64),), label="abar = 1/2 alone: 0 dB"),
        Case((torch.tensor([1e-6, 1e-3, 0.999, 0.999999], dtype=torch.float64),), label="abar near 0 and near 1"),
        Case((NoiseSchedule.linear(1000).alphas_cumprod,), label="the linear schedule's abar, t = 0 … 999"),
        Case((NoiseSchedule.cosine(T_cos).alphas_cumprod,), label=f"the cosine schedule's abar, T = {T_cos}"),
    ]


def _snr_db_judge(case: Case, got, expected) -> list[SubCheck]:
    checks = compare(got, expected, rtol=1e-5, atol=1e-5, label=case.label)
    return with_diagnosis(checks, _db_diagnosis(got, expected))


register(
    Exercise(
        id="01.1",
        library_versions=("course_lib.schedules.NoiseSchedule.snr_db",),
        lesson=LESSON,
        name="snr_db",
        title="write snr_db",
        reference=_snr_db,
        cases=_snr_db_cases,
        judge=_snr_db_judge,
        points=2,
        hint="SNR is the signal's variance abar over the noise's 1 − abar, and a power ratio in decibels is "
        "10·log10 of it.",
    )
)


# ---------------------------------------------------------------------------------------------
# 01.2  cosine_alphas_cumprod
# ---------------------------------------------------------------------------------------------


def _cosine_alphas_cumprod(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    r"""abar of the cosine schedule (Nichol & Dhariwal 2021), betas clipped at ``max_beta``.

        f(u)   = cos²( π/2 · (u + s) / (1 + s) ),          u = t / T
        beta_t = min( 1 − f((t+1)/T) / f(t/T), max_beta ),  t = 0 … T−1
        abar_t = ∏_{k ≤ t} (1 − beta_k)

    (diffusers' ``squaredcos_cap_v2``). Returns shape (T,), float64.
    Computed with an explicit loop over the steps, a different route from the library's
    vectorised one, so each checks the other.
    """
    T = int(num_steps)

    def f(u: float) -> float:
        return math.cos((u + s) / (1.0 + s) * math.pi / 2.0) ** 2

    abar, out = 1.0, []
    for t in range(T):
        beta = min(1.0 - f((t + 1) / T) / f(t / T), max_beta)
        abar *= 1.0 - beta
        out.append(abar)
    return torch.tensor(out, dtype=torch.float64)


def _cosine_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)

    def uniform(lo: float, hi: float, digits: int = 4) -> float:
        return round(lo + (hi - lo) * float(torch.rand(1, generator=g, dtype=torch.float64)), digits)

    T_mid = int(torch.randint(20, 400, (1,), generator=g))
    s_mid = uniform(0.015, 0.05)  # well away from the default, so an answer that ignores s shows
    T_small = 2 * int(torch.randint(1, 8, (1,), generator=g)) + 1  # odd, 3 … 15
    max_beta_small = uniform(0.3, 0.6, 2)
    return [
        Case((1000,), label="T = 1000, default s and max_beta"),
        Case((T_mid,), {"s": s_mid}, label=f"T = {T_mid}, s = {s_mid}"),
        Case((2,), label="T = 2: the last beta is clipped"),
        Case((1,), label="T = 1: a single, clipped step"),
        Case((T_small,), {"s": 0.008, "max_beta": max_beta_small}, label=f"T = {T_small}, max_beta = {max_beta_small}"),
        Case((50,), {"s": 0.0}, label="T = 50, s = 0"),
    ]


#: Slips inside f(u): (message, the cosine's angle at u for s, the power of the cosine).
_F_SLIPS = (
    (
        "your f(u) is the cosine itself, not its square: f(u) = cos²(π/2 · (u + s)/(1 + s)) (without the square "
        "each 1 − beta_t is the square root of the right one)",
        lambda u, s: (u + s) / (1.0 + s) * math.pi / 2.0,
        1,
    ),
    (
        "your f(u) leaves out the division by 1 + s: f(u) = cos²(π/2 · (u + s)/(1 + s)) reaches 0 exactly at "
        "u = 1, while cos²(π/2 · (u + s)) reaches it before the last step",
        lambda u, s: (u + s) * math.pi / 2.0,
        2,
    ),
    (
        "your f(u) uses π where π/2 belongs: f(u) = cos²(π/2 · (u + s)/(1 + s)) falls from about 1 at u = 0 to 0 "
        "at u = 1; with π it reaches 0 halfway and rises again",
        lambda u, s: (u + s) / (1.0 + s) * math.pi,
        2,
    ),
)


def _f_slip_abar(T: int, s: float, max_beta: float, angle, power: int) -> tuple[np.ndarray, int]:
    """abar built the right way from a wrong f, and how many of its first values are sound.

    Where the slip's cosine is 0 at a grid point, f there is rounding noise (1e-17, of either sign), and every
    abar from that step on depends on how the answer rounded: only the values before it can be compared.
    """
    u = np.arange(T + 1, dtype=np.float64) / T
    c = np.cos(angle(u, s))
    f = c**power
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        betas = np.minimum(1.0 - f[1:] / f[:-1], max_beta)
        abar = np.cumprod(1.0 - betas)
    noise = np.flatnonzero(np.abs(c[1:]) < 1e-6)  # f(u_j) noise spoils abar_j onwards
    sound = int(noise[0]) + 1 if noise.size else T
    return abar, sound


def _f_slip_diagnosis(case: Case, got: np.ndarray, exp: np.ndarray) -> str:
    """The message of the slip inside f(u) that gives ``got`` (compared on the values it fixes), or ''."""
    try:
        T, s = int(case.args[0]), float(case.kwargs.get("s", 0.008))
        max_beta = float(case.kwargs.get("max_beta", 0.999))
        for message, angle, power in _F_SLIPS:
            abar, n = _f_slip_abar(T, s, max_beta, angle, power)
            if n < 1 or not np.all(np.isfinite(abar[:n])):
                continue
            if np.allclose(abar[:n], exp[:n], rtol=1e-5, atol=1e-12):
                continue  # the slip changes nothing here (s = 0 without 1 + s, say)
            if np.allclose(got[:n], abar[:n], rtol=1e-5, atol=1e-12):
                return message
    except (TypeError, ValueError, IndexError, ZeroDivisionError, OverflowError):
        return ""
    return ""


def _cosine_diagnosis(case: Case, got, expected) -> str:
    try:
        got = np.asarray(got, dtype=np.float64)
        exp = np.asarray(expected, dtype=np.float64)
    except (TypeError, ValueError):
        return ""
    if got.shape != exp.shape:
        if got.shape == (exp.size + 1,):
            return "you returned T + 1 values: abar_t for t = 0 … T−1 comes from f at u = 1/T … 1"
        return ""
    if got.ndim == 1 and (slip := _f_slip_diagnosis(case, got, exp)):
        return slip
    if not np.all(np.isfinite(got)):
        return "some values are not finite: did a beta reach 1 or more? Clip the betas at max_beta"
    T, s = int(case.args[0]), case.kwargs.get("s", 0.008)
    max_beta = case.kwargs.get("max_beta", 0.999)
    if s != 0.008 and np.allclose(got, _cosine_alphas_cumprod(T, 0.008, max_beta).numpy(), rtol=1e-5, atol=1e-12):
        return f"this is the schedule for s = 0.008, but this case asks for s = {s}: use the argument s"
    if max_beta != 0.999 and np.allclose(got, _cosine_alphas_cumprod(T, s, 0.999).numpy(), rtol=1e-5, atol=1e-12):
        return f"this is the schedule clipped at 0.999, but this case asks for max_beta = {max_beta}: use the argument"
    rel = np.abs(got - exp) / np.maximum(np.abs(exp), 1e-300)
    if (rel > 1e-5).any() and np.all(rel < 2e-3):
        return "close, but not to float64 precision: compute in torch.float64 (float32 loses digits near the end)"
    abar_ref = _cosine_alphas_cumprod(T, s, max_beta).numpy()
    betas = 1.0 - abar_ref / np.concatenate([[1.0], abar_ref[:-1]])
    if np.allclose(got, betas, rtol=1e-5, atol=1e-12):
        return "you returned the betas: return abar_t, the running product of (1 − beta_s) for s = 0 … t"
    unclipped = _cosine_alphas_cumprod(T, s, max_beta=math.inf).numpy()
    if np.allclose(got, unclipped, rtol=1e-5, atol=1e-12):
        return "this is the cosine schedule without the clip: clip each beta at max_beta before the product"
    if np.allclose(got, np.concatenate([[1.0], exp[:-1]]), rtol=1e-5, atol=1e-12):
        return "your abar is one step late: abar_0 is already 1 − beta_0, not 1"
    return _schedule_slip_diagnosis(T, float(s), float(max_beta), got, exp)


def _abar_from(f, u: np.ndarray, max_beta: float) -> np.ndarray:
    """abar from f on the grid u (T + 1 points), each beta clipped at max_beta."""
    fu = f(u)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.cumprod(1.0 - np.minimum(1.0 - fu[1:] / fu[:-1], max_beta))


def _schedule_slip_candidates(T: int, s: float, max_beta: float) -> list[tuple[str, np.ndarray, int]]:
    """(message, abar of the slip, how many of its first values to compare) for the slips around f."""

    def f(u, denominator=1.0 + s):
        return np.cos((u + s) / denominator * np.pi / 2.0) ** 2

    u = np.arange(T + 1, dtype=np.float64) / T
    fu = f(u)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        raised = np.cumprod(1.0 - np.maximum(1.0 - fu[1:] / fu[:-1], max_beta))  # clamp(min=…) for clamp(max=…)
    out = [
        (
            "your clip raises every beta to at least max_beta: the clip is min(beta_t, max_beta), "
            "torch.clamp(beta, max=max_beta), not clamp(beta, min=max_beta)",
            raised,
            T,
        ),
        (
            "your grid starts one step late, at u = 1/T: f is evaluated at u = t/T for t = 0 … T, starting at 0",
            _abar_from(f, (np.arange(T + 1, dtype=np.float64) + 1) / T, max_beta),
            T - 1,
        ),
        (
            "your clip acts on abar, not on the betas: clip each beta_t = 1 − f((t+1)/T) / f(t/T) at max_beta, "
            "then take the running product of 1 − beta_t",
            np.maximum(f(u[1:]) / f(0.0), 1.0 - max_beta),
            T,
        ),
        (
            f"your betas are clipped at 1 − max_beta = {1.0 - max_beta:.6g}: the clip is min(beta_t, max_beta), "
            f"max_beta = {max_beta:.6g}",
            _abar_from(f, u, 1.0 - max_beta),
            T,
        ),
        (
            "your f(u) divides by 1 − s: f(u) = cos²(π/2 · (u + s)/(1 + s)), so that f is about 1 at u = 0 and "
            "exactly 0 at u = 1",
            _abar_from(lambda v: f(v, 1.0 - s), u, max_beta),
            T,
        ),
    ]
    if T >= 2:
        # u = t/(T − 1) passes 1 before the last step; how an answer treats u > 1 varies, so only the
        # values that stay on u ≤ 1 (t = 0 … T − 2) are compared
        out.append(
            (
                "your grid is u = t/(T − 1): u = t/T, so that the T steps run from u = 0 to u = 1 "
                "(f at T + 1 points, t = 0 … T)",
                _abar_from(f, np.arange(T + 1, dtype=np.float64) / (T - 1), max_beta),
                T - 1,
            )
        )
    return out


def _schedule_slip_diagnosis(T: int, s: float, max_beta: float, got: np.ndarray, exp: np.ndarray) -> str:
    """The message of the clip, 1 − s or grid slip whose abar ``got`` holds, or ''."""
    try:
        for message, abar, n in _schedule_slip_candidates(T, s, max_beta):
            a, g, e = abar[:n], got[:n], exp[:n]
            if n < 1 or not np.all(np.isfinite(a)) or np.allclose(a, e, rtol=1e-5, atol=1e-12):
                continue  # the slip cannot show on this case
            if np.allclose(g, a, rtol=1e-5, atol=1e-12):
                return message
    except (TypeError, ValueError, IndexError, ZeroDivisionError, OverflowError):
        return ""
    return ""


def _cosine_judge(case: Case, got, expected) -> list[SubCheck]:
    checks = compare(got, expected, rtol=1e-5, atol=1e-12, label=case.label)
    return with_diagnosis(checks, _cosine_diagnosis(case, got, expected))


register(
    Exercise(
        id="01.2",
        library_versions=("course_lib.schedules.NoiseSchedule.cosine",),
        lesson=LESSON,
        name="cosine_alphas_cumprod",
        title="build the clipped cosine schedule",
        reference=_cosine_alphas_cumprod,
        cases=_cosine_cases,
        judge=_cosine_judge,
        points=3,
        hint="The clip acts on the betas, not on abar: go from f to each step's beta, clip it, then take the "
        "running product of 1 − beta, in float64.",
    )
)


# ---------------------------------------------------------------------------------------------
# 01.3  compare_schedules: the schedule comparator
# ---------------------------------------------------------------------------------------------


def _abar_table(name: str, T: int) -> torch.Tensor:
    """abar_t, t = 0 … T−1, of the course's linear (1e-4 → 0.02) or cosine (s = 0.008) schedule."""
    if name == "linear":
        betas = [1e-4 + (0.02 - 1e-4) * t / (T - 1) for t in range(T)] if T > 1 else [1e-4]
    else:
        s = 0.008
        f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        betas = [min(1 - f((t + 1) / T) / f(t / T), 0.999) for t in range(T)]
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), dim=0)


def _compare_schedules(steps, num_steps: int = 1000) -> dict:
    r"""abar, SNR in dB and the 0 dB crossing of the linear and cosine schedules.

        abar_t    = ∏_{k ≤ t} (1 − beta_k)
        SNR_dB(t) = 10·log10( abar_t / (1 − abar_t) )
        t_0dB     = min{ t : abar_t ≤ 1/2 }   (T if there is none)

    steps: int64 tensor of shape (K,), values in 0 … T−1. Returns
    ``{"linear": {"abar": (K,), "snr_db": (K,), "zero_db_step": int}, "cosine": {...}}``.
    """
    steps = torch.as_tensor(steps, dtype=torch.long)
    out = {}
    for name in ("linear", "cosine"):
        abar = _abar_table(name, int(num_steps))
        at = abar[steps]
        below = [t for t, a in enumerate(abar.tolist()) if a <= 0.5]
        out[name] = {
            "abar": at,
            "snr_db": 10 * torch.log10(at) - 10 * torch.log10(1 - at),
            "zero_db_step": below[0] if below else int(num_steps),
        }
    return out


def _compare_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    T_mid = 2 * int(torch.randint(50, 200, (1,), generator=g)) + 1  # odd, 101 … 399
    return [
        Case((torch.randint(0, 1000, (6,), generator=g),), label="6 random steps, T = 1000"),
        Case((torch.tensor([0, 999]),), label="t = 0 and t = T−1, T = 1000"),
        Case((torch.tensor([259, 496, 500]),), label="steps 259, 496, 500, T = 1000"),
        Case((torch.randint(0, 1000, (1,), generator=g),), label="a single step, T = 1000"),
        Case((torch.randint(0, T_mid, (5,), generator=g),), {"num_steps": T_mid}, label=f"5 random steps, T = {T_mid}"),
        Case((torch.tensor([0, 10, 19]),), {"num_steps": 20}, label="T = 20: linear never reaches 0 dB"),
    ]


def _as_step(x):
    """The learner's zero_db_step as an int, if it is one (an int, an integral float, a 0-d array)."""
    if isinstance(x, bool):
        return None
    if isinstance(x, np.ndarray) and x.size == 1:
        x = x.reshape(-1)[0].item()
    if isinstance(x, (int, float)) and math.isfinite(x) and float(x).is_integer():
        return int(x)
    return None


def _product_of_betas(got, name: str, case: Case) -> bool:
    """Whether the learner's abar is the running product of beta itself (at the case's steps)."""
    T = int(case.kwargs.get("num_steps", 1000))
    abar = _abar_table(name, T)
    betas = 1 - abar / torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    wrong = torch.cumprod(betas, 0)[torch.as_tensor(case.args[0], dtype=torch.long)].numpy()
    arr = as_float_array(got)
    # most of that product underflows to 0: only a step where it is not (t small) tells it from zeros
    return arr is not None and arr.shape == wrong.shape and bool((wrong > 0).any()) and bool(
        np.allclose(arr, wrong, rtol=1e-5, atol=0.0)
    )


def _compare_judge(case: Case, got, expected) -> list[SubCheck]:
    where = f" ({case.label})" if case.label else ""
    if not isinstance(got, dict) or "__object__" in got:
        what = got.get("__object__", "an object") if isinstance(got, dict) else type(got).__name__
        return [SubCheck("type", False, 1, f"expected a dict with keys 'linear' and 'cosine', got {what}{where}")] + [
            SubCheck(f"{name}", False, 6, "") for name in expected
        ]
    checks = []
    missing = [k for k in expected if k not in got]
    checks.append(
        SubCheck(
            "keys", not missing, 1, f"missing keys {missing}: return one entry per schedule{where}" if missing else ""
        )
    )
    for name, exp in expected.items():
        sub = got.get(name)
        if not isinstance(sub, dict) or "__object__" in sub:
            checks.append(SubCheck(f"{name}", False, 6, f"{name}: expected a dict with keys {sorted(exp)}{where}"))
            continue
        missing = [k for k in exp if k not in sub]
        checks.append(
            SubCheck(f"{name}: keys", not missing, 1, f"{name}: missing keys {missing}{where}" if missing else "")
        )
        for key in ("abar", "snr_db"):
            if key not in sub:
                checks.append(SubCheck(f"{name}.{key}: values", False, 2, ""))
                continue
            part = compare(sub[key], exp[key], rtol=1e-5, atol=1e-9 if key == "abar" else 1e-5, label=case.label)
            for c in part:
                c.name = f"{name}.{key}: {c.name}"
                if c.message:
                    c.message = f"{name}.{key}: {c.message}"
            if key == "snr_db":
                part = with_diagnosis(part, _db_diagnosis(sub[key], exp[key]), f"{name}.snr_db: values")
            elif not all(c.passed for c in part) and _product_of_betas(sub[key], name, case):
                part = with_diagnosis(part, "abar_t is the running product of 1 − beta, not of beta: "
                                      "torch.cumprod(1 - betas, 0)", f"{name}.abar: values")
            checks += part
        if "zero_db_step" in sub:
            step, want = _as_step(sub["zero_db_step"]), exp["zero_db_step"]
            ok = step == want
            msg = ""
            if step is None:
                msg = f"{name}.zero_db_step: expected an int, got {sub['zero_db_step']!r}{where}"
            elif not ok:
                msg = f"{name}.zero_db_step: expected {want}, got {step}{where}"
                T = case.kwargs.get("num_steps", 1000)
                if want == T and step == 0:  # argmax of an all-False mask
                    msg += (f" — this schedule never reaches 0 dB within T = {T} steps, and argmax of an all-False "
                            "mask is 0: check that some step qualifies, and return T when none does")
                elif want == T:  # first: T − 1 here is not "one step early", there is no t at or below 0 dB
                    msg += f" — this schedule never reaches 0 dB within T = {T} steps: return T (not T − 1)"
                elif step == want - 1:
                    msg += " — one step early: that is the last t above 0 dB; return the first t with abar_t ≤ 1/2"
                elif step == want + 1:
                    msg += " — one step late: return the first t with abar_t ≤ 1/2 (t counts from 0)"
            checks.append(SubCheck(f"{name}.zero_db_step", ok, 2, msg))
        else:
            checks.append(SubCheck(f"{name}.zero_db_step", False, 2, ""))
    return checks


register(
    Exercise(
        id="01.3",
        library_versions=(
            "course_lib.schedules.NoiseSchedule.snr_db",
            "course_lib.schedules.NoiseSchedule.zero_db_step",
        ),
        lesson=LESSON,
        name="compare_schedules",
        title="write the schedule comparator",
        reference=_compare_schedules,
        cases=_compare_cases,
        judge=_compare_judge,
        points=4,
        hint="abar is the running product of 1 − beta; 0 dB is where abar_t = 1/2, and the crossing is the "
        "first index at or below it (T when there is none).",
    )
)

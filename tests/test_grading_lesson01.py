"""Lesson 01's graded exercises: the references pass, known-wrong answers do not, and the
solutions notebook's cells pass as written and become not_implemented once stubbed."""

from __future__ import annotations

import math

import pytest
import torch
from grading_helpers import SEEDS, assert_known_wrong, assert_wrong

from course_lib.grading.exercise import exercises_for, get_exercise, grade_answer
from course_lib.schedules import NoiseSchedule

IDS = ["01.1", "01.2", "01.3"]
NAMES = {"01.1": "snr_db", "01.2": "cosine_alphas_cumprod", "01.3": "compare_schedules"}


def _grade(exercise_id, answer, seed=0):
    return grade_answer(exercise_id, answer, seed)


# ---------------------------------------------------------------------------------------------
# The registry and the references
# ---------------------------------------------------------------------------------------------


def test_lesson_registers_three_exercises():
    """The lesson's own exercises, in order (what every exercise must satisfy: test_exercises_common.py)."""
    assert [(e.id, e.name) for e in exercises_for("01_noise_schedules")] == [(i, NAMES[i]) for i in IDS]


def test_references_agree_with_the_library():
    """The references are written from the formulas; the library must give the same numbers."""
    snr, cos, cmp = (get_exercise(i).reference for i in IDS)
    for T in (1, 2, 5, 50, 1000):
        for s, max_beta in ((0.008, 0.999), (0.0, 0.999), (0.02, 0.4)):
            lib = NoiseSchedule.cosine(T, s=s, max_beta=max_beta).alphas_cumprod
            assert torch.allclose(cos(T, s=s, max_beta=max_beta), lib, rtol=1e-12, atol=0)
    for T in (20, 101, 1000):
        out = cmp(torch.arange(T), T)
        for name, sched in (("linear", NoiseSchedule.linear(T)), ("cosine", NoiseSchedule.cosine(T))):
            assert torch.allclose(out[name]["abar"], sched.alphas_cumprod, rtol=1e-12, atol=0)
            assert torch.allclose(out[name]["snr_db"], sched.snr_db(), rtol=1e-9, atol=1e-9)
            assert torch.allclose(snr(sched.alphas_cumprod), sched.snr_db(), rtol=1e-9, atol=1e-9)
            assert out[name]["zero_db_step"] == sched.zero_db_step()
    # the curriculum's landmarks
    out = cmp(torch.tensor([500]))
    assert (out["linear"]["zero_db_step"], out["cosine"]["zero_db_step"]) == (259, 496)
    assert round(float(out["linear"]["abar"][0]), 2) == 0.08 and round(float(out["cosine"]["abar"][0]), 2) == 0.49
    assert cmp(torch.tensor([0]), 20)["linear"]["zero_db_step"] == 20  # never crosses: T


# ---------------------------------------------------------------------------------------------
# Known-wrong answers
# ---------------------------------------------------------------------------------------------


def snr_natural_log(abar):
    return 10 * torch.log(abar / (1 - abar))


def snr_amplitude_db(abar):
    return 20 * torch.log10(abar / (1 - abar))


def snr_inverted(abar):
    return 10 * torch.log10((1 - abar) / abar)


def snr_bels(abar):
    return torch.log10(abar / (1 - abar))


def snr_forgot_noise(abar):
    return 10 * torch.log10(abar)


def snr_scalar(abar):
    return (10 * torch.log10(abar / (1 - abar))).mean()


def _cos_f(u, s):
    return torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def cosine_no_clip(num_steps, s=0.008, max_beta=0.999):
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = _cos_f(u, s)
    return torch.cumprod(f[1:] / f[:-1], dim=0)


def cosine_float32(num_steps, s=0.008, max_beta=0.999):
    u = torch.arange(num_steps + 1) / num_steps  # float32 by default
    f = _cos_f(u, s)
    return torch.cumprod(1 - (1 - f[1:] / f[:-1]).clamp(max=max_beta), dim=0)


def cosine_one_step_late(num_steps, s=0.008, max_beta=0.999):
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = _cos_f(u, s)
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    abar = torch.cumprod(1 - betas, dim=0)
    return torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])  # abar_t = prod_{k<t}


def cosine_t_plus_one_values(num_steps, s=0.008, max_beta=0.999):
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    return _cos_f(u, s) / _cos_f(torch.tensor(0.0, dtype=torch.float64), s)


def cosine_ignores_s(num_steps, s=0.008, max_beta=0.999):
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = _cos_f(u, 0.008)
    return torch.cumprod(1 - (1 - f[1:] / f[:-1]).clamp(max=max_beta), dim=0)


def cosine_fixed_clip(num_steps, s=0.008, max_beta=0.999):
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = _cos_f(u, s)
    return torch.cumprod(1 - (1 - f[1:] / f[:-1]).clamp(max=0.999), dim=0)


def _comparator(abar_of, db_of, crossing_of):
    def compare_schedules(steps, num_steps=1000):
        out = {}
        for name in ("linear", "cosine"):
            betas = getattr(NoiseSchedule, name)(num_steps).betas
            abar = abar_of(betas)
            out[name] = {"abar": abar[steps], "snr_db": db_of(abar)[steps], "zero_db_step": crossing_of(abar)}
        return out

    return compare_schedules


def _abar(betas):
    return torch.cumprod(1 - betas, dim=0)


def _db(abar):
    return 10 * torch.log10(abar / (1 - abar))


def _first_at_or_below(abar):
    idx = (abar <= 0.5).nonzero().flatten()
    return int(idx[0]) if len(idx) else len(abar)


def _last_above(abar):
    return int((abar > 0.5).nonzero().flatten()[-1])


compare_crossing_one_early = _comparator(_abar, _db, _last_above)
compare_natural_log = _comparator(_abar, lambda a: 10 * torch.log(a / (1 - a)), _first_at_or_below)
compare_exclusive_cumprod = _comparator(
    lambda b: torch.cat([torch.ones(1, dtype=b.dtype), torch.cumprod(1 - b, 0)[:-1]]), _db, _first_at_or_below
)
compare_never_crossing_is_minus_one = _comparator(
    _abar, _db, lambda a: int((a <= 0.5).nonzero().flatten()[0]) if (a <= 0.5).any() else -1
)
compare_crossing_as_tensor = _comparator(_abar, _db, lambda a: torch.tensor(_first_at_or_below(a)))


def compare_swapped(steps, num_steps=1000):
    good = get_exercise("01.3").reference(steps, num_steps)
    return {"linear": good["cosine"], "cosine": good["linear"]}


def compare_as_tuple(steps, num_steps=1000):
    good = get_exercise("01.3").reference(steps, num_steps)
    return good["linear"], good["cosine"]


WRONG = [
    # (exercise, answer, substring of the feedback, expected status)
    ("01.1", snr_natural_log, "not the natural log", "partial"),
    ("01.1", snr_amplitude_db, "20·log10 is for amplitudes", "partial"),
    ("01.1", snr_inverted, "wrong sign", "partial"),
    ("01.1", snr_bels, "bels", "partial"),
    ("01.1", snr_forgot_noise, "values differ", "partial"),
    ("01.1", snr_scalar, "expected shape (7,), got ()", "fail"),
    ("01.2", cosine_no_clip, "without the clip", "partial"),
    ("01.2", cosine_float32, "float64", "partial"),
    ("01.2", cosine_one_step_late, "one step late", "partial"),
    ("01.2", cosine_t_plus_one_values, "T + 1 values", "fail"),
    ("01.2", cosine_ignores_s, "use the argument s", "partial"),
    ("01.2", cosine_fixed_clip, "use the argument", "partial"),
    ("01.3", compare_crossing_one_early, "one step early", "partial"),
    ("01.3", compare_natural_log, "not the natural log", "partial"),
    ("01.3", compare_exclusive_cumprod, "linear.abar: values differ", "partial"),
    ("01.3", compare_never_crossing_is_minus_one, "never reaches 0 dB within T = 20 steps: return T", "partial"),
    ("01.3", compare_swapped, "linear.zero_db_step: expected 259, got 496", "partial"),
    ("01.3", compare_as_tuple, "expected a dict with keys 'linear' and 'cosine'", "fail"),
]


@pytest.mark.parametrize("exercise_id,answer,message,status", WRONG, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG])
@pytest.mark.parametrize("seed", [0, 3])
def test_known_wrong_answers_lose_points_with_a_useful_message(exercise_id, answer, message, status, seed):
    assert_known_wrong(exercise_id, answer, message, status, seed)


def test_partial_credit_reflects_how_much_is_right():
    """The crossing one step off keeps abar and SNR: most of the points; swapped schedules keep less."""
    one_early = _grade("01.3", compare_crossing_one_early).points
    natural_log = _grade("01.3", compare_natural_log).points
    swapped = _grade("01.3", compare_swapped).points
    assert 4 > one_early >= natural_log > swapped > 0
    # no clip spoils every case (each has a clipped step); ignoring s spoils only the cases with another s
    assert 0 < _grade("01.2", cosine_no_clip).points < _grade("01.2", cosine_ignores_s).points < 3


def test_crossing_as_a_zero_dim_tensor_is_accepted():
    assert _grade("01.3", compare_crossing_as_tensor).status == "pass"


def test_answers_that_raise_are_errors_not_crashes():
    def broken(*args, **kwargs):
        raise ValueError("boom")

    for exercise_id in IDS:
        result = _grade(exercise_id, broken)
        assert result.status == "error" and result.points == 0
        assert "ValueError: boom" in result.feedback()


# ---------------------------------------------------------------------------------------------
# 01.2: slips inside f(u), and correct answers written other ways
# ---------------------------------------------------------------------------------------------


def _cosine_with_f(f):
    def cosine_alphas_cumprod(num_steps, s=0.008, max_beta=0.999):
        u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        fu = f(u, s)
        return torch.cumprod(1 - (1 - fu[1:] / fu[:-1]).clamp(max=max_beta), dim=0)

    return cosine_alphas_cumprod


cosine_f_not_squared = _cosine_with_f(lambda u, s: torch.cos((u + s) / (1 + s) * math.pi / 2))
cosine_f_without_one_plus_s = _cosine_with_f(lambda u, s: torch.cos((u + s) * math.pi / 2) ** 2)
cosine_f_pi_not_half_pi = _cosine_with_f(lambda u, s: torch.cos((u + s) / (1 + s) * math.pi) ** 2)


def cosine_f_without_one_plus_s_loop(num_steps, s=0.008, max_beta=0.999):
    """The same slip written with a loop and the math module: past u + s = 1 its f is rounding noise."""

    def f(u):
        return math.cos(math.pi / 2 * (u + s)) ** 2

    abar, out = 1.0, []
    for t in range(num_steps):
        abar *= 1 - min(1 - f((t + 1) / num_steps) / f(t / num_steps), max_beta)
        out.append(abar)
    return torch.tensor(out, dtype=torch.float64)


cosine_f_one_minus_s = _cosine_with_f(lambda u, s: torch.cos((u + s) / (1 - s) * math.pi / 2) ** 2)


def cosine_clip_on_abar(num_steps, s=0.008, max_beta=0.999):
    """abar = f(u)/f(0) directly, and the clip put on abar: abar ≥ 1 − max_beta."""
    u = torch.arange(1, num_steps + 1, dtype=torch.float64) / num_steps
    abar = _cos_f(u, s) / _cos_f(torch.tensor(0.0, dtype=torch.float64), s)
    return abar.clamp(min=1 - max_beta)


def cosine_clip_at_one_minus_max_beta(num_steps, s=0.008, max_beta=0.999):
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = _cos_f(u, s)
    return torch.cumprod(1 - (1 - f[1:] / f[:-1]).clamp(max=1 - max_beta), dim=0)


def cosine_grid_over_t_minus_one(num_steps, s=0.008, max_beta=0.999):
    """u = t/(T − 1), written as a loop; past u = 1 it keeps the cosine's value (no guard)."""

    def f(u):
        return math.cos(math.pi / 2 * (u + s) / (1 + s)) ** 2

    d = max(num_steps - 1, 1)
    abar, out = 1.0, []
    for t in range(num_steps):
        abar *= 1 - min(1 - f((t + 1) / d) / f(t / d), max_beta)
        out.append(abar)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize(
    "answer, message",
    [
        (cosine_f_one_minus_s, "your f(u) divides by 1 − s"),
        (cosine_clip_on_abar, "your clip acts on abar, not on the betas"),
        (cosine_clip_at_one_minus_max_beta, "your betas are clipped at 1 − max_beta"),
        (cosine_grid_over_t_minus_one, "your grid is u = t/(T − 1)"),
    ],
    ids=["1-s", "clip-abar", "clip-1-max-beta", "grid-T-1"],
)
def test_cosine_clip_and_grid_slips_are_named_on_every_seed(answer, message):
    assert_wrong("01.2", answer, message)


@pytest.mark.parametrize(
    "answer, message",
    [
        (cosine_f_not_squared, "f(u) is the cosine itself"),
        (cosine_f_without_one_plus_s, "leaves out the division by 1 + s"),
        (cosine_f_without_one_plus_s_loop, "leaves out the division by 1 + s"),
        (cosine_f_pi_not_half_pi, "uses π where π/2 belongs"),
    ],
    ids=["not-squared", "no-1+s", "no-1+s-loop", "pi"],
)
def test_cosine_slips_inside_f_are_named_on_every_seed(answer, message):
    assert_wrong("01.2", answer, message, partial="partial")


def cosine_half_angle(num_steps, s=0.008, max_beta=0.999):
    """cos²(x) = (1 + cos 2x) / 2: a π in the formula, and still the right f."""
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = (1 + torch.cos((u + s) / (1 + s) * math.pi)) / 2
    return torch.cumprod(1 - torch.minimum(1 - f[1:] / f[:-1], torch.tensor(max_beta, dtype=torch.float64)), dim=0)


def cosine_loop_from_normalised_f(num_steps, s=0.008, max_beta=0.999):
    """abar from f(t/T)/f(0) step by step, in plain Python floats, then one tensor."""
    f = [math.cos(math.pi / 2 * (t / num_steps + s) / (1 + s)) ** 2 for t in range(num_steps + 1)]
    out, abar = [], 1.0
    for t in range(num_steps):
        abar *= 1 - min(1 - f[t + 1] / f[t], max_beta)
        out.append(abar)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("answer", [cosine_half_angle, cosine_loop_from_normalised_f])
@pytest.mark.parametrize("seed", SEEDS)
def test_cosine_written_other_ways_passes(answer, seed):
    result = _grade("01.2", answer, seed)
    assert result.status == "pass", result.feedback()


def _cosine_with(mode):
    import math

    def answer(num_steps, s=0.008, max_beta=0.999):
        t = torch.arange(num_steps + 1, dtype=torch.float64) + (1 if mode == "late grid" else 0)
        f = torch.cos((t / num_steps + s) / (1 + s) * math.pi / 2) ** 2
        beta = 1 - f[1:] / f[:-1]
        beta = beta.clamp(min=max_beta) if mode == "clamp min" else beta.clamp(max=max_beta)
        return beta if mode == "betas" else torch.cumprod(1 - beta, 0)
    return answer


@pytest.mark.parametrize("mode, message", [
    ("clamp min", "not clamp(beta, min=max_beta)"),
    ("late grid", "your grid starts one step late"),
    ("betas", "you returned the betas"),
])
def test_01_2_clip_direction_late_grid_and_returned_betas_are_named(mode, message):
    from course_lib.grading.exercise import grade_answer as _grade

    result = _grade("01.2", _cosine_with(mode), 0)
    assert result.status != "pass" and message in result.feedback(), result.feedback()


def test_01_3_the_librarys_snr_db_and_zero_db_step_earn_nothing():
    def with_the_library(steps, num_steps=1000):
        out = {}
        for name in ("linear", "cosine"):
            s = getattr(NoiseSchedule, name)(num_steps)
            abar = torch.cumprod(1 - s.betas, 0)
            out[name] = {"abar": abar[steps], "snr_db": s.snr_db()[steps], "zero_db_step": s.zero_db_step()}
        return out

    result = grade_answer("01.3", with_the_library, 0)
    assert result.status == "fail" and "NoiseSchedule.snr_db" in result.flag, result.feedback()


def test_renamed_keyword_parameters_are_told_to_keep_the_stubs_names():
    reference = get_exercise("01.2").reference

    def renamed(T, s_=0.008, mb=0.999):
        return reference(T, s_, mb)

    assert "keep its parameter names" in grade_answer("01.2", renamed, 0).feedback()


def test_three_slips_a_fresh_eyes_learner_made_are_named():
    """10·log10(abar) without the noise term; abar as the product of beta; argmax of an all-False mask (0 where the
    schedule never reaches 0 dB) was told 'not T − 1'."""
    result = grade_answer("01.1", lambda abar: 10 * torch.log10(torch.as_tensor(abar, dtype=torch.float64)), 0)
    assert "10·log10(abar): the SNR divides" in result.feedback(), result.feedback()

    reference = get_exercise("01.3").reference
    schedules = {"linear": NoiseSchedule.linear, "cosine": NoiseSchedule.cosine}

    def cumprod_of_betas(steps, num_steps=1000):
        out = reference(steps, num_steps)
        for name, make in schedules.items():
            abar = torch.cumprod(make(num_steps).betas, 0)[torch.as_tensor(steps)]
            out[name] = {**out[name], "abar": abar}
        return out

    result = grade_answer("01.3", cumprod_of_betas, 0)
    assert "running product of 1 − beta, not of beta" in result.feedback(), result.feedback()

    def argmax_of_mask(steps, num_steps=1000):
        out = reference(steps, num_steps)
        for name, make in schedules.items():
            below = make(num_steps).alphas_cumprod <= 0.5
            out[name] = {**out[name], "zero_db_step": int(torch.argmax(below.int()))}
        return out

    result = grade_answer("01.3", argmax_of_mask, 0)
    assert "argmax of an all-False mask is 0" in result.feedback(), result.feedback()
    assert "(not T − 1)" not in result.feedback()

"""Lesson 08's graded exercises: the references pass (and agree with the library and diffusers), known
mistakes lose points with a useful message, stubs are "not_implemented", the solutions notebook passes."""

from __future__ import annotations

import math
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from grading_helpers import SEEDS, assert_wrong, grade_all_seeds

from course_lib.grading import lesson08 as L
from course_lib.grading.exercise import exercises_for, get_exercise, grade_answer
from course_lib.samplers import ddim_step, dpm_timesteps, sample_loop, timesteps
from course_lib.schedules import NoiseSchedule

ROOT = Path(__file__).resolve().parents[1]
LESSON_NB = ROOT / "notebooks" / "08_ddim_and_fast_samplers.ipynb"
IDS = ["08.1", "08.2", "08.3"]


# --------------------------------------------------------------------------- registry and references


def test_lesson_08_registers_three_exercises():
    """The lesson's own exercises, in order (what every exercise must satisfy: test_exercises_common.py)."""
    assert [(e.id, e.name) for e in exercises_for("08_ddim_and_fast_samplers")] == [
        ("08.1", "ddim_update"),
        ("08.2", "spaced_timesteps"),
        ("08.3", "ddim_error_curve"),
    ]


def test_ddim_reference_is_the_library_step():
    sched = NoiseSchedule.cosine(1000)
    g = torch.Generator().manual_seed(0)
    x_t, eps, z = (torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    for t, t_prev, eta in [(900, 850, 0.0), (500, 400, 1.0), (300, 290, 0.3), (40, -1, 1.0)]:
        a_prev = 1.0 if t_prev < 0 else float(sched.alphas_cumprod[t_prev])
        mine = L._ddim_update(float(sched.alphas_cumprod[t]), a_prev, x_t, eps, eta, z)
        lib = ddim_step(sched, x_t, eps, t, t_prev, eta=eta, noise=z)
        assert torch.allclose(mine, lib, atol=1e-10)


def test_spacing_reference_is_the_library_and_diffusers():
    for T in (1000, 250, 37):
        for spacing in L.SPACINGS:
            for steps in (1, 2, 7, 10, 20, T):
                if steps > T:
                    continue
                assert torch.equal(L._spaced_timesteps(T, steps, spacing), timesteps(T, steps, spacing)), (
                    T,
                    steps,
                    spacing,
                )
    diffusers = pytest.importorskip("diffusers")
    for spacing in L.SPACINGS:
        ref = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing, steps_offset=0)
        ref.set_timesteps(10)
        assert torch.equal(L._spaced_timesteps(1000, 10, spacing), ref.timesteps)


def test_spacing_cases_avoid_exact_halves_and_cover_every_spacing():
    for seed in SEEDS:
        cases = L._spacing_cases(seed)
        assert {c.args[2] for c in cases} == set(L.SPACINGS)
        assert not any(L._has_half(*c.args) for c in cases)


def test_error_curve_reference_is_the_library_sampler():
    for case in L._curve_cases(0)[:2]:
        abar, x0, known, noise, counts, kappa = case.args
        sched = NoiseSchedule(1 - abar / torch.cat([abar.new_ones(1), abar[:-1]]))
        T = len(abar)

        def oracle(x, t, sched=sched, known=known, kappa=kappa):
            a = float(sched.alphas_cumprod[t])
            return (1 + kappa) * (x - math.sqrt(a) * known.view(1, 1, 1, -1)) / math.sqrt(1 - a)

        x_T = (abar[-1].sqrt() * x0 + (1 - abar[-1]).sqrt() * noise).view(1, 1, 1, -1)
        expected = L._ddim_error_curve(*case.args)["errors"]
        for i, n in enumerate(counts[:4]):
            out = sample_loop(oracle, sched, x_T, timesteps(T, n, "trailing"), sampler="ddim").view(-1)
            assert math.isclose(float((out - x0).pow(2).mean().sqrt()), float(expected[i]), rel_tol=1e-6)


def test_error_curves_fall_to_a_floor_with_a_knee():
    for seed in SEEDS:
        knees, fallback = [], 0
        for case in L._curve_cases(seed):
            out = L._ddim_error_curve(*case.args)
            errs, counts = out["errors"], case.args[4]
            floor = float((case.args[2] - case.args[1]).pow(2).mean().sqrt())
            if counts[-1] >= 32:
                assert float(errs[-1]) == pytest.approx(floor, rel=0.1)  # many steps: the blur's error
            assert float(errs[0]) > float(errs[-1])
            assert out["knee"] in counts
            knees.append(out["knee"])
            fallback += bool((errs[1:] / errs[:-1] <= 0.9).all()) and out["knee"] == counts[-1]
        assert len(set(knees)) >= 2  # the cases do not all share one knee
        assert fallback >= 1  # one case has no doubling that gains little: the rule's fallback, the last N


def curve_with_first_n_as_fallback(abar, x0, known, noise, step_counts, kappa):
    out = L._ddim_error_curve(abar, x0, known, noise, step_counts, kappa)
    errs = out["errors"]
    ratios = errs[1:] / errs[:-1]
    if bool((ratios <= 0.9).all()):
        out["knee"] = step_counts[0]  # the mistake: no knee found, so the first N
    return out


def curve_with_rms_as_mse(abar, x0, known, noise, step_counts, kappa):
    out = L._ddim_error_curve(abar, x0, known, noise, step_counts, kappa)
    errs = out["errors"] ** 2  # the mistake: no square root; the knee rule applied to these is right
    ratios = errs[1:] / errs[:-1]
    i = next((k for k in range(len(ratios)) if ratios[k] > 0.9), None)
    return {"errors": errs, "knee": step_counts[i] if i is not None else step_counts[-1]}


def test_08_3_the_knee_rule_is_judged_on_the_learners_own_errors():
    assert_wrong("08.3", curve_with_first_n_as_fallback, "the knee is the last N in step_counts", partial="partial")
    for result in grade_all_seeds("08.3", curve_with_rms_as_mse):
        feedback = result.feedback()
        assert result.status != "pass"
        assert "'gains less than 10%'" not in feedback and "not the doubled one" not in feedback, feedback


# --------------------------------------------------------------------------- 08.1: known mistakes


def _x0(a_t, x_t, eps):
    return (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)


def _sigma(a_t, a_prev, eta):
    return eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)


def ddim_without_sigma_in_direction(a_t, a_prev, x_t, eps, eta, z):
    s = _sigma(a_t, a_prev, eta)
    return math.sqrt(a_prev) * _x0(a_t, x_t, eps) + math.sqrt(1 - a_prev) * eps + s * z


def ddim_without_noise(a_t, a_prev, x_t, eps, eta, z):
    s = _sigma(a_t, a_prev, eta)
    return math.sqrt(a_prev) * _x0(a_t, x_t, eps) + math.sqrt(max(1 - a_prev - s * s, 0)) * eps


def ddim_sigma_beta_only(a_t, a_prev, x_t, eps, eta, z):
    s = eta * math.sqrt(1 - a_t / a_prev)
    return math.sqrt(a_prev) * _x0(a_t, x_t, eps) + math.sqrt(max(1 - a_prev - s * s, 0)) * eps + s * z


def ddim_x0_without_roots(a_t, a_prev, x_t, eps, eta, z):
    s = _sigma(a_t, a_prev, eta)
    x0 = (x_t - (1 - a_t) * eps) / a_t
    return math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - s * s, 0)) * eps + s * z


def ddim_eta_squared(a_t, a_prev, x_t, eps, eta, z):
    s = eta * _sigma(a_t, a_prev, eta)
    return math.sqrt(a_prev) * _x0(a_t, x_t, eps) + math.sqrt(max(1 - a_prev - s * s, 0)) * eps + s * z


def ddim_tensor_scalars(a_t, a_prev, x_t, eps, eta, z):
    """The same step with the numbers as tensors: must pass."""
    a_t, a_prev = torch.tensor(a_t, dtype=torch.float64), torch.tensor(a_prev, dtype=torch.float64)
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    s = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev - s**2).clamp(min=0).sqrt() * eps + s * z


def test_08_1_wrong_variants():
    # right wherever eta = 0: partial credit
    assert_wrong("08.1", ddim_without_sigma_in_direction, "subtract σ² under the root", partial="partial")
    assert_wrong("08.1", ddim_without_noise, "add σ·z", partial="partial")
    assert_wrong("08.1", ddim_sigma_beta_only, "σ has both factors", partial="partial")
    assert_wrong("08.1", ddim_x0_without_roots, "mind both square roots")
    assert_wrong("08.1", ddim_eta_squared, "not η²", partial="partial")


def ddim_inner_ratio_inverted(a_t, a_prev, x_t, eps, eta, z):
    # a σ of an unforeseen shape (the inner ratio upside down, its sign dropped): no named slip fits
    x0 = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(abs(1 - a_prev / a_t))
    return math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0)) * eps + sigma * z


def test_08_1_a_sigma_of_unforeseen_shape_is_located_by_the_steps_coefficients():
    assert_wrong("08.1", ddim_inner_ratio_inverted, "your step has the right form", partial="partial")
    feedback = grade_answer(get_exercise("08.1"), ddim_inner_ratio_inverted, 3).feedback()
    assert "β = σ = " in feedback and "recompute σ" in feedback


def test_08_1_equivalent_forms_pass():
    assert all(r.status == "pass" for r in grade_all_seeds("08.1", ddim_tensor_scalars))


# --------------------------------------------------------------------------- 08.2: known mistakes


def spacing_ascending(T, steps, spacing):
    return L._spaced_timesteps(T, steps, spacing).flip(0)


def spacing_trailing_without_minus_one(T, steps, spacing):
    t = L._spaced_timesteps(T, steps, spacing)
    return t + 1 if spacing == "trailing" else t


def spacing_leading_rounded(T, steps, spacing):
    if spacing == "leading":
        return torch.tensor(np.round(np.arange(steps) * (T / steps))[::-1].copy(), dtype=torch.int64)
    return L._spaced_timesteps(T, steps, spacing)


def spacing_linspace_to_T(T, steps, spacing):
    if spacing == "linspace":
        return torch.tensor(np.round(np.linspace(0, T, steps))[::-1].copy(), dtype=torch.int64)
    return L._spaced_timesteps(T, steps, spacing)


def spacing_as_list(T, steps, spacing):
    return L._spaced_timesteps(T, steps, spacing).tolist()


def test_08_2_wrong_variants():
    assert_wrong("08.2", spacing_ascending, "descending order", partial="partial")  # steps = 1 is right
    assert_wrong("08.2", spacing_trailing_without_minus_one, "subtract 1 after rounding", partial="partial")
    assert_wrong("08.2", spacing_leading_rounded, "integer division", partial="partial")
    assert_wrong("08.2", spacing_linspace_to_T, "not to T", partial="partial")


def spacing_leading_multiplied_first(T, steps, spacing):
    if spacing == "leading":
        return torch.from_numpy((np.arange(steps) * T // steps)[::-1].copy())
    return L._spaced_timesteps(T, steps, spacing)


def spacing_dpm_solver_grid(T, steps, spacing):
    """DPMSolverMultistepScheduler's leading/linspace (the library's dpm_timesteps): right for another sampler."""
    if spacing == "trailing":
        return L._spaced_timesteps(T, steps, spacing)
    return dpm_timesteps(T, steps, spacing)


def spacing_trailing_as_a_linspace(T, steps, spacing):
    if spacing == "trailing":
        return torch.from_numpy(np.round(np.linspace(T - 1, 0, steps)).astype(np.int64))
    return L._spaced_timesteps(T, steps, spacing)


def test_08_2_more_slips_are_named():
    assert_wrong("08.2", spacing_leading_multiplied_first, "divide first, then multiply", partial="partial")
    assert_wrong("08.2", spacing_dpm_solver_grid, "that is DPM-Solver's grid", partial="partial")
    assert_wrong("08.2", spacing_trailing_as_a_linspace, "is the 'linspace' spacing", partial="partial")


def test_08_2_a_list_earns_the_values_but_not_the_type():
    ex = get_exercise("08.2")
    for result in grade_all_seeds("08.2", spacing_as_list):
        assert result.status == "partial"
        assert result.points == pytest.approx(ex.points * 3 / 4)
        assert "int64 torch tensor" in result.feedback()


# --------------------------------------------------------------------------- 08.3: known mistakes


def _curve(abar, x0, known, noise, counts, kappa, ts_fn=None, start_first=False, final=True, rms=True, knee_fn=None,
           measure=None):
    T = len(abar)
    errors = []
    for n in counts:
        ts = ts_fn(T, n) if ts_fn else [T - 1 - i * (T // n) for i in range(n)]
        a0 = float(abar[ts[0] if start_first else T - 1])
        x = math.sqrt(a0) * x0 + math.sqrt(1 - a0) * noise
        for i, t in enumerate(ts):
            a_t = float(abar[t])
            if i + 1 < n:
                a_next = float(abar[ts[i + 1]])
            elif final:
                a_next = 1.0
            else:
                break
            eps = (1 + kappa) * (x - math.sqrt(a_t) * known) / math.sqrt(1 - a_t)
            x = math.sqrt(a_next) * (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t) + math.sqrt(1 - a_next) * eps
        d = (x - x0).pow(2)
        errors.append(measure(x - x0) if measure else float(d.mean().sqrt() if rms else d.sum().sqrt()))
    knee = (knee_fn or _right_knee)(errors, counts)
    return {"errors": torch.tensor(errors, dtype=torch.float64), "knee": knee}


def _right_knee(errors, counts):
    for i in range(len(counts) - 1):
        if errors[i + 1] > 0.9 * errors[i]:
            return counts[i]
    return counts[-1]


def curve_leading(*args):
    return _curve(*args, ts_fn=lambda T, n: [(n - 1 - i) * (T // n) for i in range(n)], start_first=True)


def curve_no_final_step(*args):
    return _curve(*args, final=False)


def curve_knee_is_the_doubled(*args):
    def knee(errors, counts):
        for i in range(len(counts) - 1):
            if errors[i + 1] > 0.9 * errors[i]:
                return counts[i + 1]
        return counts[-1]

    return _curve(*args, knee_fn=knee)


def curve_knee_threshold_10_percent_of_error(*args):
    def knee(errors, counts):
        for i in range(len(counts) - 1):
            if errors[i + 1] > 0.1 * errors[i]:
                return counts[i]
        return counts[-1]

    return _curve(*args, knee_fn=knee)


def curve_sum_not_mean(*args):
    return _curve(*args, rms=False)


def curve_returns_a_tuple(*args):
    out = L._ddim_error_curve(*args)
    return out["errors"], out["knee"]


def test_08_3_wrong_variants():
    assert_wrong("08.3", curve_leading, "use trailing timesteps", partial="partial")  # knee can still be right
    assert_wrong("08.3", curve_no_final_step, "all the way to the clean image")
    assert_wrong("08.3", curve_sum_not_mean, "not of the sum", partial="partial")  # the knee is scale-free
    assert_wrong("08.3", curve_knee_is_the_doubled, "not the doubled one", partial="partial")


def test_08_3_knee_mistakes_keep_the_errors_credit():
    ex = get_exercise("08.3")
    for result in grade_all_seeds("08.3", curve_knee_is_the_doubled):
        assert result.points >= ex.points * 0.6


def test_08_3_knee_threshold_mistake_is_caught_on_some_case():
    results = grade_all_seeds("08.3", curve_knee_threshold_10_percent_of_error)
    assert all(r.status == "partial" for r in results)
    assert any("0.9·error_N" in r.feedback() for r in results)


def curve_in_float32(*args):
    out = L._ddim_error_curve(*args)
    return {"errors": torch.tensor(out["errors"].tolist()), "knee": out["knee"]}  # torch.tensor(list): float32


def curve_as_a_list(*args):
    out = L._ddim_error_curve(*args)
    return {"errors": out["errors"].tolist(), "knee": out["knee"]}  # right values, but not the tensor asked for


def test_08_3_errors_in_float32_lose_the_dtype_check_only():
    for result in grade_all_seeds("08.3", curve_in_float32):
        failed = {c.name for c in result.checks if not c.passed}
        assert failed == {"errors: dtype"}, result.feedback()
        assert result.status == "partial" and "got float32" in result.feedback()
    for result in grade_all_seeds("08.3", curve_as_a_list):  # a list where a float64 tensor is asked for
        failed = {c.name for c in result.checks if not c.passed}
        assert failed == {"errors: a torch tensor"} and result.status == "partial", result.feedback()
        assert "got a list" in result.feedback()


def test_08_3_wrong_return_type_fails_with_a_message():
    result = grade_answer("08.3", curve_returns_a_tuple, 0)
    assert result.status == "fail"
    assert "return a dict with keys 'errors' and 'knee'" in result.feedback()


# --------------------------------------------------------------------------- the lesson notebook


def test_lesson_notebook_is_stored_without_outputs():
    """The solutions notebook's: test_exercises_common.py."""
    nb = nbformat.read(LESSON_NB, as_version=4)
    assert nb.nbformat == 4 and nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_lesson_notebook_ends_with_the_exercises():
    nb = nbformat.read(LESSON_NB, as_version=4)
    assert nb.cells[0].source.startswith("# 08 ")
    last = nb.cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Exercises")
    for ex_id in IDS:
        assert f"**{ex_id}**" in last.source


# --------------------------------------------------------------------------- slips a learner review found


def _ddim_slip(a_t, a_prev, x_t, eps, eta, z, slip):
    s = _sigma(a_t, a_prev, 1.0 if slip == "η left out" else eta)
    x0 = _x0(a_t, x_t, eps).clamp(-1, 1) if slip == "x̂0 clamped" else _x0(a_t, x_t, eps)
    signal = (a_prev if slip == "no root on abar'" else math.sqrt(a_prev)) * x0
    direction = (math.sqrt(1 - a_prev) - s) if slip == "σ outside the root" else math.sqrt(max(1 - a_prev - s * s, 0))
    noise = {"σ²·z": s * s * z, "fresh noise": s * torch.randn_like(z)}.get(slip, s * z)
    return signal + direction * eps + noise


@pytest.mark.parametrize(
    "slip, message",
    [
        ("σ²·z", "σ multiplies z, not σ²"),
        ("σ outside the root", "not sqrt(1 − abar_{t'}) − σ"),
        ("η left out", "you left η out"),
        ("no root on abar'", "sqrt(abar_{t'})·x̂_0"),
        ("x̂0 clamped", "does not clamp x̂_0"),
        ("fresh noise", "not fresh torch.randn"),
    ],
)
def test_08_1_more_slips_are_named(slip, message):
    assert_wrong("08.1", lambda *args: _ddim_slip(*args, slip), message, partial="partial")


def test_04_3_fresh_noise_is_named():
    from course_lib.grading.lesson04 import _ddpm_posterior_step

    def step_with_its_own_noise(abar, betas, x_t, eps, t, noise):
        return _ddpm_posterior_step(abar, betas, x_t, eps, t, torch.randn_like(noise))

    assert_wrong("04.3", step_with_its_own_noise, "not fresh torch.randn", partial="partial")


def spacing_slip(T, steps, spacing, slip):
    ref = L._spaced_timesteps(T, steps, spacing)
    if slip == "integer trailing stride" and spacing == "trailing":
        return torch.arange(T - 1, -1, -(T // steps))[:steps]
    if slip == "steps_offset 1" and spacing == "leading":
        return ref + 1
    if slip == "diffusers' arange" and spacing == "trailing":
        return torch.from_numpy(np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1)
    if slip == "linspace downwards" and spacing == "linspace":
        return torch.linspace(T - 1, 0, steps).round().long()
    return ref


@pytest.mark.parametrize(
    "slip, message, seeds",
    [
        ("integer trailing stride", "not the integer stride T // steps", SEEDS),
        ("steps_offset 1", "steps_offset is 0 here", SEEDS),
        ("diffusers' arange", "can overshoot by one entry", [8]),  # T = 976, 27 steps: 28 entries, the last −1
        ("linspace downwards", "linspace with one step is [0]", SEEDS),
    ],
)
def test_08_2_slips_a_learner_review_found_are_named(slip, message, seeds):
    assert_wrong("08.2", lambda *args: spacing_slip(*args, slip), message, partial="partial", seeds=seeds)


def curve_slip(abar, x0, known, noise, counts, kappa, slip):
    T = len(abar)
    errors, x = [], None
    for n in counts:
        ts = (
            [int(v) for v in np.round(np.linspace(T - 1, 0, n))]
            if slip == "linspace"
            else [T - 1 - i * (T // n) for i in range(n)]
        )
        a0 = float(abar[T - 1])
        if x is None or slip != "carried over":
            x = math.sqrt(a0) * x0 + math.sqrt(1 - a0) * noise
        for i, t in enumerate(ts):
            a_t = float(abar[t])
            a_next = float(abar[ts[i + 1]]) if i + 1 < n else (float(abar[0]) if slip == "to abar_0" else 1.0)
            b = x0 if slip == "oracle knows x0" else known
            k = 0.0 if slip == "no κ" else kappa
            eps = (1 + k) * (x - math.sqrt(a_t) * b) / math.sqrt(1 - a_t)
            x = math.sqrt(a_next) * (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t) + math.sqrt(1 - a_next) * eps
        errors.append(float((x - x0).pow(2).mean().sqrt()))
    knee = _right_knee(errors, counts)
    if slip == "knee index":
        knee = counts.index(knee)
    if slip == "knee None":
        knee = None
    return {"errors": torch.tensor(errors, dtype=torch.float64), "knee": knee}


@pytest.mark.parametrize(
    "slip, message",
    [
        ("no κ", "over-states the noise by"),
        ("oracle knows x0", "not x0 itself"),
        ("to abar_0", "not to abar_0"),
        ("carried over", "start every N afresh"),
        ("linspace", "not a rounded linspace"),
        ("knee index", "not its index i"),
        ("knee None", "never None"),
    ],
)
def test_08_3_more_slips_are_named(slip, message):
    assert_wrong("08.3", lambda *args: curve_slip(*args, slip), message, partial="partial")


# --------------------------------------------------------------------------- slips a second review found


def _ddim_slip2(a_t, a_prev, x_t, eps, eta, z, slip):
    r = (1 - a_t) / (1 - a_prev) if slip == "ratio swapped" else (1 - a_prev) / (1 - a_t)
    second = 1 - a_t / a_prev if slip == "no root on σ's second factor" else math.sqrt(1 - a_t / a_prev)
    s = eta * math.sqrt(r) * second
    x0 = (x_t - math.sqrt(1 - a_t) * eps) / (a_t if slip == "x̂0 over abar_t" else math.sqrt(a_t))
    direction = math.sqrt(max(1 - a_prev - s * s, 0.0)) * (z if slip == "z as the direction" else eps)
    return math.sqrt(a_prev) * x0 + direction + s * z


@pytest.mark.parametrize(
    "slip, message",
    [
        ("no root on σ's second factor", "take the square root of 1 − abar_t/abar_{t'} too"),
        ("ratio swapped", "(1 − abar_{t'})/(1 − abar_t): your ratio is upside down"),
        ("z as the direction", "the direction term points along ε̂"),
        ("x̂0 over abar_t", "divide by sqrt(abar_t), not abar_t"),
    ],
)
def test_08_1_slips_a_second_review_found_are_named(slip, message):
    def answer(*args):
        if slip == "ratio swapped" and args[1] == 1.0:  # the learner's own formula divides by 1 − abar_{t'} = 0
            return L._ddim_update(*args)
        return _ddim_slip2(*args, slip)

    assert_wrong("08.1", answer, message, partial="partial")


def curve_leading_from_x_T(*args):
    """Leading timesteps, but the run starts at x_{T−1} as the spec says."""
    return _curve(*args, ts_fn=lambda T, n: [(n - 1 - i) * (T // n) for i in range(n)])


def curve_mse(*args):
    out = _curve(*args)
    return {"errors": out["errors"] ** 2, "knee": _right_knee((out["errors"] ** 2).tolist(), args[4])}


def curve_from_pure_noise(abar, x0, known, noise, counts, kappa):
    T = len(abar)
    errors = []
    for n in counts:
        ts = [T - 1 - i * (T // n) for i in range(n)]
        x = noise.clone()
        for i, t in enumerate(ts):
            a_t = float(abar[t])
            a_next = float(abar[ts[i + 1]]) if i + 1 < n else 1.0
            eps = (1 + kappa) * (x - math.sqrt(a_t) * known) / math.sqrt(1 - a_t)
            x = math.sqrt(a_next) * (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t) + math.sqrt(1 - a_next) * eps
        errors.append(float((x - x0).pow(2).mean().sqrt()))
    return {"errors": torch.tensor(errors, dtype=torch.float64), "knee": _right_knee(errors, counts)}


def curve_trailing_one_late(*args):
    """t_i = T − i·T/N, the first one (T, out of range) clamped to T − 1."""
    return _curve(*args, ts_fn=lambda T, n: [min(T - i * (T // n), T - 1) for i in range(n)])


@pytest.mark.parametrize(
    "answer, message",
    [
        (curve_leading_from_x_T, "use trailing timesteps"),
        (curve_mse, "take the square root of the mean squared error"),
        (curve_from_pure_noise, "not from z alone"),
        (curve_trailing_one_late, "not T − i·T/N"),
        # √mean(x − x₀)² read as the root of the squared mean, and the mean absolute error (a third review)
        (lambda *a: _curve(*a, measure=lambda d: float(d.mean().pow(2).sqrt())), "not |mean(x − x0)|"),
        (lambda *a: _curve(*a, measure=lambda d: float(d.abs().mean())), "not the mean absolute difference"),
    ],
)
def test_08_3_slips_a_second_review_found_are_named(answer, message):
    assert_wrong("08.3", answer, message, partial="partial")


def test_08_new_diagnoses_stay_silent_on_right_answers():
    def ddim_expanded(a_t, a_prev, x_t, eps, eta, z):
        s2 = eta * eta * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        cx = math.sqrt(a_prev / a_t)
        ce = math.sqrt(max(1 - a_prev - s2, 0.0)) - math.sqrt(a_prev * (1 - a_t) / a_t)
        return cx * x_t + ce * eps + math.sqrt(s2) * z

    for result in grade_all_seeds("08.1", ddim_expanded):
        assert result.status == "pass", result.feedback()
    for result in grade_all_seeds("08.3", lambda *args: _curve(*args)):
        assert result.status == "pass", result.feedback()


def test_08_3_a_knee_threshold_other_than_0_9_is_not_told_it_reported_the_doubled_n():
    """Right errors, a knee picked with 0.95: where the cases tell it apart, the feedback says a threshold gave it
    (and never says only "not the doubled one", which describes another slip)."""
    ref = get_exercise("08.3").reference

    def curve_with_threshold_095(alphas_cumprod, x0, known, noise, step_counts, kappa):
        out = ref(alphas_cumprod, x0, known, noise, step_counts, kappa)
        errors, counts = [float(e) for e in out["errors"]], list(step_counts)
        knee = next((counts[i] for i in range(len(counts) - 1) if errors[i + 1] > 0.95 * errors[i]), counts[-1])
        return {**out, "knee": knee}

    told = 0
    for result in grade_all_seeds("08.3", curve_with_threshold_095, seeds=[0, 1, 7, 12345]):
        for check in result.checks:
            if check.name == "knee" and not check.passed:
                assert "threshold" in check.message, check.message
                told += 1
    assert told, "no seed's cases told 0.95 from 0.9"


def test_08_1_eta_times_z_in_the_noise_term_is_named():
    """σ computed right (under the root too), but η·z added: named where η ≠ σ, first where it coincides with σ
    missing a factor (from t = 999, where abar_t ≈ 0 makes σ ≈ η·sqrt(1 − abar_{t'}))."""
    ref = get_exercise("08.1").reference

    def ddim_with_eta_z(abar_t, abar_prev, x_t, eps, eta, z):
        sigma = eta * ((1 - abar_prev) / (1 - abar_t)) ** 0.5 * (1 - abar_t / abar_prev) ** 0.5
        return (
            ref(abar_t, abar_prev, x_t, eps, eta, torch.zeros_like(z)) + eta * z
            if sigma > 0
            else ref(abar_t, abar_prev, x_t, eps, eta, z)
        )

    assert_wrong("08.1", ddim_with_eta_z, "not η·z: η only scales σ", partial="partial")


def curve_knee_as_float(*args):
    out = L._ddim_error_curve(*args)
    return {"errors": out["errors"], "knee": float(out["knee"])}


def test_08_3_a_knee_returned_as_a_float_costs_a_little():
    for result in grade_all_seeds("08.3", curve_knee_as_float):
        failed = {c.name for c in result.checks if not c.passed}
        assert failed == {"knee: an int"} and result.status == "partial", result.feedback()
        assert "return knee as an int" in result.feedback()


def _spacing(mode):
    """spaced_timesteps with one spacing's formula slipped (the rest right)."""
    def answer(T, steps, spacing):
        if spacing == "leading":
            t = np.arange(steps) * (T // steps)
        elif spacing == "trailing":
            raw = T - np.arange(steps) * (T / steps)
            t = (np.floor(raw) if mode == "floor" else np.round(raw)) - 1
        else:
            t = np.round(np.linspace(0, T if mode == "to_T" else T - 1, steps))
        return torch.from_numpy(np.sort(t.astype(np.int64))[::-1].copy())
    return answer


@pytest.mark.parametrize("mode", ["floor", "to_T"])
def test_08_2_a_slipped_formula_shows_on_several_inputs_of_its_spacing(mode):
    for result in grade_all_seeds("08.2", _spacing(mode)):
        wrong = [c for c in result.checks if c.name == "values" and not c.passed]
        assert len(wrong) >= 3 and result.points <= 2.7, result.feedback()

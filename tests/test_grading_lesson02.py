"""Lesson 02's graded exercises: references pass, realistic mistakes do not, the notebook is sound."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch
from grading_helpers import assert_wrong as assert_wrong_on_every_seed

from course_lib.grading.exercise import exercises_for, get_exercise, grade_answer
from course_lib.grading.lesson02 import (
    _evaluate_noise_predictors,
    _forward_by_steps,
    _q_sample_closed_form,
)
from course_lib.schedules import NoiseSchedule

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions" / "02_forward_noising.ipynb"
IDS = {"02.1": "q_sample_closed_form", "02.2": "forward_by_steps", "02.3": "evaluate_noise_predictors"}
REFERENCES = {"02.1": _q_sample_closed_form, "02.2": _forward_by_steps, "02.3": _evaluate_noise_predictors}
SEEDS = [0, 1, 12345]


def grade(exercise_id, answer, seed=0):
    return grade_answer(exercise_id, answer, seed)


def assert_wrong(result, substring, max_points):
    text = result.feedback()
    assert result.status != "pass", text
    assert result.points < max_points, text
    assert substring in text, text


# ------------------------------------------------------------------------------------ registry


def test_lesson_registers_three_exercises():
    """The lesson's own exercises and references (what every exercise must satisfy: test_exercises_common.py)."""
    assert [(e.id, e.name) for e in exercises_for("02_forward_noising")] == list(IDS.items())
    for exercise_id, reference in REFERENCES.items():
        assert get_exercise(exercise_id).reference is reference


# ------------------------------------------------------------------------------------ 02.1


def q_no_reshape(alphas_cumprod, x0, t, noise):
    abar = alphas_cumprod[t]  # (N,): broadcasts against W, or raises
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def q_no_sqrt(alphas_cumprod, x0, t, noise):
    abar = alphas_cumprod[t].view(-1, 1, 1, 1)
    return abar * x0 + (1 - abar) * noise


def q_sqrt_on_signal_only(alphas_cumprod, x0, t, noise):
    abar = alphas_cumprod[t].view(-1, 1, 1, 1)
    return abar.sqrt() * x0 + (1 - abar) * noise


def q_off_by_one(alphas_cumprod, x0, t, noise):
    abar = alphas_cumprod[t - 1].view(-1, 1, 1, 1)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def q_swapped(alphas_cumprod, x0, t, noise):
    abar = alphas_cumprod[t].view(-1, 1, 1, 1)
    return (1 - abar).sqrt() * x0 + abar.sqrt() * noise


@pytest.mark.parametrize(
    "answer, message",
    [
        (q_no_reshape, "reshape it to (N, 1, 1, 1)"),
        (q_no_sqrt, "where sqrt(abar_t) belongs"),
        (q_sqrt_on_signal_only, "the noise term needs sqrt(1 − abar_t)"),
        (q_off_by_one, "you read abar at t − 1"),
        (q_swapped, "the coefficients are swapped"),
    ],
)
@pytest.mark.parametrize("seed", [0, 9])
def test_q_sample_mistakes_are_caught_and_explained(answer, message, seed):
    assert_wrong(grade("02.1", answer, seed), message, 2)


def test_q_sample_partial_credit():
    # right shape, wrong values: the shape checks earn a share of the points
    wrong_values = grade("02.1", q_no_sqrt)
    assert wrong_values.status == "partial" and 0 < wrong_values.points < 2
    # no reshape: raises where W != N, silently wrong where W == N, right for a batch of 1
    no_reshape = grade("02.1", q_no_reshape)
    assert no_reshape.status == "partial", no_reshape.feedback()
    assert "raised RuntimeError" in no_reshape.feedback()
    assert no_reshape.points < wrong_values.points + 1


def test_q_sample_reference_agrees_with_course_lib():
    from course_lib.schedules import q_sample

    cosine = NoiseSchedule.cosine(1000)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(5, 3, 4, 4, generator=g), torch.randn(5, 3, 4, 4, generator=g)
    t = torch.tensor([0, 1, 500, 998, 999])
    assert torch.allclose(_q_sample_closed_form(cosine.alphas_cumprod, x0, t, noise), q_sample(cosine, x0, t, noise))


# ------------------------------------------------------------------------------------ 02.2


def steps_skip_first(betas, x0, noises):
    x, n, v = x0, torch.zeros_like(x0), 0.0
    for t in range(1, len(noises)):  # off by one: step 0 never happens
        b = betas[t].item()
        x = (1 - b) ** 0.5 * x + b**0.5 * noises[t]
        n = (1 - b) ** 0.5 * n + b**0.5 * noises[t]
        v = (1 - b) * v + b
    return {"x_t": x, "eps_bar": n / max(v, 1e-12) ** 0.5}


def steps_no_sqrt(betas, x0, noises):
    x, n, v = x0, torch.zeros_like(x0), 0.0
    for t in range(len(noises)):
        b = betas[t].item()
        x = (1 - b) * x + b**0.5 * noises[t]  # not variance preserving
        n = (1 - b) * n + b**0.5 * noises[t]
        v = (1 - b) ** 2 * v + b
    return {"x_t": x, "eps_bar": n / v**0.5}


def steps_unnormalised(betas, x0, noises):
    x, n = x0, torch.zeros_like(x0)
    for t in range(len(noises)):
        b = betas[t].item()
        x = (1 - b) ** 0.5 * x + b**0.5 * noises[t]
        n = (1 - b) ** 0.5 * n + b**0.5 * noises[t]
    return {"x_t": x, "eps_bar": n}  # forgot to divide by sqrt(1 - abar_k)


def steps_naive_eps_bar(betas, x0, noises):
    x = x0
    for t in range(len(noises)):
        b = betas[t].item()
        x = (1 - b) ** 0.5 * x + b**0.5 * noises[t]
    return {"x_t": x, "eps_bar": noises.sum(0) / len(noises) ** 0.5}  # equal weights: wrong


def steps_solve_the_jump(betas, x0, noises):
    """A correct answer by another route: run the chain, then solve the jump for ε̄."""
    x = x0
    for t in range(len(noises)):
        b = betas[t].item()
        x = (1 - b) ** 0.5 * x + b**0.5 * noises[t]
    abar = torch.cumprod(1 - betas, 0)[len(noises) - 1]
    return {"x_t": x, "eps_bar": (x - abar.sqrt() * x0) / (1 - abar).sqrt()}


def steps_as_tuple(betas, x0, noises):
    out = _forward_by_steps(betas, x0, noises)
    return out["x_t"], out["eps_bar"]


@pytest.mark.parametrize("seed", SEEDS)
def test_by_steps_another_correct_route_passes(seed):
    result = grade("02.2", steps_solve_the_jump, seed)
    assert result.status == "pass", result.feedback()


@pytest.mark.parametrize(
    "answer, message",
    [
        (steps_skip_first, "starting from x0 with step t = 0"),
        (steps_no_sqrt, "Step t keeps sqrt(1 − beta_t) of the previous x"),
        (steps_unnormalised, "the division by sqrt(1 − abar_k)"),
        (steps_naive_eps_bar, "eps_bar is the unit-variance noise for which"),
        (steps_as_tuple, "expected a dict"),
    ],
)
def test_by_steps_mistakes_are_caught_and_explained(answer, message):
    assert_wrong(grade("02.2", answer, seed=2), message, 3)


def test_by_steps_partial_credit_for_the_chain_alone():
    unnormalised = grade("02.2", steps_unnormalised)
    no_sqrt = grade("02.2", steps_no_sqrt)
    assert unnormalised.status == "partial", unnormalised.feedback()
    assert not any(c.name.startswith("x_t") and not c.passed for c in unnormalised.checks)
    assert unnormalised.feedback().count("the division by sqrt(1 − abar_k)") == 1  # the diagnosis, once
    assert no_sqrt.points < unnormalised.points < 3


def test_by_steps_reference_agrees_with_course_lib():
    from course_lib.schedules import q_sample, q_step

    s = NoiseSchedule.cosine(1000)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
    noises = torch.randn(300, 2, 1, 3, 3, generator=g, dtype=torch.float64)
    out = _forward_by_steps(s.betas, x0, noises)
    x = x0
    for t in range(300):
        x = q_step(s, x, torch.tensor([t]), noises[t])
    assert torch.allclose(out["x_t"], x, atol=1e-12)
    assert torch.allclose(q_sample(s, x0, torch.full((2,), 299), out["eps_bar"]), x, atol=1e-12)


# ------------------------------------------------------------------------------------ 02.3


def _apply_bands(per_image, t, bands, inclusive=False):
    out = []
    for lo, hi in bands:
        inside = (t >= lo) & ((t <= hi) if inclusive else (t < hi))
        out.append(per_image[inside].mean())
    return torch.stack(out)


def make_evaluator(*, inclusive=False, invert=True, random_target=True, per_band=True, sqrt_in_x0=True):
    """The reference with one realistic slip switched on."""

    def evaluate(alphas_cumprod, x0, t, noise, random_eps, bands):
        abar = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        out = {}
        for name, eps_hat in {"zero": torch.zeros_like(noise), "random": random_eps, "oracle": noise}.items():
            if not invert:
                x0_hat = x_t  # took the noisy image for the clean one
            elif sqrt_in_x0:
                x0_hat = (x_t - (1 - abar).sqrt() * eps_hat) / abar.sqrt()
            else:
                x0_hat = (x_t - (1 - abar) * eps_hat) / abar
            target = noise if (random_target or name != "random") else 0.0
            eps_err = (eps_hat - target).pow(2).flatten(1).mean(1)
            x0_err = (x0_hat - x0).pow(2).flatten(1).mean(1)
            if per_band:
                out[name] = {
                    "eps_mse": _apply_bands(eps_err, t, bands, inclusive),
                    "x0_mse": _apply_bands(x0_err, t, bands, inclusive),
                }
            else:  # one number for the whole batch, repeated for every band
                out[name] = {"eps_mse": eps_err.mean().repeat(len(bands)), "x0_mse": x0_err.mean().repeat(len(bands))}
        return out

    return evaluate


def test_evaluator_copy_without_slips_passes():
    assert grade("02.3", make_evaluator(), seed=4).status == "pass"


@pytest.mark.parametrize(
    "slip, message",
    [
        (dict(inclusive=True), "an image with t == hi belongs to the next band"),
        (dict(invert=False), "your x0_mse compares x_t itself with x0"),
        (dict(sqrt_in_x0=False), "x̂0 = (x_t − sqrt(1 − abar_t)·ε̂) / sqrt(abar_t)"),
        (dict(random_target=False), "eps_mse is the mean of (ε̂ − noise)²"),
        (dict(per_band=False), "values differ at zero.x0_mse"),
    ],
)
@pytest.mark.parametrize("seed", [0, 3])
def test_evaluator_mistakes_are_caught_and_explained(slip, message, seed):
    assert_wrong(grade("02.3", make_evaluator(**slip), seed), message, 4)


def make_banded_evaluator(*, score="mse", in_band="[lo, hi)"):
    """A loop-per-band evaluator (the notebook's route), with the error measure or the band's edges changed."""

    def evaluate(alphas_cumprod, x0, t, noise, random_eps, bands):
        abar = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        last = len(alphas_cumprod) - 1
        out = {}
        for name, eps_hat in {"zero": torch.zeros_like(noise), "random": random_eps, "oracle": noise}.items():
            x0_hat = (x_t - (1 - abar).sqrt() * eps_hat) / abar.sqrt()
            eps_scores, x0_scores = [], []
            for lo, hi in bands:
                inside = {
                    "[lo, hi)": (t >= lo) & (t < hi),
                    "(lo, hi]": (t > lo) & (t <= hi),
                    "(lo, hi)": (t > lo) & (t < hi),
                    "[lo, hi - 1)": (t >= lo) & (t < hi - 1),
                    "[lo, min(hi, T - 1))": (t >= lo) & (t < min(hi, last)),
                }[in_band]
                for scores, err in ((eps_scores, eps_hat - noise), (x0_scores, x0_hat - x0)):
                    err = err[inside]
                    scores.append(
                        {
                            "mse": err.pow(2).mean(),
                            "rmse": err.pow(2).mean().sqrt(),
                            "mae": err.abs().mean(),
                            "rmse per image": err.pow(2).flatten(1).mean(1).sqrt().mean(),
                        }[score]
                    )
            out[name] = {"eps_mse": torch.stack(eps_scores), "x0_mse": torch.stack(x0_scores)}
        return out

    return evaluate


@pytest.mark.parametrize(
    "slip, message",
    [
        (dict(score="rmse"), "the root of the mean squared error"),
        (dict(score="rmse per image"), "the root of the mean squared error"),
        (dict(score="mae"), "the mean absolute error"),
        (dict(in_band="(lo, hi]"), "your bands hold lo < t ≤ hi"),
        (dict(in_band="(lo, hi)"), "your bands leave out t == lo"),
        (dict(in_band="[lo, hi - 1)"), "your bands leave out t == hi − 1"),
        (dict(in_band="[lo, min(hi, T - 1))"), "the band that ends at T leaves out t = T − 1"),
    ],
    ids=["rmse", "rmse-per-image", "mae", "left-open", "open", "hi-minus-1", "no-last-step"],
)
def test_evaluator_scores_and_band_edges_are_named_on_every_seed(slip, message):
    assert_wrong_on_every_seed("02.3", make_banded_evaluator(**slip), message, partial="partial")


def make_jump_evaluator(*, step=lambda t: t, noise_scale=torch.sqrt, solve=None):
    """An evaluator with another row of the table, another x_t, or another x̂0 (a loop over the bands)."""

    def evaluate(alphas_cumprod, x0, t, noise, random_eps, bands):
        abar = alphas_cumprod[step(t)].view(-1, 1, 1, 1)
        x_t = abar.sqrt() * x0 + noise_scale(1 - abar) * noise
        out = {}
        for name, eps_hat in {"zero": torch.zeros_like(noise), "random": random_eps, "oracle": noise}.items():
            if solve is None:
                x0_hat = (x_t - noise_scale(1 - abar) * eps_hat) / abar.sqrt()
            else:
                x0_hat = solve(x_t, abar, eps_hat)
            eps_mse, x0_mse = [], []
            for lo, hi in bands:
                inside = (t >= lo) & (t < hi)
                eps_mse.append((eps_hat - noise)[inside].pow(2).mean())
                x0_mse.append((x0_hat - x0)[inside].pow(2).mean())
            out[name] = {"eps_mse": torch.stack(eps_mse), "x0_mse": torch.stack(x0_mse)}
        return out

    return evaluate


@pytest.mark.parametrize(
    "slip, message",
    [
        (dict(solve=lambda x_t, a, e: (x_t - (1 - a).sqrt() * e) / a), "your x̂0 divides by abar_t"),
        (dict(step=lambda t: (t - 1).clamp(min=0)), "your x0_mse uses abar_{t−1}"),
        (dict(step=lambda t: t - 1), "your x0_mse uses abar_{t−1}"),
        (dict(noise_scale=lambda v: v), "your x_t scales the noise by 1 − abar_t"),
        (dict(solve=lambda x_t, a, e: x_t), "your x0_mse compares x_t itself with x0"),
    ],
    ids=["divide-by-abar", "t-minus-1-clamped", "t-minus-1-wraps", "noise-not-root", "x_t-for-x0_hat"],
)
def test_evaluator_jump_slips_are_named_on_every_seed(slip, message):
    assert_wrong_on_every_seed("02.3", make_jump_evaluator(**slip), message, partial="partial")


@pytest.mark.parametrize("seed", SEEDS)
def test_evaluator_written_other_ways_passes(seed):
    assert grade("02.3", make_jump_evaluator(), seed).status == "pass", seed
    """A loop over the bands, or one matrix product with a band-membership matrix: the same numbers."""
    assert grade("02.3", make_banded_evaluator(), seed).status == "pass", seed

    def by_membership(alphas_cumprod, x0, t, noise, random_eps, bands):
        lo = torch.tensor([b[0] for b in bands])[:, None]
        hi = torch.tensor([b[1] for b in bands])[:, None]
        member = ((t[None, :] >= lo) & (t[None, :] < hi)).to(x0.dtype)  # B×N
        abar = alphas_cumprod[t].to(x0.dtype).reshape(-1, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        out = {}
        for name, eps_hat in (("zero", 0 * noise), ("random", random_eps), ("oracle", noise)):
            x0_hat = (x_t - (1 - abar).sqrt() * eps_hat) / abar.sqrt()
            per_image = [(a - b).square().mean(dim=(1, 2, 3)) for a, b in ((eps_hat, noise), (x0_hat, x0))]
            eps_mse, x0_mse = (member @ e / member.sum(1) for e in per_image)
            out[name] = {"eps_mse": eps_mse, "x0_mse": x0_mse}
        return out

    result = grade("02.3", by_membership, seed)
    assert result.status == "pass", result.feedback()


def test_evaluator_partial_credit():
    # noise-space scores right, image-space scores wrong: most of the points
    no_invert = grade("02.3", make_evaluator(invert=False))
    assert no_invert.status == "partial" and 2 < no_invert.points < 4, no_invert.feedback()
    failed = {c.name.split(":")[0] for c in no_invert.checks if not c.passed and c.name != "diagnosis"}
    assert failed and all(name.endswith("x0_mse") for name in failed)
    assert all(c.weight == 0 for c in no_invert.checks if c.name == "diagnosis")
    # right structure, no bands at all: the shapes and the oracle's zeros earn little
    no_bands = grade("02.3", make_evaluator(per_band=False))
    assert 0 < no_bands.points < 2 < no_invert.points, no_bands.feedback()


def test_evaluator_wrong_structure_fails():
    def as_list(*args):
        out = _evaluate_noise_predictors(*args)
        return [out["zero"], out["random"], out["oracle"]]

    result = grade("02.3", as_list)
    assert result.status == "fail" and result.points == 0
    assert "expected a dict, got a sequence of length 3" in result.feedback()


def test_evaluator_returns_nested_dict_of_band_vectors():
    ex = get_exercise("02.3")
    case = ex.cases(0)[0]
    out = _evaluate_noise_predictors(*case.args)
    assert set(out) == {"zero", "random", "oracle"}
    for scores in out.values():
        assert set(scores) == {"eps_mse", "x0_mse"}
        assert scores["eps_mse"].shape == scores["x0_mse"].shape == (len(case.args[5]),)


def test_evaluator_shows_what_the_notebook_says():
    """eps-MSE is flat (zero ≈ 1, random ≈ 2, oracle 0); the zero predictor's x0-MSE grows with t."""
    s = NoiseSchedule.linear(1000)
    g = torch.Generator().manual_seed(0)
    n = 3000
    x0 = torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    t = torch.randint(0, 1000, (n,), generator=g)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    rand = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    bands = [(0, 100), (100, 500), (500, 1000)]
    out = _evaluate_noise_predictors(s.alphas_cumprod, x0, t, noise, rand, bands)
    assert torch.allclose(out["zero"]["eps_mse"], torch.ones(3, dtype=torch.float64), atol=0.05)
    assert torch.allclose(out["random"]["eps_mse"], torch.full((3,), 2.0, dtype=torch.float64), atol=0.1)
    assert out["oracle"]["eps_mse"].abs().max() == 0 and out["oracle"]["x0_mse"].abs().max() < 1e-20
    zero_x0 = out["zero"]["x0_mse"]
    assert zero_x0[0] < 0.05 < 1 < zero_x0[1] < zero_x0[2]


def test_evaluator_reference_rejects_an_empty_band():
    s = NoiseSchedule.linear(1000)
    x0 = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"no sample has t in the band \[0, 10\)"):
        _evaluate_noise_predictors(s.alphas_cumprod, x0, torch.tensor([500, 600]), x0, x0, [(0, 10)])


# ------------------------------------------------------------------------------------ notebook


def _notebook():
    return nbformat.read(SOLUTIONS, as_version=4)


def test_notebook_states_what_it_runs_on():
    nb = _notebook()
    assert "2-core CPU" in nb.cells[0].source


def q_sample_minus(alphas_cumprod, x0, t, noise):
    a = alphas_cumprod[t].to(x0.dtype).view(-1, 1, 1, 1)
    return a.sqrt() * x0 - (1 - a).sqrt() * noise


def q_sample_first_t(alphas_cumprod, x0, t, noise):
    a = alphas_cumprod[t[0]].to(x0.dtype)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


@pytest.mark.parametrize("answer, message", [(q_sample_minus, "you subtracted the noise"),
                                             (q_sample_first_t, "for the whole batch")])
def test_q_sample_sign_and_one_t_for_all_are_named(answer, message):
    assert_wrong(grade("02.1", answer, seed=0), message, 2)


def _steps_with_abar(which):
    def answer(betas, x0, noises):
        x = x0
        for t in range(len(noises)):
            x = (1 - betas[t]).sqrt() * x + betas[t].sqrt() * noises[t]
        k = len(noises) - 1
        if which == "betas":
            a = torch.cumprod(betas, 0)[k]
        else:
            a = torch.prod(1 - betas[:k])
        return {"x_t": x, "eps_bar": (x - a.sqrt() * x0) / (1 - a).sqrt()}
    return answer


@pytest.mark.parametrize("which, message", [("betas", "the product of (1 − beta_s), not of beta_s"),
                                            ("early", "your abar stops one step early")])
def test_by_steps_a_wrong_abar_is_named(which, message):
    assert_wrong(grade("02.2", _steps_with_abar(which), seed=2), message, 3)


def test_evaluator_lists_deep_in_the_result_cost_the_tensor_check():
    """kind_of reads dicts inside the returned dict: a list where the exercise asks for a tensor costs a little."""
    ex = get_exercise("02.3")

    def listed(*args, **kwargs):
        def to_lists(v):
            if isinstance(v, dict):
                return {k: to_lists(x) for k, x in v.items()}
            return v.tolist() if isinstance(v, torch.Tensor) else v
        return to_lists(ex.reference(*args, **kwargs))

    result = grade("02.3", listed)
    assert result.status == "partial" and "return a torch tensor, got a list" in result.feedback(), result.feedback()
    assert all(c.passed for c in result.checks if c.name != "a torch tensor")
    # the values are right, so the hint points at the form, not at the maths
    assert result.hint.startswith("your values are right on every case") and result.hint != get_exercise("02.3").hint

    def tupled(*args, **kwargs):  # the same with tuples: the message names what came back
        def to_tuples(v):
            if isinstance(v, dict):
                return {k: to_tuples(x) for k, x in v.items()}
            return tuple(v.tolist()) if isinstance(v, torch.Tensor) and v.ndim == 1 else v
        return to_tuples(ex.reference(*args, **kwargs))

    result = grade("02.3", tupled)
    assert "return a torch tensor, got a tuple" in result.feedback(), result.feedback()


def test_02_2_a_slip_is_not_blamed_on_abar_of_beta_where_that_abar_is_zero():
    """betas read one step late: on the all-steps cosine case abar_k of beta_s is ~0, so that slip's eps_bar is
    x_t itself, close to what most wrong answers give there; it must not be named on that ground."""
    reference = get_exercise("02.2").reference

    def betas_one_step_late(betas, x0, noises):
        return reference(torch.cat([betas[1:], betas[-1:]]), x0, noises)

    for seed in (0, 1, 5):
        feedback = grade_answer("02.2", betas_one_step_late, seed).feedback()
        assert "not of beta_s" not in feedback, feedback


def test_02_3_sorted_bands_are_named_as_an_order_slip():
    reference = get_exercise("02.3").reference

    def sorts_the_bands(alphas_cumprod, x0, t, noise, random_eps, bands):
        return reference(alphas_cumprod, x0, t, noise, random_eps, sorted(bands))

    feedback = grade_answer("02.3", sorts_the_bands, 0).feedback()
    assert "in the order of `bands`" in feedback and "eps_mse is the mean" not in feedback, feedback


def _steps_dividing_n_by_an_early_abar(betas, x0, noises):
    """The route the task teaches (carry n_k, divide by sqrt(1 − abar_k)) with abar_k one step early."""
    x, n = x0, torch.zeros_like(x0)
    for t in range(len(noises)):
        b = betas[t]
        x = (1 - b).sqrt() * x + b.sqrt() * noises[t]
        n = (1 - b).sqrt() * n + b.sqrt() * noises[t]
    a = torch.prod(1 - betas[: len(noises) - 1])
    return {"x_t": x, "eps_bar": n / (1 - a).sqrt()}


def test_by_steps_an_early_abar_is_named_on_the_taught_route_too():
    assert_wrong(grade("02.2", _steps_dividing_n_by_an_early_abar, seed=2), "your abar stops one step early", 3)


@pytest.mark.parametrize("answer", [steps_unnormalised, steps_naive_eps_bar, _steps_dividing_n_by_an_early_abar])
def test_by_steps_a_right_loop_with_a_wrong_eps_bar_keeps_about_half(answer):
    """ε̄ is the exercise's new half: a right x_t alone kept 77% of the points before ε̄ weighed twice."""
    result = grade("02.2", answer, seed=2)
    assert 1.2 <= result.points <= 2.0, (answer.__name__, result.points, result.feedback())

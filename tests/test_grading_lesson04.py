"""Lesson 04's graded exercises: the references pass, known mistakes lose points with a useful
message, stubs are "not_implemented", and the solutions notebook's answers pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from grading_helpers import SEEDS, assert_library_values_right_but_nothing_earned, assert_wrong, grade_all_seeds

from course_lib.grading import lesson04 as L
from course_lib.grading.exercise import exercises_for, grade_answer
from course_lib.samplers import ddpm_step
from course_lib.schedules import NoiseSchedule, predict_x0, q_sample


def _v(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


# --------------------------------------------------------------------------- registry and references


def test_lesson_04_registers_four_exercises():
    """The lesson's own exercises, in order (what every exercise must satisfy: test_exercises_common.py)."""
    assert [(e.id, e.name) for e in exercises_for("04_training_and_sampling")] == [
        ("04.1", "epsilon_loss"),
        ("04.2", "ema_update"),
        ("04.3", "ddpm_posterior_step"),
        ("04.4", "predict_x0_clipped"),
    ]


# --------------------------------------------------------------------------- the references agree with the library


def test_epsilon_loss_reference_is_diffusion_loss_with_given_t_and_noise():
    schedule = NoiseSchedule.cosine(100)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 6, 6, generator=g) * 2 - 1
    t = torch.randint(0, 100, (4,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    model = L._AffineEps(0.4, 0.7, 100)
    expected = F.mse_loss(model(q_sample(schedule, x0, t, noise), t), noise)
    got = L._epsilon_loss(model, x0, t, noise, schedule.alphas_cumprod)
    assert torch.allclose(got, expected) and got.requires_grad and got.dim() == 0


def test_oracle_and_zero_models_give_their_textbook_losses():
    for case in L._loss_cases(3):
        model, x0, t, noise, abar = case.args
        loss = float(L._epsilon_loss(model, x0, t, noise, abar).detach())
        if isinstance(model, L._OracleEps):
            assert loss < 1e-8
        if isinstance(model, L._ZeroEps):
            assert loss == pytest.approx(float((noise**2).mean()))


@pytest.mark.parametrize("seed", SEEDS)
def test_ddpm_reference_equals_course_lib_ddpm_step(seed):
    for case in L._ddpm_cases(seed):
        abar, betas, x_t, eps, t, noise = case.args
        schedule = NoiseSchedule(betas)
        assert torch.allclose(schedule.alphas_cumprod, abar, rtol=1e-12, atol=0)
        expected = ddpm_step(schedule, x_t, eps, t, noise=noise)
        assert torch.allclose(L._ddpm_posterior_step(*case.args), expected, rtol=1e-9, atol=1e-9), case.label


def test_ddpm_cases_cover_first_and_last_steps_and_mixed_batches():
    cases = L._ddpm_cases(0)
    ts = [case.args[4] for case in cases]
    assert any(bool((t == 0).all()) for t in ts)
    assert any(int(t.max()) == len(case.args[0]) - 1 for t, case in zip(ts, cases))
    assert any(bool((t == 0).any()) and bool((t > 0).any()) for t in ts)
    assert any(len(t) == 1 for t in ts)


def test_predict_x0_clipped_reference_is_the_library_prediction_clamped():
    for case in L._x0_cases(2):
        abar, x_t, eps, t = case.args
        betas = 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
        expected = predict_x0(NoiseSchedule(betas), x_t, eps, t).clamp(-1, 1)
        assert torch.allclose(L._predict_x0_clipped(*case.args), expected, rtol=1e-6, atol=1e-8)


def test_x0_cases_include_values_inside_and_outside_the_range():
    inside = outside = False
    for case in L._x0_cases(0):
        abar, x_t, eps, t = case.args
        a = _v(abar[t], x_t)
        raw = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        inside |= bool((raw.abs() <= 1).all())
        outside |= bool((raw.abs() > 1).any())
    assert inside and outside


def test_ema_reference_is_the_library_update_without_warm_up():
    from course_lib.train import EMA

    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    ema.updates = 10**6  # past the warm-up: the decay is 0.9 itself
    ema_params = [p.detach().clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    L._ema_update(ema_params, list(model.parameters()), 0.9)
    ema.update(model)
    for a, b in zip(ema_params, ema.model.parameters()):
        assert torch.allclose(a, b)


# --------------------------------------------------------------------------- 04.1: known mistakes


def _x_t(x0, t, noise, abar, offset=0, roots=True):
    a = _v(abar[(t + offset).clamp(0, len(abar) - 1)], x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise if roots else a * x0 + (1 - a) * noise


def loss_without_square_roots(model, x0, t, noise, abar):
    return ((model(_x_t(x0, t, noise, abar, roots=False), t) - noise) ** 2).mean()


def loss_against_x0(model, x0, t, noise, abar):
    return ((model(_x_t(x0, t, noise, abar), t) - x0) ** 2).mean()


def loss_summed(model, x0, t, noise, abar):
    return ((model(_x_t(x0, t, noise, abar), t) - noise) ** 2).sum()


def loss_as_float(model, x0, t, noise, abar):
    return ((model(_x_t(x0, t, noise, abar), t) - noise) ** 2).mean().item()


def loss_per_image(model, x0, t, noise, abar):
    return ((model(_x_t(x0, t, noise, abar), t) - noise) ** 2).mean(dim=(1, 2, 3))


def loss_at_t_minus_1(model, x0, t, noise, abar):
    return ((model(_x_t(x0, t, noise, abar, offset=-1), t) - noise) ** 2).mean()


def loss_fraction_t(model, x0, t, noise, abar):
    return ((model(_x_t(x0, t, noise, abar), t / len(abar)) - noise) ** 2).mean()


def test_04_1_wrong_variants():
    assert_wrong("04.1", loss_without_square_roots, "x_t needs square roots", partial="partial")
    assert_wrong("04.1", loss_against_x0, "the target is the noise", partial="partial")
    assert_wrong("04.1", loss_summed, "don't sum it", partial="partial")
    assert_wrong("04.1", loss_at_t_minus_1, "not at t − 1")
    assert_wrong("04.1", loss_per_image, "return one number")
    assert_wrong("04.1", loss_fraction_t, "not t / T")


def test_04_1_wrong_values_keep_no_more_than_their_form_points():
    """Right-shaped wrong values keep about a third of the points, as README says (the form checks weighed 3/5)."""
    for answer in (loss_summed, loss_without_square_roots):
        for result in grade_all_seeds("04.1", answer):
            assert result.points <= 1.8, (answer.__name__, result.points)


def loss_in_float64(model, x0, t, noise, alphas_cumprod):
    abar = alphas_cumprod[t].view(-1, 1, 1, 1)  # the mistake: float64 abar mixed into float32 x0 uncast
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    return ((model(x_t, t) - noise) ** 2).mean()


def test_04_1_a_float64_loss_loses_a_point():
    """The stand-in models take float64; a real U-Net would not, so the dtype is checked on its own."""
    assert_wrong("04.1", loss_in_float64, "cast abar_t to x0's dtype", partial="partial")


def test_04_1_returning_nothing_fails_with_a_message():
    result = grade_answer("04.1", lambda model, x0, t, noise, abar: None, 0)
    assert result.status == "fail"
    assert "return one number" in result.feedback() and "NoneType" in result.feedback()


def test_04_1_item_earns_partial_credit_for_the_right_value():
    for result in grade_all_seeds("04.1", loss_as_float):
        assert result.status == "partial"
        assert result.points == pytest.approx(3 * 7 / 8, abs=0.01)  # value and scalar right, not differentiable
        assert "carries gradients" in result.feedback()


def loss_keepdim(model, x0, t, noise, alphas_cumprod):
    abar = alphas_cumprod[t].to(x0.dtype).view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    return ((model(x_t, t) - noise) ** 2).mean().reshape(1)  # the mistake: one axis too many


def test_04_1_a_loss_of_shape_1_keeps_the_value_points_but_not_the_scalar_point():
    for result in grade_all_seeds("04.1", loss_keepdim):
        assert result.status == "partial"
        assert result.points == pytest.approx(3 * 8 / 9, abs=0.01)  # value, dtype and gradients right; not 0-dim
        assert "0-dim tensor" in result.feedback() and "(1,)" in result.feedback()


def test_04_1_zero_model_case_passes_a_wrong_x_t():
    """The zero predictor ignores x_t, so a learner with a wrong x_t still gets that case."""
    result = grade_answer("04.1", loss_without_square_roots, 0)
    passed_cases = {c.message for c in result.checks if c.passed}
    assert result.points > 0 and passed_cases


# --------------------------------------------------------------------------- 04.2: known mistakes


def ema_decay_on_wrong_side(ema_params, params, decay):
    with torch.no_grad():
        for e, p in zip(ema_params, params):
            e.mul_(1 - decay).add_(p, alpha=decay)


def ema_rebinds_names(ema_params, params, decay):
    for e, p in zip(ema_params, params):
        e = decay * e + (1 - decay) * p  # noqa: F841 (the mistake: a new tensor, the list is untouched)


def ema_returns_new_tensors(ema_params, params, decay):
    return [decay * e + (1 - decay) * p.detach() for e, p in zip(ema_params, params)]


def ema_replaces_list_entries(ema_params, params, decay):
    for i, (e, p) in enumerate(zip(ema_params, params)):
        ema_params[i] = decay * e + (1 - decay) * p.detach()


def ema_with_warm_up(ema_params, params, decay):
    decay = min(decay, (1 + 1) / (10 + 1))  # copied from the library's EMA class, first update
    with torch.no_grad():
        for e, p in zip(ema_params, params):
            e.mul_(decay).add_(p, alpha=1 - decay)


def ema_bias_corrected(ema_params, params, decay):
    with torch.no_grad():
        for e, p in zip(ema_params, params):
            e.copy_((decay * e + (1 - decay) * p) / (1 - decay))


def ema_also_moves_params(ema_params, params, decay):
    with torch.no_grad():
        for e, p in zip(ema_params, params):
            e.lerp_(p, 1 - decay)
            p.mul_(0.5)


def ema_recorded_by_autograd(ema_params, params, decay):
    for e, p in zip(ema_params, params):  # the mistake: no torch.no_grad(), p not detached
        e.mul_(decay).add_((1 - decay) * p)


def test_04_2_an_update_recorded_by_autograd_loses_a_point():
    """Right values, in place, but the EMA tensors now carry a graph that would grow at every training step."""
    assert_wrong("04.2", ema_recorded_by_autograd, "do the update under torch.no_grad()", partial="partial")


def test_04_2_wrong_variants():
    # decay 0.5 is symmetric: the swapped update is right there, so partial credit
    assert_wrong("04.2", ema_decay_on_wrong_side, "not the other way round", partial="partial")
    assert_wrong("04.2", ema_rebinds_names, "only rebinds a name", partial="fail")
    assert_wrong("04.2", ema_with_warm_up, "no warm-up", partial="partial")
    assert_wrong("04.2", ema_bias_corrected, "no bias correction")
    assert_wrong("04.2", ema_also_moves_params, "params (the trained weights) were changed", partial="partial")


def test_04_2_new_tensors_earn_the_values_but_not_in_place():
    for result in grade_all_seeds("04.2", ema_returns_new_tensors):
        assert result.status == "partial"
        assert result.points == pytest.approx(2 * 2 / 3, abs=0.01)
        assert "must be updated in place" in result.feedback()
    for result in grade_all_seeds("04.2", ema_replaces_list_entries):
        assert result.status == "partial"
        assert result.points == pytest.approx(2 * 2 / 3, abs=0.01)
        assert "ema_params[i] = …" in result.feedback()


def test_04_2_in_place_variants_all_pass():
    def with_lerp(ema_params, params, decay):
        for e, p in zip(ema_params, params):
            e.lerp_(p.detach(), 1 - decay)

    def with_copy(ema_params, params, decay):
        for e, p in zip(ema_params, params):
            e.copy_(decay * e + (1 - decay) * p.detach())

    for answer in (with_lerp, with_copy):
        assert all(r.status == "pass" for r in grade_all_seeds("04.2", answer))


# --------------------------------------------------------------------------- 04.3: known mistakes


def _posterior(abar, betas, x_t, eps, t, abar_prev=None, clamp=False):
    s = (-1,) + (1,) * (x_t.dim() - 1)
    prev = (torch.cat([abar.new_ones(1), abar[:-1]])[t] if abar_prev is None else abar_prev).view(s)
    a, b = abar[t].view(s), betas[t].view(s)
    x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
    x0 = x0.clamp(-1, 1) if clamp else x0
    mean = (prev.sqrt() * b / (1 - a)) * x0 + ((1 - b).sqrt() * (1 - prev) / (1 - a)) * x_t
    return mean, (1 - prev) / (1 - a) * b, b, (t > 0).to(x_t.dtype).view(s)


def step_with_beta_variance(abar, betas, x_t, eps, t, noise):
    mean, _, beta, not_last = _posterior(abar, betas, x_t, eps, t)
    return mean + not_last * beta.sqrt() * noise


def step_with_beta_variance_and_noise_at_0(abar, betas, x_t, eps, t, noise):
    mean, _, beta, _ = _posterior(abar, betas, x_t, eps, t)
    return mean + beta.sqrt() * noise


def step_reading_abar_at_minus_1(abar, betas, x_t, eps, t, noise):
    """alphas_cumprod[t − 1] at t = 0 wraps around to abar_{T−1}, so the last step gets noise."""
    mean, var, _, _ = _posterior(abar, betas, x_t, eps, t, abar_prev=abar[t - 1])
    return mean + var.sqrt() * noise


def step_variance_as_std(abar, betas, x_t, eps, t, noise):
    mean, var, _, not_last = _posterior(abar, betas, x_t, eps, t)
    return mean + not_last * var * noise


def step_with_clamp(abar, betas, x_t, eps, t, noise):
    mean, var, _, not_last = _posterior(abar, betas, x_t, eps, t, clamp=True)
    return mean + not_last * var.sqrt() * noise


def step_first_t_for_all(abar, betas, x_t, eps, t, noise):
    t = t[:1].expand(len(t))
    mean, var, _, not_last = _posterior(abar, betas, x_t, eps, t)
    return mean + not_last * var.sqrt() * noise


def step_eps_form(abar, betas, x_t, eps, t, noise):
    """Ho et al.'s Algorithm 2: μ = (x_t − β_t / sqrt(1 − abar_t) ε̂) / sqrt(α_t); must pass."""
    s = (-1,) + (1,) * (x_t.dim() - 1)
    _, var, beta, not_last = _posterior(abar, betas, x_t, eps, t)
    mean = (x_t - beta / (1 - abar[t].view(s)).sqrt() * eps) / (1 - beta).sqrt()
    return mean + not_last * var.sqrt() * noise


def test_04_3_wrong_variants():
    assert_wrong("04.3", step_with_beta_variance, "not β_t", partial="partial")  # right at t = 0
    assert_wrong("04.3", step_with_beta_variance_and_noise_at_0, "no noise at t = 0", partial="partial")
    assert_wrong("04.3", step_reading_abar_at_minus_1, "wraps around", partial="partial")  # right for t > 0
    assert_wrong("04.3", step_variance_as_std, "take the square root")
    assert_wrong("04.3", step_with_clamp, "do not clamp")
    assert_wrong("04.3", step_first_t_for_all, "its own step", partial="partial")


def _posterior_slip(abar, betas, x_t, eps, t, noise, slip):
    """The posterior step with one slip inside its coefficients (slip names the part that is wrong)."""
    s = (-1,) + (1,) * (x_t.dim() - 1)
    prev = torch.cat([abar.new_ones(1), abar[:-1]])[t].view(s)
    if slip == "abar_prev clamped at 0":
        prev = abar[(t - 1).clamp(min=0)].view(s)
    a, b = abar[t].view(s), betas[t].view(s)
    not_last = (t > 0).to(x_t.dtype).view(s)
    x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
    c_x0 = (a if slip == "abar_t in the x0 coefficient" else prev).sqrt() * b / (1 - a)
    one_step = {"abar_t in the x_t coefficient": a.sqrt(), "no root on alpha_t": 1 - b}.get(slip, (1 - b).sqrt())
    var = (1 - a) / (1 - prev) * b if slip == "variance upside down" else (1 - prev) / (1 - a) * b
    sign = -1 if slip == "noise subtracted" else 1
    if slip == "eps form over sqrt(abar_t)":
        return (x_t - b / (1 - a).sqrt() * eps) / a.sqrt() + not_last * var.sqrt() * noise
    if slip == "eps form without the root":
        return (x_t - b / (1 - a) * eps) / (1 - b).sqrt() + not_last * var.sqrt() * noise
    return c_x0 * x0 + one_step * (1 - prev) / (1 - a) * x_t + sign * not_last * var.sqrt() * noise


@pytest.mark.parametrize(
    "slip, message",
    [
        ("abar_t in the x_t coefficient", "this step's own factor, not abar_t"),
        ("no root on alpha_t", "take the square root of α_t"),
        ("abar_t in the x0 coefficient", "abar of the step you go to, t − 1, not t"),
        ("variance upside down", "your ratio is upside down"),
        ("noise subtracted", "subtracting it gives another sample"),
        ("eps form over sqrt(abar_t)", "divide by sqrt(α_t)"),
        ("eps form without the root", "keep the square root"),
        ("abar_prev clamped at 0", "t − 1 clamped at 0 reads the wrong entry"),
    ],
)
def test_04_3_slips_inside_the_posterior_are_named(slip, message):
    partial = "partial"  # the shape is right in every case; the clamp slip is right for t > 0 too
    assert_wrong("04.3", lambda *args: _posterior_slip(*args, slip), message, partial=partial)


def test_04_3_messages_name_the_wrong_steps():
    feedback = grade_answer("04.3", step_reading_abar_at_minus_1, 0).feedback()
    assert "wrong for the samples at t = [0, 0]" in feedback


def test_04_3_equivalent_forms_pass():
    def library(abar, betas, x_t, eps, t, noise):
        return ddpm_step(NoiseSchedule(betas), x_t, eps, t, noise=noise)

    assert all(r.status == "pass" for r in grade_all_seeds("04.3", step_eps_form))
    assert_library_values_right_but_nothing_earned("04.3", library)


def test_04_3_returning_the_wrong_shape_fails_the_shape_check():
    result = grade_answer("04.3", lambda abar, betas, x_t, eps, t, noise: x_t[:, 0], 0)
    assert result.status == "fail"
    assert "expected shape" in result.feedback()


# --------------------------------------------------------------------------- 04.4: known mistakes


def _raw_x0(abar, x_t, eps, t):
    a = _v(abar[t], x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def x0_unclamped(abar, x_t, eps, t):
    return _raw_x0(abar, x_t, eps, t)


def x0_clamped_to_unit_interval(abar, x_t, eps, t):
    return _raw_x0(abar, x_t, eps, t).clamp(0, 1)


def x0_without_square_roots(abar, x_t, eps, t):
    a = _v(abar[t], x_t)
    return ((x_t - (1 - a) * eps) / a).clamp(-1, 1)


def x0_clamped_before_dividing(abar, x_t, eps, t):
    a = _v(abar[t], x_t)
    return (x_t - (1 - a).sqrt() * eps).clamp(-1, 1) / a.sqrt()


def test_04_4_wrong_variants():
    assert_wrong(
        "04.4", x0_unclamped, "values outside the range remain", partial="partial"
    )  # right where inside [-1, 1]
    assert_wrong("04.4", x0_clamped_to_unit_interval, "not [0, 1]")
    assert_wrong("04.4", x0_without_square_roots, "mind both square roots")
    assert_wrong("04.4", x0_clamped_before_dividing, "after dividing by sqrt(abar_t)")


def _x0_slip(abar, x_t, eps, t, slip):
    a = _v(abar[t[:1].expand(len(t))] if slip == "t[0] for all" else abar[t], x_t)
    noise_weight = 1 - a if slip == "no root on the noise weight" else (1 - a).sqrt()
    signal_weight = a if slip == "no root on the signal weight" else a.sqrt()
    sign = 1 if slip == "noise added" else -1
    raw = (x_t + sign * noise_weight * eps) / signal_weight
    if slip == "clamped below only":
        return raw.clamp(min=-1)
    if slip == "tanh":
        return raw.tanh()
    return raw.clamp(-1, 1)


@pytest.mark.parametrize(
    "slip, message",
    [
        ("t[0] for all", "its own step"),
        ("no root on the noise weight", "take its square root"),
        ("no root on the signal weight", "not by abar_t"),
        ("noise added", "subtract the noise"),
        ("clamped below only", "x̂_0 above 1 must come down"),
        ("tanh", "not a squashing curve"),
    ],
)
def test_04_4_slips_are_named(slip, message):
    assert_wrong("04.4", lambda *args: _x0_slip(*args, slip), message, partial="partial")


def test_04_3_and_04_4_float32_work_is_named_and_a_float32_result_costs_a_little():
    from course_lib.grading.lesson04 import _ddpm_posterior_step, _predict_x0_clipped

    def step_with_float32_tables(abar, betas, x_t, eps, t, noise):  # a habit from 04.1: .float() on the tables
        return _ddpm_posterior_step(abar.float(), betas.float(), x_t, eps, t, noise)

    results = grade_all_seeds("04.3", step_with_float32_tables)
    assert all(r.status == "partial" and "what float32 gives" in r.feedback() for r in results)

    def x0_in_float32(abar, x_t, eps, t):
        return _predict_x0_clipped(abar.float(), x_t.float(), eps.float(), t)

    for result in grade_all_seeds("04.4", x0_in_float32):
        feedback = result.feedback()
        assert result.status == "partial" and "the dtype the reference keeps for these inputs, got float32" in feedback


# --------------------------------------------------------------------------- slips a learner review found


def _ema_slip(ema_params, params, decay, slip):
    with torch.no_grad():
        for e, p in zip(ema_params, params):
            if slip == "no mul_":
                e.add_((1 - decay) * p)
            elif slip == "precedence":
                e.mul_(decay).add_(p * 1 - decay)
            elif slip == "decay twice":
                e.mul_(decay)
                e.copy_(decay * e + (1 - decay) * p)
            else:  # "return in the loop"
                e.mul_(decay).add_(p, alpha=1 - decay)
                return


@pytest.mark.parametrize(
    "slip, message",
    [
        ("no mul_", "scale the running average by the decay first"),
        ("precedence", "not add_(p * 1 − d)"),
        ("decay twice", "apply the decay once"),
        ("return in the loop", "a return inside the loop"),
    ],
)
def test_04_2_more_slips_are_named(slip, message):
    assert_wrong("04.2", lambda *args: _ema_slip(*args, slip), message)


def test_04_1_an_absolute_error_is_named():
    def l1_loss(model, x0, t, noise, alphas_cumprod):
        abar = alphas_cumprod[t].to(x0.dtype).view(-1, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        return (model(x_t, t) - noise).abs().mean()

    assert_wrong("04.1", l1_loss, "not the absolute error", partial="partial")


def _posterior_index_slip(abar, betas, x_t, eps, t, noise, slip):
    s = (-1,) + (1,) * (x_t.dim() - 1)
    a = abar[t].view(s)
    if slip == "betas[t - 1]":
        prev = torch.cat([abar.new_ones(1), abar[:-1]])[t].view(s)
        b = betas[(t - 1).clamp(min=0)].view(s)
    else:  # "abar[t + 1]"
        prev = abar[(t + 1).clamp(max=len(abar) - 1)].view(s)
        b = betas[t].view(s)
    x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
    mean = prev.sqrt() * b / (1 - a) * x0 + (1 - b).sqrt() * (1 - prev) / (1 - a) * x_t
    var = ((1 - prev) / (1 - a) * b).clamp(min=0)
    return mean + (t > 0).to(x_t.dtype).view(s) * var.sqrt() * noise


@pytest.mark.parametrize(
    "slip, message", [("betas[t - 1]", "not betas[t − 1]"), ("abar[t + 1]", "alphas_cumprod[t − 1], not [t + 1]")]
)
def test_04_3_index_slips_are_named(slip, message):
    assert_wrong("04.3", lambda *args: _posterior_index_slip(*args, slip), message, partial="partial")


@pytest.mark.parametrize(
    "slip, message",
    [
        ("multiply", "do not multiply"),
        ("1 - sqrt", "not 1 − sqrt(abar_t)"),
        ("swapped weights", "yours are swapped"),
        ("clamp(x, 1, -1)", "takes the lower bound first"),
    ],
)
def test_04_4_more_slips_are_named(slip, message):
    def answer(abar, x_t, eps, t):
        a = _v(abar[t], x_t)
        raw = {
            "multiply": (x_t - (1 - a).sqrt() * eps) * a.sqrt(),
            "1 - sqrt": (x_t - (1 - a.sqrt()) * eps) / a.sqrt(),
            "swapped weights": (x_t - a.sqrt() * eps) / (1 - a).sqrt(),
        }.get(slip, (x_t - (1 - a).sqrt() * eps) / a.sqrt())
        return torch.clamp(raw, 1, -1) if slip == "clamp(x, 1, -1)" else raw.clamp(-1, 1)

    assert_wrong("04.4", answer, message)


def test_04_1_model_called_at_t_plus_1_is_not_blamed_on_the_abar_index():
    """x_t is right, only the model's t is off: on the oracle cases the losses are ~1e-5, where an absolute
    tolerance of 1e-6 made the loss match both abar-index slips, which this answer does not have."""

    def loss_model_at_t_plus_1(model, x0, t, noise, abar):
        a = abar[t].to(x0.dtype).view(-1, 1, 1, 1)
        return F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t + 1), noise)

    for result in grade_all_seeds("04.1", loss_model_at_t_plus_1):
        assert result.status != "pass"
        assert "index abar" not in result.feedback(), result.feedback()


# --------------------------------------------------------------------------- slips a second review found


def loss_per_image_mean_summed(model, x0, t, noise, abar):
    """The mean over each image's pixels, then summed over the batch: N times the loss."""
    return ((model(_x_t(x0, t, noise, abar), t) - noise) ** 2).flatten(1).mean(1).sum()


def ema_decay_capped(ema_params, params, decay):
    decay = min(decay, 0.9)  # a warm-up habit: the cap belongs to a schedule, not to this update
    with torch.no_grad():
        for e, p in zip(ema_params, params):
            e.mul_(decay).add_(p, alpha=1 - decay)


def x0_from_clamped_x_t(abar, x_t, eps, t):
    a = _v(abar[t], x_t)
    return (x_t.clamp(-1, 1) - (1 - a).sqrt() * eps) / a.sqrt()


def x0_from_clamped_x_t_and_clamped(abar, x_t, eps, t):
    return x0_from_clamped_x_t(abar, x_t, eps, t).clamp(-1, 1)


def test_04_1_per_image_means_summed_over_the_batch_are_named():
    assert_wrong("04.1", loss_per_image_mean_summed, "you summed the per-image means", partial="partial")


def test_04_2_a_capped_decay_is_named():
    assert_wrong("04.2", ema_decay_capped, "min(decay, 0.9)", partial="partial")


@pytest.mark.parametrize("answer", [x0_from_clamped_x_t, x0_from_clamped_x_t_and_clamped])
def test_04_4_clamping_x_t_instead_of_x0_is_named(answer):
    assert_wrong("04.4", answer, "clamp x̂_0, not x_t", partial="partial")


def test_04_new_diagnoses_stay_silent_on_right_answers():
    def loss_in_a_loop(model, x0, t, noise, abar):  # x_t image by image, the squared error summed by image
        a = [abar[int(k)].to(x0.dtype) for k in t]
        x_t = torch.stack([a[n].sqrt() * x0[n] + (1 - a[n]).sqrt() * noise[n] for n in range(len(t))])
        err = (model(x_t, t) - noise) ** 2
        return sum(err[n].sum() for n in range(len(t))) / x0.numel()

    def ema_lerp(ema_params, params, decay):
        with torch.no_grad():
            for e, p in zip(ema_params, params):
                e.lerp_(p, 1 - decay)

    def x0_float64_where(abar, x_t, eps, t):
        a = _v(abar[t], x_t)
        raw = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        return torch.where(raw > 1, 1.0, torch.where(raw < -1, -1.0, raw)).to(x_t.dtype)

    for ex_id, answer in (("04.1", loss_in_a_loop), ("04.2", ema_lerp), ("04.4", x0_float64_where)):
        for result in grade_all_seeds(ex_id, answer):
            assert result.status == "pass", result.feedback()


def _loss_answer(mode):
    def epsilon_loss(model, x0, t, noise, alphas_cumprod):
        a = _v(alphas_cumprod[t], x0)
        n = torch.randn_like(x0) if mode == "fresh" else noise
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * n
        if mode == "chunks":  # the model run on pieces of the batch, as gradient accumulation does
            eps = torch.cat([model(x_t[i : i + 2], t[i : i + 2]) for i in range(0, len(t), 2)])
        elif mode == "each":
            eps = torch.cat([model(x_t[i : i + 1], t[i : i + 1]) for i in range(len(t))])
        else:
            eps = model(x_t, t)
        return ((eps - n) ** 2).mean()
    return epsilon_loss


@pytest.mark.parametrize("mode", ["chunks", "each"])
def test_04_1_the_model_may_be_called_on_parts_of_the_batch(mode):
    assert all(r.status == "pass" for r in grade_all_seeds("04.1", _loss_answer(mode)))


def test_04_1_fresh_noise_is_named():
    assert_wrong("04.1", _loss_answer("fresh"), "no torch.randint or torch.randn_like inside")


def test_04_4_float32_images_keep_their_dtype():
    def uncast(alphas_cumprod, x_t, eps, t):
        a = alphas_cumprod[t].view(-1, 1, 1, 1)  # float64: x̂_0 of float32 images comes back float64
        return ((x_t - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)

    for result in grade_all_seeds("04.4", uncast):
        failed = {c.name for c in result.checks if not c.passed}
        assert failed == {"dtype"} and result.status == "partial", result.feedback()
    assert any(c.args[1].dtype == torch.float32 for c in L._x0_cases(0))


def test_04_3_abar_prev_read_at_t_is_named():
    def same_t(alphas_cumprod, betas, x_t, eps, t, noise):
        ab, b = _v(alphas_cumprod[t], x_t), _v(betas[t], x_t)
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        mean = ab.sqrt() * b / (1 - ab) * x0 + (1 - b).sqrt() * x_t  # abar_{t−1} taken as abar_t
        return mean + _v((t > 0).to(x_t.dtype), x_t) * b.sqrt() * noise

    assert_wrong("04.3", same_t, "not alphas_cumprod[t]")


def test_04_1_writing_into_x0_costs_the_in_place_point_only():
    """The oracle keeps its own copy of x0 and the repeat call gets the inputs as they were: a right loss computed
    with x0.mul_ loses the in-place point, not the oracle's values or a 'fresh noise' verdict."""

    def noising_x0_in_place(model, x0, t, noise, alphas_cumprod):
        a = alphas_cumprod[t].view(-1, 1, 1, 1).to(x0.dtype)
        x_t = x0.mul_(a.sqrt()).add_((1 - a).sqrt() * noise)
        return ((model(x_t, t) - noise) ** 2).mean()

    result = grade_answer("04.1", noising_x0_in_place, 0)
    assert result.status == "partial", result.feedback()
    assert {c.name.split(" (")[0] for c in result.checks if not c.passed} == {"inputs unchanged"}, result.feedback()


def test_04_1_an_answer_drawing_its_own_t_is_told_to_use_the_given_t():
    def own_t(model, x0, t, noise, alphas_cumprod):
        t = torch.randint(0, len(alphas_cumprod), t.shape)
        a = alphas_cumprod[t].view(-1, 1, 1, 1).to(x0.dtype)
        return ((model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t) - noise) ** 2).mean()

    assert "use the t and the noise ε the check passes" in grade_answer("04.1", own_t, 0).feedback()


def test_04_2_a_loop_that_skips_the_last_tensor_is_named_and_keeps_the_in_place_point():
    def skip_last(ema_params, params, decay):
        for i in range(len(ema_params) - 1):
            ema_params[i].mul_(decay).add_(params[i].detach(), alpha=1 - decay)

    result = grade_answer("04.2", skip_last, 0)
    feedback = result.feedback()
    assert "the last one was left as it was" in feedback and "only the first changed" in feedback, feedback
    assert "range(len(…) − 1)" in feedback and 0 < result.points < 1, feedback

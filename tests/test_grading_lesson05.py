"""Lesson 05's graded exercises: the references pass, known-wrong answers do not, and the
solutions notebook's cells pass as written and become not_implemented once stubbed."""

from __future__ import annotations

import math
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from grading_helpers import assert_known_wrong, assert_right_but_changes_inputs

from course_lib.grading.exercise import exercises_for, get_exercise, grade_answer

ROOT = Path(__file__).resolve().parents[1]
LESSON = "05_vae_and_latent_space"
SOLUTIONS = ROOT / "solutions" / f"{LESSON}.ipynb"
IDS = ["05.1", "05.2", "05.3", "05.4"]
NAMES = {"05.1": "gaussian_kl", "05.2": "reparameterize", "05.3": "compression_analyser", "05.4": "psnr"}


def _grade(exercise_id, answer, seed=0):
    return grade_answer(exercise_id, answer, seed)


# ---------------------------------------------------------------------------------------------
# The registry and the references
# ---------------------------------------------------------------------------------------------


def test_lesson_registers_four_exercises():
    """The lesson's own exercises, in order (what every exercise must satisfy: test_exercises_common.py)."""
    assert [(e.id, e.name) for e in exercises_for(LESSON)] == [(i, NAMES[i]) for i in IDS]


def test_kl_reference_agrees_with_torch_distributions():
    kl = get_exercise("05.1").reference
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64)
    logvar = torch.rand(3, 4, 5, 5, generator=g, dtype=torch.float64) * 6 - 4
    q = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    want = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    assert kl(mean, logvar).shape == (3,)
    assert torch.allclose(kl(mean, logvar), want, rtol=1e-12, atol=1e-12)
    assert torch.equal(kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))
    with pytest.raises(ValueError, match="same shape"):
        kl(torch.zeros(2, 3), torch.zeros(2, 4))


def test_reparameterize_reference_samples_the_right_gaussian():
    rep = get_exercise("05.2").reference
    g = torch.Generator().manual_seed(1)
    mean = torch.tensor([[1.5, -2.0]], dtype=torch.float64).expand(200_000, 2)
    logvar = torch.tensor([[math.log(0.25), math.log(9.0)]], dtype=torch.float64).expand(200_000, 2)
    z = rep(mean, logvar, torch.randn(200_000, 2, generator=g, dtype=torch.float64))
    assert torch.allclose(z.mean(0), torch.tensor([1.5, -2.0], dtype=torch.float64), atol=0.03)
    assert torch.allclose(z.std(0), torch.tensor([0.5, 3.0], dtype=torch.float64), rtol=0.01)


def test_compression_reference_on_stable_diffusion_numbers():
    out = get_exercise("05.3").reference([256, 512, 768, 1024], 8, 4)
    assert out["latent_side"] == [32, 64, 96, 128]
    assert out["pixel_values"][1] == 512 * 512 * 3 == 786_432
    assert out["latent_values"][1] == 64 * 64 * 4 == 16_384
    assert out["ratio"] == [48.0] * 4  # constant: f²·C/c
    assert out["bytes_saved"] == [(p - q) * 2 for p, q in zip(out["pixel_values"], out["latent_values"])]
    assert out["bytes_saved"][3] == 4 * out["bytes_saved"][1] == 16 * out["bytes_saved"][0]  # ∝ side²
    assert all(
        isinstance(v, int) for k in ("latent_side", "pixel_values", "latent_values", "bytes_saved") for v in out[k]
    )
    with pytest.raises(ValueError, match="multiple"):
        get_exercise("05.3").reference([512, 500], 8, 4)


def test_psnr_reference_by_hand():
    psnr = get_exercise("05.4").reference
    x = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    y = x.clone()
    y[0] += 0.2  # MSE 0.04 → 10·log10(4 / 0.04) = 20 dB
    y[1, 0, 0, 0] = 2.0  # MSE 4 / 4 = 1 → 10·log10(4) ≈ 6.02 dB
    out = psnr(x, y)
    assert out.shape == (3,)
    assert math.isclose(float(out[0]), 20.0, rel_tol=1e-12)
    assert math.isclose(float(out[1]), 10 * math.log10(4.0), rel_tol=1e-12)
    assert math.isinf(float(out[2])) and float(out[2]) > 0


# ---------------------------------------------------------------------------------------------
# Known-wrong answers
# ---------------------------------------------------------------------------------------------


def kl_forgot_half(mean, logvar):
    return (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)


def kl_std_not_variance(mean, logvar):
    return 0.5 * (mean**2 + torch.exp(0.5 * logvar) - 1 - logvar).flatten(1).sum(1)


def kl_summed_over_batch(mean, logvar):
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum()


def kl_mean_not_sum(mean, logvar):
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).mean(1)


def kl_channels_only(mean, logvar):
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(1)


def kl_log_sign(mean, logvar):
    return 0.5 * (mean**2 + logvar.exp() - 1 + logvar).flatten(1).sum(1)


def reparam_variance_as_std(mean, logvar, eps):
    return mean + torch.exp(logvar) * eps


def reparam_detached_mean(mean, logvar, eps):
    return mean.detach() + torch.exp(0.5 * logvar) * eps


def reparam_fresh_noise(mean, logvar, eps):
    return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)


def reparam_no_grad(mean, logvar, eps):
    with torch.no_grad():
        return mean + torch.exp(0.5 * logvar) * eps


def reparam_numpy_std(mean, logvar, eps):
    import numpy as np

    std = torch.from_numpy(np.exp(0.5 * logvar.detach().numpy()))
    return mean + std * eps


def _analyser(latent_of, ratio_of=lambda p, q: p / q, saved_of=lambda p, q, b: (p - q) * b, check="positive"):
    def compression_analyser(resolutions, factor, latent_channels, image_channels=3, bytes_per_value=2):
        if check == "positive" and any(s <= 0 or s % factor for s in resolutions):
            raise ValueError("not a positive multiple")
        if check == "multiple" and any(s % factor for s in resolutions):
            raise ValueError("not divisible")
        out = {"latent_side": [], "pixel_values": [], "latent_values": [], "ratio": [], "bytes_saved": []}
        for s in resolutions:
            p = s * s * image_channels
            q = latent_of(s, factor, latent_channels, image_channels)
            out["latent_side"].append(s // factor)
            out["pixel_values"].append(p)
            out["latent_values"].append(q)
            out["ratio"].append(ratio_of(p, q))
            out["bytes_saved"].append(saved_of(p, q, bytes_per_value))
        return out

    return compression_analyser


def _lat(s, f, c, C):
    return (s // f) ** 2 * c


compression_one_direction = _analyser(lambda s, f, c, C: (s // f) * s * c)
compression_image_channels = _analyser(lambda s, f, c, C: (s // f) ** 2 * C)
compression_inverted_ratio = _analyser(_lat, ratio_of=lambda p, q: q / p)
compression_floor_ratio = _analyser(_lat, ratio_of=lambda p, q: p // q)
compression_no_bytes = _analyser(_lat, saved_of=lambda p, q, b: p - q)
compression_abs_saved = _analyser(_lat, saved_of=lambda p, q, b: abs(p - q) * b)
compression_rounds_silently = _analyser(_lat, check=None)
# only `side % f` is tested: a side of 0 passes that test, then 0 / 0 in the ratio raises ZeroDivisionError
compression_multiple_only = _analyser(_lat, check="multiple")
compression_multiple_only.__name__ = "compression_multiple_only"


def compression_zero_side_returns(resolutions, factor, latent_channels, image_channels=3, bytes_per_value=2):
    """Tests only `side % f`, and guards the ratio against a latent of 0 values, so a side of 0 returns."""
    if any(s % factor for s in resolutions):
        raise ValueError("not divisible")
    out = {"latent_side": [], "pixel_values": [], "latent_values": [], "ratio": [], "bytes_saved": []}
    for s in resolutions:
        p, q = s * s * image_channels, (s // factor) ** 2 * latent_channels
        out["latent_side"].append(s // factor)
        out["pixel_values"].append(p)
        out["latent_values"].append(q)
        out["ratio"].append(p / q if q else 0.0)
        out["bytes_saved"].append((p - q) * bytes_per_value)
    return out


def compression_assertion(resolutions, factor, latent_channels, image_channels=3, bytes_per_value=2):
    assert all(s % factor == 0 for s in resolutions), "not divisible"
    return get_exercise("05.3").reference(resolutions, factor, latent_channels, image_channels, bytes_per_value)


def compression_tensors(resolutions, factor, latent_channels, image_channels=3, bytes_per_value=2):
    out = get_exercise("05.3").reference(resolutions, factor, latent_channels, image_channels, bytes_per_value)
    return {k: torch.tensor(v) for k, v in out.items()}


def compression_per_resolution(resolutions, factor, latent_channels, image_channels=3, bytes_per_value=2):
    out = get_exercise("05.3").reference(resolutions, factor, latent_channels, image_channels, bytes_per_value)
    return [{k: v[i] for k, v in out.items()} for i in range(len(resolutions))]


def psnr_range_one(x, y):
    return 10 * torch.log10(1.0 / ((x - y) ** 2).flatten(1).mean(1))


def psnr_255(x, y):
    return 10 * torch.log10(255.0**2 / ((x - y) ** 2).flatten(1).mean(1))


def psnr_batch_mean(x, y):
    return 10 * torch.log10(4.0 / ((x - y) ** 2).mean())


def psnr_epsilon(x, y):
    return 10 * torch.log10(4.0 / (((x - y) ** 2).flatten(1).mean(1) + 1e-10))


def psnr_amplitude_over_mse(x, y):
    return 20 * torch.log10(2.0 / ((x - y) ** 2).flatten(1).mean(1))


def psnr_natural_log(x, y):
    return 10 * torch.log(4.0 / ((x - y) ** 2).flatten(1).mean(1))


def psnr_range_of_the_batch(x, y):
    return 10 * torch.log10((x.max() - x.min()) ** 2 / ((x - y) ** 2).flatten(1).mean(1))


def psnr_range_of_each_image(x, y):
    r = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    return 10 * torch.log10(r**2 / ((x - y) ** 2).flatten(1).mean(1))


def psnr_absolute_error(x, y):
    return 10 * torch.log10(4.0 / (x - y).abs().flatten(1).mean(1))


def psnr_range_not_squared(x, y):
    return 10 * torch.log10(2.0 / ((x - y) ** 2).flatten(1).mean(1))


def psnr_20_with_the_mse(x, y):
    return 20 * torch.log10(4.0 / ((x - y) ** 2).flatten(1).mean(1))


def psnr_10_with_the_rmse(x, y):
    return 10 * torch.log10(2.0 / ((x - y) ** 2).flatten(1).mean(1).sqrt())


WRONG = [
    # (exercise, answer, substring of the feedback, expected status)
    ("05.1", kl_forgot_half, "forgot the ½", "partial"),
    ("05.1", kl_std_not_variance, "standard deviation exp(½·logvar) where the formula has the variance", "partial"),
    ("05.1", kl_summed_over_batch, "not their sum", "fail"),
    ("05.1", kl_mean_not_sum, "the KL is their sum", "partial"),
    ("05.1", kl_channels_only, "sum over every dimension but the batch", "partial"),
    ("05.1", kl_log_sign, "wrong sign", "partial"),
    ("05.2", reparam_variance_as_std, "exp(logvar) is the variance", "partial"),
    ("05.2", reparam_detached_mean, "no gradient reaches mean", "partial"),
    ("05.2", reparam_fresh_noise, "use the eps argument", "partial"),
    ("05.2", reparam_no_grad, "no gradient reaches logvar", "partial"),
    ("05.2", reparam_numpy_std, "no gradient reaches logvar", "partial"),
    ("05.3", compression_one_direction, "downsample both directions", "partial"),
    ("05.3", compression_image_channels, "not the image's C", "partial"),
    ("05.3", compression_inverted_ratio, "pixel values over latent values", "partial"),
    ("05.3", compression_floor_ratio, "true division", "partial"),
    ("05.3", compression_no_bytes, "multiply the difference in values by bytes_per_value", "partial"),
    ("05.3", compression_abs_saved, "not its absolute value", "partial"),
    ("05.3", compression_rounds_silently, "raise ValueError (do not round", "partial"),
    ("05.3", compression_multiple_only, "test side <= 0 as well as side % f", "partial"),
    ("05.3", compression_zero_side_returns, "raise ValueError for a side ≤ 0 too", "partial"),
    ("05.3", compression_assertion, "not AssertionError", "partial"),
    ("05.3", compression_per_resolution, "expected a dict with keys", "partial"),
    ("05.4", psnr_range_one, "data range of 2", "partial"),
    ("05.4", psnr_255, "peak 255", "partial"),
    ("05.4", psnr_batch_mean, "one PSNR per image, shape (N,)", "fail"),
    ("05.4", psnr_epsilon, "do not add a small epsilon", "partial"),
    ("05.4", psnr_amplitude_over_mse, "mixes an amplitude with a power", "partial"),
    ("05.4", psnr_natural_log, "not the natural log", "partial"),
    ("05.4", psnr_range_of_the_batch, "do not measure it from the data", "partial"),
    ("05.4", psnr_range_of_each_image, "do not measure it from the data", "partial"),
    ("05.4", psnr_absolute_error, "you averaged |x − y|", "partial"),
    ("05.4", psnr_range_not_squared, "not 10·log10(R/MSE)", "partial"),
    ("05.4", psnr_20_with_the_mse, "20·log10 goes with the peak amplitude over the RMSE", "partial"),
    ("05.4", psnr_10_with_the_rmse, "with the RMSE (an amplitude) the factor is 20", "partial"),
]


@pytest.mark.parametrize("exercise_id,answer,message,status", WRONG, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG])
@pytest.mark.parametrize("seed", [0, 3])
def test_known_wrong_answers_lose_points_with_a_useful_message(exercise_id, answer, message, status, seed):
    assert_known_wrong(exercise_id, answer, message, status, seed)


def test_partial_credit_reflects_how_much_is_right():
    # a detached mean gives the right z and one of two gradients: most of the points
    detached = _grade("05.2", reparam_detached_mean).points
    variance = _grade("05.2", reparam_variance_as_std).points
    assert 3 > detached > variance > 0
    # forgetting the bytes spoils one key of five; a wrong latent count spoils three
    assert 4 > _grade("05.3", compression_no_bytes).points > _grade("05.3", compression_one_direction).points > 0
    # not raising loses only the invalid case
    assert _grade("05.3", compression_rounds_silently).points >= 3
    # the epsilon spoils one case of six
    assert _grade("05.4", psnr_epsilon).points > _grade("05.4", psnr_range_one).points


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_psnr_written_in_other_right_ways_passes(seed):
    def with_rmse(x, y):
        rmse = ((x - y) ** 2).flatten(1).mean(1).sqrt()
        return 20 * torch.log10(2.0 / rmse)

    def per_image_in_float64(x, y):
        return torch.stack(
            [
                10 * torch.log10(torch.tensor(4.0, dtype=torch.float64) / ((a.double() - b.double()) ** 2).mean())
                for a, b in zip(x, y)
            ]
        ).to(x.dtype)

    def with_mse_loss(x, y):
        mse = torch.nn.functional.mse_loss(x, y, reduction="none").mean(dim=(1, 2, 3))
        return 10 * torch.log10(2**2 / mse)

    for answer in (with_rmse, per_image_in_float64, with_mse_loss):
        result = _grade("05.4", answer, seed)
        assert result.status == "pass", result.feedback()


def test_compression_side_checks_written_differently_pass():
    def checks_each_side_in_the_loop(resolutions, factor, latent_channels, image_channels=3, bytes_per_value=2):
        for s in resolutions:
            if not (s > 0 and s % factor == 0):
                raise ValueError(f"bad side {s}")
        return get_exercise("05.3").reference(resolutions, factor, latent_channels, image_channels, bytes_per_value)

    for seed in (0, 1, 12345):
        assert _grade("05.3", checks_each_side_in_the_loop, seed).status == "pass"


def test_tensors_in_place_of_lists_are_accepted():
    result = _grade("05.3", compression_tensors)
    assert result.status == "pass", result.feedback()


def test_answers_that_raise_are_errors_not_crashes():
    def broken(*args, **kwargs):
        raise TypeError("boom")

    for exercise_id in IDS:
        result = _grade(exercise_id, broken)
        assert result.status in ("error", "fail") and result.points == 0
        assert "TypeError: boom" in result.feedback()
    # 05.3 records the exception of its invalid case as an observation, so every other case errs
    assert _grade("05.1", broken).status == "error"


def test_answers_that_write_into_their_inputs_keep_the_values_but_lose_a_point():
    def kl_in_place(mean, logvar):
        var = logvar.exp_()  # overwrites logvar
        return 0.5 * (mean.pow_(2) + var - 1 - var.log()).flatten(1).sum(1)

    assert_right_but_changes_inputs("05.1", kl_in_place, ["mean", "logvar"])


# ---------------------------------------------------------------------------------------------
# The solutions notebook
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def notebook():
    return nbformat.read(SOLUTIONS, as_version=4)


def test_exercise_cells_do_not_use_the_course_vae(notebook):
    """The exercises are the maths itself: no cell leans on course_lib's VAE code."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert "vae" not in cell.source.lower()


def test_05_2_sqrt_of_logvar_is_named():
    """NaN where logvar < 0 (even with ε = 0) used to be blamed on drawing new noise."""
    from course_lib.grading.exercise import grade_answer as _grade

    result = _grade("05.2", lambda mean, logvar, eps: mean + torch.sqrt(logvar) * eps, 0)
    assert result.status == "partial" and "sqrt(logvar) is NaN" in result.feedback(), result.feedback()
    assert "draw no new noise" not in result.feedback()


def test_05_a_batch_of_one_squeezed_is_told_so_not_blamed_on_a_reduction():
    kl, psnr = get_exercise("05.1").reference, get_exercise("05.4").reference
    for ex_id, squeezed in (("05.1", lambda m, lv: kl(m, lv).squeeze()), ("05.4", lambda x, y: psnr(x, y).squeeze())):
        feedback = grade_answer(ex_id, squeezed, 0).feedback()
        assert "a batch of 1 still needs shape (1,)" in feedback, feedback
        assert "reduced over the batch" not in feedback and "not the batch's average" not in feedback, feedback


def test_05_4_returning_the_mse_is_named():
    feedback = grade_answer("05.4", lambda x, y: (x - y).pow(2).flatten(1).mean(1), 0).feedback()
    assert "that is the MSE itself" in feedback and "return inf there" not in feedback, feedback


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda mean, logvar, eps: eps + torch.exp(0.5 * logvar) * mean, "μ and ε are swapped"),
        (lambda mean, logvar, eps: mean + torch.exp(0.5 * logvar.abs()) * eps, "no abs()"),
        (lambda mean, logvar, eps: mean + torch.exp(0.5 * logvar) + eps, "not μ + σ + ε"),
        (lambda mean, logvar, eps: mean.clone(), "you returned the mean"),
        (lambda mean, logvar, eps: mean + torch.log(logvar) * eps, "z holds NaN or inf"),
    ],
    ids=["swapped", "abs", "added", "mean-only", "nan"],
)
def test_05_2_slips_that_use_eps_are_not_called_new_noise(answer, words):
    feedback = grade_answer("05.2", answer, 0).feedback()
    assert words in feedback and "drawing new noise" not in feedback and "did you detach" not in feedback, feedback


def test_05_3_order_subclassed_errors_and_numpy_ints():
    reference = get_exercise("05.3").reference

    class BadResolution(ValueError):
        pass

    def own_error(resolutions, f, c, **kwargs):
        if any(s <= 0 or s % f for s in resolutions):
            raise BadResolution("no whole latent")
        return reference(resolutions, f, c, **kwargs)

    def numpy_ints(resolutions, f, c, **kwargs):
        out = reference(resolutions, f, c, **kwargs)
        return out | {"latent_side": [s // f for s in np.array(resolutions)]}

    def sorted_first(resolutions, f, c, **kwargs):
        return reference(sorted(resolutions), f, c, **kwargs)

    assert grade_answer("05.3", own_error, 0).status == "pass"
    assert grade_answer("05.3", numpy_ints, 0).status == "pass"
    result = grade_answer("05.3", sorted_first, 0)
    assert result.status == "partial" and "in the order given" in result.feedback(), result.feedback()


def test_05_1_a_kl_that_carries_no_gradient_loses_a_little_and_is_told():
    reference = get_exercise("05.1").reference
    result = grade_answer("05.1", lambda mean, logvar: reference(mean.detach(), logvar.detach()), 0)
    assert result.status == "partial" and 2 < result.points < 3, result.feedback()
    assert "the KL is a training loss" in result.feedback()
    numpy_kl = grade_answer("05.1", lambda m, lv: torch.from_numpy(reference(m, lv).numpy()), 0)
    assert "the KL is a training loss" in numpy_kl.feedback()


def test_05_1_wrong_values_that_carry_gradients_are_not_told_they_carry_none():
    """A fresh-eyes learner's .mean() for .sum(), a missing ½ and σ for σ² were told to look for a .detach()
    that was not there: their gradients differ only because their values do."""
    def kl_mean(mean, logvar):
        return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).mean(1)

    def kl_no_half(mean, logvar):
        return (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)

    for answer in (kl_mean, kl_no_half):
        result = grade_answer("05.1", answer, 0)
        assert result.status == "partial" and "training loss" not in result.feedback(), result.feedback()
    reference = get_exercise("05.1").reference
    one_cut = grade_answer("05.1", lambda mean, logvar: reference(mean, logvar.detach()), 0)
    assert "the KL is a training loss" in one_cut.feedback(), one_cut.feedback()

"""Lesson 09's graded exercises: the references agree with independent computations, and
known-wrong answers lose points with a message that says what went wrong.

What every exercise must satisfy (references pass, determinism, stubs, the solutions notebook's
cells) is checked once for all in tests/test_exercises_common.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from grading_helpers import assert_known_wrong, assert_right_but_changes_inputs

from course_lib.grading.exercise import exercises_for, get_exercise, grade_answer

ROOT = Path(__file__).resolve().parents[1]
LESSON = "09_small_stable_diffusion"
SOLUTIONS = ROOT / "solutions" / f"{LESSON}.ipynb"
IDS = ["09.1", "09.2", "09.3"]
NAMES = {"09.1": "img2img_start", "09.2": "inpaint_blend", "09.3": "pipeline_cost"}


def _grade(exercise_id, answer, seed=0):
    return grade_answer(exercise_id, answer, seed)


def test_lesson_registers_three_exercises():
    assert [(e.id, e.name) for e in exercises_for(LESSON)] == [(i, NAMES[i]) for i in IDS]


# ---------------------------------------------------------------------------------------------
# The references against independent computations
# ---------------------------------------------------------------------------------------------


def _img2img_by_counting(steps, strength):
    """Independent of the formula: walk the step list from its end and count the steps whose
    position in the list lies within the fraction ``strength`` of it."""
    ran = [i for i in range(steps) if (steps - i) <= steps * strength]
    t_start = ran[0] if ran else steps
    return t_start, len(ran)


def test_img2img_reference_by_hand_and_by_counting():
    ref = get_exercise("09.1").reference
    assert ref(50, 0.8) == (10, 40)
    assert ref(50, 1.0) == (0, 50)
    assert ref(50, 0.0) == (50, 0)
    assert ref(25, 0.3) == (18, 7)  # 7.5 steps: truncated, as diffusers' int()
    assert ref(1, 0.5) == (1, 0)
    for steps in (1, 7, 10, 25, 50, 99):
        for strength in (0.0, 0.13, 0.25, 0.5, 0.61, 0.75, 0.99, 1.0):
            assert ref(steps, strength) == _img2img_by_counting(steps, strength), (steps, strength)
    assert all(isinstance(v, int) for v in ref(30, 0.55))


def test_img2img_cases_separate_int_from_round():
    """The random cases keep steps·strength away from whole numbers, and at least one rounds up."""
    for seed in range(20):
        cases = get_exercise("09.1").cases(seed)
        fractions = [c.args[0] * c.args[1] % 1 for c in cases if 0 < c.args[1] < 1]
        assert all(f == 0 or 0.05 < f < 0.95 for f in fractions)
        assert any(f > 0.5 for f in fractions)


def _blend_by_loops(known, gen, mask):
    """Independent of the reference: cell by cell, repaint if any pixel of its block is masked."""
    N, C, h, w = gen.shape
    f = mask.shape[2] // h
    out = known.clone()
    for n in range(N):
        for i in range(h):
            for j in range(w):
                if bool((mask[n, 0, i * f : (i + 1) * f, j * f : (j + 1) * f] > 0).any()):
                    out[n, :, i, j] = gen[n, :, i, j]
    return out


@pytest.mark.parametrize("seed", [0, 5])
def test_inpaint_reference_matches_a_loop_and_max_pool(seed):
    ex = get_exercise("09.2")
    for case in ex.cases(seed):
        known, gen, mask = case.args
        got = ex.reference(known, gen, mask)
        assert got.shape == gen.shape and got.dtype == gen.dtype
        assert torch.equal(got, _blend_by_loops(known, gen, mask)), case.label
        f = mask.shape[2] // gen.shape[2]
        m = F.max_pool2d(mask, f)
        assert torch.allclose(got, m * gen + (1 - m) * known), case.label


def test_inpaint_reference_edge_cases_and_errors():
    ref = get_exercise("09.2").reference
    known, gen = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
    mask = torch.zeros(1, 1, 16, 16)
    mask[0, 0, 7, 8] = 1  # the last row of the top cells, the first column of the right ones
    out = ref(known, gen, mask)
    assert out[0, :, 0, 1].eq(1).all() and out[0, :, 0, 0].eq(0).all() and out[0, :, 1].eq(0).all()
    with pytest.raises(ValueError, match="mask"):
        ref(known, gen, torch.zeros(1, 1, 15, 16))
    with pytest.raises(ValueError, match="same factor"):
        ref(known, gen, torch.zeros(1, 1, 16, 8))


def test_inpaint_cases_show_the_mistakes_they_are_meant_to():
    """Unaligned masks make max-, average- and nearest-pooling differ; the aligned case does not."""
    cases = get_exercise("09.2").cases(0)
    by_label = {c.label.split(",")[0]: c for c in cases}
    for case in cases:
        known, gen, mask = case.args
        f = mask.shape[2] // gen.shape[2]
        mx, avg = F.max_pool2d(mask, f), F.avg_pool2d(mask, f)
        if "on the 8-pixel grid" in case.label:
            assert torch.equal(mx, avg)
        elif "rectangles" in case.label or "scattered" in case.label:
            assert not torch.equal(mx, avg) and not torch.equal(mx, mask[:, :, ::f, ::f])
    assert len(by_label) == len(cases)


def test_pipeline_cost_reference_on_stable_diffusion_numbers():
    ref = get_exercise("09.3").reference
    sd = ref(512, 512, 8, 4, 50, 7.5)
    assert sd == {
        "latent_shape": [4, 64, 64],
        "unet_calls": 50,
        "unet_batch": 2,
        "values_per_call": 2 * 4 * 64 * 64,
        "total_values": 50 * 2 * 16_384,
    }
    assert ref(512, 512, 8, 4, 50, 1.0)["unet_batch"] == 1  # scale 1 is the conditional prediction alone
    assert ref(512, 512, 8, 4, 50, 1.0001)["unet_batch"] == 2
    # the U-Net input of a real forward pass with CFG batched: cat([x, x]) has values_per_call values
    out = ref(96, 64, 8, 4, 10, 5.0, batch_size=3)
    x = torch.zeros(3, *out["latent_shape"])
    assert torch.cat([x, x]).numel() == out["values_per_call"] and torch.cat([x, x]).shape[0] == out["unet_batch"]
    assert all(isinstance(v, int) for k, v in out.items() if k != "latent_shape")
    with pytest.raises(ValueError, match="multiples"):
        ref(500, 512, 8, 4, 50, 7.5)


# ---------------------------------------------------------------------------------------------
# Known-wrong answers
# ---------------------------------------------------------------------------------------------


def img2img_round(steps, strength):
    init = min(round(steps * strength), steps)
    return steps - init, init


def img2img_ceil(steps, strength):
    init = min(math.ceil(steps * strength), steps)
    return steps - init, init


def img2img_backwards(steps, strength):
    init = min(int(steps * strength), steps)
    return init, steps - init


def img2img_off_by_one(steps, strength):
    init = min(int(steps * strength), steps)
    return steps - init, max(init - 1, 0)


def img2img_start_minus_one(steps, strength):
    """Takes one away from the start index (as if steps − init were a count, not an index)."""
    init = min(int(steps * strength), steps)
    t_start = max(steps - init - 1, 0)
    return t_start, steps - t_start


def img2img_start_plus_one(steps, strength):
    init = min(int(steps * strength), steps)
    t_start = min(steps - init + 1, steps)
    return t_start, steps - t_start


def img2img_dict(steps, strength):
    init = min(int(steps * strength), steps)
    return {"t_start": steps - init, "n": init}


def _blend(pool, name):
    def inpaint_blend(x_known_noised, x_generated, mask):
        f = mask.shape[-2] // x_generated.shape[-2]
        m = pool(mask, f)
        return m * x_generated + (1 - m) * x_known_noised

    inpaint_blend.__name__ = name
    return inpaint_blend


inpaint_inverted = _blend(lambda mask, f: 1 - F.max_pool2d(mask, f), "inpaint_inverted")
inpaint_avg_pool = _blend(F.avg_pool2d, "inpaint_avg_pool")
inpaint_majority = _blend(lambda mask, f: (F.avg_pool2d(mask, f) >= 0.5).to(mask.dtype), "inpaint_majority")
inpaint_nearest = _blend(lambda mask, f: F.interpolate(mask, scale_factor=1 / f, mode="nearest"), "inpaint_nearest")
# right, written differently: average-pool then "any pixel" (> 0)
inpaint_avg_then_any = _blend(lambda mask, f: (F.avg_pool2d(mask, f) > 0).to(mask.dtype), "inpaint_avg_then_any")


def inpaint_swapped(x_known_noised, x_generated, mask):
    return _blend(F.max_pool2d, "right")(x_generated, x_known_noised, mask)


def inpaint_returns_mask(x_known_noised, x_generated, mask):
    return mask


def _cost(name, rows_of, calls_of=lambda steps, cfg: steps, latent_of=lambda H, W, f, c: [c, H // f, W // f]):
    def pipeline_cost(height, width, factor, latent_channels, steps, guidance_scale, batch_size=1):
        shape = latent_of(height, width, factor, latent_channels)
        cfg = guidance_scale > 1
        rows = rows_of(batch_size, guidance_scale)
        calls = calls_of(steps, cfg)
        per_call = rows * shape[0] * shape[1] * shape[2]
        return {
            "latent_shape": shape,
            "unet_calls": calls,
            "unet_batch": rows,
            "values_per_call": per_call,
            "total_values": calls * per_call,
        }

    pipeline_cost.__name__ = name
    return pipeline_cost


def _rows(n, scale):
    return n * (2 if scale > 1 else 1)


cost_calls_doubled = _cost("cost_calls_doubled", lambda n, s: n, calls_of=lambda steps, cfg: steps * (2 if cfg else 1))
cost_cfg_at_one = _cost("cost_cfg_at_one", lambda n, s: n * (2 if s >= 1 else 1))
cost_no_batch = _cost("cost_no_batch", lambda n, s: 2 if s > 1 else 1)
# the course pipeline's own rule (guide at every scale but 0 and 1), which the task says not to count
cost_course_rule = _cost("cost_course_rule", lambda n, s: n * (1 if s in (0, 1) else 2))
cost_hw_swapped = _cost("cost_hw_swapped", _rows, latent_of=lambda H, W, f, c: [c, W // f, H // f])
cost_image_channels = _cost("cost_image_channels", _rows, latent_of=lambda H, W, f, c: [3, H // f, W // f])


def cost_total_doubled_again(height, width, factor, latent_channels, steps, guidance_scale, batch_size=1):
    out = get_exercise("09.3").reference(height, width, factor, latent_channels, steps, guidance_scale, batch_size)
    if guidance_scale > 1:
        out["total_values"] *= 2
    return out


def cost_tensors(height, width, factor, latent_channels, steps, guidance_scale, batch_size=1):
    out = get_exercise("09.3").reference(height, width, factor, latent_channels, steps, guidance_scale, batch_size)
    return {k: torch.tensor(v) for k, v in out.items()}


# (exercise, answer, substring of the feedback, status)
WRONG = [
    ("09.1", img2img_round, "int() (truncation, as diffusers does), not round() or math.ceil()", "partial"),
    ("09.1", img2img_ceil, "int() (truncation, as diffusers does), not round", "partial"),
    ("09.1", img2img_backwards, "strength is read backwards", "partial"),
    ("09.1", img2img_off_by_one, "must add up to steps", "partial"),
    ("09.1", img2img_start_minus_one, "t_start is one step early", "partial"),
    ("09.1", img2img_start_plus_one, "t_start is one step late", "partial"),
    ("09.1", img2img_dict, "return a pair (t_start, number of steps)", "fail"),
    # the right shape earns the shape checks (1/3 of the points), nothing else
    ("09.2", inpaint_inverted, "the mask is inverted", "partial"),
    ("09.2", inpaint_swapped, "the mask is inverted (or x_known_noised and x_generated are swapped)", "partial"),
    ("09.2", inpaint_avg_pool, "you averaged the mask over each f×f block", "partial"),
    ("09.2", inpaint_majority, "thresholded at ½", "partial"),
    ("09.2", inpaint_nearest, "nearest-neighbour", "partial"),
    ("09.2", inpaint_returns_mask, "return the blended latent", "fail"),
    ("09.3", cost_calls_doubled, "the batch doubles, not the number of calls", "partial"),
    ("09.3", cost_cfg_at_one, "only when guidance_scale > 1", "partial"),
    ("09.3", cost_no_batch, "rows of all N", "partial"),
    ("09.3", cost_hw_swapped, "channels first, then height, then width", "partial"),
    ("09.3", cost_image_channels, "c = ", "partial"),
    ("09.3", cost_total_doubled_again, "count the doubling once", "partial"),
    ("09.3", cost_course_rule, "counts diffusers' rule, guidance only above 1", "partial"),
]


@pytest.mark.parametrize("exercise_id,answer,message,status", WRONG, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG])
@pytest.mark.parametrize("seed", [0, 3])
def test_known_wrong_answers_lose_points_with_a_useful_message(exercise_id, answer, message, status, seed):
    assert_known_wrong(exercise_id, answer, message, status, seed)


def test_partial_credit_reflects_how_much_is_right():
    # round differs from int on the cases with a fractional part above ½ only
    assert 2 > _grade("09.1", img2img_round).points > _grade("09.1", img2img_backwards).points > 0
    # averaging spoils only the cases whose mask cuts through cells; majority / nearest spoil those too
    avg = _grade("09.2", inpaint_avg_pool).points
    assert 3 > avg > 0
    assert _grade("09.2", inpaint_inverted).points == 1  # the shape checks only
    assert _grade("09.2", inpaint_returns_mask).points == 0
    # doubling the calls spoils calls, batch and the totals of guided cases; forgetting N only batched ones
    assert 3 > _grade("09.3", cost_no_batch).points > _grade("09.3", cost_calls_doubled).points > 0
    assert _grade("09.3", cost_total_doubled_again).points > _grade("09.3", cost_calls_doubled).points


@pytest.mark.parametrize("seed", [0, 1, 3, 12345])
def test_img2img_one_step_off_is_told_apart_from_rounding(seed):
    """A start index one step early is named as such where steps · strength is whole (rounding cannot explain
    it there); rounding, right on those cases, is never called one step off."""

    def named_off(answer):
        """The failed messages that call t_start one step early, without a word on rounding."""
        checks = _grade("09.1", answer, seed).checks
        return [c.message for c in checks if "t_start is one step early" in c.message and "round" not in c.message]

    assert any("50 steps, strength 0.8" in m for m in named_off(img2img_start_minus_one))  # 40 steps exactly
    # at 25 · 0.3 = 7.5 rounding and rounding up both match a − 1: the message names them in one sentence, and the − 1
    checks = _grade("09.1", img2img_start_minus_one, seed).checks
    half = next(c.message for c in checks if "steps · strength = 7.5" in c.message)
    assert "not round() or math.ceil() (int(7.5) is 7)" in half and "t_start is one step early" in half, half
    assert "another slip gives the same values" not in half  # said once, not as two alternatives
    for rounding in (img2img_round, img2img_ceil):
        assert "(truncation, as diffusers does), not round" in _grade("09.1", rounding, seed).feedback()
        assert not named_off(rounding)


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_right_answers_written_differently_pass(seed):
    assert _grade("09.2", inpaint_avg_then_any, seed).status == "pass"
    assert _grade("09.3", cost_tensors, seed).status == "pass"

    def img2img_floor_division(steps, strength):
        init = min(int(steps * strength // 1), steps)
        return torch.tensor(steps - init), torch.tensor(init)

    assert _grade("09.1", img2img_floor_division, seed).status == "pass"


def test_answers_that_write_into_their_inputs_keep_the_values_but_lose_a_point():
    def blend_in_place(x_known_noised, x_generated, mask):
        f = mask.shape[-2] // x_generated.shape[-2]
        m = F.max_pool2d(mask, f)
        return x_generated.mul_(m).add_(x_known_noised.mul_(1 - m))

    assert_right_but_changes_inputs("09.2", blend_in_place, ["x_known_noised", "x_generated"])
    result = _grade("09.2", blend_in_place)
    assert "`mask`" not in result.feedback()  # only what was written into is named


def test_answers_that_raise_are_errors_not_crashes():
    def broken(*args, **kwargs):
        raise TypeError("boom")

    for exercise_id in IDS:
        result = _grade(exercise_id, broken)
        assert result.status == "error" and result.points == 0
        assert "TypeError: boom" in result.feedback()


def test_exercise_cells_do_not_use_the_course_library():
    """The exercises are the maths itself: no exercise cell leans on course_lib (its pipeline,
    samplers or schedules), and no cell imports the pipeline."""
    nb = nbformat.read(SOLUTIONS, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert "course_lib.pipeline" not in cell.source and "diffusers" not in cell.source
        if any(t.startswith("exercise:") for t in cell.metadata.get("tags", [])):
            assert "course_lib" not in cell.source


@pytest.mark.parametrize("zero_d", [torch.tensor(5), torch.tensor(5).numpy()], ids=["tensor", "numpy"])
def test_img2img_start_returning_a_0d_array_is_told_not_a_crash(zero_d):
    """A pair is expected: a 0-d tensor or array holds no items, and listing it must not crash the judge."""
    result = grade_answer("09.1", lambda steps, strength: zero_d, 0)
    assert result.status == "fail" and "expected a sequence, got an array of shape ()" in result.feedback()


def test_09_3_an_extra_key_of_any_kind_costs_nothing():
    """A dict with one more entry under a tuple or None key is still judged on its five keys (it scored 0)."""
    reference = get_exercise("09.3").reference

    def with_extra_keys(*args, **kwargs):
        return reference(*args, **kwargs) | {(1, 2): "a note", None: 0}

    result = grade_answer("09.3", with_extra_keys, 4)
    assert result.status == "pass", result.feedback()


def test_09_3_guiding_at_a_scale_of_0_or_counting_steps_plus_one_are_named():
    reference = get_exercise("09.3").reference

    def guides_unless_exactly_one(height, width, factor, latent_channels, steps, guidance_scale, batch_size=1):
        scale = 2.0 if guidance_scale != 1 else 1.0
        return reference(height, width, factor, latent_channels, steps, scale, batch_size=batch_size)

    def one_call_too_many(height, width, factor, latent_channels, steps, guidance_scale, batch_size=1):
        return reference(height, width, factor, latent_channels, steps + 1, guidance_scale, batch_size=batch_size)

    zero = grade_answer("09.3", guides_unless_exactly_one, 0).feedback()
    assert "at a scale ≤ 1 (0 included)" in zero, zero
    assert zero.find("count the doubling once") in (-1, *range(zero.index("at a scale ≤ 1") + 1, len(zero))), zero
    assert "not steps + 1" in grade_answer("09.3", one_call_too_many, 0).feedback()


def test_09_3_doubling_the_calls_instead_of_the_rows_keeps_about_half():
    """The exercise's one misconception (a fresh-eyes learner's kept 64%): calls and rows weigh most, and the
    unguided cases, which it passes by construction, weigh half."""
    for seed in (0, 3):
        assert _grade("09.3", cost_calls_doubled, seed).points <= 1.7  # 1.91 before


def test_09_1_says_each_case_in_one_line_and_its_slip_once():
    """A pair answer read backwards: one line per case (the pair, not its two elements), and the diagnosis in full
    on the first line only."""
    from course_lib.grading.exercise import grade_answer

    def img2img_start(steps, strength):
        init = int(steps * strength)
        return init, steps - init

    lines = grade_answer("09.1", img2img_start, seed=1).feedback().splitlines()
    cases = [ln for ln in lines if ln.strip().startswith("- expected (t_start, number of steps) = (")]
    assert len(cases) >= 5 and not any(" at [0]" in ln or " at [1]" in ln for ln in lines), lines
    assert "— strength is read backwards" in cases[0], lines
    assert sum("— strength is read backwards" in ln for ln in cases) == 1, lines  # said in full once
    assert sum(ln.endswith("— the same slip as above") for ln in cases) >= 4, lines

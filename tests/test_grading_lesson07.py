"""Lesson 07's graded exercises: the references pass, known mistakes lose points with a useful
message, stubs are "not_implemented", and the solutions notebook's answers pass."""

from __future__ import annotations

import math
from pathlib import Path

import nbformat
import pytest
import torch
from grading_helpers import SEEDS, assert_library_values_right_but_nothing_earned, assert_wrong, grade_all_seeds

from course_lib.grading import lesson07 as L
from course_lib.grading.exercise import exercises_for, get_exercise, grade_answer
from course_lib.guidance import cfg_combine

ROOT = Path(__file__).resolve().parents[1]
LESSON_NB = ROOT / "notebooks" / "07_classifier_free_guidance.ipynb"
IDS = ["07.1", "07.2", "07.3"]


# --------------------------------------------------------------------------- registry and references


def test_lesson_07_registers_three_exercises():
    """The lesson's own exercises, in order (what every exercise must satisfy: test_exercises_common.py)."""
    assert [(e.id, e.name) for e in exercises_for("07_classifier_free_guidance")] == [
        ("07.1", "cfg_combine"),
        ("07.2", "cfg_simulator"),
        ("07.3", "class_spread"),
    ]


# --------------------------------------------------------------------------- the references agree with the library


@pytest.mark.parametrize("seed", SEEDS)
def test_cfg_combine_reference_equals_course_lib(seed):
    for case in L._combine_cases(seed):
        u, c, s = case.args
        assert torch.allclose(L._cfg_combine(u, c, s), cfg_combine(u, c, s), rtol=1e-12, atol=1e-12), case.label


def test_simulator_cases_cover_none_zero_and_the_order_of_scales():
    for seed in SEEDS:
        firsts = [L._cfg_simulator(*c.args)["first_over_3x"] for c in L._simulator_cases(seed)]
        assert None in firsts and 0.0 in firsts
        assert sum(f is not None and f > 0 for f in firsts) >= 3
        desc = next(c for c in L._simulator_cases(seed) if "descending" in c.label)
        ascending = L._cfg_simulator(desc.args[0], desc.args[1], desc.args[2], sorted(desc.args[3]))
        assert ascending["first_over_3x"] != L._cfg_simulator(*desc.args)["first_over_3x"]


def test_simulator_shows_what_guidance_does():
    """On the lesson's sweep: the cosine to the signal rises with s, and so does the norm."""
    case = L._simulator_cases(0)[0]
    out = L._cfg_simulator(*case.args)
    assert all(b > a for a, b in zip(out["cosine"], out["cosine"][1:]))
    assert all(b > a for a, b in zip(out["norm"][1:], out["norm"][2:]))


def test_class_spread_reference_matches_cdist():
    for case in L._spread_cases(2):
        f, labels, k = case.args
        got = L._class_spread(f, labels, k)["per_class"]
        for c in range(k):
            block = f[labels == c]
            if len(block) < 2:
                assert math.isnan(got[c])
                continue
            d = torch.cdist(block, block)
            iu = torch.triu_indices(len(block), len(block), 1)
            assert got[c].item() == pytest.approx(d[iu[0], iu[1]].mean().item(), rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------- 07.1: known mistakes


def _bcast(s, like):
    return s.view(-1, *([1] * (like.dim() - 1))) if isinstance(s, torch.Tensor) else s


def combine_swapped(eps_uncond, eps_cond, scale):
    s = _bcast(scale, eps_cond)
    return eps_cond + s * (eps_uncond - eps_cond)


def combine_one_plus_s(eps_uncond, eps_cond, scale):
    s = _bcast(scale, eps_cond)
    return eps_cond + s * (eps_cond - eps_uncond)


def combine_no_broadcast(eps_uncond, eps_cond, scale):
    return eps_uncond + scale * (eps_cond - eps_uncond)


def combine_scales_cond_only(eps_uncond, eps_cond, scale):
    return eps_uncond + _bcast(scale, eps_cond) * eps_cond


def combine_per_sample_mean(eps_uncond, eps_cond, scale):
    """Averages a per-image scale into one number: right only when all s_i agree."""
    s = float(scale.mean()) if isinstance(scale, torch.Tensor) else scale
    return eps_uncond + s * (eps_cond - eps_uncond)


def combine_per_sample_first(eps_uncond, eps_cond, scale):
    """Uses the first image's scale for the whole batch."""
    s = float(scale[0]) if isinstance(scale, torch.Tensor) else scale
    return eps_uncond + s * (eps_cond - eps_uncond)


def combine_minus(eps_uncond, eps_cond, scale):
    return eps_uncond - _bcast(scale, eps_cond) * (eps_cond - eps_uncond)


def combine_step_only(eps_uncond, eps_cond, scale):
    return _bcast(scale, eps_cond) * (eps_cond - eps_uncond)


def combine_s_minus_one(eps_uncond, eps_cond, scale):
    return eps_uncond + (_bcast(scale, eps_cond) - 1) * (eps_cond - eps_uncond)


def combine_scale_squared(eps_uncond, eps_cond, scale):
    s = _bcast(scale, eps_cond)
    return eps_uncond + s**2 * (eps_cond - eps_uncond)


def test_07_1_wrong_variants():
    assert_wrong("07.1", combine_swapped, "swaps the two predictions", partial="partial")  # right at s = 0.5
    assert_wrong("07.1", combine_one_plus_s, "(1 + s) convention", partial="partial")  # shapes are right
    assert_wrong("07.1", combine_scales_cond_only, "also scales −ε_∅", partial="partial")


@pytest.mark.parametrize(
    "answer, message",
    [
        (combine_per_sample_mean, "yours used their mean for every image"),
        (combine_per_sample_first, "yours used s_0 for every image"),
        (combine_minus, "not − s·(ε_c − ε_∅)"),
        (combine_step_only, "s·(ε_c − ε_∅) alone is only the step"),
        (combine_s_minus_one, "use s itself"),
        (combine_scale_squared, "multiplies the difference by s once, not by s²"),
    ],
    ids=lambda v: getattr(v, "__name__", "message"),
)
def test_07_1_more_slips_are_named(answer, message):
    assert_wrong("07.1", answer, message, partial="partial")


def test_07_1_no_broadcasting_gets_partial_credit_and_says_how_to_reshape():
    for result in grade_all_seeds("07.1", combine_no_broadcast):
        assert result.status == "partial"
        text = result.feedback()
        assert "reshape it to (N, 1, 1, 1)" in text  # the cases where it raises
        assert "LAST dimension" in text  # the case where N equals the width: silently wrong


def combine_image_view(eps_uncond, eps_cond, scale):  # the images' reshape, whatever the inputs' dims
    if isinstance(scale, torch.Tensor):
        scale = scale.view(-1, 1, 1, 1)
    return eps_uncond + scale * (eps_cond - eps_uncond)


def test_07_1_an_image_reshape_on_vectors_is_named():
    for result in grade_all_seeds("07.1", combine_image_view):
        assert result.status == "partial", result.feedback()
        assert "your per-item scale has more dims than the inputs (4 where the inputs have 2)" in result.feedback()


def test_07_1_library_and_lerp_pass():
    def with_lerp(eps_uncond, eps_cond, scale):
        return torch.lerp(eps_uncond, eps_cond, _bcast(scale, eps_cond) if isinstance(scale, torch.Tensor) else scale)

    def with_einsum(eps_uncond, eps_cond, scale):
        if isinstance(scale, torch.Tensor):
            return eps_uncond + torch.einsum("n,n...->n...", scale, eps_cond - eps_uncond)
        return eps_uncond + scale * (eps_cond - eps_uncond)

    def weighted_sum(eps_uncond, eps_cond, scale):
        """s·ε_c + (1 − s)·ε_∅: the same expression, rearranged."""
        s = _bcast(scale, eps_cond)
        return s * eps_cond + (1 - s) * eps_uncond

    for answer in (with_lerp, with_einsum, weighted_sum):
        assert all(r.status == "pass" for r in grade_all_seeds("07.1", answer))
    assert_library_values_right_but_nothing_earned("07.1", cfg_combine)


def test_07_1_wrong_shape_fails_the_shape_check():
    result = grade_answer("07.1", lambda u, c, s: (u + _bcast(s, c) * (c - u)).flatten(1), 0)
    assert result.status in ("partial", "fail") and "expected shape" in result.feedback()


# --------------------------------------------------------------------------- 07.2: known mistakes


def _guided(u, c, s):
    return u + s * (c - u)


def _sim(signal, eps_uncond, eps_cond, scales, cos=None, norm=None, limit=None, first=None):
    norm = norm or (lambda g: g.norm().item())
    cos = cos or (lambda g: torch.dot(g, signal).item() / (g.norm().item() * signal.norm().item()))
    limit = 3 * eps_cond.norm().item() if limit is None else limit
    gs = [_guided(eps_uncond, eps_cond, s) for s in scales]
    norms = [norm(g) for g in gs]
    if first is None:
        first = next((s for s, n in zip(scales, norms) if n > limit), None)
    else:
        first = first(scales, norms, limit)
    return {"cosine": [cos(g) for g in gs], "norm": norms, "first_over_3x": first}


def sim_dot_not_cosine(signal, eps_uncond, eps_cond, scales):
    return _sim(signal, eps_uncond, eps_cond, scales, cos=lambda g: torch.dot(g, signal).item())


def sim_threshold_on_uncond(signal, eps_uncond, eps_cond, scales):
    return _sim(signal, eps_uncond, eps_cond, scales, limit=3 * eps_uncond.norm().item())


def sim_threshold_on_the_difference(signal, eps_uncond, eps_cond, scales):
    return _sim(signal, eps_uncond, eps_cond, scales, limit=3 * (eps_cond - eps_uncond).norm().item())


def sim_minus_one(signal, eps_uncond, eps_cond, scales):
    out = _sim(signal, eps_uncond, eps_cond, scales)
    return {**out, "first_over_3x": -1 if out["first_over_3x"] is None else out["first_over_3x"]}


def sim_returns_index(signal, eps_uncond, eps_cond, scales):
    return _sim(
        signal,
        eps_uncond,
        eps_cond,
        scales,
        first=lambda sc, ns, lim: next((i for i, n in enumerate(ns) if n > lim), None),
    )


def sim_sorted_scales(signal, eps_uncond, eps_cond, scales):
    out = _sim(signal, eps_uncond, eps_cond, scales)
    by_scale = sorted(zip(scales, out["norm"]))
    first = next((s for s, n in by_scale if n > 3 * eps_cond.norm().item()), None)
    return {**out, "first_over_3x": first}


def sim_squared_norm(signal, eps_uncond, eps_cond, scales):
    return _sim(signal, eps_uncond, eps_cond, scales, norm=lambda g: (g**2).sum().item())


def sim_falsy_zero(signal, eps_uncond, eps_cond, scales):
    """`if first:` treats the scale 0.0 as 'not found'."""
    out = _sim(signal, eps_uncond, eps_cond, scales)
    return {**out, "first_over_3x": out["first_over_3x"] or None}


def sim_swapped_guidance(signal, eps_uncond, eps_cond, scales):
    return _sim(signal, eps_cond, eps_uncond, scales, limit=3 * eps_cond.norm().item())


def sim_last_over(signal, eps_uncond, eps_cond, scales):
    """No break: every scale over 3× overwrites the one before."""

    def last(sc, ns, lim):
        found = None
        for s, n in zip(sc, ns):
            if n > lim:
                found = s
        return found

    return _sim(signal, eps_uncond, eps_cond, scales, first=last)


def sim_returns_the_norm(signal, eps_uncond, eps_cond, scales):
    return _sim(signal, eps_uncond, eps_cond, scales, first=lambda sc, ns, lim: next((n for n in ns if n > lim), None))


def sim_greater_or_equal(signal, eps_uncond, eps_cond, scales):
    return _sim(
        signal,
        eps_uncond,
        eps_cond,
        scales,
        first=lambda sc, ns, lim: next((s for s, n in zip(sc, ns) if n >= lim), None),
    )


def sim_root_mean_square(signal, eps_uncond, eps_cond, scales):
    return _sim(signal, eps_uncond, eps_cond, scales, norm=lambda g: g.pow(2).mean().sqrt().item())


def sim_cosine_over_squared_norms(signal, eps_uncond, eps_cond, scales):
    def cos(g):
        return torch.dot(g, signal).item() / (g.norm().item() ** 2 * signal.norm().item() ** 2)

    return _sim(signal, eps_uncond, eps_cond, scales, cos=cos)


@pytest.mark.parametrize(
    "answer, message",
    [
        (sim_last_over, "yours is the last one over"),
        (sim_returns_the_norm, "return the scale s itself, not its norm"),
        (sim_greater_or_equal, "the test is strict"),
        (sim_root_mean_square, "yours averages them (a root mean square)"),
        (sim_cosine_over_squared_norms, "not by their squares"),
    ],
    ids=lambda v: getattr(v, "__name__", "message"),
)
def test_07_2_more_slips_are_named(answer, message):
    assert_wrong("07.2", answer, message, partial="partial")


def test_07_2_strictness_is_not_blamed_on_a_wrong_norm():
    """An L1 norm also moves the first scale over 3× on the tie case: the norm is what the feedback names."""

    def sim_l1_norm(signal, eps_uncond, eps_cond, scales):
        return _sim(signal, eps_uncond, eps_cond, scales, norm=lambda g: g.abs().sum().item())

    for result in grade_all_seeds("07.2", sim_l1_norm):
        assert "the test is strict" not in result.feedback()


def test_07_2_wrong_variants():
    assert_wrong("07.2", sim_dot_not_cosine, "divides the dot product by both norms", partial="partial")
    assert_wrong("07.2", sim_threshold_on_uncond, "CONDITIONAL prediction", partial="partial")
    assert_wrong("07.2", sim_minus_one, "return None", partial="partial")
    assert_wrong("07.2", sim_returns_index, "not its position in the list", partial="partial")
    assert_wrong("07.2", sim_sorted_scales, "in the order given", partial="partial")
    assert_wrong("07.2", sim_squared_norm, "not the sum of squares", partial="partial")
    assert_wrong("07.2", sim_falsy_zero, "`is None`", partial="partial")
    assert_wrong("07.2", sim_swapped_guidance, "guide from ε_∅ towards ε_c")


def test_07_2_not_a_dict_fails_with_a_message():
    result = grade_answer("07.2", lambda signal, u, c, scales: [0.0] * len(scales), 0)
    assert result.status == "fail" and "return a dict" in result.feedback()


def test_07_2_tensors_and_numpy_values_pass():
    def as_tensors(signal, eps_uncond, eps_cond, scales):
        s = torch.tensor(scales, dtype=torch.float64)[:, None]
        g = eps_uncond + s * (eps_cond - eps_uncond)
        norms = g.norm(dim=1)
        cos = torch.nn.functional.cosine_similarity(g, signal[None], dim=1)
        over = (norms > 3 * eps_cond.norm()).nonzero()
        return {"cosine": cos, "norm": norms, "first_over_3x": scales[int(over[0])] if len(over) else None}

    assert all(r.status == "pass" for r in grade_all_seeds("07.2", as_tensors))


# --------------------------------------------------------------------------- 07.3: known mistakes


def _spread(features, labels, num_classes, pair_mean, small=float("nan"), mean=None):
    per = []
    for k in range(num_classes):
        f = features[labels == k]
        per.append(pair_mean(f) if len(f) >= 2 else small)
    per = torch.tensor(per, dtype=torch.float64)
    if mean is None:
        valid = per[~per.isnan()]
        mean = valid.mean().item()
    else:
        mean = mean(per, labels)
    return {"per_class": per, "mean": mean}


def _pairs(f):
    d = torch.cdist(f, f)
    iu = torch.triu_indices(len(f), len(f), 1)
    return d[iu[0], iu[1]]


def spread_with_self_pairs(features, labels, num_classes):
    return _spread(features, labels, num_classes, lambda f: torch.cdist(f, f).mean().item())


def spread_squared(features, labels, num_classes):
    return _spread(features, labels, num_classes, lambda f: (_pairs(f) ** 2).mean().item())


def spread_zero_for_small(features, labels, num_classes):
    return _spread(features, labels, num_classes, lambda f: _pairs(f).mean().item(), small=0.0)


def spread_ignores_labels(features, labels, num_classes):
    pooled = _pairs(features).mean().item()
    return _spread(features, labels, num_classes, lambda f: pooled)


def spread_weighted_mean(features, labels, num_classes):
    counts = torch.bincount(labels, minlength=num_classes).double()

    def weighted(per, labels):
        ok = ~per.isnan()
        return ((per[ok] * counts[ok]).sum() / counts[ok].sum()).item()

    return _spread(features, labels, num_classes, lambda f: _pairs(f).mean().item(), mean=weighted)


def spread_full_matrix_over_pairs(features, labels, num_classes):
    return _spread(
        features, labels, num_classes, lambda f: (torch.cdist(f, f).sum() / (len(f) * (len(f) - 1) / 2)).item()
    )


def spread_pairs_over_ordered_count(features, labels, num_classes):
    return _spread(features, labels, num_classes, lambda f: (_pairs(f).sum() / (len(f) * (len(f) - 1))).item())


def spread_with_the_diagonal(features, labels, num_classes):
    def with_diagonal(f):
        iu = torch.triu_indices(len(f), len(f), 0)
        return torch.cdist(f, f)[iu[0], iu[1]].mean().item()

    return _spread(features, labels, num_classes, with_diagonal)


def spread_plain_mean(features, labels, num_classes):
    return _spread(
        features, labels, num_classes, lambda f: _pairs(f).mean().item(), mean=lambda per, labels: per.mean().item()
    )


def spread_manhattan(features, labels, num_classes):
    return _spread(features, labels, num_classes, lambda f: torch.pdist(f, p=1).mean().item())


def spread_rms_over_features(features, labels, num_classes):
    """The root of the mean squared difference over the features: ‖f_i − f_j‖ / sqrt(F)."""
    return _spread(features, labels, num_classes, lambda f: (_pairs(f) / f.shape[1] ** 0.5).mean().item())


def spread_root_mean_square(features, labels, num_classes):
    return _spread(features, labels, num_classes, lambda f: (_pairs(f) ** 2).mean().sqrt().item())


def spread_to_centroid(features, labels, num_classes):
    return _spread(features, labels, num_classes, lambda f: (f - f.mean(dim=0)).norm(dim=1).mean().item())


@pytest.mark.parametrize(
    "answer, message",
    [
        (spread_manhattan, "not the L1 distance Σ |f_i − f_j|"),
        (spread_rms_over_features, "not the root of their mean (that divides it by sqrt(F))"),
        (spread_root_mean_square, "yours is the root of the mean squared distance"),
        (spread_to_centroid, "not the mean distance of each sample to the class centroid"),
        (spread_full_matrix_over_pairs, "holds every pair twice"),
        (spread_pairs_over_ordered_count, "divide their sum by that, not by n(n − 1)"),
        (spread_with_the_diagonal, "the diagonal i = j is not a pair"),
        (spread_plain_mean, "skip the NaN classes"),
    ],
    ids=lambda v: getattr(v, "__name__", "message"),
)
def test_07_3_more_slips_are_named(answer, message):
    assert_wrong("07.3", answer, message, partial="partial")


def test_07_3_a_mean_that_follows_from_wrong_per_class_values_is_not_blamed_on_itself():
    for result in grade_all_seeds("07.3", spread_pairs_over_ordered_count):
        text = result.feedback()
        assert "it is the mean of your per_class values" in text
        assert "skip the NaN ones" not in text


def test_07_3_wrong_variants():
    assert_wrong("07.3", spread_with_self_pairs, "leave out the zero distance", partial="partial")
    assert_wrong("07.3", spread_squared, "not its square", partial="partial")
    assert_wrong("07.3", spread_zero_for_small, "NaN, not 0", partial="partial")
    assert_wrong("07.3", spread_ignores_labels, "within each class", partial="partial")
    assert_wrong("07.3", spread_weighted_mean, "not weighted by its size", partial="partial")


def test_07_3_vectorised_answer_passes():
    def vectorised(features, labels, num_classes):
        per = torch.full((num_classes,), float("nan"), dtype=torch.float64)
        for k in labels.unique().tolist():
            f = features[labels == k]
            if len(f) > 1:
                per[k] = torch.pdist(f).mean()
        return {"per_class": per, "mean": per.nanmean().item()}

    assert all(r.status == "pass" for r in grade_all_seeds("07.3", vectorised))


# --------------------------------------------------------------------------- the lesson notebook


def test_lesson_notebook_ends_with_the_exercises():
    nb = nbformat.read(LESSON_NB, as_version=4)
    assert nb.cells[0].source.startswith("# 07 ")
    last = nb.cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Exercises")
    for ex_id in IDS:
        assert f"**{ex_id}**" in last.source


def test_lesson_notebook_is_stored_without_outputs():
    """The solutions notebook's: test_exercises_common.py."""
    nb = nbformat.read(LESSON_NB, as_version=4)
    assert nb.nbformat == 4 and nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_07_2_a_threshold_on_the_difference_is_named_and_coinciding_slips_are_all_said():
    """3‖ε_c − ε_∅‖ in place of 3‖ε_c‖. A first scale is one of a few numbers, so on some cases other slips land
    on it too: each case names its first match and then the others, rather than one slip the answer may not have."""
    assert_wrong("07.2", sim_threshold_on_the_difference, "not of the difference ε_c − ε_∅", partial="partial")
    for result in grade_all_seeds("07.2", sim_threshold_on_the_difference):
        for check in result.checks:
            if not check.passed and "another slip gives the same scale here" in check.message:
                assert "ε_c − ε_∅" in check.message, check.message


# --------------------------------------------------------------------------- cases that share tensors


def cfg_in_place(eps_uncond, eps_cond, scale):
    """Right values, bought by writing into (and returning) the caller's ε_∅."""
    s = torch.as_tensor(scale, dtype=eps_uncond.dtype)
    s = s.reshape(-1, *[1] * (eps_uncond.dim() - 1)) if s.dim() else s
    return eps_uncond.add_(s * (eps_cond - eps_uncond))


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_an_in_place_answer_costs_its_penalty_only_in_the_capture_and_in_check(tmp_path, seed):
    """07.1's cases share their ε tensors. Each case now gets its own copy, and the capture records each
    result when it comes back: before, the next call rewrote the recorded s = 0 result (blamed as swapped
    predictions) and changed the next case's inputs (flagged to the teacher as a patched torch)."""
    from course_lib.grading import grade
    from course_lib.grading.capture import capture
    from course_lib.grading.encode import load_observations
    from course_lib.grading.exercise import get_exercise, judge_outcomes

    out = tmp_path / "07.1.json"
    capture("07.1", {"cfg_combine": cfg_in_place}, seed, str(out))
    records = load_observations(out)
    ex = get_exercise("07.1")
    in_kernel = judge_outcomes(ex, seed, grade._outcomes(records))
    in_check = grade_answer("07.1", cfg_in_place, seed)
    for result in (in_kernel, in_check):
        wrong = [c for c in result.checks if not c.passed]
        assert wrong and all(c.name.startswith("inputs unchanged") for c in wrong), [c.message for c in wrong]
        assert "swaps" not in result.feedback()
    assert in_kernel.points == pytest.approx(in_check.points)
    assert not grade._inputs_differ(ex, seed, records)  # no false "patched torch" flag


def sim_first_from_a_float32_tensor(signal, eps_uncond, eps_cond, scales):
    """Right: the scales kept in a float32 tensor, the first one handed back as that tensor's 0-d entry."""
    out = _sim(signal, eps_uncond, eps_cond, scales)
    if out["first_over_3x"] is not None:
        out["first_over_3x"] = torch.tensor(scales, dtype=torch.float32)[list(scales).index(out["first_over_3x"])]
    return out


def sim_not_first_skips_zero(signal, eps_uncond, eps_cond, scales):
    """`if not first and n > limit: first = s`: a first scale of 0.0 is overwritten by the next one over."""

    def first(sc, ns, lim):
        found = None
        for s, n in zip(sc, ns):
            if not found and n > lim:
                found = s
        return found

    return _sim(signal, eps_uncond, eps_cond, scales, first=first)


def test_07_2_a_scale_read_back_from_a_float32_tensor_is_the_same_scale():
    for result in grade_all_seeds("07.2", sim_first_from_a_float32_tensor):
        assert result.status == "pass", result.feedback()


def test_07_2_a_zero_scale_skipped_by_a_truth_test_is_named():
    named = []
    for seed in range(20):
        r = grade_answer("07.2", sim_not_first_skips_zero, seed)
        named += [c.message for c in r.checks if not c.passed and "if not first" in c.message]
    assert named, "some case must have 0.0 as its first scale over 3×"


def cfg_exits_on_tensor_scales(eps_uncond, eps_cond, scale):
    """Right for a number, sys.exit() for a tensor of scales: exit() costs those cases, not the exercise."""
    import sys

    if isinstance(scale, torch.Tensor):
        sys.exit("one scale per batch, please")
    return eps_uncond + scale * (eps_cond - eps_uncond)


def test_07_1_an_answer_that_calls_exit_loses_only_those_cases(tmp_path):
    from course_lib.grading.capture import capture
    from course_lib.grading.encode import load_observations

    result = grade_answer("07.1", cfg_exits_on_tensor_scales, 0)
    assert result.status == "partial" and 0 < result.points < result.max_points, result.feedback()
    assert "SystemExit" in result.feedback()
    out = tmp_path / "07.1.json"
    capture("07.1", {"cfg_combine": cfg_exits_on_tensor_scales}, 0, str(out))
    records = load_observations(out)
    errors = [r for r in records if "error" in r]
    assert errors and len(errors) < len(records) and all("SystemExit" in r["error"] for r in errors)


def test_07_1_an_answer_that_raises_on_every_call_is_an_error_and_not_told_to_reshape():
    def refuses(eps_uncond, eps_cond, scale):
        raise ValueError("not today")

    result = grade_answer("07.1", refuses, 0)
    assert result.status == "error" and result.points == 0, result.feedback()
    assert "reshape" not in result.feedback()


def test_07_1_a_scale_rounded_through_float32_passes_on_every_seed():
    def scale_as_a_tensor(eps_uncond, eps_cond, scale):
        s = torch.as_tensor(scale)  # a Python float becomes a float32 tensor
        s = s.view(-1, *[1] * (eps_cond.dim() - 1)) if s.dim() == 1 else s
        return eps_uncond + s * (eps_cond - eps_uncond)

    assert all(grade_answer("07.1", scale_as_a_tensor, seed).status == "pass" for seed in range(30))


def test_07_2_the_first_scale_is_not_diagnosed_on_wrong_norms_and_false_is_not_none():
    reference = get_exercise("07.2").reference

    def swapped(signal, eps_uncond, eps_cond, scales):
        return reference(signal, eps_cond, eps_uncond, scales)  # guides from ε_c towards ε_∅

    feedback = "\n".join(grade_answer("07.2", swapped, seed).feedback() for seed in range(4))
    assert "stop at the first scale" not in feedback and "not of the difference" not in feedback, feedback

    def false_for_none(*args):
        out = reference(*args)
        return out | {"first_over_3x": False if out["first_over_3x"] is None else out["first_over_3x"]}

    messages = [grade_answer("07.2", false_for_none, seed).feedback() for seed in range(6)]
    assert any("return None (not False" in m for m in messages), messages


def test_07_2_sorting_the_scales_in_place_is_caught_and_named():
    reference = get_exercise("07.2").reference

    def sorts_its_input(signal, eps_uncond, eps_cond, scales):
        scales.sort()
        return reference(signal, eps_uncond, eps_cond, scales)

    feedback = grade_answer("07.2", sorts_its_input, 0).feedback()
    assert "changed its input `scales` in place" in feedback and "in the order of `scales` given" in feedback, feedback


def test_07_fresh_eyes_slips_are_named_and_cost_what_they_should():
    """A pair-weighted mean kept 2.75/3 with no hint; the two traps 07.2 stresses (> not ≥; s = 0.0 can be the
    answer) cost 4%; the (1 + s) form was credited to Imagen (Imagen's w is the course's s)."""
    import torch

    spread = get_exercise("07.3").reference

    def pair_weighted(features, labels, k):
        out = spread(features, labels, k)
        f = features.to(torch.float64)
        same = labels[:, None] == labels[None, :]
        d = torch.cdist(f, f)
        return {**out, "mean": float((d * same).sum() / (same.sum() - len(labels)))}

    result = grade_answer("07.3", pair_weighted, 0)
    assert "not the distances of all within-class pairs pooled" in result.feedback(), result.feedback()
    assert result.points <= 2.6, result.points

    simulate = get_exercise("07.2").reference

    def greater_or_equal(signal, eps_uncond, eps_cond, scales):
        out = simulate(signal, eps_uncond, eps_cond, scales)
        limit = 3 * float(torch.linalg.vector_norm(eps_cond))
        first = next((s for s, n in zip(scales, out["norm"]) if n >= limit - 1e-12), None)
        return {**out, "first_over_3x": first}

    assert grade_answer("07.2", greater_or_equal, 0).points <= 3.7

    def one_plus_s(eps_uncond, eps_cond, scale):
        s = torch.as_tensor(scale, dtype=eps_cond.dtype)
        s = s.reshape(-1, *([1] * (eps_cond.dim() - 1))) if s.dim() else s
        return eps_cond + s * (eps_cond - eps_uncond)

    feedback = grade_answer("07.1", one_plus_s, 0).feedback()
    assert "Imagen" not in feedback and "Ho & Salimans" in feedback, feedback

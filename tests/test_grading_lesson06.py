"""Lesson 06's graded exercises: the references pass, known mistakes lose points with a useful
message, stubs are "not_implemented", and the solutions notebook's answers pass."""

from __future__ import annotations

import math
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from grading_helpers import assert_wrong, grade_all_seeds

from course_lib.grading import lesson06 as L
from course_lib.grading.exercise import exercises_for, get_exercise, grade_answer

ROOT = Path(__file__).resolve().parents[1]
LESSON = "06_cross_attention_and_text"
IDS = ["06.1", "06.2", "06.3"]
NAMES = {"06.1": "cross_attention", "06.2": "pooled_similarity", "06.3": "caption_ids_with_dropout"}


# --------------------------------------------------------------------------- registry and references


def test_lesson_06_registers_three_exercises():
    """The lesson's own exercises, in order (what every exercise must satisfy: test_exercises_common.py)."""
    assert [(e.id, e.name) for e in exercises_for(LESSON)] == [(i, NAMES[i]) for i in IDS]


# --------------------------------------------------------------------------- references against the library


def test_cross_attention_reference_matches_the_library_layer():
    """One head, no norm or projection in the way: the library's attention weights and mixed values."""
    from course_lib.nn.blocks import CrossAttention

    torch.manual_seed(0)
    layer = CrossAttention(channels=8, context_dim=6, head_dim=8, groups=4)
    with torch.no_grad():
        layer.out.weight.copy_(torch.eye(8))
    x, context = torch.randn(2, 8, 3, 3), torch.randn(2, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out, probs = layer(x, context, mask, return_attention=True)
    tokens = layer.norm(x).flatten(2).transpose(1, 2)
    mine, weights = L._cross_attention(
        tokens, context, mask, layer.to_q.weight.T, layer.to_k.weight.T, layer.to_v.weight.T
    )
    assert torch.allclose(weights, probs[:, 0], atol=1e-6)
    assert torch.allclose(x + mine.transpose(1, 2).reshape(x.shape), out, atol=1e-5)


def test_pooled_reference_matches_the_library_pooling():
    from course_lib.text import TextEmbedding, pooled

    for case in L._pool_cases(5):
        tokens, mask = case.args
        p, sim = L._pooled_similarity(tokens, mask)
        emb = TextEmbedding(tokens * mask[..., None], mask)  # the library zeroes padded states
        assert torch.allclose(p, pooled(emb), atol=1e-6)
        unit = F.normalize(p, dim=1)
        assert torch.allclose(sim, unit @ unit.T, atol=1e-6)
        assert torch.allclose(sim.diagonal(), torch.ones(len(p)), atol=1e-6)


def test_caption_ids_reference_matches_the_library_draws():
    from course_lib.data import CAPTIONS
    from course_lib.guidance import drop_condition
    from course_lib.text import NULL_ID, caption_ids, dataset_captions

    labels = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(0))
    counts = torch.tensor([len(p) for p in CAPTIONS["fashion_mnist"]])
    ids = caption_ids(labels, "fashion_mnist", torch.Generator().manual_seed(1))
    u = torch.rand(500, generator=torch.Generator().manual_seed(1))  # the same draws
    drop = drop_condition(labels, 0.1, torch.Generator().manual_seed(2))
    d = torch.rand(500, generator=torch.Generator().manual_seed(2))
    expected = ids.masked_fill(drop, NULL_ID)
    assert torch.equal(L._caption_ids_with_dropout(labels, u, d, counts, 0.1), expected)
    table = dataset_captions("fashion_mnist")
    mine = L._caption_ids_with_dropout(labels, u, torch.ones(500), counts, 0.1)
    assert all(table[i] in CAPTIONS["fashion_mnist"][y] for y, i in zip(labels.tolist(), mine.tolist()))


def test_cases_hold_padding_junk_and_edges():
    for case in L._xattn_cases(0):
        _, ctx, mask, *_ = case.args
        if not mask.all():
            assert ctx[~mask].abs().max() > 0  # junk, not zeros, in the padded slots
    assert any(c.args[2].sum(1).min() == 1 for c in L._xattn_cases(0))
    assert any(len(c.args[0]) == 1 for c in L._xattn_cases(0))
    ps = [c.args[4] for c in L._ids_cases(0)]
    assert 0.0 in ps and 1.0 in ps


# --------------------------------------------------------------------------- 06.1: known mistakes


def _qkv(x, c, w_q, w_k, w_v):
    return x @ w_q, c @ w_k, c @ w_v


def xattn_mask_ignored(x, c, m, w_q, w_k, w_v):
    q, k, v = _qkv(x, c, w_q, w_k, w_v)
    w = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)
    return w @ v, w


def xattn_softmax_over_positions(x, c, m, w_q, w_k, w_v):
    q, k, v = _qkv(x, c, w_q, w_k, w_v)
    s = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~m[:, None], -1e9)
    w = s.softmax(dim=1)
    return w @ v, w


def xattn_without_sqrt_d(x, c, m, w_q, w_k, w_v):
    q, k, v = _qkv(x, c, w_q, w_k, w_v)
    w = (q @ k.transpose(-2, -1)).masked_fill(~m[:, None], float("-inf")).softmax(-1)
    return w @ v, w


def xattn_masked_to_zero(x, c, m, w_q, w_k, w_v):
    q, k, v = _qkv(x, c, w_q, w_k, w_v)
    w = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~m[:, None], 0.0).softmax(-1)
    return w @ v, w


def xattn_zeroed_after_softmax(x, c, m, w_q, w_k, w_v):
    q, k, v = _qkv(x, c, w_q, w_k, w_v)
    w = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1) * m[:, None]
    return w @ v, w


def xattn_output_only(x, c, m, w_q, w_k, w_v):
    return L._cross_attention(x, c, m, w_q, w_k, w_v)[0]


def xattn_builtin(x, c, m, w_q, w_k, w_v):
    """PyTorch's fused attention with a boolean mask (True = attend): must pass."""
    q, k, v = _qkv(x, c, w_q, w_k, w_v)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=m[:, None, :])
    w = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~m[:, None], -torch.inf).softmax(-1)
    return out, w


def test_06_1_wrong_variants():
    # a batch of 1 without padding is right even with the mask ignored: partial credit
    assert_wrong("06.1", xattn_mask_ignored, "apply the key padding mask", partial="partial")
    assert_wrong("06.1", xattn_mask_ignored, "padded tokens must not matter")
    assert_wrong("06.1", xattn_softmax_over_positions, "the softmax runs over the tokens")
    assert_wrong("06.1", xattn_without_sqrt_d, "divide the scores by √d", partial="partial")
    assert_wrong("06.1", xattn_masked_to_zero, "not to 0", partial="partial")
    assert_wrong("06.1", xattn_zeroed_after_softmax, "mask the scores before the softmax", partial="partial")


def test_06_1_returning_only_the_output_fails():
    result = grade_answer("06.1", xattn_output_only, 0)
    assert result.status == "fail" and "return a pair (out, weights)" in result.feedback()


def test_06_1_fused_kernel_passes():
    assert all(r.status == "pass" for r in grade_all_seeds("06.1", xattn_builtin))


def test_06_1_an_answer_that_hands_back_an_earlier_result_loses_the_padding_point():
    """A cache keyed by the inputs' shapes makes the padding check's second call give the first call's output: with
    the positions in another order on that call, it cannot pass. Wrong as well as right answers are cached."""
    for answer in (get_exercise("06.1").reference, xattn_mask_ignored):
        kept: dict = {}

        def cached(x_tokens, context, mask, w_q, w_k, w_v, answer=answer, kept=kept):
            key = (tuple(x_tokens.shape), tuple(context.shape))
            if key not in kept:
                kept[key] = answer(x_tokens, context, mask, w_q, w_k, w_v)
            return kept[key]

        result = grade_answer("06.1", cached, 2)
        padding = [c for c in result.checks if c.name == "padding ignored"]
        assert padding and not any(c.passed for c in padding), result.feedback()
        # right values: the cache is the only reason, and it is named; a named slip (the mask ignored) is the
        # reason given instead, without guesses about order or caching that would send a learner elsewhere
        reason = "a result kept from an earlier call" if answer is get_exercise("06.1").reference else (
            "the slip named above lets them in")
        assert reason in result.feedback(), result.feedback()
    assert grade_answer("06.1", get_exercise("06.1").reference, 2).status == "pass"


def test_06_1_a_named_slip_gets_a_short_padding_line():
    """Zeroing the weights after the softmax (a fresh-eyes learner's slip) was also told about image positions in
    another order and cached results."""
    def zeroed_after_softmax(x_tokens, context, mask, w_q, w_k, w_v):
        q, k, v = x_tokens @ w_q, context @ w_k, context @ w_v
        w = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1) * mask[:, None, :]
        return w @ v, w

    feedback = grade_answer("06.1", zeroed_after_softmax, 0).feedback()
    assert "zeroing weights afterwards" in feedback and "another order" not in feedback, feedback


def test_06_1_mask_ignored_keeps_the_padding_subcheck_only_where_there_is_none():
    result = grade_answer("06.1", xattn_mask_ignored, 0)
    padding = [c for c in result.checks if c.name == "padding ignored"]
    assert any(c.passed for c in padding) and not all(c.passed for c in padding)


# --------------------------------------------------------------------------- 06.2: known mistakes


def pool_including_padding(tokens, mask):
    p = tokens.mean(dim=1)
    unit = F.normalize(p, dim=1)
    return p, unit @ unit.T


def pool_dot_products(tokens, mask):
    m = mask[..., None].to(tokens.dtype)
    p = (tokens * m).sum(1) / m.sum(1)
    return p, p @ p.T


def pool_sum(tokens, mask):
    m = mask[..., None].to(tokens.dtype)
    p = (tokens * m).sum(1)
    unit = F.normalize(p, dim=1)
    return p, unit @ unit.T


def pool_normalise_columns(tokens, mask):
    m = mask[..., None].to(tokens.dtype)
    p = (tokens * m).sum(1) / m.sum(1)
    unit = F.normalize(p, dim=0)
    return p, unit @ unit.T


def _masked_mean(tokens, mask):
    m = mask[..., None].to(tokens.dtype)
    return (tokens * m).sum(1) / m.sum(1)


def pool_divided_by_length(tokens, mask):
    m = mask[..., None].to(tokens.dtype)
    p = (tokens * m).sum(1) / tokens.shape[1]
    unit = F.normalize(p, dim=1)
    return p, unit @ unit.T


def pool_count_of_the_batch(tokens, mask):
    m = mask[..., None].to(tokens.dtype)
    p = (tokens * m).sum(1) / m.sum()
    unit = F.normalize(p, dim=1)
    return p, unit @ unit.T


def pool_returns_unit_vectors(tokens, mask):
    p = F.normalize(_masked_mean(tokens, mask), dim=1)
    return p, p @ p.T


def pool_inverted_mask(tokens, mask):
    m = (~mask)[..., None].to(tokens.dtype)
    p = (tokens * m).sum(1) / m.sum(1)
    unit = F.normalize(p, dim=1)
    return p, unit @ unit.T


def pool_whole_matrix_norm(tokens, mask):
    p = _masked_mean(tokens, mask)
    unit = p / p.norm()
    return p, unit @ unit.T


def pool_one_norm(tokens, mask):
    p = _masked_mean(tokens, mask)
    return p, (p @ p.T) / p.norm(dim=1, keepdim=True)


def pool_squared_norms_broadcast(tokens, mask):
    p = _masked_mean(tokens, mask)
    norms = p.norm(dim=1)
    return p, (p @ p.T) / (norms * norms)


def pool_l1_cosine(tokens, mask):
    p = _masked_mean(tokens, mask)
    unit = p / p.norm(p=1, dim=1, keepdim=True)
    return p, unit @ unit.T


def pool_masked_max(tokens, mask):
    p = torch.where(mask[..., None], tokens, torch.finfo(tokens.dtype).min).max(dim=1).values
    unit = F.normalize(p, dim=1)
    return p, unit @ unit.T


def pool_tokens_normalised_first(tokens, mask):
    p = _masked_mean(F.normalize(tokens, dim=-1), mask)
    unit = F.normalize(p, dim=1)
    return p, unit @ unit.T


def pool_float64_loop(tokens, mask):
    """One prompt at a time in float64, cosine by hand: must pass."""
    pooled = torch.stack([tokens[i][mask[i]].double().mean(0) for i in range(len(tokens))])
    n = len(pooled)
    sim = torch.empty(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            sim[i, j] = pooled[i] @ pooled[j] / (pooled[i].norm() * pooled[j].norm())
    return pooled.to(tokens.dtype), sim.to(tokens.dtype)


def pool_library(tokens, mask):
    """The course's own pooling on zeroed padding, then cosine: the right values, but the library's masked mean."""
    from course_lib.text import TextEmbedding, pooled

    p = pooled(TextEmbedding(tokens * mask[..., None], mask))
    return p, F.cosine_similarity(p[:, None], p[None, :], dim=-1)


def test_06_2_wrong_variants():
    assert_wrong("06.2", pool_including_padding, "average only the real tokens")
    assert_wrong("06.2", pool_dot_products, "cosine, not dot product", partial="partial")
    assert_wrong("06.2", pool_sum, "the mean of the real tokens, not their sum", partial="partial")
    assert_wrong("06.2", pool_normalise_columns, "not the feature columns", partial="partial")


@pytest.mark.parametrize(
    "answer, message",
    [
        (pool_divided_by_length, "divide by the number of real tokens, not by L"),
        (pool_count_of_the_batch, "not by the count of the whole batch"),
        (pool_returns_unit_vectors, "pooled is the masked mean itself, not its unit vector"),
        (pool_inverted_mask, "average where it is True, not where it is False"),
        (pool_whole_matrix_norm, "the norm of the whole N×D matrix"),
        (pool_one_norm, "not by ‖s̄_i‖ alone"),
        (pool_squared_norms_broadcast, "giving s̄_i·s̄_j / ‖s̄_j‖²"),
        (pool_l1_cosine, "not the L1 norms Σ |s̄|"),
        (pool_masked_max, "the masked mean of the real tokens' states, not their maximum"),
        (pool_tokens_normalised_first, "yours normalises each token to length 1 before pooling"),
    ],
    ids=lambda v: getattr(v, "__name__", "message"),
)
def test_06_2_more_slips_are_named(answer, message):
    assert_wrong("06.2", answer, message, partial="partial")


def test_06_2_padding_mistake_still_right_where_there_is_no_padding():
    for result in grade_all_seeds("06.2", pool_including_padding):
        assert result.status == "partial"


def test_06_2_equivalent_forms_pass():
    assert all(r.status == "pass" for r in grade_all_seeds("06.2", pool_float64_loop))


def test_06_2_the_librarys_pooled_earns_nothing_though_its_values_are_right():
    result = grade_answer("06.2", pool_library, 0)
    assert result.status == "fail" and result.points == 0 and "course_lib.text.pooled" in result.flag
    assert all(c.passed for c in result.checks if c.name != "written by you"), result.feedback()


def test_06_2_returning_only_the_matrix_fails():
    result = grade_answer("06.2", lambda tokens, mask: pool_float64_loop(tokens, mask)[1], 0)
    assert result.status == "fail" and "return a pair (pooled, similarity)" in result.feedback()


# --------------------------------------------------------------------------- 06.3: known mistakes


def _rows(labels, u, counts, offset=1, inclusive=False, scale=None):
    first = offset + (torch.cumsum(counts, 0) if inclusive else torch.cumsum(counts, 0) - counts)
    n = counts[labels]
    pick = torch.minimum((u * (n if scale is None else scale)).floor().long(), n - 1)
    return first[labels] + pick


def ids_drop_when_greater(labels, u, d, counts, p):
    return torch.where(d > p, 0, _rows(labels, u, counts))


def ids_forgot_null_row(labels, u, d, counts, p):
    return torch.where(d < p, 0, _rows(labels, u, counts, offset=0))


def ids_inclusive_cumsum(labels, u, d, counts, p):
    return torch.where(d < p, 0, _rows(labels, u, counts, inclusive=True))


def ids_drop_at_equal(labels, u, d, counts, p):
    return torch.where(d <= p, 0, _rows(labels, u, counts))


def ids_no_dropout(labels, u, d, counts, p):
    return _rows(labels, u, counts)


def ids_global_count(labels, u, d, counts, p):
    return torch.where(d < p, 0, _rows(labels, u, counts, scale=counts.max()))


def ids_keep_where_dropped(labels, u, d, counts, p):
    return torch.where(d < p, _rows(labels, u, counts), 0)


def ids_null_minus_one(labels, u, d, counts, p):
    return torch.where(d < p, -1, _rows(labels, u, counts))


def ids_null_is_first_phrasing(labels, u, d, counts, p):
    """Zeroes the phrasing index of a dropped condition instead of its row."""
    pick = _rows(labels, u, counts) - _rows(labels, torch.zeros_like(u), counts)
    return _rows(labels, torch.zeros_like(u), counts) + torch.where(d < p, 0, pick)


def ids_rounded_phrasing(labels, u, d, counts, p):
    first = 1 + torch.cumsum(counts, 0) - counts
    n = counts[labels]
    return torch.where(d < p, 0, first[labels] + torch.minimum((u * n).round().long(), n - 1))


def ids_count_minus_one(labels, u, d, counts, p):
    first = 1 + torch.cumsum(counts, 0) - counts
    return torch.where(d < p, 0, first[labels] + (u * (counts[labels] - 1)).floor().long())


def ids_k_times_count(labels, u, d, counts, p):
    n = counts[labels]
    return torch.where(d < p, 0, 1 + labels * n + torch.minimum((u * n).floor().long(), n - 1))


def ids_no_phrasing(labels, u, d, counts, p):
    return torch.where(d < p, 0, _rows(labels, torch.zeros_like(u), counts))


def ids_with_a_loop(labels, u, d, counts, p):
    """Plain Python, one image at a time: must pass."""
    out = []
    for y, a, b in zip(labels.tolist(), u.tolist(), d.tolist()):
        start = 1 + sum(counts.tolist()[:y])
        out.append(0 if b < p else start + min(int(a * counts[y]), int(counts[y]) - 1))
    return torch.tensor(out)


def test_06_3_wrong_variants():
    assert_wrong("06.3", ids_drop_when_greater, "not where drop_u > p")
    assert_wrong("06.3", ids_forgot_null_row, "row 0 is the empty prompt", partial="partial")
    assert_wrong("06.3", ids_inclusive_cumsum, "an exclusive cumulative sum", partial="partial")
    assert_wrong("06.3", ids_drop_at_equal, "drop_u < p, strictly", partial="partial")
    assert_wrong("06.3", ids_no_dropout, "apply the dropout", partial="partial")
    assert_wrong("06.3", ids_global_count, "that class's own count", partial="partial")


def ids_float_rows(labels, u, d, counts, p):  # floor() without .long(): right rows, float dtype
    first = 1 + torch.cumsum(counts, 0) - counts
    n = counts[labels]
    pick = torch.minimum((u * n).floor(), (n - 1).float())
    return torch.where(d < p, 0.0, first[labels] + pick)


def ids_own_drop_draw(labels, u, d, counts, p):
    # a draw of its own instead of drop_u (seeded here so the test repeats; the message must not rely on it)
    mine = torch.rand(d.shape, generator=torch.Generator().manual_seed(99))
    return torch.where(mine < p, 0, _rows(labels, u, counts))


def ids_own_phrasing_draw(labels, u, d, counts, p):
    mine = torch.rand(u.shape, generator=torch.Generator().manual_seed(98))
    return torch.where(d < p, 0, _rows(labels, mine, counts))


@pytest.mark.parametrize(
    "answer, message",
    [
        (ids_own_drop_draw, "use the drop_u you are given"),
        (ids_float_rows, "floor(), round() and / keep or give a float dtype: end with .long()"),
        (ids_own_phrasing_draw, "use the phrasing_u you are given"),
        (ids_keep_where_dropped, "not where drop_u ≥ p"),
        (ids_null_minus_one, "the empty prompt (the null condition), not -1"),
        (ids_null_is_first_phrasing, "not its class's first phrasing"),
        (ids_rounded_phrasing, "rounded down (floor), not to the nearest"),
        (ids_count_minus_one, "not counts[label] − 1"),
        (ids_k_times_count, "not at 1 + k·counts[k]"),
        (ids_no_phrasing, "add the phrasing index"),
    ],
    ids=lambda v: getattr(v, "__name__", "message"),
)
def test_06_3_more_slips_are_named(answer, message):
    assert_wrong("06.3", answer, message, partial="partial")


def test_06_3_equivalent_forms_pass():
    assert all(r.status == "pass" for r in grade_all_seeds("06.3", ids_with_a_loop))


# --------------------------------------------------------------------------- the lesson notebook


def test_lesson_notebook_lists_the_exercises():
    lesson = nbformat.read(ROOT / "notebooks" / f"{LESSON}.ipynb", as_version=4)
    last = lesson.cells[-1].source
    assert last.startswith("## Exercises")
    for ex_id in IDS:
        ex = get_exercise(ex_id)
        assert f"**{ex_id}**" in last and f"({ex.points:g} points)" in last


def _attention_slip(x_tokens, context, mask, w_q, w_k, w_v, slip):
    q, k, v = x_tokens @ w_q, context @ w_k, context @ w_v
    width = {"scaled by the image width": x_tokens.shape[-1], "scaled by the value width": v.shape[-1],
             "scaled by the text width": context.shape[-1]}.get(slip, q.shape[-1])
    hide = mask[:, None, :] if slip == "mask inverted" else ~mask[:, None, :]
    weights = ((q @ k.transpose(-2, -1)) / math.sqrt(width)).masked_fill(hide, float("-inf")).softmax(-1)
    return weights @ v, weights


@pytest.mark.parametrize(
    "slip, message",
    [
        ("mask inverted", "hide the padded ones, where mask is False"),
        ("scaled by the image width", "not the image features' width"),
        # after the lesson's "D = 384", a learner divides by the token states' width (a fresh-eyes review)
        ("scaled by the text width", "not the token states' width D"),
    ],
)
def test_06_1_mask_polarity_and_the_scaling_width_are_named(slip, message):
    assert_wrong("06.1", lambda *args: _attention_slip(*args, slip), message)


def xattn_softmax_over_positions_with_minus_inf(x_tokens, context, mask, w_q, w_k, w_v):
    """The mask right, the softmax over the image positions: a padded token's column is all −inf → NaN."""
    q, k, v = x_tokens @ w_q, context @ w_k, context @ w_v
    scores = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).masked_fill(~mask[:, None, :], float("-inf"))
    weights = scores.softmax(dim=1)
    return weights @ v, weights


def test_06_1_a_nan_output_is_named_as_such_not_blamed_on_the_padding():
    result = grade_answer("06.1", xattn_softmax_over_positions_with_minus_inf, 0)
    assert result.status in ("fail", "partial")
    assert "holds NaN" in result.feedback()
    assert "padded tokens must not matter" not in result.feedback()


def test_06_3_reversed_comparisons_get_one_message_not_two_that_disagree():
    """> p and ≥ p give the same rows wherever no drop_u equals p: the message names both, once, and the
    'another slip gives the same values' note does not pit one against the other."""
    for answer in (ids_drop_when_greater, ids_keep_where_dropped):
        feedback = grade_answer("06.3", answer, 1).feedback()
        assert "not where drop_u > p or ≥ p" in feedback, feedback
        assert "another slip gives the same values here: drop the condition" not in feedback, feedback


def test_06_1_numpy_results_and_an_in_place_w_q_are_not_blamed_on_the_padding():
    reference = get_exercise("06.1").reference

    def as_numpy(*args):
        out, weights = reference(*args)
        return out.numpy(), weights.numpy()

    def scale_folded_into_w_q(x_tokens, context, mask, w_q, w_k, w_v):
        w_q /= math.sqrt(w_q.shape[1])  # 1/√d folded into W_q, in place
        scores = (x_tokens @ w_q) @ (context @ w_k).transpose(-2, -1)
        weights = scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        return weights @ (context @ w_v), weights

    for answer, only in ((as_numpy, "return a torch tensor"), (scale_folded_into_w_q, "changed its input `w_q`")):
        feedback = grade_answer("06.1", answer, 0).feedback()
        assert only in feedback and "padded tokens must not matter" not in feedback, feedback


def test_06_1_one_stray_nan_is_not_blamed_on_the_mask():
    reference = get_exercise("06.1").reference

    def one_nan(*args):
        out, weights = reference(*args)
        out = out.clone()
        out[0, 0, 0] = float("nan")
        return out, weights

    feedback = grade_answer("06.1", one_nan, 0).feedback()
    assert "NaN in some entries" in feedback and "all −inf" not in feedback, feedback


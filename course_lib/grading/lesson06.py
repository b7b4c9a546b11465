r"""Graded exercises of lesson 06: cross-attention and text conditioning.

Three small pieces of the lesson, each checked on inputs the learner did not choose:

* 06.1 ``cross_attention``: single-head attention from image positions to text tokens, with
  the key padding mask, returning the output and the attention weights;
* 06.2 ``pooled_similarity``: the masked mean of a prompt's token states and the cosine
  similarity matrix of those pooled vectors;
* 06.3 ``caption_ids_with_dropout``: the row of the caption table each training image reads,
  from its label and two given uniforms (which phrasing, and whether the condition is
  dropped to the empty prompt in row 0).

Nothing here trains and nothing loads the text encoder: the token states are random tensors
whose padded slots hold junk (a raw transformer's padded states are not zero), so that
ignoring the mask shows. The references are written out from the equations, independently of
:mod:`course_lib.nn.blocks` and :mod:`course_lib.text` (the tests check that they agree).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from course_lib.grading.checks import allclose, as_float_array, diagnose
from course_lib.grading.checks import case_generator as _gen
from course_lib.grading.exercise import Case, Exercise, SubCheck, compare, register

LESSON = "06_cross_attention_and_text"

__all__: list[str] = []


def _mask_from_lengths(lengths: list[int], length: int) -> torch.Tensor:
    return torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]


def _with_junk(context: torch.Tensor, mask: torch.Tensor, g: torch.Generator, scale: float = 3.0) -> torch.Tensor:
    """``context`` with its padded slots (mask False) filled with large random states."""
    junk = scale * torch.randn(context.shape, generator=g, dtype=context.dtype)
    return torch.where(mask[..., None], context, junk)


# =============================================================================================
# 06.1 cross_attention
# =============================================================================================


def _cross_attention(x_tokens, context, mask, w_q, w_k, w_v):
    r"""Single-head cross-attention with a key padding mask.

        Q = X W_q,  K = S W_k,  V = S W_v,
        Z = Q Kᵀ / √d  with Z[n, p, l] = −∞ where mask[n, l] is False,
        P = softmax over the tokens l of Z,      out = P V

    x_tokens: N×HW×C_x (the HW image positions), context: N×L×D (the token states S), mask: N×L
    bool (True = real token), w_q: C_x×d, w_k: D×d, w_v: D×d_v. Returns (out N×HW×d_v, P N×HW×L);
    each row of P sums to 1 and is 0 at padded tokens.
    """
    q = x_tokens @ w_q
    k = context @ w_k
    v = context @ w_v
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


def _xattn_cases(seed: int) -> list[Case]:
    g = _gen(seed, 61)

    def case(n, p, c, length, dim, d, lengths, label, d_v=None):
        x = torch.randn((n, p, c), generator=g)
        ctx = torch.randn((n, length, dim), generator=g)
        mask = _mask_from_lengths(lengths, length)
        ctx = _with_junk(ctx, mask, g)
        w_q = torch.randn((c, d), generator=g) / math.sqrt(c)
        w_k = torch.randn((dim, d), generator=g) / math.sqrt(dim)
        w_v = torch.randn((dim, d_v or d), generator=g) / math.sqrt(dim)
        return Case((x, ctx, mask, w_q, w_k, w_v), label=label)

    short = int(torch.randint(2, 5, (1,), generator=g))
    return [
        case(2, 16, 8, 6, 12, 4, [4, 6], "2 prompts, the first padded (4 of 6 tokens real)"),
        case(3, 9, 6, 7, 10, 8, [short, 7, 3], "3 prompts of different lengths, d = 8"),
        case(1, 4, 5, 5, 5, 16, [5], "a batch of 1, no padding, d = 16"),
        case(2, 6, 4, 5, 8, 4, [1, 2], "a prompt with one real token: all its weight goes there"),
        case(2, 25, 8, 9, 6, 4, [9, 5], "5×5 positions, 9 token slots, value width 6", d_v=6),
    ]


def _xattn_probe(answer: Any, case: Case) -> dict:
    """The answer's (out, weights), and its out again with different junk in the padded slots.

    The second call also takes the image positions in another order (and its output is put back in the
    first order): attention treats each position on its own, so a right answer gives the same out, while
    one that hands back an earlier call's result (a cache keyed by the inputs' shapes) cannot."""
    x, ctx, mask, w_q, w_k, w_v = case.args
    # the inputs as they were, for the second call: an answer that writes into w_q must not look padding-dependent
    x0, ctx0, mask0, w_q0, w_k0, w_v0 = (a.clone() for a in case.args)
    result = answer(x, ctx, mask, w_q, w_k, w_v)  # the case's own tensors: changing them in place is caught
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return {"pair": False, "out": result, "weights": None, "out_other_padding": None}
    out, weights = result
    g = torch.Generator().manual_seed(int(ctx.abs().sum().item() * 1000) % (2**31))
    order = torch.randperm(x.shape[1], generator=g)
    if x.shape[1] > 1 and bool((order == torch.arange(x.shape[1])).all()):
        order = order.roll(1)
    other = answer(x0[:, order], _with_junk(ctx0, mask0, g, scale=10.0), mask0, w_q0, w_k0, w_v0)
    out_other = other[0] if isinstance(other, (tuple, list)) and len(other) == 2 else None
    if isinstance(out_other, (torch.Tensor, np.ndarray)) and out_other.ndim >= 2 and out_other.shape[1] == x.shape[1]:
        back = order.argsort()
        out_other = out_other[:, back.numpy() if isinstance(out_other, np.ndarray) else back]
    return {"pair": True, "out": out, "weights": weights, "out_other_padding": out_other}


def _xattn_mistakes(case: Case) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """What the usual slips give on this case: (out, weights)."""
    x, ctx, mask, w_q, w_k, w_v = case.args
    q, k, v = x @ w_q, ctx @ w_k, ctx @ w_v
    d = q.shape[-1]
    raw = q @ k.transpose(-2, -1)
    hide = ~mask[:, None, :]
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def add(message, scores, dim=-1):
        w = scores.softmax(dim=dim)
        out[message] = (w @ v, w)

    add(
        "apply the key padding mask: padded tokens must get weight 0 (scores → −∞ before the softmax)",
        raw / math.sqrt(d),
    )
    add("divide the scores by √d, d the query/key width (here " + str(d) + ")", raw.masked_fill(hide, float("-inf")))
    add("scale by 1/√d, not 1/d", (raw / d).masked_fill(hide, float("-inf")))
    add(
        "the mask marks the real tokens with True: hide the padded ones, where mask is False (~mask), not the "
        "real ones",
        (raw / math.sqrt(d)).masked_fill(mask[:, None, :], float("-inf")),
    )
    # the widths a learner might divide by instead; two equal ones are named together (one slip cannot be told
    # from the other there)
    others: dict[int, list[str]] = {}
    for width, name in ((x.shape[-1], "the image features' width C_x"), (ctx.shape[-1], "the token states' width D"),
                        (v.shape[-1], "the values' width")):
        if width != d and name not in others.setdefault(width, []):
            others[width].append(name)
    for width, names in others.items():
        add(
            f"d in 1/√d is the query/key width, {d}, not {' (or '.join(names)}{')' * (len(names) - 1)}, {width}",
            (raw / math.sqrt(width)).masked_fill(hide, float("-inf")),
        )
    add(
        "set masked scores to −∞ (or a huge negative number), not to 0: a score of 0 still gets weight",
        (raw / math.sqrt(d)).masked_fill(hide, 0.0),
    )
    w = (raw / math.sqrt(d)).masked_fill(hide, -1e9).softmax(dim=-2)
    out["the softmax runs over the tokens (the last axis, L), so each image position's weights sum to 1"] = (
        w @ v,
        w,
    )
    w = (raw / math.sqrt(d)).softmax(dim=-1) * mask[:, None, :]
    out["mask the scores before the softmax; zeroing weights afterwards leaves rows that do not sum to 1"] = (
        w @ v,
        w,
    )
    return out


def _xattn_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    where = f" ({case.label})" if case.label else ""
    if not isinstance(got, dict) or not got.get("pair"):
        return [
            SubCheck("returns (out, weights)", False, 1, f"return a pair (out, weights){where}"),
            SubCheck("weights", False, 2, ""),
            SubCheck("out", False, 2, ""),
            SubCheck("padding ignored", False, 1, ""),
        ]
    checks = [SubCheck("returns (out, weights)", True, 1)]
    mistakes = _xattn_mistakes(case)
    named = False  # a known slip named: the padding line then needs no guesses about order or cached results
    for key, idx in (("weights", 1), ("out", 0)):
        sub = compare(got[key], expected[key], label=case.label)
        ok = all(c.passed for c in sub)
        msg = ""
        if not ok:
            msg = next(c.message for c in sub if not c.passed and c.message)
            diag = diagnose(got[key], {m: v[idx] for m, v in mistakes.items()}, equal_nan=True)
            named = named or bool(diag)
            msg = f"{key}: {msg}" + (f": {diag}" if diag else "")
        checks.append(SubCheck(key, ok, 2, msg))
    other = got.get("out_other_padding")
    same = other is not None and allclose(other, got["out"])
    try:
        nan = np.isnan(np.asarray(got["out"], dtype=np.float64))
        has_nan, nan_rows = bool(nan.any()), bool(nan.ndim >= 1 and nan.all(axis=-1).any())
    except (TypeError, ValueError):
        has_nan = nan_rows = False
    if same:
        pad_msg = ""
    elif nan_rows:  # NaN ≠ NaN: not evidence that the padding mattered
        pad_msg = (f"your output holds NaN{where}: a softmax over a row whose scores are all −inf gives NaN (a mask "
                   "applied along the wrong dimension, or inverted); the padding could not be judged")
    elif has_nan:
        pad_msg = (f"your output holds NaN in some entries{where}: find where it first appears (a division by zero, "
                   "a log or square root of a negative number); the padding could not be judged")
    elif named:
        pad_msg = (f"a second call with other states in the padded slots (mask False) changed your output{where}: "
                   "padded tokens must not matter (the slip named above lets them in)")
    else:
        pad_msg = (f"a second call with other states in the padded slots (mask False), and the image positions "
                   f"in another order, changed your output{where}: padded tokens must not matter, and each "
                   "position's output depends on that position alone (a result kept from an earlier call fails this)")
    checks.append(SubCheck("padding ignored", same, 1, pad_msg))
    return checks


register(
    Exercise(
        id="06.1",
        library_versions=("course_lib.nn.blocks.CrossAttention.forward",),
        lesson=LESSON,
        name="cross_attention",
        title="write single-head cross-attention with a key padding mask",
        reference=_cross_attention,
        cases=_xattn_cases,
        points=4,
        probe=_xattn_probe,
        judge=_xattn_judge,
        hint="queries from the image positions, keys and values from the tokens; scores scaled by 1/√d, "
        "padded tokens set to −∞ before a softmax over the token axis",
    )
)


# =============================================================================================
# 06.2 pooled_similarity
# =============================================================================================


def _pooled_similarity(tokens, mask):
    r"""Masked mean pooling and the cosine similarity of the pooled vectors.

        s̄_i = Σ_l m_il s_il / Σ_l m_il,     sim_ij = s̄_i · s̄_j / (‖s̄_i‖ ‖s̄_j‖)

    tokens: N×L×D token states (padded slots may hold anything), mask: N×L bool (True = real
    token; every prompt has at least one). Returns (pooled N×D, similarity N×N).
    """
    m = mask.to(tokens.dtype)[..., None]
    p = (tokens * m).sum(dim=1) / m.sum(dim=1)
    unit = p / p.norm(dim=1, keepdim=True)
    return p, unit @ unit.T


def _pool_cases(seed: int) -> list[Case]:
    g = _gen(seed, 62)

    def case(lengths, length, dim, label, shared=0.0):
        n = len(lengths)
        base = torch.randn((1, 1, dim), generator=g)
        tokens = torch.randn((n, length, dim), generator=g) + shared * base
        mask = _mask_from_lengths(lengths, length)
        return Case((_with_junk(tokens, mask, g, scale=4.0), mask), label=label)

    n = int(torch.randint(4, 7, (1,), generator=g))
    lengths = torch.randint(2, 9, (n,), generator=g).tolist()
    lengths[0] = 8
    return [
        case([5, 3, 6], 6, 16, "3 prompts, two padded", shared=1.0),
        case(lengths, 8, 12, f"{n} prompts of random lengths", shared=0.5),
        case([2, 4], 4, 384, "D = 384, as the course's encoder"),
        case([3], 5, 8, "a single prompt: its similarity to itself is 1"),
        case([1, 1, 4], 4, 6, "prompts with one real token"),
    ]


def _pool_probe(answer: Any, case: Case) -> dict:
    tokens, mask = case.args
    result = answer(tokens, mask)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return {"pair": False, "pooled": result, "similarity": None}
    return {"pair": True, "pooled": result[0], "similarity": result[1]}


_MAX_POOL = "pool with the masked mean of the real tokens' states, not their maximum"
_UNITS_FIRST = (
    "average the token states as they are: yours normalises each token to length 1 before pooling; only the "
    "pooled vectors are normalised, for the cosine"
)


def _pool_mistakes(case: Case) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    tokens, mask = case.args
    m = mask.to(tokens.dtype)[..., None]
    right = (tokens * m).sum(1) / m.sum(1)
    everything = tokens.mean(1)
    summed = (tokens * m).sum(1)
    over_length = (tokens * m).sum(1) / tokens.shape[1]

    def cos(p):
        u = p / p.norm(dim=1, keepdim=True)
        return u @ u.T

    hidden = (~mask).to(tokens.dtype)[..., None]
    padded_only = (tokens * hidden).sum(1) / hidden.sum(1)  # NaN for a prompt without padding
    dots = right @ right.T
    norms = right.norm(dim=1)
    # masked max pooling: the padded slots can never win
    maxed = tokens.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
    # each token state made a unit vector first, then the masked mean
    units_first = (tokens / tokens.norm(dim=2, keepdim=True) * m).sum(1) / m.sum(1)
    l1 = right / right.abs().sum(dim=1, keepdim=True)

    pad = "average only the real tokens (mask True): the padded slots hold junk states"
    inverted = "the mask is True at the real tokens: average where it is True, not where it is False (~mask)"
    pooled = {
        pad: everything,
        "divide by the number of real tokens, not by L": over_length,
        "pool with the mean of the real tokens, not their sum": summed,
        "divide each prompt's sum by its own number of real tokens (mask.sum(dim=1)), not by the count of the "
        "whole batch": summed / m.sum(),
        "pooled is the masked mean itself, not its unit vector: normalise a copy for the cosine only": right
        / norms[:, None],
        inverted: padded_only,
        _MAX_POOL: maxed,
        _UNITS_FIRST: units_first,
    }
    both = "divide each dot product by both norms, ‖s̄_i‖·‖s̄_j‖"
    sims = {
        pad: cos(everything),
        "normalise each pooled vector to length 1 before the dot products (cosine, not dot product)": dots,
        "normalise the pooled vectors (rows of N×D, dim=1), not the feature columns": (lambda u: u @ u.T)(
            right / right.norm(dim=0, keepdim=True)
        ),
        "p.norm() without dim= is the norm of the whole N×D matrix: normalise each row, "
        "p.norm(dim=1, keepdim=True)": dots / right.norm() ** 2,
        f"{both}, not by ‖s̄_i‖ alone": dots / norms[:, None],
        f"{both}, not by ‖s̄_j‖ alone": dots / norms[None, :],
        f"{both}: an (N,) tensor of squared norms divides the columns, giving s̄_i·s̄_j / ‖s̄_j‖²; use the outer "
        "product norms[:, None] * norms[None, :]": dots / (norms * norms),
        inverted: cos(padded_only),
        "the cosine divides by the Euclidean norms ‖s̄_i‖₂ = sqrt(Σ s̄²), not the L1 norms Σ |s̄| "
        "(p.norm(dim=1), whose default is p=2)": l1 @ l1.T,
        _MAX_POOL: cos(maxed),
        _UNITS_FIRST: cos(units_first),
    }
    return pooled, sims


def _pool_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    where = f" ({case.label})" if case.label else ""
    if not isinstance(got, dict) or not got.get("pair"):
        return [
            SubCheck("returns (pooled, similarity)", False, 1, f"return a pair (pooled, similarity){where}"),
            SubCheck("pooled", False, 2, ""),
            SubCheck("similarity", False, 2, ""),
        ]
    checks = [SubCheck("returns (pooled, similarity)", True, 1)]
    pooled_m, sims_m = _pool_mistakes(case)
    for key, mistakes in (("pooled", pooled_m), ("similarity", sims_m)):
        sub = compare(got[key], expected[key], label=case.label)
        ok = all(c.passed for c in sub)
        msg = ""
        if not ok:
            msg = next(c.message for c in sub if not c.passed and c.message)
            diag = diagnose(got[key], mistakes, equal_nan=True)  # an inverted mask gives rows of NaN
            msg = f"{key}: {msg}" + (f": {diag}" if diag else "")
        checks.append(SubCheck(key, ok, 2, msg))
    return checks


register(
    Exercise(
        id="06.2",
        library_versions=("course_lib.text.pooled",),
        lesson=LESSON,
        name="pooled_similarity",
        title="pool token states with the mask and compare prompts by cosine similarity",
        reference=_pooled_similarity,
        cases=_pool_cases,
        points=3,
        probe=_pool_probe,
        judge=_pool_judge,
        hint="weight each token by its mask, divide by the number of real tokens, then compare unit vectors",
    )
)


# =============================================================================================
# 06.3 caption_ids_with_dropout
# =============================================================================================


def _caption_ids_with_dropout(labels, phrasing_u, drop_u, counts, p):
    r"""The caption-table row each training image reads, with condition dropout.

    The table is [""] + class 0's phrasings + class 1's + …, so class k's phrasings start at
    row first_k = 1 + Σ_{j<k} counts_j (row 0 is the empty prompt, the null condition). Image i
    with label y_i gets phrasing j_i = min(⌊u_i · counts_{y_i}⌋, counts_{y_i} − 1) and reads row
    first_{y_i} + j_i, unless its condition is dropped (drop_u_i < p), when it reads row 0.

    labels: int64 (N,) in 0..K−1; phrasing_u, drop_u: float (N,) in [0, 1); counts: int64 (K,),
    phrasings per class (each ≥ 1); p: the dropout probability in [0, 1]. Returns int64 (N,).
    """
    labels = labels.long()
    counts = counts.long()
    first = 1 + torch.cumsum(counts, 0) - counts
    n_phrasings = counts[labels]
    pick = torch.minimum((phrasing_u * n_phrasings).floor().long(), n_phrasings - 1)
    ids = first[labels] + pick
    return torch.where(drop_u < p, torch.zeros_like(ids), ids)


def _ids_cases(seed: int) -> list[Case]:
    g = _gen(seed, 63)

    def case(n, counts, p, label, phrasing_u=None, drop_u=None, labels=None):
        counts = torch.tensor(counts)
        k = len(counts)
        labels = torch.randint(0, k, (n,), generator=g) if labels is None else torch.tensor(labels)
        phrasing_u = torch.rand(n, generator=g) if phrasing_u is None else torch.tensor(phrasing_u)
        drop_u = torch.rand(n, generator=g) if drop_u is None else torch.tensor(drop_u)
        return Case((labels, phrasing_u, drop_u, counts, p), label=label)

    counts = torch.randint(1, 6, (7,), generator=g).tolist()
    counts[int(torch.randint(0, 7, (1,), generator=g))] = 1
    n = 12
    return [
        case(12, [5] * 10, 0.1, "10 classes of 5 phrasings, p = 0.1"),
        case(n, counts, 0.3, f"7 classes with {counts} phrasings, p = 0.3"),
        case(
            6,
            [3, 2, 4],
            0.25,
            "uniforms at the edges: 0 picks the first phrasing, 0.9999 the last",
            phrasing_u=[0.0, 0.9999, 0.5, 0.6, 0.9999, 0.26],
            drop_u=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
            labels=[0, 0, 0, 1, 2, 2],
        ),
        case(
            8,
            [4, 1, 3],
            0.0,
            "p = 0 drops nothing, even where drop_u = 0",
            drop_u=[0.0, 0.5, 0.2, 0.9, 0.0, 0.3, 0.7, 0.1],
        ),
        case(5, [2, 5, 3], 1.0, "p = 1 drops every condition"),
        case(10, [3, 3, 3, 3], 0.5, "p = 0.5, the first class included", labels=[0, 1, 0, 2, 3, 0, 1, 3, 0, 2]),
    ]


def _ids_mistakes(case: Case) -> dict[str, torch.Tensor | None]:
    labels, u, d, counts, p = case.args
    first = 1 + torch.cumsum(counts, 0) - counts
    pick = torch.minimum((u * counts[labels]).floor().long(), counts[labels] - 1)
    reversed_strict = torch.where(d > p, torch.zeros_like(labels), first[labels] + pick)
    reversed_loose = torch.where(d >= p, torch.zeros_like(labels), first[labels] + pick)
    out = {
        # > p and ≥ p differ only where drop_u equals p (p = 0 with a drop_u of 0): one message for both elsewhere
        "drop the condition where drop_u < p (probability p), not where drop_u > p or ≥ p: that keeps exactly the "
        "conditions to drop": reversed_strict,
        "row 0 is the empty prompt: class 0's first phrasing is row 1, so add 1 to every kept (not dropped) "
        "index": torch.where(d < p, torch.zeros_like(labels), first[labels] + pick - 1),
        "class k starts after the phrasings of classes 0..k−1 (an exclusive cumulative sum), not after 0..k": (
            torch.where(d < p, torch.zeros_like(labels), 1 + torch.cumsum(counts, 0)[labels] + pick)
        ),
        "the phrasing index is ⌊u · counts[label]⌋, rounded down (floor), not to the nearest": torch.where(
            d < p,
            torch.zeros_like(labels),
            first[labels] + torch.minimum((u * counts[labels]).round().long(), counts[labels] - 1),
        ),
        "with p = 0 nothing is dropped: the rule is drop_u < p, strictly": torch.where(
            d <= p, torch.zeros_like(labels), first[labels] + pick
        ),
        "drop the condition where drop_u < p, not where drop_u ≥ p: that keeps exactly the conditions to drop": (
            None if torch.equal(reversed_loose, reversed_strict) else reversed_loose
        ),
        "apply the dropout: where drop_u < p the image reads row 0, the empty prompt": first[labels] + pick,
        "a dropped condition reads row 0, the empty prompt, not its class's first phrasing: set the whole row "
        "index to 0, not only the phrasing index": torch.where(d < p, first[labels], first[labels] + pick),
        "the phrasing index is ⌊u · counts[label]⌋: scale u by that class's own count": torch.where(
            d < p,
            torch.zeros_like(labels),
            first[labels] + torch.minimum((u * counts.max()).floor().long(), counts[labels] - 1),
        ),
        "scale u by counts[label], not counts[label] − 1: ⌊u · counts[label]⌋ reaches every phrasing, the last "
        "one included": torch.where(
            d < p, torch.zeros_like(labels), first[labels] + (u * (counts[labels] - 1)).floor().long()
        ),
        "class k's phrasings start after all those of classes 0..k−1 (a cumulative sum of counts), not at "
        "1 + k·counts[k]: the classes have different counts": torch.where(
            d < p, torch.zeros_like(labels), 1 + labels * counts[labels] + pick
        ),
        "add the phrasing index ⌊u · counts[label]⌋ to the row of the class's first phrasing": torch.where(
            d < p, torch.zeros_like(labels), first[labels]
        ),
    }
    return out


def _other_null_row(case: Case, got: Any, expected: Any) -> str:
    """The sentence for dropped conditions that all read one row other than 0 (−1, say), every kept one
    right; '' when that is not what ``got`` shows."""
    g, e = as_float_array(got), as_float_array(expected)
    if g is None or e is None or g.shape != e.shape or g.ndim != 1:
        return ""
    dropped = e == 0
    if not dropped.any() or not np.array_equal(g[~dropped], e[~dropped]):
        return ""
    values = np.unique(g[dropped])
    if len(values) != 1 or values[0] == 0 or not np.isfinite(values[0]):
        return ""
    return f"a dropped condition reads row 0, the empty prompt (the null condition), not {values[0]:g}"


def _own_draws(case: Case, got: Any) -> str:
    """The sentence for an answer that draws its own uniforms (``torch.rand``) instead of using the given
    ``drop_u`` or ``phrasing_u``: every row it picks is a row of the image's own class (or 0), yet the dropped
    set, or the phrasings, differ from the given draws'. '' when that is not what ``got`` shows."""
    g = as_float_array(got)
    labels, u, d, counts, p = case.args
    if g is None or g.shape != tuple(labels.shape) or not np.isfinite(g).all():
        return ""
    first = (1 + torch.cumsum(counts, 0) - counts)[labels].numpy()
    last = first + counts[labels].numpy() - 1
    own_class = (g == 0) | ((g >= first) & (g <= last))
    if not own_class.all():
        return ""
    dropped = (d < p).numpy()
    if not np.array_equal(g == 0, dropped):
        return (
            "the dropped conditions are not those where drop_u < p: use the drop_u you are given; an answer that "
            "draws its own torch.rand cannot be checked, or repeated with a seed"
        )
    pick = torch.minimum((u * counts[labels]).floor().long(), counts[labels] - 1).numpy()
    if not np.array_equal(g[~dropped], (first + pick)[~dropped]):
        return (
            "each row is one of its class's phrasings, but not the one ⌊phrasing_u · counts[label]⌋ picks: use the "
            "phrasing_u you are given, not a draw of your own"
        )
    return ""


def _ids_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    sub = compare(got, expected, rtol=0.0, atol=0.0, label=case.label)
    if all(c.passed for c in sub):
        return sub
    diag = diagnose(got, _ids_mistakes(case)) or _other_null_row(case, got, expected) or _own_draws(case, got)
    if diag:
        for c in sub:
            if not c.passed and c.message:
                c.message = f"{c.message}: {diag}"
    return sub


register(
    Exercise(
        id="06.3",
        library_versions=("course_lib.text.caption_ids", "course_lib.guidance.drop_condition"),
        lesson=LESSON,
        name="caption_ids_with_dropout",
        title="pick each image's caption row, with condition dropout",
        reference=_caption_ids_with_dropout,
        cases=_ids_cases,
        points=3,
        judge=_ids_judge,
        hint="row 0 is the empty prompt and class k's phrasings follow those of classes 0..k−1; "
        "a condition is dropped with probability p",
    )
)

r"""Graded exercises of lesson 10, ControlNet, DiT and flow matching (``solutions/10_controlnet_dit_flow.ipynb``).

10.1  ``patchify(x, p)``                                 DiT's tokens: N×C×H×W → N×L×(p·p·C)
10.2  ``unpatchify(tokens, p, channels, height, width)``  and back: N×L×(p·p·C) → N×C×H×W
10.3  ``flow_training_pair(x0, eps, t)``                 rectified flow's point x_t and its velocity target
10.4  ``euler_flow_sample(velocity, x1, steps, shift)``  the Euler sampler from t = 1 down to 0 on SD3's
                                                         shifted times
10.5  ``ControlledBlock(block, channels, hint_channels)`` one level of ControlNet: a frozen block and its
                                                         trainable copy, joined by zero convolutions

The references are written from the maths with plain torch, independently of ``course_lib.nn.dit``,
``course_lib.flow`` and ``course_lib.nn.controlnet``; tests/test_grading_lesson10.py checks them
against those modules and against loops. Every judge adds a diagnosis to a failed check when the
answer matches a known slip (patches flattened channel first as F.unfold does, the patch grid
walked by columns, the velocity's sign flipped, t and 1 − t swapped, the shift inverted, the copy
frozen along with the block, a default-initialised "zero" convolution …).
"""

from __future__ import annotations

import copy as _copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.grading.checks import allclose, as_float_array, diagnose, with_diagnosis
from course_lib.grading.checks import case_generator as _gen
from course_lib.grading.checks import randint_in as _randint
from course_lib.grading.checks import uniform_in as _uniform
from course_lib.grading.exercise import Case, Exercise, SubCheck, compare, register

LESSON = "10_controlnet_dit_flow"

#: The label's end for a case that repeats an earlier case's shapes with other values: it catches an answer that keeps
#: its results by the inputs' shapes.
_AGAIN = "again, with other values (an answer must compute each call afresh)"

__all__ = ["LESSON"]


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _randn(g: torch.Generator, *shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def _raised(fn, what: str) -> dict:
    """Run ``fn`` on a case that must raise ValueError because ``what``: ``{"raised": "ValueError"}``,
    or ``{"raised": None}`` if it returned. Any other exception propagates, its message extended with
    what was expected, so that the case counts as an error (and an answer that always raises is one)."""
    try:
        fn()
    except NotImplementedError:
        raise
    except ValueError as e:  # subclasses count: it is a ValueError
        return {"raised": "ValueError", "message": str(e)[:200]}
    except Exception as e:  # the learner's code: say which error it was and what was wanted
        msg = (
            f"{what}: check the shapes first and raise a ValueError that says what was expected "
            f"(yours raised {type(e).__name__}: {str(e)[:200]})"
        )
        try:
            err = type(e)(msg)
        except Exception:  # an exception class with its own signature
            err = RuntimeError(msg)
        raise err from None
    return {"raised": None}


def _invalid_judge(case: Case, got: Any, what: str) -> list[SubCheck]:
    """The sub-check of a case whose input is wrong on purpose: the answer must raise ValueError."""
    where = f" ({case.label})" if case.label else ""
    raised = got.get("raised", "?") if isinstance(got, dict) else "?"
    ok = raised == "ValueError"
    if ok:
        msg = ""
    elif raised is None:
        msg = f"your function returned a result, but {what}: raise a ValueError that says what was expected{where}"
    else:
        msg = (
            f"{what}: check the shapes first and raise a ValueError that says what was expected, "
            f"not {raised} from deeper inside{where}"
        )
    return [SubCheck("raises ValueError", ok, 3, msg)]


def _not_finite(got: Any) -> str:
    """A diagnosis for outputs holding NaN or ±inf ('' if they are finite or not numbers)."""
    arr = as_float_array(got)
    if arr is not None and arr.size and not np.all(np.isfinite(arr)):
        return "your output holds NaN or inf values"
    return ""


def _shape_of(x: Any) -> tuple | None:
    arr = as_float_array(x)
    return None if arr is None else tuple(arr.shape)


# =============================================================================================
# 10.1  patchify
# =============================================================================================


def _patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    r"""Cut N×C×H×W images into p×p patches, one token per patch, as DiT does.

    The patch grid has h = H/p rows and w = W/p columns; the L = h·w tokens run over it row by row,
    and each token lists its patch's pixels row by row, with the C channels of a pixel together:

        tokens[n, i·w + j, (a·p + b)·C + c] = x[n, c, i·p + a, j·p + b]
        (0 ≤ i < h, 0 ≤ j < w: the patch; 0 ≤ a, b < p: the pixel in it; 0 ≤ c < C)

    x: N×C×H×W, p: int ≥ 1 dividing H and W. Returns N×L×(p·p·C), L = (H/p)·(W/p), x's dtype.
    Raises ValueError when x is not 4-D or p does not divide H and W.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        got = f"{x.dim()} dims" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be N×C×H×W, got {got}")
    N, C, H, W = x.shape
    if isinstance(p, bool) or not isinstance(p, int) or p < 1 or H % p or W % p:
        raise ValueError(f"the patch size p must be an int ≥ 1 dividing H = {H} and W = {W}, got {p!r}")
    h, w = H // p, W // p
    grid = x.reshape(N, C, h, p, w, p)  # n, c, i, a, j, b
    return grid.permute(0, 2, 4, 3, 5, 1).reshape(N, h * w, p * p * C)  # n, (i, j), (a, b, c)


_PATCH_INVALID = "p does not divide the image's height"


def _patchify_invalid(case: Case) -> bool:
    x, p = case.args
    return x.shape[2] % p != 0 or x.shape[3] % p != 0


def _patchify_cases(seed: int) -> list[Case]:
    g = _gen(seed, 101)
    N = _randint(g, 2, 4)
    p = (2, 4)[_randint(g, 0, 1)]
    gh = _randint(g, 2, 4)
    gw = gh + _randint(g, 1, 2)  # a grid that is not square, so that rows and columns differ
    bad_p = (3, 4)[_randint(g, 0, 1)]
    bad_h = bad_p * _randint(g, 2, 4) + _randint(g, 1, bad_p - 1)
    return [
        Case((_randn(g, 2, 3, 8, 8), 2), label="2 RGB images 8×8, p = 2"),
        Case(
            (_randn(g, N, 4, p * gh, p * gw), p),
            label=f"{N} latents 4×{p * gh}×{p * gw} (a {gh}×{gw} grid of patches), p = {p}",
        ),
        Case((_randn(g, 2, 1, 32, 32), 4), label="the course's DiT: 1×32×32 images, p = 4 (64 tokens of 16 values)"),
        Case((_randn(g, 1, 3, 4, 6, dtype=torch.float64), 1), label="p = 1: one token per pixel, float64"),
        Case((_randn(g, 3, 2, 4, 4), 4), label="p = H = W = 4: one token per image"),
        Case((_randn(g, 1, 3, 6, 10), 2), label="one RGB image 6×10, p = 2 (a 3×5 grid)"),
        Case((_randn(g, 2, 3, 8, 8), 2), label=f"2 RGB images 8×8, p = 2, {_AGAIN}"),
        Case(
            (_randn(g, 2, 1, bad_h, 2 * bad_p), bad_p),
            label=f"H = {bad_h} is not a multiple of p = {bad_p}: raise ValueError",
            weight=0.5,
        ),
        Case(  # p divides H here, not W: an answer that checks H only must not crop the columns silently
            (_randn(g, 1, 1, 2 * bad_p, bad_h), bad_p),
            label=f"W = {bad_h} is not a multiple of p = {bad_p} (H is): raise ValueError",
            weight=0.5,
        ),
    ]


def _patchify_probe(answer: Any, case: Case) -> Any:
    x, p = case.args
    if _patchify_invalid(case):
        return _raised(lambda: answer(x.clone(), p), _PATCH_INVALID)
    return answer(x, p)


def _patch_mistakes(x: torch.Tensor, p: int) -> dict[str, torch.Tensor]:
    """What the usual slips of patchify give on x (float64, N×L×(p·p·C))."""
    x = x.to(torch.float64)
    N, C, H, W = x.shape
    h, w = H // p, W // p
    grid = x.reshape(N, C, h, p, w, p)  # n, c, i, a, j, b

    def tokens(*perm):
        return grid.permute(*perm).reshape(N, h * w, p * p * C)

    return {
        "each token must list a patch's pixels with their C channels together, (row, column, channel): "
        "index (a·p + b)·C + c; you flattened the patch channel first, as F.unfold or a stride-p convolution "
        "does": tokens(0, 2, 4, 1, 3, 5),
        "the tokens must run over the patch grid row by row (token i·(W/p) + j is the patch in grid row i, "
        "column j); yours run column by column": tokens(0, 4, 2, 3, 5, 1),
        "inside a patch the pixels go row by row, (a, b) with a the row in the patch; yours go column by "
        "column": tokens(0, 2, 4, 5, 3, 1),
        "you swapped H and W (as if the image were transposed): the tokens run over the grid row by row, "
        "i·(W/p) + j, and each patch's pixels row by row, (a, b) with a the row": tokens(0, 4, 2, 5, 3, 1),
        "you swapped H and W: split H, the third axis, into (H/p, p) and W, the fourth, into (W/p, p)": x.reshape(
            N, C, w, p, h, p
        )
        .permute(0, 2, 4, 3, 5, 1)
        .reshape(N, h * w, p * p * C),
        "a plain reshape of N×C×H×W does not cut patches: split H into (H/p, p) and W into (W/p, p), "
        "permute, then flatten": x.reshape(N, h * w, p * p * C),
        "reshaping the N×H×W×C image straight to N×L×(p·p·C) takes p·p pixels along a row, not a p×p patch: "
        "split H into (H/p, p) and W into (W/p, p) first": x.permute(0, 2, 3, 1).reshape(N, h * w, p * p * C),
    }


def _patchify_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    if _patchify_invalid(case):
        return _invalid_judge(case, got, _PATCH_INVALID)
    x, p = case.args
    checks = compare(got, expected, rtol=1e-6, atol=1e-7, label=case.label)
    if all(c.passed for c in checks):
        return checks
    N, C, H, W = x.shape
    L, D = (H // p) * (W // p), p * p * C
    shape = _shape_of(got)
    diagnosis = _not_finite(got)
    if not diagnosis and shape == tuple(np.shape(expected)):
        diagnosis = diagnose(got, _patch_mistakes(x, p), expected=expected, rtol=1e-6, atol=1e-7)
    elif not diagnosis and shape == (N, D, L):
        diagnosis = f"tokens are the rows: return N×L×(p·p·C) = {N}×{L}×{D}, not N×(p·p·C)×L"
    elif not diagnosis and shape is not None and len(shape) != 3:
        diagnosis = f"return N×L×(p·p·C) = {N}×{L}×{D}: one row of p·p·C values per patch, the grid flattened"
    return with_diagnosis(checks, diagnosis, name=None)


register(
    Exercise(
        id="10.1",
        library_versions=("course_lib.nn.dit.patchify",),
        lesson=LESSON,
        name="patchify",
        title="write patchify",
        reference=_patchify,
        cases=_patchify_cases,
        probe=_patchify_probe,
        judge=_patchify_judge,
        points=2,
        hint="reshape N×C×H×W to N×C×(H/p)×p×(W/p)×p, permute to N×(H/p)×(W/p)×p×p×C and flatten to "
        "N×L×(p·p·C); raise ValueError when p does not divide H and W.",
    )
)


# =============================================================================================
# 10.2  unpatchify
# =============================================================================================


def _unpatchify(tokens: torch.Tensor, p: int, channels: int, height: int, width: int) -> torch.Tensor:
    r"""The inverse of patchify: put every token back as its p×p patch.

        x[n, c, i·p + a, j·p + b] = tokens[n, i·w + j, (a·p + b)·C + c],   h = H/p, w = W/p

    tokens: N×L×(p·p·C) with L = (H/p)·(W/p); p, channels = C, height = H, width = W: ints, p dividing
    H and W. Returns N×C×H×W, the tokens' dtype, so that unpatchify(patchify(x, p), p, C, H, W) == x.
    Raises ValueError when the tokens' shape does not fit p, C, H and W.
    """
    C, H, W = int(channels), int(height), int(width)
    if isinstance(p, bool) or not isinstance(p, int) or p < 1 or H % p or W % p:
        raise ValueError(f"the patch size p must be an int ≥ 1 dividing H = {H} and W = {W}, got {p!r}")
    h, w = H // p, W // p
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3 or tuple(tokens.shape[1:]) != (h * w, p * p * C):
        got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be N×{h * w}×{p * p * C} for p = {p}, C = {C}, {H}×{W} images, got {got}")
    N = tokens.shape[0]
    grid = tokens.reshape(N, h, w, p, p, C)  # n, i, j, a, b, c
    return grid.permute(0, 5, 1, 3, 2, 4).reshape(N, C, H, W)  # n, c, (i, a), (j, b)


_UNPATCH_INVALID = "the tokens' shape does not fit p, C, H and W"


def _unpatchify_invalid(case: Case) -> bool:
    tokens, p, C, H, W = case.args
    return tuple(tokens.shape[1:]) != ((H // p) * (W // p), p * p * C)


def _unpatchify_cases(seed: int) -> list[Case]:
    g = _gen(seed, 102)

    def tokens_for(N, C, H, W, p, dtype=torch.float32):
        return (_randn(g, N, (H // p) * (W // p), p * p * C, dtype=dtype), p, C, H, W)

    N = _randint(g, 2, 4)
    p = (2, 4)[_randint(g, 0, 1)]
    gh = _randint(g, 2, 4)
    gw = gh + _randint(g, 1, 2)
    bad_side = 4 * _randint(g, 2, 4)
    bad_L = bad_side * bad_side // 8
    bad_tokens = _randn(g, 2, bad_L, 8)  # as many values as 2 images 1×side×side, but tokens of 8, not 4
    return [
        Case(tokens_for(2, 3, 8, 8, 2), label="tokens of 2 RGB images 8×8, p = 2"),
        Case(tokens_for(N, 4, p * gh, p * gw, p), label=f"{N} latents 4×{p * gh}×{p * gw}, p = {p}"),
        Case(tokens_for(2, 1, 32, 32, 4), label="the course's DiT: 64 tokens of 16 values, 1×32×32 images, p = 4"),
        Case(tokens_for(1, 3, 4, 6, 1, torch.float64), label="p = 1: one token per pixel, float64"),
        Case(tokens_for(3, 2, 4, 4, 4), label="p = H = W = 4: one token per image"),
        Case(tokens_for(1, 3, 6, 10, 2), label="one RGB image 6×10, p = 2 (a 3×5 grid)"),
        Case(tokens_for(2, 3, 8, 8, 2), label=f"tokens of 2 RGB images 8×8, p = 2, {_AGAIN}"),
        Case(
            (bad_tokens, 2, 1, bad_side, bad_side),
            label=f"tokens 2×{bad_L}×8 for p = 2, C = 1, {bad_side}×{bad_side} images (which need "
            f"{(bad_side // 2) ** 2} tokens of 4; the number of values fits): raise ValueError",
            weight=0.5,
        ),
        # each dimension of the tokens wrong on its own: an answer that checks only one of them must still refuse
        Case(
            (_randn(g, 2, (bad_side // 2) ** 2, 8), 2, 1, bad_side, bad_side),
            label=f"tokens 2×{(bad_side // 2) ** 2}×8 for p = 2, C = 1: the right number of tokens, each of 8 values "
            "instead of 4: raise ValueError",
            weight=0.25,
        ),
        Case(
            (_randn(g, 2, (bad_side // 2) ** 2 - 1, 4), 2, 1, bad_side, bad_side),
            label=f"tokens 2×{(bad_side // 2) ** 2 - 1}×4 for p = 2, C = 1: tokens of the right width, one too few: "
            "raise ValueError",
            weight=0.25,
        ),
    ]


def _unpatchify_probe(answer: Any, case: Case) -> Any:
    tokens, *rest = case.args
    if _unpatchify_invalid(case):
        return _raised(lambda: answer(tokens.clone(), *rest), _UNPATCH_INVALID)
    return answer(tokens, *rest)


def _unpatch_mistakes(case: Case) -> dict[str, torch.Tensor]:
    """Each slip of patchify, undone: the image an unpatchify that inverts the wrong order gives."""
    tokens, p, C, H, W = case.args
    N = tokens.shape[0]
    index = torch.arange(N * C * H * W, dtype=torch.float64).reshape(N, C, H, W)
    flat = tokens.to(torch.float64).reshape(-1)
    out = {}
    for message, order in _patch_mistakes(index, p).items():
        image = torch.empty(N * C * H * W, dtype=torch.float64)
        image[order.reshape(-1).long()] = flat  # the token value k goes back where the slip took it from
        out[message.replace("you flattened", "you read").replace("yours run", "yours are read")] = image.reshape(
            N, C, H, W
        )
    h, w = H // p, W // p
    grid = tokens.to(torch.float64).reshape(N, h, w, p, p, C)  # n, i, j, a, b, c
    out[
        "patchify's permute(0, 2, 4, 3, 5, 1) does not undo itself: from N×(H/p)×(W/p)×p×p×C go back to "
        "N×C×(H/p)×p×(W/p)×p with its inverse, permute(0, 5, 1, 3, 2, 4)"
    ] = grid.permute(0, 2, 4, 3, 5, 1).reshape(N, C, H, W)
    return out


def _unpatchify_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    if _unpatchify_invalid(case):
        return _invalid_judge(case, got, _UNPATCH_INVALID)
    tokens, p, C, H, W = case.args
    checks = compare(got, expected, rtol=1e-6, atol=1e-7, label=case.label)
    if all(c.passed for c in checks):
        return checks
    N = tokens.shape[0]
    shape = _shape_of(got)
    diagnosis = _not_finite(got)
    if not diagnosis and shape == tuple(np.shape(expected)):
        diagnosis = diagnose(got, _unpatch_mistakes(case), expected=expected, rtol=1e-6, atol=1e-7)
    elif not diagnosis and shape == (N, H, W, C) and C > 1:
        diagnosis = f"return channels first, N×C×H×W = {N}×{C}×{H}×{W}"
    elif not diagnosis and shape is not None:
        diagnosis = f"return the images, N×C×H×W = {N}×{C}×{H}×{W}"
    return with_diagnosis(checks, diagnosis, name=None)


register(
    Exercise(
        id="10.2",
        library_versions=("course_lib.nn.dit.unpatchify", "course_lib.nn.dit.patchify"),
        lesson=LESSON,
        name="unpatchify",
        title="write unpatchify",
        reference=_unpatchify,
        cases=_unpatchify_cases,
        probe=_unpatchify_probe,
        judge=_unpatchify_judge,
        points=2,
        hint="undo patchify step by step: reshape to N×(H/p)×(W/p)×p×p×C, permute to N×C×(H/p)×p×(W/p)×p, "
        "reshape to N×C×H×W; raise ValueError when the tokens are not N×(H/p·W/p)×(p·p·C).",
    )
)


# =============================================================================================
# 10.3  flow_training_pair
# =============================================================================================


def _flow_training_pair(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Rectified flow's training input and target: the point on the straight path and its velocity.

        x_t = (1 − t)·x_0 + t·ε          (t = 0: the data, t = 1: pure noise)
        v   = dx_t/dt = ε − x_0          (the same at every t: the path is a straight line)

    x0, eps: N×C×H×W (any N×…, one shape); t: (N,), one time in [0, 1] per sample, broadcast over
    the other axes. Returns (x_t, v), both of x0's shape.
    """
    if not isinstance(x0, torch.Tensor) or not isinstance(eps, torch.Tensor) or x0.shape != eps.shape:
        raise ValueError("x0 and eps must be tensors of one shape")
    t = torch.as_tensor(t)
    if x0.dim() < 1 or t.shape != (x0.shape[0],):
        raise ValueError(f"t must have shape ({x0.shape[0]},), one time per sample, got {tuple(t.shape)}")
    tt = t.to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))
    return (1 - tt) * x0 + tt * eps, eps - x0


def _pair_cases(seed: int) -> list[Case]:
    g = _gen(seed, 103)

    def pair(N, C, H, W, t, dtype=torch.float32):
        return (_randn(g, N, C, H, W, dtype=dtype), _randn(g, N, C, H, W, dtype=dtype), t.to(dtype))

    N = _randint(g, 3, 6)
    f64 = torch.float64
    return [
        Case(pair(N, 1, 8, 8, torch.rand(N, generator=g, dtype=f64)), label=f"{N} images 1×8×8, t uniform in [0, 1]"),
        Case(pair(2, 3, 4, 4, torch.tensor([0.0, 1.0])), label="t = 0 (the data) and t = 1 (pure noise)"),
        Case(
            pair(5, 2, 3, 5, torch.rand(5, generator=g, dtype=f64)),
            label="5 images 2×3×5: N = W, so t must broadcast along the batch, not the width",
        ),
        Case(
            pair(3, 4, 6, 6, torch.sigmoid(torch.randn(3, generator=g, dtype=f64)), dtype=f64),
            label="3 float64 latents 4×6×6, logit-normal t as in SD3",
        ),
        Case(pair(1, 1, 5, 7, torch.rand(1, generator=g, dtype=f64)), label="a batch of 1, 1×5×7"),
        Case(
            pair(4, 3, 2, 2, torch.tensor([0.5, 0.25, 0.75, 0.5])),
            label="t = ½, ¼, ¾, ½ on 4 images 3×2×2",
        ),
        Case(pair(2, 3, 4, 4, torch.tensor([0.3, 0.8])), label=f"2 images 3×4×4, t = 0.3 and 0.8: {_AGAIN}"),
    ]


def _pair_mistakes(case: Case, which: str) -> dict[str, torch.Tensor | None]:
    x0, eps, t = (a.to(torch.float64) for a in case.args)
    tt = t.reshape(-1, *([1] * (x0.dim() - 1)))
    if which == "x_t":
        out: dict[str, torch.Tensor | None] = {
            "x_t = (1 − t)·x0 + t·ε: t = 0 is the data and t = 1 the noise; you swapped t and 1 − t": tt * x0
            + (1 - tt) * eps,
            "rectified flow joins x0 and ε by a straight line, with weights 1 − t and t; square roots of them "
            "belong to the variance-preserving (DDPM) path": (1 - tt).sqrt() * x0 + tt.sqrt() * eps,
            "the data's weight must fall as t grows: x_t = (1 − t)·x0 + t·ε, not x0 + t·ε": x0 + tt * eps,
        }
        if x0.shape[-1] == x0.shape[0]:
            tw = t.reshape(*([1] * (x0.dim() - 1)), -1)
            out[
                "t holds one time per sample: reshape it to N×1×1×1 so that it broadcasts over C, H and W "
                "(as an (N,) tensor it broadcasts along the width)"
            ] = (1 - tw) * x0 + tw * eps
        return out
    return {
        "the velocity is dx_t/dt = ε − x0 (from the data towards the noise); yours has the sign flipped": x0 - eps,
        "the target is the velocity ε − x0, not the noise ε (that is the DDPM objective)": eps,
        "the target is the velocity ε − x0, not the data x0": x0,
        "the velocity of a straight path is the same at every t: ε − x0, with no factor t": tt * (eps - x0),
        "the target is the velocity ε − x0, not the noisy point x_t": (1 - tt) * x0 + tt * eps,
    }


def _pair_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    where = f" ({case.label})"
    if not isinstance(got, (list, tuple)) or len(got) != 2:
        what = f"a sequence of length {len(got)}" if isinstance(got, (list, tuple)) else type(got).__name__
        if isinstance(got, np.ndarray):  # a tensor reaches the judge as an array
            what = (f"one tensor of shape {tuple(got.shape)} (torch.stack or torch.cat makes one tensor of the two: "
                    "return them as a tuple, `return x_t, v`)")
        if isinstance(got, dict):
            what = f"a dict{' ' + got['__object__'] if '__object__' in got else ''}"
        return [
            SubCheck("type", False, 1, f"return a pair (x_t, v) of tensors, got {what}{where}"),
            SubCheck("x_t: values", False, 3, ""),
            SubCheck("v: values", False, 3, ""),
        ]
    checks = []
    try:  # (v, x_t): each tensor right, in the other's place
        swapped = (
            not allclose(expected[0], expected[1], rtol=1e-4, atol=1e-5)
            and allclose(got[0], expected[1], rtol=1e-4, atol=1e-5)
            and allclose(got[1], expected[0], rtol=1e-4, atol=1e-5)
        )
    except Exception:  # noqa: BLE001 - whatever came back, the checks below report it
        swapped = False
    for i, name in enumerate(("x_t", "v")):
        part = compare(got[i], expected[i], rtol=1e-4, atol=1e-5, label=case.label)
        for c in part:
            if c.name == "values":  # the path and the velocity are the exercise's two halves, weighed alike
                c.weight = 3.0
            c.name = f"{name}: {c.name}"
            if c.message:
                c.message = f"{name}: {c.message}"
        if not all(c.passed for c in part):
            diagnosis = _not_finite(got[i])
            if diagnosis and name == "v":
                diagnosis += " (a division by t = 0?): compute ε − x0 directly, not (x_t − x0)/t"
            if not diagnosis and swapped:
                diagnosis = "return the pair as (x_t, v), in that order: yours came back as (v, x_t)"
            elif not diagnosis and _shape_of(got[i]) == tuple(np.shape(expected[i])):
                diagnosis = diagnose(got[i], _pair_mistakes(case, name), expected=expected[i], rtol=1e-4, atol=1e-5)
            elif not diagnosis:
                diagnosis = f"{name} has the shape of x0, {tuple(case.args[0].shape)}"
            with_diagnosis(part, diagnosis, name=None)
        checks += part
    return checks


register(
    Exercise(
        id="10.3",
        library_versions=("course_lib.flow.flow_interpolate", "course_lib.flow.flow_target"),
        lesson=LESSON,
        name="flow_training_pair",
        title="write flow_training_pair",
        reference=_flow_training_pair,
        cases=_pair_cases,
        judge=_pair_judge,
        points=2,
        hint="x_t = (1 − t)·x0 + t·ε with t reshaped to N×1×1×1, and v = ε − x0: t = 0 is the data, t = 1 the "
        "noise, and the velocity points from the data to the noise.",
    )
)


# =============================================================================================
# 10.4  euler_flow_sample
# =============================================================================================


def _shift(t: float, shift: float) -> float:
    return shift * t / (1 + (shift - 1) * t)


def _euler_flow_sample(velocity, x1: torch.Tensor, steps: int, shift: float = 1.0) -> torch.Tensor:
    r"""Integrate dx/dt = v(x, t) with Euler steps from t = 1 (x1, pure noise) down to t = 0.

    The times: steps + 1 evenly spaced values from 1 to 0, then SD3's shift (s = ``shift``):

        t_i = σ_s(1 − i/steps),   σ_s(t) = s·t / (1 + (s − 1)·t),   i = 0 … steps
        x ← x + (t_{i+1} − t_i)·velocity(x, t_i),                    i = 0 … steps − 1

    t_{i+1} < t_i, so each step moves against the velocity. σ_s keeps 0 and 1 where they are and,
    for s > 1, spends more of the steps near t = 1 (high noise). ``velocity(x, t)`` takes x of x1's
    shape and t as a Python float and is called once per step, at the step's start t_i.
    x1: N×C×H×W. Returns x at t = 0, x1's shape.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int ≥ 1, got {steps!r}")
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a positive number, got {shift!r}")
    ts = [_shift(1 - i / steps, shift) for i in range(steps + 1)]
    x = x1
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t) * velocity(x, t)
    return x


def _field(kind: str, params: tuple, x: torch.Tensor, t: float) -> torch.Tensor:
    """The velocity fields of the cases: a linear field whose strength turns with t, or the exact
    velocity of a single image x*, (x − x*)/t, along whose straight paths Euler is exact."""
    if kind == "exact":
        (target,) = params
        return (x - target.to(x.dtype)) / t
    u, a, omega = params
    return -(a + 0.5 * math.cos(omega * t)) * x + math.sin(omega * t + 0.3) * u.to(x.dtype)


def _sampler_cases(seed: int) -> list[Case]:
    g = _gen(seed, 104)

    def turning(shape):
        return ("turning", (_randn(g, *shape[1:]), round(_uniform(g, 0.4, 0.9), 4), round(_uniform(g, 2.0, 5.0), 4)))

    s2 = _randint(g, 5, 12)
    s3_shift = round(_uniform(g, 1.5, 4.0), 3)
    s4, s4_shift = _randint(g, 3, 8), round(_uniform(g, 0.3, 0.8), 3)
    s5 = _randint(g, 6, 16)
    s6, s6_shift = _randint(g, 2, 7), round(_uniform(g, 1.5, 3.0), 3)
    cases = []
    specs = [
        ((2, 1, 4, 4), 4, 1.0, "4 steps, shift 1 (t = 1, ¾, ½, ¼)"),
        ((3, 1, 4, 4), s2, 3.0, f"{s2} steps, SD3's shift 3"),
        ((2, 3, 2, 2), 1, s3_shift, f"a single step (shift {s3_shift} leaves t = 1 and 0 in place)"),
        ((1, 2, 3, 3), s4, s4_shift, f"{s4} steps, shift {s4_shift} < 1 (more steps at low noise)"),
        ((2, 1, 3, 4), s5, None, f"{s5} steps, shift left at its default, 1"),
        ((2, 1, 4, 4), 4, 1.0, f"4 steps, shift 1, another field and x1: {_AGAIN}"),
    ]
    for shape, steps, shift, label in specs:
        kind, params = turning(shape)
        # SD3's shift is what the exercise adds to plain Euler: the cases where it moves the times weigh double
        weight = 2.0 if shift not in (None, 1.0) and steps > 1 else 1.0
        cases.append(Case((_randn(g, *shape), steps, shift, kind, params), label=label, weight=weight))
    target = _randn(g, 1, 1, 4, 4)
    cases.append(
        Case(
            (_randn(g, 3, 1, 4, 4), s6, s6_shift, "exact", (target,)),
            label=f"the exact velocity of one image x*, (x − x*)/t: Euler lands on x* ({s6} steps, shift {s6_shift})",
            weight=2.0,
        )
    )
    return cases


class VelocityMisuse(Exception):
    """Raised by the grader's velocity when a sampler calls it wrongly (too often, odd arguments)."""


def _sampler_probe(answer: Any, case: Case) -> dict:
    """Run the answer with the case's velocity; observe the times it asked for and its result."""
    x1, steps, shift, kind, params = case.args
    times: list[float] = []
    limit = 4 * steps + 16

    def velocity(x, t):
        if len(times) >= limit:
            raise VelocityMisuse(f"velocity was called more than {limit} times for {steps} steps")
        try:
            tf = float(t)
        except Exception:  # noqa: BLE001 - a tensor of many times, a string …
            shown = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            swapped = isinstance(t, torch.Tensor) and tuple(t.shape) == tuple(x1.shape)
            raise VelocityMisuse(
                f"velocity(x, t) takes t as one number, got {shown}"
                + (": the arguments are swapped, call velocity(x, t) with x first" if swapped else "")
            ) from None
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != tuple(x1.shape):
            shown = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise VelocityMisuse(f"velocity(x, t) takes x of x1's shape {tuple(x1.shape)}, got {shown}")
        times.append(tf)
        return _field(kind, params, x, tf)

    args = (velocity, x1, steps) + (() if shift is None else (shift,))  # x1 itself: `x += …` on it is caught
    out = answer(*args)
    return {"times": list(times), "__result__": out}  # (a "__" key: messages call it "the result")


def _grid(steps: int, shift: float, n: int | None = None) -> list[float]:
    n = steps if n is None else n
    return [_shift(1 - i / n, shift) for i in range(n + 1)]


def _simulate(case: Case, evals: list[float], dts: list[float]) -> torch.Tensor:
    x1, _, _, kind, params = case.args
    x = x1.to(torch.float64)
    for t, dt in zip(evals, dts):
        x = x + dt * _field(kind, params, x, t)
    return x


def _time_mistakes(case: Case) -> dict[str, list[float]]:
    _, steps, shift, _, _ = case.args
    s = 1.0 if shift is None else shift
    ts = _grid(steps, s)
    out = {
        "velocity is called once per step, at the start of each step (t_0 … t_{steps−1}), never at t = 0": ts,
        # before "walks up": with one step both give [0], and a step's end is the likelier slip
        "Euler evaluates the velocity where a step starts, t_i, not where it ends, t_{i+1}": ts[1:],
        "the sampler starts at t = 1 (pure noise) and walks down to t = 0; yours walks up": [
            _shift(i / steps, s) for i in range(steps)
        ],
        "there are steps + 1 times from 1 to 0 (steps intervals of 1/steps before the shift), as "
        "torch.linspace(1, 0, steps + 1) gives": _grid(steps, s, steps - 1)[:-1] if steps > 1 else [],
    }
    if shift is None:  # called without shift: the answer's own default decides
        out["the shift's default is 1 (no shift), shift: float = 1.0; yours is SD3's 3"] = _grid(steps, 3.0)[:-1]
    if s != 1.0:
        out = {
            "apply SD3's shift to every time, t ← s·t / (1 + (s − 1)·t)": _grid(steps, 1.0)[:-1],
            "the shift is the wrong way round: t ← s·t / (1 + (s − 1)·t) (with s > 1 it moves the times towards "
            "1, the noise)": _grid(steps, 1 / s)[:-1],
        } | out
    return out


def _output_mistakes(case: Case) -> dict[str, torch.Tensor]:
    _, steps, shift, _, _ = case.args
    ts = _grid(steps, 1.0 if shift is None else shift)
    evals, dts = ts[:-1], [b - a for a, b in zip(ts[:-1], ts[1:])]
    return {
        "each step is x ← x + (t_{i+1} − t_i)·v with t_{i+1} < t_i, so x moves against the velocity; "
        "your steps move along it": _simulate(case, evals, [-d for d in dts]),
        "the step sizes are the differences of the shifted times, t_{i+1} − t_i, not −1/steps": _simulate(
            case, evals, [-1 / steps] * steps
        ),
        "return x after the last step, at t = 0": _simulate(case, evals[:-1], dts[:-1]) if steps > 1 else None,
    }


def _sampler_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    where = f" ({case.label})"
    exp_times = np.asarray(expected["times"], dtype=np.float64)
    got_times = np.asarray(got.get("times", []), dtype=np.float64) if isinstance(got, dict) else np.zeros(0)
    checks = compare(got_times, exp_times, rtol=1e-5, atol=1e-6, label=case.label)
    for c in checks:
        c.name = f"times: {c.name}"
    if not all(c.passed for c in checks):
        steps = case.args[1]

        def calls(n):
            return f"{n} call{'' if n == 1 else 's'}"

        head = (
            f"your sampler asked for the velocity at t = {[round(float(v), 4) for v in got_times[:6]]}"
            f"{' …' if len(got_times) > 6 else ''} ({calls(len(got_times))}); expected "
            f"{[round(float(v), 4) for v in exp_times[:6]]}{' …' if len(exp_times) > 6 else ''} ({calls(steps)}){where}"
        )
        diagnosis = diagnose(got_times, _time_mistakes(case), expected=exp_times, rtol=1e-5, atol=1e-6)
        checks = [SubCheck(c.name, c.passed, c.weight, "") for c in checks]
        first = next(c for c in checks if not c.passed)
        first.message = head + (f" — {diagnosis}" if diagnosis else "")
    times_ok = all(c.passed for c in checks)
    out = got.get("__result__") if isinstance(got, dict) else None
    part = compare(out, expected["__result__"], rtol=1e-4, atol=1e-5, label=case.label)
    for c in part:
        c.name = f"x0: {c.name}"
        # the result carries most of the weight: asking for the right times and returning x1 unmoved (or stepping
        # the wrong way) is less than half the work; its shape alone is almost nothing
        c.weight = 0.5 if c.name == "x0: shape" else 4.5 if c.name == "x0: values" else c.weight
        if c.message:
            c.message = f"the result: {c.message}"
    if not all(c.passed for c in part):
        diagnosis = _not_finite(out)
        if diagnosis and 0.0 in [float(v) for v in got_times]:
            diagnosis += ": your sampler called velocity at t = 0, where (x − x*)/t divides by zero"
        if not diagnosis and _shape_of(out) == tuple(np.shape(expected["__result__"])):
            diagnosis = diagnose(out, _output_mistakes(case), expected=expected["__result__"], rtol=1e-4, atol=1e-4)
            if not diagnosis and not times_ok:
                diagnosis = "it follows from the wrong times above"
        elif not diagnosis:
            diagnosis = f"return x at t = 0, of x1's shape {tuple(case.args[0].shape)}"
        with_diagnosis(part, diagnosis, name=None)
    return checks + part


register(
    Exercise(
        id="10.4",
        library_versions=("course_lib.flow.euler_sample", "course_lib.flow.flow_times"),
        lesson=LESSON,
        name="euler_flow_sample",
        title="write euler_flow_sample",
        reference=_euler_flow_sample,
        cases=_sampler_cases,
        probe=_sampler_probe,
        input_names=("x1", "steps", "shift", "kind", "params"),
        judge=_sampler_judge,
        points=3,
        hint="t_i = σ(1 − i/steps) for i = 0 … steps with σ(t) = s·t / (1 + (s − 1)·t); then for i = 0 … steps − 1: "
        "x ← x + (t_{i+1} − t_i)·velocity(x, t_i), one call per step, and return x.",
    )
)


# =============================================================================================
# 10.5  ControlledBlock
# =============================================================================================


class _ControlledBlock(nn.Module):
    r"""One level of ControlNet (Zhang et al. 2023, eq. 2):

        y = F(x; Θ) + Z(F(x + Z(c; Θ_z1); Θ_c); Θ_z2)

    F = ``block`` with its trained weights Θ, frozen; F(·; Θ_c) = ``copy``, a deep copy of it that trains;
    Z(·; Θ_z1) = ``zero_in``, a 1×1 convolution hint_channels → channels, and Z(·; Θ_z2) = ``zero_out``,
    a 1×1 convolution channels → channels, both with weight and bias initialised to 0. At
    initialisation zero_out gives 0, so y = F(x; Θ) exactly: training starts from the frozen model.

    block: an nn.Module mapping N×C×H×W to N×C×H×W (C = channels); forward(x, hint) takes x N×C×H×W
    and the condition hint N×hint_channels×H×W and returns N×C×H×W.
    """

    def __init__(self, block: nn.Module, channels: int, hint_channels: int):
        super().__init__()
        self.copy = _copy.deepcopy(block).requires_grad_(True)  # copied before freezing: it trains
        self.block = block.requires_grad_(False)
        self.zero_in = nn.Conv2d(hint_channels, channels, kernel_size=1)
        self.zero_out = nn.Conv2d(channels, channels, kernel_size=1)
        for conv in (self.zero_in, self.zero_out):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
        return self.block(x) + self.zero_out(self.copy(x + self.zero_in(hint)))


class _ResidualConvBlock(nn.Module):
    """x + Conv(SiLU(GN(Conv(SiLU(GN(x)))))): a U-Net-like block of the cases."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(4, channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(min(4, channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))


def _make_block(kind: str, channels: int, seed: int) -> nn.Module:
    """The case's frozen block, with seeded 'trained' weights (norms away from their 1, 0 start).
    Building it leaves torch's global random stream alone."""
    C = channels
    with torch.random.fork_rng(devices=[]):
        if kind == "conv":
            block = nn.Sequential(nn.Conv2d(C, C, 3, padding=1), nn.SiLU(), nn.Conv2d(C, C, 3, padding=1))
        elif kind == "residual":
            block = _ResidualConvBlock(C)
        else:
            block = nn.Sequential(nn.Conv2d(C, 2 * C, 1), nn.GELU(), nn.Conv2d(2 * C, C, 1))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in block.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() > 1:  # conv weights: variance 1/fan_in
                p.copy_(noise / math.sqrt(p[0].numel()))
            elif name.startswith("norm") and name.endswith("weight"):
                p.copy_(1 + 0.3 * noise)
            else:
                p.copy_(0.3 * noise)
    return block


def _opened_weights(case: Case) -> dict[str, Any]:
    """Seeded values for the zero convolutions and an offset for every weight of the copy, as after
    some training: with them the answer's wiring shows in its output."""
    kind, C, hc, x, hint, r, seed = case.args
    g = torch.Generator().manual_seed(seed + 1)
    offsets = [0.2 * torch.randn(p.shape, generator=g) for p in _make_block(kind, C, seed).parameters()]
    return {
        "zero_in.weight": 0.5 * torch.randn(C, hc, 1, 1, generator=g),
        "zero_in.bias": 0.1 * torch.randn(C, generator=g),
        "zero_out.weight": torch.randn(C, C, 1, 1, generator=g) / math.sqrt(C),
        "zero_out.bias": 0.1 * torch.randn(C, generator=g),
        "copy offsets": offsets,
    }


def _controlled_cases(seed: int) -> list[Case]:
    g = _gen(seed, 105)

    def case(kind, C, hc, N, H, W, label):
        x = _randn(g, N, C, H, W)
        hint = torch.where(torch.rand(N, hc, H, W, generator=g) < 0.2, 1.0, -1.0)  # an edge map in {−1, 1}
        r = _randn(g, N, C, H, W)  # the weights of the loss whose gradient is observed
        return Case((kind, C, hc, x, hint, r, _randint(g, 0, 2**30)), label=label)

    C2 = 4 * _randint(g, 2, 4)
    C3 = _randint(g, 3, 6)
    return [
        case("conv", 8, 1, 2, 8, 8, "conv–SiLU–conv block, 8 channels, an edge map as hint, 2 images 8×8"),
        case("residual", C2, 1, 1, 10, 12, f"a residual block with GroupNorm, {C2} channels, 1 image 10×12"),
        case("mlp", C3, 3, 3, 6, 5, f"a 1×1-conv MLP block, {C3} channels, a 3-channel hint, 3 images 6×5"),
        case("conv", 6, 6, 2, 5, 5, "conv block, 6 channels and a 6-channel hint, 2 images 5×5"),
        case("residual", 8, 1, 2, 8, 8, "a residual block, 8 channels, an edge map, 2 images 8×8"),
    ]


def _controlled_probe(answer: Any, case: Case) -> dict:
    """Build the answer around the case's block, and observe it at initialisation and opened up."""
    with torch.random.fork_rng(devices=[]):  # the answer's own init draws; the caller's stream untouched
        torch.manual_seed(case.args[-1])
        return _observe_controlled(answer, case)


def _observe_controlled(answer: Any, case: Case) -> dict:
    kind, C, hc, x, hint, r, seed = case.args
    block = _make_block(kind, C, seed)
    original = {k: v.clone() for k, v in block.state_dict().items()}
    original_params = [p.detach().clone() for p in block.parameters()]
    module = answer(block, C, hc)
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"ControlledBlock(block, channels, hint_channels) must build an nn.Module, got {type(module).__name__}"
        )
    block_params = {id(p) for p in block.parameters()}
    trainable = [p for p in module.parameters() if p.requires_grad]
    the_copy = getattr(module, "copy", None)
    obs: dict[str, Any] = {
        "has_copy": isinstance(the_copy, nn.Module),
        "frozen": all(not p.requires_grad for p in block.parameters()),
        "trainable": int(sum(p.numel() for p in trainable)),
        "copy_is_block": the_copy is block
        or (isinstance(the_copy, nn.Module) and any(id(p) in block_params for p in the_copy.parameters())),
    }
    # where it starts: zero_in and zero_out at zero, the copy with the block's own weights (not re-initialised)
    for name in ("zero_in", "zero_out"):
        layer = getattr(module, name, None)
        ps = [q for q in (getattr(layer, "weight", None), getattr(layer, "bias", None)) if isinstance(q, torch.Tensor)]
        obs[f"{name}_zero"] = bool(ps) and all(bool((q == 0).all()) for q in ps)
    copy_params = list(the_copy.parameters()) if isinstance(the_copy, nn.Module) else []
    obs["copy_starts_as_block"] = len(copy_params) == len(original_params) and all(
        q.shape == v.shape and torch.equal(q.detach(), v) for q, v in zip(copy_params, original_params)
    )
    x_in, hint_in = x.clone(), hint.clone()
    y = module(x_in, hint_in)
    # forward must leave x and hint as they were: a U-Net still needs x (its skip connections)
    obs["inputs_changed"] = [
        n for n, now, was in (("x", x_in, x), ("hint", hint_in, hint)) if not torch.equal(now, was)
    ]
    obs["output_at_init"] = y.detach().clone() if isinstance(y, torch.Tensor) else y
    # the first training step: how many trainable values get a gradient (zero_out's alone, C·C + C)?
    obs["grad_nonzero"], obs["grad_block"] = None, None
    if isinstance(y, torch.Tensor) and y.requires_grad and tuple(y.shape) == tuple(r.shape):
        (y * r).sum().backward()
        obs["grad_nonzero"] = int(sum(int((p.grad != 0).sum()) for p in trainable if p.grad is not None))
        obs["grad_block"] = any(p.grad is not None and bool((p.grad != 0).any()) for p in block.parameters())
    now = block.state_dict()
    obs["block_unchanged"] = set(now) == set(original) and all(torch.equal(now[k], original[k]) for k in original)
    # open the zero convolutions and move the copy away from the block, then run it again
    obs["layer_error"], obs["output_opened"] = "", None
    opened = _opened_weights(case)
    try:
        with torch.no_grad():
            for name in ("zero_in.weight", "zero_in.bias", "zero_out.weight", "zero_out.bias"):
                layer, attr = name.split(".")
                getattr(getattr(module, layer), attr).copy_(opened[name])
            copy_params = list(module.copy.parameters())
            if len(copy_params) != len(opened["copy offsets"]):
                raise ValueError(
                    f"self.copy has {len(copy_params)} parameter tensors, the block {len(opened['copy offsets'])}"
                )
            for p, v, offset in zip(copy_params, original_params, opened["copy offsets"]):
                p.copy_(v + offset)
    except (AttributeError, RuntimeError, ValueError, TypeError) as e:
        obs["layer_error"] = " ".join(f"{type(e).__name__}: {e}".split())[:300]
    if not obs["layer_error"]:
        with torch.no_grad():
            x_in, hint_in = x.clone(), hint.clone()
            y2 = module(x_in, hint_in)
        obs["inputs_changed"] += [
            n for n, now, was in (("x", x_in, x), ("hint", hint_in, hint))
            if not torch.equal(now, was) and n not in obs["inputs_changed"]
        ]
        obs["output_opened"] = y2.detach().clone() if isinstance(y2, torch.Tensor) else y2
    return obs


def _opened_mistakes(case: Case) -> dict[str, torch.Tensor | None]:
    """Wrong wirings, with the opened weights: what each gives (float32, as the answer computes)."""
    kind, C, hc, x, hint, r, seed = case.args
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        block = _make_block(kind, C, seed)
        copy_block = _make_block(kind, C, seed)
        w = _opened_weights(case)
        for p, offset in zip(copy_block.parameters(), w["copy offsets"]):
            p.add_(offset)

        def zin(h):
            return F.conv2d(h, w["zero_in.weight"], w["zero_in.bias"])

        def zout(h):
            return F.conv2d(h, w["zero_out.weight"], w["zero_out.bias"])

        out = {
            "the control branch must run the trainable copy, not the frozen block: self.copy = "
            "copy.deepcopy(block), and self.copy(x + self.zero_in(hint)) inside zero_out": block(x)
            + zout(block(x + zin(hint))),
            "the frozen block takes x alone, y = block(x) + zero_out(copy(x + zero_in(hint))); you ran the copy "
            "on the main path and the block in the control branch": copy_block(x) + zout(block(x + zin(hint))),
            "the hint enters the copy's input, copy(x + zero_in(hint)), not the frozen block's": block(x + zin(hint))
            + zout(copy_block(x)),
            "the hint goes into the copy's input, copy(x + zero_in(hint)), not next to its output": block(x)
            + zout(copy_block(x) + zin(hint)),
            "add the frozen block's output outside zero_out: y = block(x) + zero_out(copy(x + zero_in(hint)))": zout(
                block(x) + copy_block(x + zin(hint))
            ),
        }
        out[
            "the frozen block must see x alone, y = block(x) + zero_out(copy(x + zero_in(hint))); here it saw "
            "x + zero_in(hint) too (an in-place x += self.zero_in(hint) before block(x) does this: write "
            "h = x + self.zero_in(hint) instead)"
        ] = block(x + zin(hint)) + zout(copy_block(x + zin(hint)))
        out["the copy's input is x + zero_in(hint): it needs x too, copy(x + zero_in(hint)), not the hint alone"] = (
            block(x) + zout(copy_block(zin(hint)))
        )
        if hc == C:
            out["the hint goes through zero_in before it is added to x: copy(x + zero_in(hint))"] = block(x) + zout(
                copy_block(x + hint)
            )
    return out


def _controlled_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    kind, C, hc, x, hint, r, seed = case.args
    where = f" ({case.label})"
    keys = ("frozen", "trainable", "output_at_init", "grad_nonzero", "output_opened")
    if not isinstance(got, dict) or any(k not in got for k in keys):
        return [SubCheck("observed", False, 10, f"could not observe the module{where}")]
    checks: list[SubCheck] = []
    changed = got.get("inputs_changed") or []
    if changed:  # first: it may explain the gradient and wiring verdicts below
        names = " and ".join(f"`{n}`" for n in changed if isinstance(n, str))
        checks.append(SubCheck(
            "inputs unchanged",
            False,
            1,
            f"forward changed its input {names} in place (x += …): the U-Net around the block still needs x as it "
            "was, and every later use of x inside forward sees the sum; write h = x + self.zero_in(hint)",
        ))
    # 1. at initialisation the output is the frozen block's, exactly
    init = compare(got["output_at_init"], expected["output_at_init"], rtol=1e-5, atol=1e-6, label=case.label)
    init_ok = all(c.passed for c in init)
    msg = ""
    if not init_ok:
        first = next((c.message for c in init if not c.passed and c.message), "")
        if _shape_of(got["output_at_init"]) == tuple(x.shape) and got.get("block_unchanged") is False:
            msg = (
                f"at initialisation the output must be exactly the frozen block's, block(x) ({first}): the block's "
                "own weights were changed (see below), so even block(x) is not what it was"
            )
        elif _shape_of(got["output_at_init"]) == tuple(x.shape) and got.get("zero_out_zero"):
            msg = (
                f"at initialisation the output must be exactly the frozen block's, block(x) ({first}): zero_out "
                "is at 0, so something reaches the output without passing through it; everything besides "
                "block(x) goes through zero_out: y = block(x) + zero_out(copy(x + zero_in(hint)))"
            )
        elif _shape_of(got["output_at_init"]) == tuple(x.shape):
            msg = (
                f"at initialisation the output must be exactly the frozen block's, block(x) ({first}): zero_out "
                "must start with weight and bias 0 (nn.init.zeros_), not PyTorch's default initialisation"
            )
        else:
            msg = f"forward(x, hint) must return N×C×H×W = {tuple(x.shape)}: {first or 'got something else'}"
        msg = msg if not _not_finite(got["output_at_init"]) else f"{msg}; {_not_finite(got['output_at_init'])}"
    checks.append(SubCheck("output at initialisation = block(x)", init_ok, 2, msg))
    # 2. the block is frozen and left as it was
    frozen_ok = bool(got["frozen"]) and bool(got.get("block_unchanged"))
    msg = ""
    if not got["frozen"] and got.get("copy_is_block"):
        msg = (f"self.copy is the block itself (self.copy = block), so it cannot train while the block stays "
               f"frozen: self.copy = copy.deepcopy(block), then block.requires_grad_(False){where}")
    elif not got["frozen"]:
        msg = f"the frozen block's parameters must not train: block.requires_grad_(False){where}"
    elif not got.get("block_unchanged"):
        msg = (
            "you changed the frozen block's weights (did you zero every convolution of the module, the block's "
            f"too?): initialise only zero_in and zero_out{where}"
        )
    checks.append(SubCheck("block frozen and unchanged", frozen_ok, 1, msg))
    # 3. what trains: the copy and the two zero convolutions
    P = sum(p.numel() for p in _make_block(kind, C, seed).parameters())
    zin_p, zout_p = hc * C + C, C * C + C
    n = got["trainable"]
    n_ok = n == expected["trainable"]
    msg = ""
    if not n_ok:
        msg = f"{n} parameters train; expected the copy's {P} plus the zero convolutions' {zin_p + zout_p}{where}"
        if n == 2 * P + zin_p + zout_p:
            msg += " — the frozen block trains too: block.requires_grad_(False)"
        elif got.get("copy_is_block"):
            msg += " — the copy is the block itself: make an independent copy with copy.deepcopy(block)"
        elif n == zin_p + zout_p:
            msg += (
                " — the copy does not train: copy.deepcopy(block) before freezing the block (a deep copy of a "
                "frozen block is frozen too), or call requires_grad_(True) on the copy"
            )
        elif n == P + (hc * C) + (C * C):
            msg += " — the zero convolutions need their biases (zeroed like the weights)"
        elif n in (P + 9 * hc * C + C + zout_p, P + zin_p + 9 * C * C + C, P + 9 * hc * C + C + 9 * C * C + C):
            msg += " — a zero convolution here is 3×3: they are 1×1 convolutions, nn.Conv2d(c_in, c_out, 1)"
    # what trains (the copy and the zero convolutions) is ControlNet's point: a frozen copy kept 90% at weight 1
    checks.append(SubCheck("trainable parameters", n_ok, 4, msg))
    # 4. the first step: the gradient reaches zero_out's weight and bias, and nothing behind them
    gn, gb, exp_n = got.get("grad_nonzero"), got.get("grad_block"), expected["grad_nonzero"]
    grad_ok = gn == exp_n and not gb
    msg = ""
    if not grad_ok:
        if gn is None:
            msg = (
                "could not take a gradient: forward(x, hint) must return one tensor computed with the module's "
                f"trainable parameters (a .detach() or torch.no_grad() in forward cuts them off){where}"
            )
        elif gb:
            msg = f"the frozen block received a gradient: block.requires_grad_(False){where}"
        elif gn == 9 * C * C + C:
            msg = (
                f"at the first step zero_out's {gn} values got their gradient, 9·C·C + C: zero_out is a 3×3 "
                f"convolution; a zero convolution is 1×1, nn.Conv2d(C, C, 1), C·C + C = {exp_n} values{where}"
            )
        elif gn > exp_n and not got.get("zero_out_zero", True):
            msg = (
                f"at the first step {gn} trainable values got a gradient; only zero_out's C·C + C = {exp_n} may: "
                f"zero_out does not start at 0, so the gradient passes through it to the copy and zero_in "
                f"(nn.init.zeros_ on its weight and bias){where}"
            )
        elif gn > exp_n:
            msg = (
                f"at the first step {gn} trainable values got a gradient; only zero_out's C·C + C = {exp_n} may. "
                "With its weight at 0 no gradient passes back through zero_out (∂y/∂input = W = 0), so the extra "
                "came another way: zero_in(hint) and the copy must reach the output only through zero_out (not, "
                f"say, through the frozen block's input{', as an in-place x += … makes it' if 'x' in changed else ''})"
                f"{where}"
            )
        else:
            msg = (
                f"at the first step only {gn} trainable values got a gradient, expected zero_out's C·C + C = "
                f"{exp_n}: zero_out (weight and bias) must train and take the copy's output as its input{where}"
            )
    checks.append(SubCheck("gradients at the first step", grad_ok, 2, msg))
    # 5. where training starts: the copy is the block's knowledge, both zero convolutions are silent
    start_ok = all(bool(got.get(k)) for k in ("copy_starts_as_block", "zero_in_zero", "zero_out_zero"))
    msg = ""
    if not got.get("has_copy", True):
        msg = (
            "name the trainable copy self.copy (and the convolutions self.zero_in and self.zero_out): the check "
            f"finds the parts of the block by those names{where}"
        )
    elif not got.get("copy_starts_as_block"):
        msg = (
            "the copy must start with the block's own weights (copy.deepcopy(block), nothing re-initialised): "
            f"ControlNet begins from what the block already knows{where}"
        )
    elif not got.get("zero_in_zero") or not got.get("zero_out_zero"):
        which = " and ".join(n for n in ("zero_in", "zero_out") if not got.get(f"{n}_zero"))
        msg = f"{which} must start with weight and bias at 0 (nn.init.zeros_ on both){where}"
    checks.append(SubCheck("starts as the block, zero convolutions at 0", start_ok, 1, msg))
    # 6. the wiring, once zero_in, zero_out and the copy have moved away from their start
    if got.get("layer_error"):
        checks.append(
            SubCheck(
                "wiring",
                False,
                3,
                "could not set the weights of self.zero_in, self.zero_out and self.copy (use those names, 1×1 "
                f"convolutions of the exercise's shapes, the copy a deep copy of block): {got['layer_error']}{where}",
            )
        )
        return checks
    opened = compare(got["output_opened"], expected["output_opened"], rtol=1e-4, atol=1e-5, label=case.label)
    ok = all(c.passed for c in opened)
    msg = ""
    if not ok:
        first = next((c.message for c in opened if not c.passed and c.message), "")
        diagnosis = _not_finite(got["output_opened"])
        if not diagnosis and _shape_of(got["output_opened"]) == tuple(x.shape):
            diagnosis = diagnose(
                got["output_opened"], _opened_mistakes(case), expected=expected["output_opened"], rtol=1e-4, atol=1e-4
            )
        msg = f"with zero_in, zero_out and the copy trained a little, {first}" + (
            f" — {diagnosis}" if diagnosis else " — y = block(x) + zero_out(copy(x + zero_in(hint)))"
        )
    checks.append(SubCheck("wiring", ok, 3, msg))
    return checks


register(
    Exercise(
        id="10.5",
        library_versions=("course_lib.nn.controlnet.zero_conv", "course_lib.nn.controlnet.ControlNet.forward"),
        lesson=LESSON,
        name="ControlledBlock",
        title="build ControlledBlock",
        reference=_ControlledBlock,
        cases=_controlled_cases,
        probe=_controlled_probe,
        judge=_controlled_judge,
        points=4,
        hint="self.copy = copy.deepcopy(block) before block.requires_grad_(False); zero_in and zero_out are 1×1 "
        "nn.Conv2d with weight and bias set to 0; forward returns block(x) + zero_out(copy(x + zero_in(hint))).",
    )
)

r"""Graded exercises of lesson 07: classifier-free guidance.

Three ideas of the lesson, each checked on inputs the learner did not choose:

* 07.1 ``cfg_combine``: the guided prediction ε̃ = ε_∅ + s (ε_c − ε_∅), with one s for the
  batch or one s per image;
* 07.2 ``cfg_simulator``: guidance on synthetic 1-D vectors — how well the guided vector
  points at the true signal, how long it gets, and the first scale at which its norm
  exceeds three times the conditional prediction's (saturation);
* 07.3 ``class_spread``: the diversity measure of the lesson's sweep, the mean pairwise
  distance of features within each class.

Nothing here samples or trains. The references are written from the equations,
independently of :mod:`course_lib.guidance` (the tests check that 07.1 agrees with it).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
import torch

from course_lib.grading.checks import allclose, as_float_array, case_generator, diagnose
from course_lib.grading.exercise import Case, Exercise, SubCheck, _expected_got, register

LESSON = "07_classifier_free_guidance"


_gen = partial(case_generator, stride=7919)  # this lesson's case seeds

__all__: list[str] = []


#: this lesson's tolerances: its answers are exact arithmetic on float64 inputs
#: The values are O(1). atol 1e-5 lets a scale that went through float32 (7.5 → a float32 tensor) pass where the
#: result cancels to near 0 (its error is ~6e-8·|s·(ε_c − ε_∅)|, up to ~1e-6 here); every slip is off by far more.
#: Float32 *results* are caught by their dtype, not by their values.
TOL = {"rtol": 1e-6, "atol": 1e-5, "equal_nan": True}


def _first_wrong(got: np.ndarray, exp: np.ndarray) -> str:
    bad = ~np.isclose(got, exp, rtol=TOL["rtol"], atol=TOL["atol"], equal_nan=True)
    idx = tuple(int(v) for v in np.argwhere(bad)[0])
    pos = idx[0] if len(idx) == 1 else idx
    return f"{int(bad.sum())} of {exp.size} wrong; at index {pos} {_expected_got(exp[idx], got[idx])}"


# =============================================================================================
# 07.1 cfg_combine
# =============================================================================================


def _per_sample(scale, like: torch.Tensor):
    """A float as it is; an (N,) tensor shaped (N, 1, …, 1) to scale each item of ``like``."""
    if isinstance(scale, torch.Tensor) and scale.dim() == 1:
        return scale.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))
    return scale


def _cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale) -> torch.Tensor:
    r"""The classifier-free guided noise prediction (Ho & Salimans 2022):

        ε̃ = ε_∅ + s · (ε_c − ε_∅)

    eps_uncond (ε_∅), eps_cond (ε_c): N×… tensors of one shape (N×C×H×W, or N×D).
    scale s: a Python float (one s for the batch) or an (N,) tensor (item i gets s_i, which
    multiplies every entry of item i). s = 0 gives ε_∅, s = 1 gives ε_c. Returns N×….
    """
    return eps_uncond + _per_sample(scale, eps_cond) * (eps_cond - eps_uncond)


def _combine_cases(seed: int) -> list[Case]:
    g = _gen(seed, 71)

    def pair(*shape):
        u = torch.randn(shape, generator=g, dtype=torch.float64)
        return u, u + 0.5 * torch.randn(shape, generator=g, dtype=torch.float64)

    def rand_scale(lo=1.5, hi=9.0):
        return round(float(lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64)), 3)

    cases = [Case((*pair(3, 1, 5, 6), rand_scale()), label="one scale for a batch of 3 images")]
    u, c = pair(2, 1, 4, 4)
    cases.append(Case((u, c, 0.0), label="s = 0: the unconditional prediction"))
    cases.append(Case((u, c, 1.0), label="s = 1: the plain conditional prediction"))
    cases.append(
        Case(
            (*pair(4, 1, 3, 5), torch.tensor([0.0, 1.0, 3.0, 7.5], dtype=torch.float64)),
            label="one scale per image, (N,) = (4,) for 4×1×3×5",
        )
    )
    s = torch.tensor([rand_scale(0.0, 10.0) for _ in range(4)], dtype=torch.float64)
    cases.append(Case((*pair(4, 2, 3, 4), s), label="one scale per image, 4×2×3×4 (N equals the width)"))
    cases.append(
        Case(
            (*pair(5, 7), s.new_tensor([rand_scale(0.0, 10.0) for _ in range(5)])),
            label="N×D vectors (5×7), one scale each",
        )
    )
    cases.append(
        Case(
            (*pair(1, 3, 2, 2), torch.tensor([rand_scale()], dtype=torch.float64)), label="batch of 1 with a (1,) scale"
        )
    )
    cases.append(Case((*pair(2, 1, 3, 3), 0.5), label="s = 0.5: between the two predictions"))
    return cases


def _combine_probe(answer: Any, case: Case) -> dict:
    """The answer's output; for a per-image scale an exception is an observation too (so the
    judge can say that (N,) must be reshaped to broadcast), except NotImplementedError, and except
    where the answer raises with one float scale too: then it is the answer's error, as on any case."""
    u, c, scale = case.args
    args = (u, c, scale)  # the case's own tensors: an answer that writes into ε_∅ in place is caught
    if not isinstance(scale, torch.Tensor):
        return {"out": answer(*args)}
    try:
        return {"out": answer(*args)}
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001 (the learner's code)
        try:
            answer(u.clone(), c.clone(), float(scale.reshape(-1)[0]))
        except Exception:  # noqa: BLE001 (it fails whatever the scale: not a broadcasting matter)
            raise e from None
        return {"raised": f"{type(e).__name__}: {e}"[:300]}


def _combine_mistakes(case: Case) -> dict[str, Any]:
    u, c, s = case.args
    sb = _per_sample(s, c)
    out = {
        "the scale multiplies (ε_c − ε_∅) and is added to ε_∅: ε_∅ + s·(ε_c − ε_∅); yours swaps the two "
        "predictions (s = 0 must give ε_∅)": c + sb * (u - c),
        "this is the (1 + s) convention, ε_c + s·(ε_c − ε_∅) (Ho & Salimans' w); here s = 1 must give plain ε_c, "
        "i.e. ε_∅ + s·(ε_c − ε_∅)": c + sb * (c - u),
        "the scale multiplies only ε_c: ε_∅ + s·(ε_c − ε_∅) also scales −ε_∅": u + sb * c,
        "ε_∅ + s·(ε_c − ε_∅), not s·ε_c + (1 − s)·… with the roles swapped": sb * u + (1 - sb) * c,
        "the sign: guidance moves from ε_∅ towards ε_c, + s·(ε_c − ε_∅), not − s·(ε_c − ε_∅)": u - sb * (c - u),
        "start at the unconditional prediction: ε̃ = ε_∅ + s·(ε_c − ε_∅); s·(ε_c − ε_∅) alone is only the step": sb
        * (c - u),
        "use s itself: ε_∅ + s·(ε_c − ε_∅) (s − 1 belongs to the other convention, ε_c + (s − 1)·(ε_c − ε_∅))": u
        + (sb - 1) * (c - u),
        "your scale enters squared: ε_∅ + s·(ε_c − ε_∅) multiplies the difference by s once, not by s²": u
        + sb * sb * (c - u),
    }
    if isinstance(s, torch.Tensor) and s.dim() == 1 and len(s) > 1:
        one = "each image i has its own s_i: reshape the (N,) scale to broadcast, do not collapse it to one number"
        out[f"{one} (yours used their mean for every image)"] = u + float(s.mean()) * (c - u)
        out[f"{one} (yours used s_0 for every image)"] = u + float(s[0]) * (c - u)
    if isinstance(s, torch.Tensor) and s.dim() == 1 and c.dim() > 1 and c.shape[-1] == len(s):
        out[
            "a per-image scale of shape (N,) broadcasts against the LAST dimension of an N×C×H×W batch; "
            "reshape it to (N, 1, 1, 1) (e.g. s.view(-1, *[1] * (eps.dim() − 1))) so s_i scales image i"
        ] = u + s * (c - u)
    return out


def _combine_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    where = f" ({case.label})" if case.label else ""
    exp = np.asarray(expected["out"], dtype=np.float64)
    if not isinstance(got, dict):
        return [SubCheck("shape", False, 1, f"could not read the result{where}"), SubCheck("values", False, 2, "")]
    if "raised" in got:
        return [
            SubCheck(
                "shape",
                False,
                1,
                f"your code raised {got['raised']}{where}, though it ran with one float scale: a per-image "
                "scale is an (N,) tensor; reshape it to "
                f"(N, 1, 1, 1) (or (N, 1) for N×D) so that it broadcasts over each item",
            ),
            SubCheck("values", False, 2, ""),
        ]
    arr = as_float_array(got.get("out"))
    if arr is None:
        return [
            SubCheck("shape", False, 1, f"return a tensor, got {type(got.get('out')).__name__}{where}"),
            SubCheck("values", False, 2, ""),
        ]
    shape_ok = arr.shape == exp.shape
    msg = "" if shape_ok else f"expected shape {tuple(exp.shape)} (the inputs' shape), got {tuple(arr.shape)}{where}"
    if not shape_ok and arr.ndim > exp.ndim and arr.shape[-exp.ndim:] == exp.shape:
        # an (N,) scale viewed as (N, 1, 1, 1), the images' broadcast, on inputs of fewer dims: it grew the result
        msg += (f": your per-item scale has more dims than the inputs ({arr.ndim} where "
                f"the inputs have {exp.ndim}); give it one dim per input dim, s.view(-1, *[1] * (eps.dim() - 1)), "
                "so (N, 1) for N×D and (N, 1, 1, 1) for N×C×H×W")
    checks = [SubCheck("shape", shape_ok, 1, msg)]
    if not shape_ok:
        return checks + [SubCheck("values", False, 2, "")]
    ok = allclose(arr, exp, **TOL)
    msg = ""
    if not ok:
        diag = diagnose(arr, _combine_mistakes(case), **TOL)
        msg = f"values differ{where}: " + (diag or _first_wrong(arr, exp))
    return checks + [SubCheck("values", ok, 2, msg)]


register(
    Exercise(
        id="07.1",
        library_versions=("course_lib.guidance.cfg_combine",),
        lesson=LESSON,
        name="cfg_combine",
        title="write cfg_combine",
        reference=_cfg_combine,
        cases=_combine_cases,
        points=3,
        probe=_combine_probe,
        judge=_combine_judge,
        hint="start at the unconditional prediction and move s times the difference (ε_c − ε_∅); "
        "a per-image s needs trailing singleton dimensions to broadcast",
    )
)


# =============================================================================================
# 07.2 cfg_simulator
# =============================================================================================


def _cfg_simulator(signal: torch.Tensor, eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scales) -> dict:
    r"""Classifier-free guidance on synthetic 1-D vectors, for each scale s in ``scales``:

        g(s)   = ε_∅ + s · (ε_c − ε_∅)
        cos(s) = ⟨g(s), signal⟩ / (‖g(s)‖ ‖signal‖)
        ‖g(s)‖ = sqrt(Σ_d g(s)_d²)

    signal, eps_uncond (ε_∅), eps_cond (ε_c): float64 tensors of shape (D,), none of the g(s)
    zero; scales: a list of floats, taken in the order given. Returns a dict:
    "cosine": list of floats (one per scale), "norm": list of floats, "first_over_3x": the
    first scale in ``scales`` whose ‖g(s)‖ > 3 ‖ε_c‖ (strictly), or None if there is none.
    """
    cosine, norm = [], []
    limit = 3.0 * float(torch.linalg.vector_norm(eps_cond))
    first = None
    for s in scales:
        g = eps_uncond + s * (eps_cond - eps_uncond)
        n = float(torch.linalg.vector_norm(g))
        cosine.append(float(torch.dot(g, signal)) / (n * float(torch.linalg.vector_norm(signal))))
        norm.append(n)
        if first is None and n > limit:
            first = s
    return {"cosine": cosine, "norm": norm, "first_over_3x": first}


SWEEP = [0.0, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0]


def _simulator_inputs(g: torch.Generator, d: int, strength: float, noise: float, shared: float = 1.0):
    """A true signal, and predictions made by a recipe: ε_∅ = shared·n_∅ (knows nothing of the
    signal), ε_c = ε_∅ + strength·signal + noise·n_c (a little of it, plus error)."""
    signal = torch.randn(d, generator=g, dtype=torch.float64)
    eps_uncond = shared * torch.randn(d, generator=g, dtype=torch.float64)
    eps_cond = eps_uncond + strength * signal + noise * torch.randn(d, generator=g, dtype=torch.float64)
    return signal, eps_uncond, eps_cond


#: the two cases of the traps 07.2's text stresses (s = 0.0 can be the answer; strictly greater): their
#: first_over_3x weighs three times the others' (a ≥ for > or an `if not first` kept 96%)
ZERO_IS_OVER = "‖ε_∅‖ > 3‖ε_c‖: already s = 0 is over"
EQUAL_IS_NOT_OVER = "‖g(2)‖ = 15 = 3‖ε_c‖ exactly: equal is not over (strictly greater)"


def _simulator_cases(seed: int) -> list[Case]:
    g = _gen(seed, 72)

    def settled(args, scales):
        """Nudge away from a tie ‖g(s)‖ ≈ 3‖ε_c‖ (rounding must not decide the answer)."""
        signal, u, c = args
        limit = 3 * float(torch.linalg.vector_norm(c))
        for s in scales:
            if abs(float(torch.linalg.vector_norm(u + s * (c - u))) - limit) < 1e-6 * limit:
                return signal, u, c * 1.001
        return args

    cases = []
    args = _simulator_inputs(g, 16, 0.4, 0.1)
    cases.append(Case((*settled(args, SWEEP), list(SWEEP)), label="D = 16, the lesson's sweep of s"))
    d = int(torch.randint(20, 65, (), generator=g))
    scales = sorted(round(float(v), 2) for v in torch.rand(6, generator=g, dtype=torch.float64) * 12)
    args = _simulator_inputs(g, d, 0.25, 0.2)
    cases.append(Case((*settled(args, scales), scales), label=f"D = {d}, random scales"))
    args = _simulator_inputs(g, 8, 1.5, 0.05, shared=0.3)
    cases.append(
        Case(
            (*settled(args, [0.0, 0.5, 1.0, 1.5, 2.0]), [0.0, 0.5, 1.0, 1.5, 2.0]),
            label="small scales, a strong condition: no scale exceeds 3× (None)",
        )
    )
    args = _simulator_inputs(g, 10, 0.3, 0.1, shared=4.0)
    u, c = args[1], args[1] * 0.1 + 0.3 * args[0]
    cases.append(Case((args[0], u, c, list(SWEEP)), label=ZERO_IS_OVER))
    args = _simulator_inputs(g, 2, 0.5, 0.2)
    cases.append(Case((*settled(args, SWEEP), list(SWEEP)), label="D = 2"))
    args = _simulator_inputs(g, 12, 1.0, 0.1, shared=0.3)
    desc = [10.0, 5.0, 3.0, 1.0, 0.0]
    cases.append(Case((*settled(args, desc), desc), label="scales in descending order: the first in the list"))
    # whole numbers, so every norm is exact: g(2) = (12, 9) has norm 15 = 3·‖(3, 4)‖, a tie that is not over
    f64 = torch.float64
    tie = (
        torch.tensor([1.0, 2.0], dtype=f64),
        torch.tensor([-6.0, -1.0], dtype=f64),
        torch.tensor([3.0, 4.0], dtype=f64),
    )
    cases.append(
        Case((*tie, [0.0, 1.0, 2.0, 3.0]), label=EQUAL_IS_NOT_OVER)
    )
    return cases


#: 07.2's ≥ for >: named only where the answer's norms are right (a wrong norm moves the first scale over too)
STRICT = "the test is strict, ‖g(s)‖ > 3‖ε_c‖: a scale whose norm equals 3‖ε_c‖ is not over it (> rather than ≥)"


def _simulator_mistakes(case: Case) -> dict[str, dict[str, Any]]:
    """Per key, message → the value a known slip gives on this case."""
    signal, u, c, scales = case.args
    gs = [u + s * (c - u) for s in scales]
    norms = [float(torch.linalg.vector_norm(x)) for x in gs]
    nc, nu, ns = (float(torch.linalg.vector_norm(v)) for v in (c, u, signal))

    def first(values, limit, strict=True, order=scales):
        for s, v in zip(order, values):
            if (v > limit) if strict else (v >= limit):
                return s
        return None

    def index_of(values, limit):
        return next((i for i, v in enumerate(values) if v > limit), None)

    cos_msgs = {
        "the cosine divides the dot product by both norms, ‖g(s)‖·‖signal‖": [float(torch.dot(x, signal)) for x in gs],
        "divide the dot product by the norms themselves, ‖g(s)‖·‖signal‖, not by their squares": [
            float(torch.dot(x, signal)) / (n * ns) ** 2 for x, n in zip(gs, norms)
        ],
        "divide by the signal's norm too: cos = ⟨g, signal⟩ / (‖g‖‖signal‖)": [
            float(torch.dot(x, signal)) / n for x, n in zip(gs, norms)
        ],
        "compare the guided vector with the true signal, not with ε_c": [
            float(torch.dot(x, c)) / (n * nc) for x, n in zip(gs, norms)
        ],
        "guide from ε_∅ towards ε_c: g(s) = ε_∅ + s·(ε_c − ε_∅)": [
            float(torch.dot(c + s * (u - c), signal)) / (float(torch.linalg.vector_norm(c + s * (u - c))) * ns)
            for s in scales
        ],
    }
    norm_msgs = {
        "the norm is the square root of the sum of squares, not the sum of squares": [n**2 for n in norms],
        "the Euclidean norm sqrt(Σ g²), not the mean of |g|": [float(x.abs().mean()) for x in gs],
        "the Euclidean norm sums the squares, sqrt(Σ g²): yours averages them (a root mean square)": [
            n / len(signal) ** 0.5 for n in norms
        ],
        "guide from ε_∅ towards ε_c: g(s) = ε_∅ + s·(ε_c − ε_∅)": [
            float(torch.linalg.vector_norm(c + s * (u - c))) for s in scales
        ],
    }
    first_msgs: dict[str, Any] = {
        "compare with three times the norm of the CONDITIONAL prediction ε_c, not of ε_∅": first(norms, 3 * nu),
        "compare with three times the norm of ε_c itself, not of the difference ε_c − ε_∅": first(
            norms, 3 * float(torch.linalg.vector_norm(c - u))
        ),
        "return the scale itself, not its position in the list": index_of(norms, 3 * nc),
        "take the scales in the order given (the first one in the list that is over), not the smallest": first(
            [n for _, n in sorted(zip(scales, norms))], 3 * nc, order=sorted(scales)
        )
        if list(scales) != sorted(scales)
        else None,
        "compare norms, not squared norms with 3× the norm": first([n**2 for n in norms], 3 * nc),
        "‖g(s)‖ > 3‖ε_c‖ means three times ε_c's norm, not 3² (compare squared norms with 9‖ε_c‖²)": first(
            norms, 9 * nc
        ),
        "stop at the first scale that is over (break, or set it only while it is still None): yours is the last "
        "one over": next((s for s, v in reversed(list(zip(scales, norms))) if v > 3 * nc), None),
        "return the scale s itself, not its norm ‖g(s)‖": next((v for v in norms if v > 3 * nc), None),
        STRICT: first(norms, 3 * nc, strict=False),
    }
    return {"cosine": cos_msgs, "norm": norm_msgs, "first_over_3x": first_msgs}


def _simulator_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    where = f" ({case.label})" if case.label else ""
    keys = ("cosine", "norm", "first_over_3x")
    if not isinstance(got, dict):
        return [
            SubCheck("a dict", False, 1, f"return a dict with keys {list(keys)}, got {type(got).__name__}{where}")
        ] + [SubCheck(k, False, 2, "") for k in keys]
    missing = [k for k in keys if k not in got]
    checks = [
        SubCheck("keys", not missing, 1, f"missing keys {missing} (expected {list(keys)}){where}" if missing else "")
    ]
    mistakes = _simulator_mistakes(case)
    n = len(case.args[3])
    norms_right = False
    for key in ("cosine", "norm"):
        exp = np.asarray(expected[key], dtype=np.float64)
        arr = as_float_array(got.get(key))
        if arr is None or arr.shape != exp.shape:
            shown = "nothing" if arr is None else f"shape {tuple(arr.shape)}"
            msg = f"{key}: expected a list of {n} numbers, one per scale, got {shown}{where}" if key in got else ""
            checks.append(SubCheck(key, False, 2, msg))
            continue
        ok = allclose(arr, exp, **TOL)
        msg = ""
        if not ok:
            diag = diagnose(arr, {m: v for m, v in mistakes[key].items()}, **TOL)
            if not diag and np.allclose(np.sort(arr), np.sort(exp), rtol=TOL["rtol"], atol=TOL["atol"]):
                diag = "the right values in another order: one per scale, in the order of `scales` given (no sorting)"
            msg = f"{key} differs{where}: " + (diag or _first_wrong(arr, exp))
        checks.append(SubCheck(key, ok, 2, msg))
        norms_right = norms_right or (key == "norm" and ok)
    exp_first = expected["first_over_3x"]
    got_first = got.get("first_over_3x", "missing")
    if isinstance(got_first, np.ndarray) and got_first.size == 1:  # a 0-d tensor or array: its number
        got_first = got_first.reshape(-1)[0].item()
    if exp_first is None:
        ok = got_first is None
    else:
        # rel_tol 1e-6: a scale read back from a float32 tensor (torch.tensor(scales)[i].item()) is the same scale
        ok = (
            isinstance(got_first, (int, float))
            and not isinstance(got_first, bool)
            and math.isclose(float(got_first), float(exp_first), rel_tol=1e-6, abs_tol=1e-12)
        )
    msg = ""
    if not ok and "first_over_3x" in got:
        msg = f"first_over_3x: expected {exp_first!r}, got {got_first!r}{where}"
        zero = (": s = 0.0 is a scale like any other: `if not first` or `first or …` skips it (check `is None`, "
                "not the truth of the scale)")
        zero_skipped = exp_first is not None and float(exp_first) == 0.0
        no_scale = got_first is False or got_first in (-1, -1.0, float("inf")) or (
            isinstance(got_first, float) and math.isnan(got_first)
        )
        if exp_first is None and no_scale:
            msg += ": when no scale is over 3×, return None (not False, NaN or −1)"
        elif zero_skipped and got_first is None:
            msg += zero
        elif not norms_right:  # the threshold and the loop cannot be judged on wrong norms
            msg += ": it is read off your norms, which differ (see norm): fix them first"
        else:
            # a first scale is one of a few numbers, so several slips may land on it: name them all, first one first
            named = [
                text
                for text, value in mistakes["first_over_3x"].items()
                if not (text == STRICT and not norms_right)
                and value is not None
                and isinstance(got_first, (int, float))
                and not isinstance(got_first, bool)
                and value != exp_first
                and math.isclose(got_first, value)
            ]
            if named:
                msg += f": {named[0]}"
            if len(named) > 1:
                msg += f" (another slip gives the same scale here: {'; or '.join(named[1:])})"
            elif not named and zero_skipped and isinstance(got_first, (int, float)):
                msg += zero
    checks.append(SubCheck("first_over_3x", ok, 6 if case.label in (ZERO_IS_OVER, EQUAL_IS_NOT_OVER) else 2, msg))
    return checks


register(
    Exercise(
        id="07.2",
        lesson=LESSON,
        name="cfg_simulator",
        title="simulate guidance on 1-D vectors",
        reference=_cfg_simulator,
        cases=_simulator_cases,
        points=4,
        judge=_simulator_judge,
        hint="form g(s) = ε_∅ + s·(ε_c − ε_∅) for each s; cosine = dot / (both norms); walk the scales in the "
        "given order and stop at the first whose norm is strictly over 3·‖ε_c‖",
    )
)


# =============================================================================================
# 07.3 class_spread
# =============================================================================================


def _class_spread(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    r"""Diversity within each class: the mean Euclidean distance over distinct pairs.

        spread_k = 2 / (n_k (n_k − 1)) · Σ_{i<j, y_i = y_j = k} ‖f_i − f_j‖₂

    features: (N, F) float64; labels: (N,) int64 in 0 … num_classes − 1. Returns a dict:
    "per_class": a float tensor (num_classes,), NaN for a class with fewer than 2 samples;
    "mean": the mean of the per-class values that are not NaN (a float).
    """
    per_class = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    for k in range(num_classes):
        f = features[labels == k].to(torch.float64)
        m = len(f)
        if m < 2:
            continue
        total = 0.0
        for i in range(m):
            for j in range(i + 1, m):
                total += float(torch.linalg.vector_norm(f[i] - f[j]))
        per_class[k] = total / (m * (m - 1) / 2)
    valid = per_class[~per_class.isnan()]
    return {"per_class": per_class, "mean": float(valid.mean()) if len(valid) else float("nan")}


def _spread_cases(seed: int) -> list[Case]:
    g = _gen(seed, 73)

    def feats(n, f, scale=1.0):
        return scale * torch.randn(n, f, generator=g, dtype=torch.float64)

    cases = []
    labels = torch.randint(0, 4, (24,), generator=g)
    labels[:4] = torch.arange(4)
    labels[4:8] = torch.arange(4)  # every class at least twice
    cases.append(Case((feats(24, 8), labels, 4), label="24 samples, 4 classes, 8 features"))
    k = 10
    labels = torch.arange(40) % k
    labels = labels[torch.randperm(40, generator=g)]
    f = feats(40, 32) + 3 * torch.randn(k, 32, generator=g, dtype=torch.float64)[labels]
    cases.append(Case((f, labels, k), label="10 classes of 4, shuffled labels, class means apart"))
    labels = torch.tensor([0, 2, 2, 2, 0, 1, 2])
    cases.append(Case((feats(7, 5), labels, 4), label="class 1 has one sample and class 3 none: NaN"))
    f = feats(6, 4)
    f[3:] = f[3]  # class 1: three identical samples (a collapsed class)
    cases.append(Case((f, torch.tensor([0, 0, 0, 1, 1, 1]), 2), label="a collapsed class: spread 0"))
    cases.append(Case((feats(2, 3, 2.0), torch.tensor([1, 1]), 3), label="one pair, classes 0 and 2 empty"))
    scales = torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64)
    labels = torch.tensor([0, 1, 2] * 5)
    cases.append(Case((feats(15, 6) * scales[labels, None], labels, 3), label="three classes of different spreads"))
    return cases


def _spread_mistakes(case: Case) -> dict[str, dict[str, Any]]:
    features, labels, k = case.args
    f = features.to(torch.float64)
    d = torch.cdist(f, f)
    with_self, squared, zero_small, pooled, twice, half, with_diagonal = [], [], [], [], [], [], []
    manhattan, rms_features, rms_pairs, centroid = [], [], [], []
    d1 = torch.cdist(f, f, p=1)
    nan = float("nan")
    for c in range(k):
        idx = labels == c
        m = int(idx.sum())
        block = d[idx][:, idx]
        with_self.append(float(block.mean()) if m >= 1 else nan)
        squared.append(float((block**2).sum() / (m * (m - 1))) if m >= 2 else nan)
        zero_small.append(float(block.sum() / (m * (m - 1))) if m >= 2 else 0.0)
        pooled.append(float(d.sum() / (len(f) * (len(f) - 1))) if m >= 2 else nan)
        # block.sum() counts every pair twice, (i, j) and (j, i)
        twice.append(float(block.sum() / (m * (m - 1) / 2)) if m >= 2 else nan)
        half.append(float(block.sum() / 2 / (m * (m - 1))) if m >= 2 else nan)
        with_diagonal.append(float(block.sum() / 2 / (m * (m + 1) / 2)) if m >= 2 else nan)
        pairs = m * (m - 1)
        manhattan.append(float(d1[idx][:, idx].sum() / pairs) if m >= 2 else nan)
        rms_features.append(float(block.sum() / pairs / math.sqrt(f.shape[1])) if m >= 2 else nan)
        rms_pairs.append(float(((block**2).sum() / pairs).sqrt()) if m >= 2 else nan)
        members = f[idx]
        centroid.append(float((members - members.mean(0)).norm(dim=1).mean()) if m >= 2 else nan)

    def nanmean(v):
        v = [x for x in v if not math.isnan(x)]
        return sum(v) / len(v) if v else float("nan")

    per_class = {
        "average over distinct pairs only: leave out the zero distance of each sample to itself "
        "(divide by n(n − 1), not n²)": with_self,
        "use the Euclidean distance ‖f_i − f_j‖, not its square": squared,
        "a class with fewer than 2 samples has no pairs: its spread is NaN, not 0": zero_small,
        "measure the spread within each class (the pairs whose labels are equal), not over all samples": pooled,
        "the full distance matrix holds every pair twice, (i, j) and (j, i): divide its sum by n(n − 1), "
        "not by the n(n − 1)/2 distinct pairs": twice,
        "the pairs i < j number n(n − 1)/2: divide their sum by that, not by n(n − 1)": half,
        "the diagonal i = j is not a pair: take the pairs i < j only (torch.triu_indices(n, n, offset=1), or "
        "torch.pdist), not i ≤ j": with_diagonal,
        "use the Euclidean distance ‖f_i − f_j‖₂ = sqrt(Σ (f_i − f_j)²), not the L1 distance Σ |f_i − f_j| "
        "(torch.cdist's default p=2)": manhattan,
        "use the Euclidean distance ‖f_i − f_j‖₂ = sqrt(Σ (f_i − f_j)²) over the features, not the root of their "
        "mean (that divides it by sqrt(F))": rms_features,
        "average the distances ‖f_i − f_j‖ themselves: yours is the root of the mean squared distance": rms_pairs,
        "the spread is the mean distance between two samples of the class, over the pairs i < j, not the mean "
        "distance of each sample to the class centroid": centroid,
    }
    right = _class_spread(features, labels, k)["per_class"]
    counts = torch.bincount(labels, minlength=k)
    same = labels[:, None] == labels[None, :]
    n_pairs = float(same.sum() - len(labels))  # the ordered pairs i ≠ j within a class, every class pooled
    pairs_pooled = float((d * same).sum() / n_pairs) if n_pairs else nan
    weighted = float((right.nan_to_num() * counts).sum() / counts[~right.isnan()].sum())
    mean = {
        "the mean is over the classes that have a spread (skip the NaN ones), each class counting once": float(
            right.nan_to_num().mean()
        ),
        "average the per-class values, each class counting once (not weighted by its size)": weighted,
        "each class counts once: average the per-class spreads, not the distances of all within-class pairs "
        "pooled (that weighs a class by its number of pairs)": pairs_pooled,
        "average over distinct pairs only: leave out the zero distance of each sample to itself": nanmean(with_self),
    }
    return {"per_class": per_class, "mean": mean}


def _own_mean(arr: np.ndarray | None, exp: np.ndarray) -> float | None:
    """The mean of the answer's own per_class values (NaN skipped) where those are wrong, else None: a mean
    that follows from wrong per-class values is not a slip of its own."""
    if arr is None or arr.shape != exp.shape or allclose(arr, exp, **TOL):
        return None
    valid = arr[~np.isnan(arr)]
    return float(valid.mean()) if valid.size and np.isfinite(valid).all() else None


def _spread_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    where = f" ({case.label})" if case.label else ""
    k = case.args[2]
    if not isinstance(got, dict):
        return [
            SubCheck(
                "a dict", False, 1, f"return a dict with keys 'per_class' and 'mean', got {type(got).__name__}{where}"
            ),
            SubCheck("per_class", False, 2, ""),
            SubCheck("mean", False, 2, ""),
        ]
    mistakes = _spread_mistakes(case)
    checks = []
    exp = np.asarray(expected["per_class"], dtype=np.float64)
    arr = as_float_array(got.get("per_class"))
    if arr is None or arr.shape != exp.shape:
        shown = (
            "nothing" if "per_class" not in got else (f"shape {tuple(arr.shape)}" if arr is not None else "no numbers")
        )
        checks.append(
            SubCheck("per_class shape", False, 1, f"per_class: expected {k} values, one per class, got {shown}{where}")
        )
        checks.append(SubCheck("per_class", False, 2, ""))
    else:
        checks.append(SubCheck("per_class shape", True, 1))
        ok = allclose(arr, exp, **TOL)
        msg = ""
        if not ok:
            diag = diagnose(arr, mistakes["per_class"], **TOL)
            if not diag and np.isnan(exp).any() and not np.isnan(arr).any():
                diag = "a class with fewer than 2 samples has no pairs: its spread is NaN (float('nan'))"
            msg = f"per_class differs{where}: " + (diag or _first_wrong(arr, exp))
        checks.append(SubCheck("per_class", ok, 2, msg))
    exp_mean = float(np.asarray(expected["mean"], dtype=np.float64))
    m = as_float_array(got.get("mean"))
    ok = m is not None and m.size == 1 and allclose(m.reshape(()), exp_mean, **TOL)
    msg = ""
    if not ok:
        if m is None or m.size != 1:
            msg = f"mean: expected one number{where}"
        else:
            value = float(m.reshape(-1)[0])
            own = _own_mean(arr, exp)
            if own is not None and math.isclose(value, own, rel_tol=TOL["rtol"], abs_tol=TOL["atol"]):
                diag = "it is the mean of your per_class values, so it is off with them"
            else:
                diag = diagnose(value, mistakes["mean"], **TOL)
            if not diag and math.isnan(value) and not math.isnan(exp_mean):
                diag = (
                    "skip the NaN classes: torch.nanmean(per_class), or per_class[~per_class.isnan()].mean(); "
                    "a plain mean over them is NaN"
                )
            msg = f"mean: expected {exp_mean:.6g}, got {value:.6g}{where}" + (f": {diag}" if diag else "")
    checks.append(SubCheck("mean", ok, 2, msg))  # the summary is half the task: a wrong mean kept 92% at weight 1
    return checks


register(
    Exercise(
        id="07.3",
        lesson=LESSON,
        name="class_spread",
        title="measure the spread within each class",
        reference=_class_spread,
        cases=_spread_cases,
        points=3,
        judge=_spread_judge,
        any_float=True,  # a measurement: the spec asks for "a float tensor", any precision
        hint="for each class keep the rows whose label is that class, take all distances between two different "
        "rows (torch.cdist, then the pairs i < j) and average them",
    )
)

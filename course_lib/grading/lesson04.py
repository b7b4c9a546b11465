r"""Graded exercises of lesson 04: training a DDPM and sampling from it.

Four small pieces of the lesson, each checked on inputs the learner did not choose:

* 04.1 ``epsilon_loss``: the ε-prediction ("simple") loss for a batch with given t and ε;
* 04.2 ``ema_update``: one in-place step of the exponential moving average of weights;
* 04.3 ``ddpm_posterior_step``: one ancestral DDPM step with the posterior variance β̃_t;
* 04.4 ``predict_x0_clipped``: the clean image implied by ε̂, clamped to [-1, 1].

Nothing here trains: the "models" of 04.1 are fixed closed-form maps, so the expected loss
is exact. The references are written out from the equations, independently of
:mod:`course_lib.train` and :mod:`course_lib.samplers` (the tests check that they agree).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from course_lib.grading.checks import (
    FLOAT32,
    FRESH_NOISE,
    allclose,
    case_generator,
    diagnose,
    fresh_noise,
    in_float32,
)
from course_lib.grading.exercise import Case, Exercise, SubCheck, compare, register
from course_lib.schedules import NoiseSchedule

LESSON = "04_training_and_sampling"


_gen = partial(case_generator, stride=1009)  # this lesson's case seeds

__all__: list[str] = []


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample vector (N,) shaped (N, 1, 1, 1) to scale an N×C×H×W batch."""
    return v.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


# =============================================================================================
# 04.1 epsilon_loss
# =============================================================================================


def _epsilon_loss(
    model: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    r"""The ε-prediction loss of one batch, with t and ε given.

        x_t = sqrt(abar_t) x_0 + sqrt(1 − abar_t) ε,     L = mean (ε_θ(x_t, t) − ε)²

    model: called as model(x_t, t) → ε̂ of x_t's shape; x0, noise: N×C×H×W; t: int64 (N,)
    in 0 … T−1; alphas_cumprod: abar, shape (T,). Returns a 0-dim tensor that carries
    gradients to the model's parameters (the mean over every element of the batch).
    """
    abar = _bcast(alphas_cumprod[t], x0)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    return ((model(x_t, t) - noise) ** 2).mean()


class _AffineEps(nn.Module):
    """A fixed stand-in for a trained network: ε̂ = w · x_t + v · t / T (w, v parameters)."""

    def __init__(self, w: float, v: float, num_steps: int):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(w)))
        self.v = nn.Parameter(torch.tensor(float(v)))
        self.num_steps = num_steps

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        frac = torch.as_tensor(t).to(x.dtype) / self.num_steps
        return self.w * x + self.v * _bcast(frac, x)

    def __repr__(self) -> str:
        return f"AffineEps(eps_hat = {self.w.item():g}·x_t + {self.v.item():g}·t/{self.num_steps})"


class _OracleEps(nn.Module):
    """The perfect predictor for one known batch x_0: ε̂ = (x_t − sqrt(abar_t) x_0) / sqrt(1 − abar_t).

    Called on part of the batch (an answer that runs the model in chunks, or image by image), it finds which rows
    it was given: the contiguous rows of the batch with the same t whose x_t = sqrt(abar_t)·x_0 + sqrt(1 − abar_t)·ε
    is closest to its input."""

    def __init__(self, x0: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor, noise: torch.Tensor):
        super().__init__()
        # copies of its own: an answer that writes into the x0 it is given must not change what the oracle knows
        self.x0, self.t, self.noise = x0.clone(), t.clone(), noise.clone()
        self.alphas_cumprod = alphas_cumprod.clone()
        self.gain = nn.Parameter(torch.tensor(1.0))

    def _rows(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n, full = x.shape[0] if x.dim() == 4 else -1, self.x0.shape[0]
        if n in (-1, full) or n > full:
            return self.x0
        t = torch.as_tensor(t).reshape(-1).expand(n).to(self.t.device)
        best, start = None, 0
        for k in range(full - n + 1):
            if not torch.equal(self.t[k : k + n], t):
                continue
            abar = _bcast(self.alphas_cumprod[self.t[k : k + n]], x)
            made = abar.sqrt() * self.x0[k : k + n] + (1 - abar).sqrt() * self.noise[k : k + n]
            err = float((x.detach().to(made.dtype) - made).abs().max())
            if best is None or err < best:
                best, start = err, k
        return self.x0[start : start + n]

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = _bcast(self.alphas_cumprod[t], x)
        return self.gain * (x - abar.sqrt() * self._rows(x, t)) / (1 - abar).sqrt()

    def __repr__(self) -> str:
        return "OracleEps(knows x0)"


class _ZeroEps(nn.Module):
    """The untrained U-Net's answer: ε̂ = 0 (times a parameter, so gradients flow)."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.gain * x

    def __repr__(self) -> str:
        return "ZeroEps()"


def _loss_cases(seed: int) -> list[Case]:
    g = _gen(seed, 41)

    def batch(n, c, h, w, abar, t=None):
        x0 = torch.rand((n, c, h, w), generator=g) * 2 - 1
        noise = torch.randn((n, c, h, w), generator=g)
        if t is None:
            t = torch.randint(0, len(abar), (n,), generator=g)
        return x0, torch.as_tensor(t, dtype=torch.long), noise

    lin = NoiseSchedule.linear(1000).alphas_cumprod
    cos = NoiseSchedule.cosine(50).alphas_cumprod
    sl = NoiseSchedule.scaled_linear(200).alphas_cumprod
    w, v = (0.2 + 0.6 * torch.rand(2, generator=g)).tolist()

    cases = []
    x0, t, noise = batch(4, 1, 8, 8, lin)
    cases.append(Case((_AffineEps(w, v, 1000), x0, t, noise, lin), label="affine model, linear schedule, random t"))
    x0, t, noise = batch(3, 2, 5, 5, cos)
    cases.append(Case((_OracleEps(x0, cos, t, noise), x0, t, noise, cos), label="oracle model: the loss must be 0"))
    x0, t, noise = batch(2, 1, 6, 6, cos, t=[0, len(cos) - 1])
    cases.append(Case((_AffineEps(-w, 1.5 * v, 50), x0, t, noise, cos), label="t = 0 and t = T−1, cosine schedule"))
    x0, t, noise = batch(1, 3, 4, 4, sl)
    cases.append(Case((_ZeroEps(), x0, t, noise, sl), label="batch of 1, zero model: the loss is mean(ε²)"))
    x0, t, noise = batch(5, 1, 3, 7, sl, t=[int(torch.randint(0, 200, (1,), generator=g))] * 5)
    cases.append(Case((_AffineEps(w, -v, 200), x0, t, noise, sl), label="one t for the whole batch, odd image size"))
    x0, t, noise = batch(3, 1, 4, 4, lin)
    cases.append(Case((_OracleEps(x0, lin, t, noise), x0, t, noise, lin), label="oracle model, linear schedule"))
    return cases


def _loss_probe(answer: Any, case: Case) -> dict:
    # the inputs as they were, for the second call: an answer that writes into x0 must not look like one that
    # draws its own noise
    fresh = [a.clone() if isinstance(a, torch.Tensor) else a for a in case.args]
    out = answer(*case.args, **case.kwargs)
    is_tensor = isinstance(out, torch.Tensor)
    again = answer(*fresh, **case.kwargs)  # the same inputs once more: a loss that changes drew its own noise
    try:
        again = float(again.detach().reshape(-1)[0]) if isinstance(again, torch.Tensor) else float(again)
    except (TypeError, ValueError, IndexError):
        again = None
    return {
        "loss": out.detach() if is_tensor else out,
        "is_tensor": is_tensor,
        "requires_grad": bool(is_tensor and out.requires_grad),
        "dtype": str(out.dtype).removeprefix("torch.") if is_tensor else None,
        "again": again,
    }


def _loss_mistakes(case: Case) -> dict[str, Any]:
    """What the usual slips give on this case (values of the loss)."""
    model, x0, t, noise, abar_table = case.args
    abar = _bcast(abar_table[t], x0)
    T = len(abar_table)
    out: dict[str, Any] = {}
    with torch.no_grad():

        def loss_of(x_t, target=noise, tt=t, reduce="mean"):
            err = (model(x_t, tt) - target) ** 2
            return float(err.mean() if reduce == "mean" else err.sum())

        right = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        out["x_t needs square roots: sqrt(abar_t)·x0 + sqrt(1 − abar_t)·ε"] = loss_of(abar * x0 + (1 - abar) * noise)
        out["the target is the noise ε, not the clean image x0"] = loss_of(right, target=x0)
        out["average the squared error (mean), don't sum it"] = loss_of(right, reduce="sum")
        if x0.shape[0] > 1:  # the mean of each image, then summed over the batch: N times the mean
            out[
                "you summed the per-image means over the batch: the loss is the mean over every element, "
                "batch included (N times smaller)"
            ] = x0.shape[0] * loss_of(right)
        out["the loss is the mean *squared* error, ‖ε − ε̂‖², not the absolute error"] = float(
            (model(right, t) - noise).abs().mean()
        )
        if bool((t > 0).all()):
            prev = _bcast(abar_table[t - 1], x0)
            out["index abar at t itself (t = 0 is the first noising step), not at t − 1"] = loss_of(
                prev.sqrt() * x0 + (1 - prev).sqrt() * noise
            )
        if bool((t < T - 1).all()):
            nxt = _bcast(abar_table[t + 1], x0)
            out["index abar at t itself, not at t + 1"] = loss_of(nxt.sqrt() * x0 + (1 - nxt).sqrt() * noise)
        if isinstance(model, _AffineEps):
            out["call the model with the integer steps t, not t / T"] = loss_of(right, tt=t.to(x0.dtype) / T)
    return out


def _loss_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    where = f" ({case.label})" if case.label else ""
    if not isinstance(got, dict) or "loss" not in got:
        return [SubCheck("scalar", False, 1, f"could not read the loss{where}"), SubCheck("value", False, 6, "")]
    loss = got["loss"]
    try:
        arr = None if loss is None or isinstance(loss, (dict, str)) else np.asarray(loss, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    # one number: its value is judged below; the "scalar" point also asks for no axes (0-dim), since a loss of
    # shape (1,) fails f"{loss:.3f}" and torch.stack of the per-batch losses gives an N×1 history
    one = arr is not None and arr.size == 1
    scalar = one and arr.ndim == 0
    if scalar:
        scalar_msg = ""
    elif one:
        scalar_msg = (f"return a 0-dim tensor (what .mean() over everything gives), not shape {tuple(arr.shape)}: "
                      f"drop the keepdim or the reshape{where}")
    else:
        scalar_msg = (f"return one number, the mean over every element of the batch; got "
                      f"{'shape ' + str(tuple(arr.shape)) if arr is not None else type(loss).__name__}{where}")
    checks = [SubCheck("scalar", scalar, 1, scalar_msg)]
    exp = float(np.asarray(expected["loss"], dtype=np.float64))
    shown = 0.0 if abs(exp) < 1e-9 else exp  # the oracle's loss is 0 up to rounding
    ok = one and allclose(arr.reshape(()), exp)
    msg = ""
    if not ok:
        value = float(arr.reshape(-1)[0]) if one else None
        # tight and relative: the oracle's losses are ~1e-5, and t ± 1 moves the affine model's loss by ~1e-4
        # relative, so looser tolerances matched the abar-index slips for answers without them
        diag = diagnose(value, _loss_mistakes(case), rtol=1e-5, atol=1e-12) if one else ""
        again = got.get("again")
        if one and isinstance(again, (int, float)) and not allclose(again, value, rtol=1e-9, atol=1e-12):
            diag = ("your loss changes from one call to the next on the same inputs, so it draws something of its "
                    "own: use the t and the noise ε the check passes (no torch.randint or torch.randn_like inside)")
        msg = f"expected a loss of {shown:.6g}, got {value:.6g}{where}" if one else ""
        if diag:
            msg += f": {diag}"
        elif scalar and "oracle" in case.label:
            msg += (
                ": the oracle predicts the noise exactly only if x_t = sqrt(abar_t)·x0 + sqrt(1 − abar_t)·ε and "
                "it is called with that same t"
            )
    # the value weighs twice the three form checks together: right-shaped wrong values keep a third (README), as in
    # the other exercises (a shape check of 1 beside values of 2)
    checks.append(SubCheck("value", ok, 6, msg))
    # alphas_cumprod is float64: mixed in uncast, it turns x_t into float64, which these stand-in models accept
    # but a real U-Net's float32 weights refuse
    want = str(case.args[1].dtype).removeprefix("torch.")
    if got.get("is_tensor"):  # (a number that is no tensor has failed below already)
        dtype_ok = got.get("dtype") == want
        checks.append(
            SubCheck(
                "dtype",
                dtype_ok,
                1,
                ""
                if dtype_ok
                else f"the loss came back as {got.get('dtype')}, not {want} like x0{where}: alphas_cumprod is "
                "float64, so cast abar_t to x0's dtype (abar.to(x0.dtype)) before it meets x0; a real U-Net's "
                "float32 weights refuse a float64 x_t",
            )
        )
    grad_ok = bool(got.get("is_tensor")) and bool(got.get("requires_grad"))
    checks.append(
        SubCheck(
            "differentiable",
            grad_ok,
            1,
            ""
            if grad_ok
            else "return the loss as a torch tensor that still carries gradients (no .item(), .detach(), "
            "torch.no_grad() or numpy), so that loss.backward() can train the model",
        )
    )
    return checks


# =============================================================================================
# 04.2 ema_update
# =============================================================================================


@torch.no_grad()
def _ema_update(ema_params, params, decay: float) -> None:
    r"""One step of the exponential moving average, in place:

        θ_ema ← d · θ_ema + (1 − d) · θ       for every pair of tensors

    ema_params, params: sequences of tensors of matching shapes (e.g. the parameters of the
    EMA copy and of the model being trained); decay: d in [0, 1). Overwrites each tensor of
    ema_params; params are left unchanged. Returns None.
    """
    for e, p in zip(ema_params, params):
        e.copy_(decay * e + (1 - decay) * p.detach())


def _ema_cases(seed: int) -> list[Case]:
    g = _gen(seed, 42)

    def rand(*shape):
        return torch.randn(shape, generator=g)

    cases = [
        Case(
            ([rand(4, 3), rand(4), rand()], [rand(4, 3), rand(4), rand()], 0.999),
            label="weight, bias and a scalar, decay 0.999",
        ),
        Case(([rand(2, 3, 3, 3)], [rand(2, 3, 3, 3)], 0.9), label="one conv weight, decay 0.9"),
        Case(([rand(5), rand(1, 7)], [rand(5), rand(1, 7)], 0.0), label="decay 0: the average jumps to the weights"),
        Case(([rand(3, 2)], [rand(3, 2)], 0.5), label="decay 0.5"),
    ]
    state = torch.random.get_rng_state()  # nn.Linear's own init draws from the global generator:
    model, ema_model = nn.Linear(3, 2), nn.Linear(3, 2)
    torch.random.set_rng_state(state)  # leave the learner's random stream as it was
    with torch.no_grad():  # seeded weights instead
        for p in (*model.parameters(), *ema_model.parameters()):
            p.copy_(torch.randn(p.shape, generator=g))
    ema_model.requires_grad_(False)
    cases.append(
        Case(
            (list(ema_model.parameters()), list(model.parameters()), 0.99),
            label="the parameters of two nn.Linear, decay 0.99",
        )
    )
    cases.append(
        Case(
            ([rand(6), rand(2, 2)], [rand(6).requires_grad_(), rand(2, 2).requires_grad_()], 0.75),
            label="decay 0.75, params that require gradients",
        )
    )
    return cases


def _ema_probe(answer: Any, case: Case) -> dict:
    """The EMA tensors after the call (the same tensor objects that went in), the params, and
    what came back: a returned list, or the list's entries if the answer replaced them."""
    ema_in, params_in, decay = case.args
    ema = [e.detach().clone() for e in ema_in]
    params = [p.detach().clone().requires_grad_(p.requires_grad) for p in params_in]
    originals = list(ema)
    returned = answer(ema, params, decay)
    if isinstance(returned, (list, tuple)) and all(isinstance(r, torch.Tensor) for r in returned):
        returned = [r.detach() for r in returned]
    else:
        returned = None
    replaced = len(ema) != len(originals) or any(a is not b for a, b in zip(ema, originals))
    entries = [e.detach() for e in ema] if replaced and all(isinstance(e, torch.Tensor) for e in ema) else None
    return {
        "ema": [e.detach() for e in originals],
        "params": [p.detach() for p in params],
        "returned": returned,
        "list_entries": entries,
        # an update recorded by autograd leaves the EMA tensors requiring gradients: a graph that grows every step
        "tracked": any(e.requires_grad for e in originals),
    }


def _ema_mistakes(case: Case) -> dict[str, list[torch.Tensor]]:
    ema, params, d = case.args
    warm = min(d, 2 / 11)
    out = {
        "the decay multiplies the running average and (1 − decay) the new weights, not the other way round": [
            (1 - d) * e + d * p.detach() for e, p in zip(ema, params)
        ],
        "use the decay as given: no warm-up (that is the library's EMA class, not this update)": [
            warm * e + (1 - warm) * p.detach() for e, p in zip(ema, params)
        ],
    }
    out["scale the running average by the decay first (e.mul_(d)), then add (1 − d)·θ"] = [
        e + (1 - d) * p.detach() for e, p in zip(ema, params)
    ]
    out["(1 − d) multiplies θ: add_(p, alpha=1 − d) or add_((1 − d) * p), not add_(p * 1 − d)"] = [
        d * e + p.detach() - d for e, p in zip(ema, params)
    ]
    out["apply the decay once: θ_ema ← d·θ_ema + (1 − d)·θ (a mul_(d) before it decays twice)"] = [
        d * d * e + (1 - d) * p.detach() for e, p in zip(ema, params)
    ]
    if d > 0.9:  # min(decay, 0.9): a warm-up's cap, here with the decay above it
        out["use the decay as given: min(decay, 0.9) caps it as a warm-up would, and this update has no warm-up"] = [
            0.9 * e + 0.1 * p.detach() for e, p in zip(ema, params)
        ]
    if len(ema) > 1:
        out["update every pair of tensors: only the first changed (a return inside the loop, or a range(len(…) − 1) "
            "with two tensors, stops after it)"] = [
            d * ema[0] + (1 - d) * params[0].detach()
        ] + [e.detach().clone() for e in ema[1:]]
        if len(ema) > 2:  # with two tensors this is the line above
            out["update every pair of tensors: the last one was left as it was (a range(len(…) − 1) stops early)"] = [
                d * e + (1 - d) * p.detach() for e, p in zip(ema[:-1], params[:-1])
            ] + [ema[-1].detach().clone()]
    if d > 0:
        out["no bias correction here: θ_ema ← d·θ_ema + (1 − d)·θ, nothing divided by (1 − d)"] = [
            (d * e + (1 - d) * p.detach()) / (1 - d) for e, p in zip(ema, params)
        ]
    return out


def _tensor_lists_close(got: Any, expected: Any) -> bool:
    if not isinstance(got, list) or not isinstance(expected, list) or len(got) != len(expected):
        return False
    return all(allclose(a, b) for a, b in zip(got, expected))


def _ema_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    where = f" ({case.label})" if case.label else ""
    exp = expected["ema"]
    if not isinstance(got, dict):
        return [SubCheck("values", False, 2, f"could not read the result{where}"), SubCheck("in place", False, 1, "")]
    after, returned, entries = got.get("ema"), got.get("returned"), got.get("list_entries")
    before = [e.detach().double().numpy() for e in case.args[0]]
    in_place = _tensor_lists_close(after, exp)
    returned_ok = _tensor_lists_close(returned, exp)
    entries_ok = _tensor_lists_close(entries, exp)
    values_ok = in_place or returned_ok or entries_ok
    msg = ""
    if not values_ok:
        changed = not _tensor_lists_close(after, before)
        candidate = after if changed else (returned if returned is not None else entries)
        diag = ""
        for text, value in _ema_mistakes(case).items() if candidate is not None else ():
            if _tensor_lists_close(candidate, [v.double().numpy() for v in value]):
                diag = text
                break
        if candidate is None and case.args[2] == 0:  # decay 0: a swapped decay leaves the average where it was
            msg = (
                f"ema_params were not changed{where}: with decay 0 the average must jump to the weights, so the "
                "decay multiplies the running average and (1 − decay) the new weights (or nothing was updated in place)"
            )
        elif candidate is None:
            msg = (
                f"ema_params were not changed{where}: update each tensor in place "
                "(e.g. e.mul_(d).add_(p, alpha=1 − d) or e.copy_(…)); `e = …` only rebinds a name, and a loop "
                "that stops early (range(len(…) − 1)) leaves a single tensor as it was"
            )
        elif diag:
            msg = f"wrong averages{where}: {diag}"
        else:
            sub = compare(candidate, exp, label=case.label)
            msg = "wrong averages: " + next((c.message for c in sub if not c.passed and c.message), "")
    place_msg = ""
    if not in_place and returned_ok:
        place_msg = f"the right averages were returned as new tensors, but ema_params must be updated in place{where}"
    elif not in_place and entries_ok:
        place_msg = (
            f"the right averages were put into the list as new tensors (ema_params[i] = …), but the tensors "
            f"themselves must change in place, or the EMA model never sees them{where}"
        )
    # the in-place point is for the mechanism: tensors changed where they are, even if to the wrong values
    moved_in_place = after is not None and not _tensor_lists_close(after, before)
    checks = [
        SubCheck("values", values_ok, 2, msg),
        SubCheck("in place", in_place or (moved_in_place and not values_ok), 1, place_msg),
    ]
    if got.get("tracked"):
        checks.append(
            SubCheck(
                "no autograd",
                False,
                1,
                f"after your update the EMA tensors require gradients{where}: autograd recorded it, so every "
                "training step would add to one ever-growing graph; do the update under torch.no_grad()",
            )
        )
    params_before = [p.detach().double().numpy() for p in case.args[1]]
    if not _tensor_lists_close(got.get("params"), params_before):
        checks.append(SubCheck("params untouched", False, 1, f"params (the trained weights) were changed{where}"))
    return checks


# =============================================================================================
# 04.3 ddpm_posterior_step
# =============================================================================================


def _abar_prev(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """abar_{t−1} for each t in the batch, shape (N,), with abar_{−1} = 1 (nothing noised yet)."""
    ones = torch.ones_like(alphas_cumprod[t])
    return torch.where(t > 0, alphas_cumprod[(t - 1).clamp(min=0)], ones)


def _posterior_mean(alphas_cumprod, betas, x_t, x0_hat, t):
    """μ̃_t = sqrt(abar_{t−1}) β_t / (1 − abar_t) · x̂_0 + sqrt(α_t) (1 − abar_{t−1}) / (1 − abar_t) · x_t."""
    abar_t = _bcast(alphas_cumprod[t], x_t)
    abar_prev = _bcast(_abar_prev(alphas_cumprod, t), x_t)
    beta_t = _bcast(betas[t], x_t)
    coef_x0 = abar_prev.sqrt() * beta_t / (1 - abar_t)
    coef_xt = (1 - beta_t).sqrt() * (1 - abar_prev) / (1 - abar_t)
    return coef_x0 * x0_hat + coef_xt * x_t


def _posterior_variance(alphas_cumprod, betas, t, like):
    """β̃_t = (1 − abar_{t−1}) / (1 − abar_t) · β_t, shaped N×1×1×1 like ``like``."""
    abar_t = _bcast(alphas_cumprod[t], like)
    abar_prev = _bcast(_abar_prev(alphas_cumprod, t), like)
    return (1 - abar_prev) / (1 - abar_t) * _bcast(betas[t], like)


def _ddpm_posterior_step(
    alphas_cumprod: torch.Tensor,
    betas: torch.Tensor,
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    r"""One ancestral DDPM step x_t → x_{t−1} (Ho et al. 2020, eq. 6–7; diffusers "fixed_small"):

        x̂_0     = (x_t − sqrt(1 − abar_t) ε̂) / sqrt(abar_t)
        μ̃_t     = sqrt(abar_{t−1}) β_t / (1 − abar_t) · x̂_0 + sqrt(α_t) (1 − abar_{t−1}) / (1 − abar_t) · x_t
        β̃_t     = (1 − abar_{t−1}) / (1 − abar_t) · β_t
        x_{t−1} = μ̃_t + sqrt(β̃_t) z  where t > 0,   μ̃_t where t = 0     (abar_{−1} = 1)

    alphas_cumprod, betas: (T,); x_t, eps (ε̂), noise (z): N×C×H×W; t: int64 (N,), each
    sample at its own step. Returns x_{t−1}, N×C×H×W. No clamping of x̂_0.
    """
    abar_t = _bcast(alphas_cumprod[t], x_t)
    x0_hat = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    mean = _posterior_mean(alphas_cumprod, betas, x_t, x0_hat, t)
    var = _posterior_variance(alphas_cumprod, betas, t, x_t)
    keep = _bcast((t > 0).to(x_t.dtype), x_t)  # no noise on the last step
    return mean + keep * var.sqrt() * noise


def _noisy_batch(g, abar_table, t, shape):
    """x_t from a clean x_0 in [-1, 1], and an ε̂ that is the true noise plus a small error."""
    x0 = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    abar = _bcast(abar_table[t], x0)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * z
    eps = z + 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)
    return x_t, eps


def _ddpm_cases(seed: int) -> list[Case]:
    g = _gen(seed, 43)
    cases = []

    def add(schedule, t, shape, label):
        abar, betas = schedule.alphas_cumprod, schedule.betas
        t = torch.as_tensor(t, dtype=torch.long)
        x_t, eps = _noisy_batch(g, abar, t, shape)
        noise = torch.randn(shape, generator=g, dtype=torch.float64)
        cases.append(Case((abar, betas, x_t, eps, t, noise), label=label))

    lin, cos = NoiseSchedule.linear(1000), NoiseSchedule.cosine(50)
    add(lin, torch.randint(1, 1000, (4,), generator=g), (4, 1, 6, 6), "linear schedule, random t")
    add(lin, [0, 0], (2, 2, 3, 3), "t = 0: the last step adds no noise")
    add(lin, [999], (1, 1, 5, 5), "t = T−1, batch of 1")
    add(
        cos,
        [0, 49, int(torch.randint(1, 49, (1,), generator=g)), 1, 0],
        (5, 1, 4, 4),
        "mixed t including 0 and T−1, cosine schedule",
    )
    add(cos, torch.randint(1, 49, (3,), generator=g), (3, 3, 2, 5), "cosine schedule, odd image size")
    add(NoiseSchedule.scaled_linear(100), [1, 50, 99], (3, 1, 4, 4), "scaled-linear, t = 1 is not the last step")
    return cases


def _ddpm_mistakes(case: Case) -> dict[str, torch.Tensor]:
    """What the usual slips give on this case, keyed by the message that explains each.

    (Adding sqrt(β̃_0)·z at t = 0 is no slip: β̃_0 = 0 because abar_{−1} = 1. The slips that
    put noise into the last step come from β_t or from abar_{t−1} read at index −1.)
    """
    abar, betas, x_t, eps, t, noise = case.args
    abar_t = _bcast(abar[t], x_t)
    x0_hat = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    mean = _posterior_mean(abar, betas, x_t, x0_hat, t)
    var = _posterior_variance(abar, betas, t, x_t)
    beta_t = _bcast(betas[t], x_t)
    keep = _bcast((t > 0).to(x_t.dtype), x_t)
    out = {
        "the variance is the posterior's β̃_t = (1 − abar_{t−1}) / (1 − abar_t) · β_t, not β_t": mean
        + keep * beta_t.sqrt() * noise,
        "the standard deviation is sqrt(β̃_t): take the square root of the variance": mean + keep * var * noise,
        "add sqrt(β̃_t)·z at every t > 0: only the last step (t = 0) is noise-free": mean,
        "x̂_0 is (x_t − sqrt(1 − abar_t)·ε̂) / sqrt(abar_t): mind both square roots": _posterior_mean(
            abar, betas, x_t, (x_t - (1 - abar_t) * eps) / abar_t, t
        )
        + keep * var.sqrt() * noise,
        "clip_sample is off in this exercise: do not clamp x̂_0": _posterior_mean(
            abar, betas, x_t, x0_hat.clamp(-1, 1), t
        )
        + keep * var.sqrt() * noise,
    }
    if bool((t == 0).any()):  # told apart from plain β_t only where the batch holds the last step
        out["no noise at t = 0 (the last step returns the posterior mean), and the variance is β̃_t, not β_t"] = (
            mean + beta_t.sqrt() * noise
        )
    # slips inside the posterior mean's two coefficients, and its ε-form μ = (x_t − β_t/sqrt(1 − abar_t)·ε̂)/sqrt(α_t)
    alpha_t = 1 - beta_t
    c_x0 = _bcast(_abar_prev(abar, t), x_t).sqrt() * beta_t / (1 - abar_t)
    c_xt = alpha_t.sqrt() * (1 - _bcast(_abar_prev(abar, t), x_t)) / (1 - abar_t)
    sigma_z = keep * var.sqrt() * noise
    out.update(
        {
            "the x_t coefficient is sqrt(α_t)·(1 − abar_{t−1})/(1 − abar_t) with α_t = 1 − β_t, this step's own "
            "factor, not abar_t": c_x0 * x0_hat + abar_t.sqrt() / alpha_t.sqrt() * c_xt * x_t + sigma_z,
            "the x_t coefficient has sqrt(α_t): take the square root of α_t = 1 − β_t": c_x0 * x0_hat
            + alpha_t.sqrt() * c_xt * x_t
            + sigma_z,
            "the x̂_0 coefficient is sqrt(abar_{t−1})·β_t/(1 − abar_t): abar of the step you go to, t − 1, not t": (
                abar_t.sqrt() * beta_t / (1 - abar_t)
            )
            * x0_hat
            + c_xt * x_t
            + sigma_z,
            "β̃_t = (1 − abar_{t−1})/(1 − abar_t)·β_t: your ratio is upside down": mean
            + keep * ((1 - abar_t) / (1 - _bcast(_abar_prev(abar, t), x_t)) * beta_t).sqrt() * noise,
            "add the noise, + sqrt(β̃_t)·z: with the same z, subtracting it gives another sample": mean - sigma_z,
            "in the ε-form of the mean, divide by sqrt(α_t) (this step's 1 − β_t), not sqrt(abar_t)": (
                x_t - beta_t / (1 - abar_t).sqrt() * eps
            )
            / abar_t.sqrt()
            + sigma_z,
            "in the ε-form of the mean the ε̂ coefficient is β_t/sqrt(1 − abar_t): keep the square root": (
                x_t - beta_t / (1 - abar_t) * eps
            )
            / alpha_t.sqrt()
            + sigma_z,
        }
    )
    # abar_{t−1} read at t itself: the posterior's variance becomes β_t and its mean's coefficients shift
    same_mean = (abar_t.sqrt() * beta_t / (1 - abar_t)) * x0_hat + alpha_t.sqrt() * x_t
    same = "abar_{t−1} is the step before t: alphas_cumprod[t − 1] (1 at t = 0), not alphas_cumprod[t]"
    out[same] = same_mean + keep * beta_t.sqrt() * noise
    if bool((t == 0).any()):  # alphas_cumprod[t - 1] at t = 0 reads abar_{T−1}, the last entry
        prev = _bcast(abar[t - 1], x_t)
        wrapped_mean = (prev.sqrt() * beta_t / (1 - abar_t)) * x0_hat + (
            (1 - beta_t).sqrt() * (1 - prev) / (1 - abar_t)
        ) * x_t
        wrapped_var = (1 - prev) / (1 - abar_t) * beta_t
        wrap = "at t = 0, abar_{t−1} = abar_{−1} = 1: alphas_cumprod[t − 1] wraps around to the last entry abar_{T−1}"
        out[wrap + " (and so adds noise at the last step)"] = (
            mean + keep * var.sqrt() * noise + (1 - keep) * (wrapped_mean - mean + wrapped_var.sqrt() * noise)
        )
        out[wrap] = mean + (1 - keep) * (wrapped_mean - mean) + keep * var.sqrt() * noise
        clamped = _bcast(abar[(t - 1).clamp(min=0)], x_t)  # abar_0 in place of abar_{−1} = 1
        c_mean = (clamped.sqrt() * beta_t / (1 - abar_t)) * x0_hat + (
            alpha_t.sqrt() * (1 - clamped) / (1 - abar_t)
        ) * x_t
        c_var = (1 - clamped) / (1 - abar_t) * beta_t
        clamp = "at t = 0, abar_{t−1} = abar_{−1} = 1, not abar_0: t − 1 clamped at 0 reads the wrong entry"
        out[clamp] = c_mean + keep * c_var.sqrt() * noise
        out[clamp + " (and so adds noise at the last step)"] = c_mean + c_var.sqrt() * noise
    T = len(abar)
    beta_prev = _bcast(betas[(t - 1).clamp(min=0)], x_t)  # β read one step early
    ap = _bcast(_abar_prev(abar, t), x_t)
    out["β_t belongs to this step: betas[t], not betas[t − 1]"] = (
        ap.sqrt() * beta_prev / (1 - abar_t) * x0_hat
        + (1 - beta_prev).sqrt() * (1 - ap) / (1 - abar_t) * x_t
        + keep * ((1 - ap) / (1 - abar_t) * beta_prev).sqrt() * noise
    )
    an = _bcast(abar[(t + 1).clamp(max=T - 1)], x_t)  # the step after, not before
    var_next = ((1 - an) / (1 - abar_t) * beta_t).clamp(min=0)
    out["abar_{t−1} is the step before t (less noise): alphas_cumprod[t − 1], not [t + 1]"] = (
        an.sqrt() * beta_t / (1 - abar_t) * x0_hat
        + alpha_t.sqrt() * (1 - an) / (1 - abar_t) * x_t
        + keep * var_next.sqrt() * noise
    )
    out[FLOAT32] = in_float32(_ddpm_posterior_step, *case.args)
    if len(t) > 1 and bool((t != t[0]).any()):
        t0 = t[:1].expand(len(t))
        a0 = _bcast(abar[t0], x_t)
        out["each image is at its own step: index the tables with the whole tensor t, not t[0]"] = (
            _posterior_mean(abar, betas, x_t, (x_t - (1 - a0).sqrt() * eps) / a0.sqrt(), t0)
            + _bcast((t0 > 0).to(x_t.dtype), x_t) * _posterior_variance(abar, betas, t0, x_t).sqrt() * noise
        )
    return out


def _per_sample_messages(case: Case, got: Any, expected: Any, where: str) -> str:
    """Which samples (and at which t) are wrong: 'wrong at t = [0, 49]'."""
    t = case.args[4]
    try:
        g = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return ""
    e = np.asarray(expected, dtype=np.float64)
    if g.shape != e.shape:
        return ""
    bad = [int(t[i]) for i in range(len(e)) if not np.allclose(g[i], e[i], rtol=1e-4, atol=1e-6)]
    return f"wrong for the samples at t = {bad}{where}" if bad else ""


def _ddpm_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    where = f" ({case.label})" if case.label else ""
    checks = compare(got, expected, rtol=1e-4, atol=1e-6, label=case.label)
    values = next((c for c in checks if c.name == "values"), None)
    if values is not None and not values.passed and values.message:
        diag = diagnose(got, {k: v.numpy() for k, v in _ddpm_mistakes(case).items()})
        abar, betas, x_t, eps, t, noise = case.args
        if not diag and bool((t > 0).any()):
            mean = _ddpm_posterior_step(abar, betas, x_t, eps, t, torch.zeros_like(noise))
            sigma = _posterior_variance(abar, betas, t, x_t).sqrt() * _bcast((t > 0).to(x_t.dtype), x_t)
            diag = FRESH_NOISE if fresh_noise(got, mean, sigma, noise) else ""
        if diag:
            values.message = f"{_per_sample_messages(case, got, expected, where) or 'wrong values' + where}: {diag}"
        else:
            per = _per_sample_messages(case, got, expected, where)
            if per:  # "wrong for the samples at t = [..] (label): 35 of 36 wrong; expected …", the label once
                values.message = f"{per}: {values.message.removeprefix(f'values differ{where}: ')}"
    return checks


# =============================================================================================
# 04.4 predict_x0_clipped
# =============================================================================================


def _predict_x0_clipped(alphas_cumprod: torch.Tensor, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor):
    r"""The clean image implied by the predicted noise, clamped to the data range:

        x̂_0 = clamp( (x_t − sqrt(1 − abar_t) ε̂) / sqrt(abar_t), −1, 1 )

    alphas_cumprod: (T,); x_t, eps: N×C×H×W; t: int64 (N,). Returns x̂_0, N×C×H×W in [-1, 1], in x_t's dtype
    (diffusers' ``clip_sample=True``).
    """
    abar = _bcast(alphas_cumprod[t], x_t)
    return ((x_t - (1 - abar).sqrt() * eps) / abar.sqrt()).clamp(-1.0, 1.0)


def _x0_cases(seed: int) -> list[Case]:
    g = _gen(seed, 44)
    cases = []

    def add(schedule, t, shape, label, err=0.2, dtype=torch.float64):
        abar = schedule.alphas_cumprod
        t = torch.as_tensor(t, dtype=torch.long)
        x0 = torch.rand(shape, generator=g, dtype=torch.float64) * 1.8 - 0.9
        z = torch.randn(shape, generator=g, dtype=torch.float64)
        a = _bcast(abar[t], x0)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * z
        eps = z + err * torch.randn(shape, generator=g, dtype=torch.float64)
        cases.append(Case((abar, x_t.to(dtype), eps.to(dtype), t), label=label))

    lin, cos = NoiseSchedule.linear(1000), NoiseSchedule.cosine(50)
    add(lin, [0, 1, 2], (3, 1, 4, 4), "small t: x̂_0 stays inside [-1, 1]", err=0.001)
    add(lin, torch.randint(0, 1000, (4,), generator=g), (4, 1, 5, 5), "linear schedule, random t")
    add(cos, [49, 48], (2, 2, 3, 3), "t near T−1: x̂_0 far outside [-1, 1]")
    add(cos, [0, 49, 25], (3, 1, 3, 7), "mixed t, odd image size")
    add(NoiseSchedule.scaled_linear(100), [int(torch.randint(0, 100, (1,), generator=g))], (1, 3, 4, 4), "batch of 1")
    # the sampler's own images are float32, and x̂_0 must stay so (alphas_cumprod is float64)
    add(lin, torch.randint(0, 1000, (3,), generator=g), (3, 1, 4, 4), "float32 images, as the sampler's",
        dtype=torch.float32)
    return cases


def _x0_judge(case: Case, got: Any, expected: Any) -> list[SubCheck]:
    where = f" ({case.label})" if case.label else ""
    checks = compare(got, expected, rtol=1e-4, atol=1e-6, label=case.label)
    values = next((c for c in checks if c.name == "values"), None)
    if values is not None and not values.passed:
        abar, x_t, eps, t = case.args
        a = _bcast(abar[t], x_t)
        raw = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        prev = _bcast(_abar_prev(abar, t), x_t)
        a0 = _bcast(abar[t[:1].expand(len(t))], x_t)
        unclamped = "clamp x̂_0 to [-1, 1] (torch.clamp) after dividing by sqrt(abar_t): values outside the range remain"
        diag = diagnose(
            got,
            {
                unclamped: raw.numpy(),
                "the data range is [-1, 1], not [0, 1]": raw.clamp(0, 1).numpy(),
                "x̂_0 = (x_t − sqrt(1 − abar_t)·ε̂) / sqrt(abar_t): mind both square roots": ((x_t - (1 - a) * eps) / a)
                .clamp(-1, 1)
                .numpy(),
                "use abar_t = alphas_cumprod[t], not abar_{t−1}": ((x_t - (1 - prev).sqrt() * eps) / prev.sqrt())
                .clamp(-1, 1)
                .numpy(),
                "clamp x̂_0 itself, after dividing by sqrt(abar_t), not the numerator": (
                    (x_t - (1 - a).sqrt() * eps).clamp(-1, 1) / a.sqrt()
                ).numpy(),
                "the noise enters x_t with weight sqrt(1 − abar_t): take its square root": (
                    (x_t - (1 - a) * eps) / a.sqrt()
                )
                .clamp(-1, 1)
                .numpy(),
                "divide by sqrt(abar_t), the signal's weight in x_t, not by abar_t": ((x_t - (1 - a).sqrt() * eps) / a)
                .clamp(-1, 1)
                .numpy(),
                "subtract the noise: x_t − sqrt(1 − abar_t)·ε̂": ((x_t + (1 - a).sqrt() * eps) / a.sqrt())
                .clamp(-1, 1)
                .numpy(),
                "clamp x̂_0, not x_t: x̂_0 = clamp((x_t − sqrt(1 − abar_t)·ε̂) / sqrt(abar_t), −1, 1), with x_t "
                "as it is": ((x_t.clamp(-1, 1) - (1 - a).sqrt() * eps) / a.sqrt()).numpy(),
                "clamp x̂_0, not x_t: x_t goes into the formula as it is, and only x̂_0 is clamped": (
                    (x_t.clamp(-1, 1) - (1 - a).sqrt() * eps) / a.sqrt()
                )
                .clamp(-1, 1)
                .numpy(),
                "clamp both ends: x̂_0 above 1 must come down to 1 too": raw.clamp(min=-1).numpy(),
                "clamp both ends: x̂_0 below −1 must come up to −1 too": raw.clamp(max=1).numpy(),
                "clamp is a hard cut (torch.clamp), not a squashing curve such as tanh": raw.tanh().numpy(),
                "each image is at its own step: index alphas_cumprod with the whole tensor t, not t[0]": (
                    (x_t - (1 - a0).sqrt() * eps) / a0.sqrt()
                )
                .clamp(-1, 1)
                .numpy(),
                "divide by sqrt(abar_t) to undo the signal's scaling, do not multiply": (
                    (x_t - (1 - a).sqrt() * eps) * a.sqrt()
                )
                .clamp(-1, 1)
                .numpy(),
                "the noise's weight is sqrt(1 − abar_t), not 1 − sqrt(abar_t)": (
                    (x_t - (1 - a.sqrt()) * eps) / a.sqrt()
                )
                .clamp(-1, 1)
                .numpy(),
                "sqrt(abar_t) weighs the signal and sqrt(1 − abar_t) the noise: yours are swapped": (
                    (x_t - a.sqrt() * eps) / (1 - a).sqrt()
                )
                .clamp(-1, 1)
                .numpy(),
                "torch.clamp(x, min, max) takes the lower bound first: clamp(x, -1, 1)": torch.full_like(
                    x_t, -1.0
                ).numpy(),
                FLOAT32: in_float32(_predict_x0_clipped, *case.args).numpy(),
            },
        )
        if diag:
            values.message = f"wrong values{where}: {diag}"
    return checks


# =============================================================================================
# Registration
# =============================================================================================

register(
    Exercise(
        id="04.1",
        lesson=LESSON,
        name="epsilon_loss",
        title="write the ε-prediction loss",
        reference=_epsilon_loss,
        cases=_loss_cases,
        probe=_loss_probe,
        judges_type=True,
        judge=_loss_judge,
        points=3,
        hint="noise x0 to x_t in one jump with lesson 02's closed form, then compare the model's guess "
        "of the noise with the noise you actually added",
    )
)

register(
    Exercise(
        id="04.2",
        library_versions=("course_lib.train.EMA.update",),
        lesson=LESSON,
        name="ema_update",
        title="write the EMA update",
        reference=_ema_update,
        cases=_ema_cases,
        probe=_ema_probe,
        judge=_ema_judge,
        points=2,
        hint="the average keeps the share `decay` of itself and takes the rest from the new weights; "
        "change the tensors themselves (in-place methods end in an underscore)",
    )
)

register(
    Exercise(
        id="04.3",
        library_versions=("course_lib.samplers.ddpm_step",),
        lesson=LESSON,
        name="ddpm_posterior_step",
        title="write one DDPM posterior step",
        reference=_ddpm_posterior_step,
        cases=_ddpm_cases,
        judge=_ddpm_judge,
        points=4,
        hint="estimate x̂_0 from ε̂, mix it with x_t into the posterior mean, and add noise with the posterior's "
        "own variance except at the very last step",
    )
)

register(
    Exercise(
        id="04.4",
        library_versions=("course_lib.schedules.predict_x0",),
        lesson=LESSON,
        name="predict_x0_clipped",
        title="write predict_x0_clipped",
        reference=_predict_x0_clipped,
        cases=_x0_cases,
        judge=_x0_judge,
        points=2,
        hint="undo the forward jump x_t = sqrt(abar)·x0 + sqrt(1 − abar)·ε for x0, then keep it in the data range",
    )
)

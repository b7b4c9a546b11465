"""Small helpers the lesson modules share when they judge an answer.

A judge compares the learner's output with the reference (``exercise.compare``) and, when the
values are wrong, looks for the *known mistake* that explains them: each lesson lists the
outputs of its typical slips (a forgotten square root, the wrong sign, an off-by-one step), and
:func:`diagnose` names the one the answer matches. :func:`with_diagnosis` adds that name to
the failed sub-check's message, so the learner reads "wrong values (case 2): you used σ²
where σ belongs" instead of a bare number.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .exercise import SubCheck


def case_generator(seed: int, salt: int, stride: int = 1013) -> torch.Generator:
    """The generator of one exercise's cases: seeded by ``seed · stride + salt``, one salt per exercise,
    so that adding a case to one exercise leaves the others' inputs alone. By convention the salt is the
    exercise's id without its dot (62 for 06.2, 101 for 10.1), which keeps the salts distinct."""
    return torch.Generator().manual_seed(int(seed) * stride + salt)


def randint_in(g: torch.Generator, lo: int, hi: int) -> int:
    """An int in [lo, hi], both included."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def uniform_in(g: torch.Generator, lo: float, hi: float) -> float:
    """A float drawn uniformly from [lo, hi)."""
    return lo + (hi - lo) * float(torch.rand(1, generator=g, dtype=torch.float64))


def as_float_array(x: Any) -> np.ndarray | None:
    """``x`` as a float64 array, or None when it is not numbers (None, a dict, a string …)."""
    if x is None or isinstance(x, (dict, str)):
        return None
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def allclose(a: Any, b: Any, rtol: float = 1e-4, atol: float = 1e-6, equal_nan: bool = False) -> bool:
    """True when both read as numbers of the same shape and agree within the tolerances."""
    a, b = as_float_array(a), as_float_array(b)
    if a is None or b is None or a.shape != b.shape:
        return False
    return bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))


def diagnose(
    got: Any,
    candidates: dict[str, Any],
    expected: Any = None,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    equal_nan: bool = False,
) -> str:
    """The message of the first known mistake whose output ``got`` matches, else ''.

    ``candidates``: message → what that mistake outputs on this case (None: it cannot be
    computed here, skipped). With ``expected``, a mistake whose output equals the right answer
    on this case is skipped too, so that a case never blames a slip it cannot show. Where other
    mistakes give the same output on this case, the message says so and names them too: a case
    cannot tell them apart, and the learner may have made any of them.
    """
    matches: list[str] = []
    for message, value in candidates.items():
        if value is None or message in matches:
            continue
        if expected is not None and allclose(value, expected, rtol, atol, equal_nan):
            continue
        if allclose(got, value, rtol, atol, equal_nan):
            matches.append(message)
    if len(matches) > 1:
        return f"{matches[0]} (another slip gives the same values here: {'; or '.join(matches[1:])})"
    return matches[0] if matches else ""


def with_diagnosis(checks: list[SubCheck], diagnosis: str, name: str | None = "values") -> list[SubCheck]:
    """Add ``diagnosis`` to the failed sub-check called ``name`` (None: to the first failed
    sub-check, whatever its name); its message may be empty when an earlier check, the shape
    say, already failed. Returns ``checks``."""
    if not diagnosis:
        return checks
    for c in checks:
        if not c.passed and (name is None or c.name == name):
            c.message = f"{c.message} — {diagnosis}" if c.message else diagnosis
            if name is None:
                break
    return checks


def copies(args: tuple) -> tuple:
    """Fresh copies of the tensor arguments, so an answer that works in place changes nothing else."""
    return tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)


def in_float32(fn, *args) -> Any:
    """``fn`` on float32 copies of its float64 tensor arguments, the result back in float64: what an
    answer computes after a ``.float()`` on its inputs (for a diagnosis such as "you worked in float32")."""
    cast = [a.float() if isinstance(a, torch.Tensor) and a.dtype == torch.float64 else a for a in args]
    out = fn(*cast)
    return out.double() if isinstance(out, torch.Tensor) else out


#: The message of that diagnosis.
FLOAT32 = (
    "these values are what float32 gives: the inputs are float64, keep them so (a .float() on the tables, "
    "or a tensor made without dtype=, loses the digits the checks compare; 1 − abar_t near t = 0 shows it first)"
)


def fresh_noise(got: Any, mean: torch.Tensor, sigma: torch.Tensor | float, z: torch.Tensor) -> bool:
    """Whether ``got`` reads as mean + σ·(noise of its own): residual/σ has about unit spread and is
    unrelated to the z the check passed (a ``torch.randn_like`` in place of the argument)."""
    try:
        g = torch.as_tensor(np.asarray(got, dtype=np.float64))
    except (TypeError, ValueError):
        return False
    if g.shape != mean.shape or g.numel() < 16:
        return False
    sigma = torch.as_tensor(sigma, dtype=torch.float64).expand_as(mean)
    live = sigma > 1e-3
    if int(live.sum()) < 16:
        return False
    r = ((g - mean)[live] / sigma[live]).flatten()
    zz = z.to(torch.float64)[live].flatten()
    corr = float(torch.corrcoef(torch.stack([r, zz]))[0, 1])
    return 0.6 < float(r.std()) < 1.5 and abs(corr) < 0.5


FRESH_NOISE = "use the noise argument z the check passes, not fresh torch.randn: the step must be reproducible"

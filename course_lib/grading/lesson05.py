r"""Graded exercises of lesson 05, the VAE and latent space (``solutions/05_vae_and_latent_space.ipynb``).

05.1  ``gaussian_kl(mean, logvar)``                 KL( N(μ, diag σ²) ‖ N(0, I) ) per sample
05.2  ``reparameterize(mean, logvar, eps)``         z = μ + σ·ε, with gradients to μ and log σ²
05.3  ``compression_analyser(resolutions, ...)``    pixel vs latent sizes, ratio, memory saved
                                                    (the compression analyser of CURRICULUM.md)
05.4  ``psnr(x, y)``                                reconstruction quality in dB, per image

The references are written from the equations with plain torch, independently of
``course_lib.nn.vae`` (tests/test_grading_lesson05.py checks them against
``torch.distributions`` and against hand-computed numbers). Every judge adds a diagnosis to a
failed check when the answer matches a known slip (the ½ forgotten, σ in place of σ²,
exp(logvar) as the standard deviation, a detached mean, a data range of 1 …).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from course_lib.grading.checks import allclose, as_float_array, copies, diagnose, with_diagnosis
from course_lib.grading.checks import case_generator as _gen
from course_lib.grading.exercise import Case, Exercise, SubCheck, compare, register

LESSON = "05_vae_and_latent_space"

__all__ = ["LESSON"]


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"{names[0]} and {names[1]} must be tensors")
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.dim() < 2:
        raise ValueError(f"{names[0]} must be N×… with a batch dimension first, got {a.dim()} dims")


# =============================================================================================
# 05.1  gaussian_kl
# =============================================================================================


def _gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    r"""KL divergence of the encoder's diagonal Gaussian from the standard normal, per sample:

        KL( N(μ, diag σ²) ‖ N(0, I) ) = ½ Σ_j ( μ_j² + σ_j² − 1 − log σ_j² ),   σ² = exp(logvar)

    the sum running over every dimension but the batch (C, H, W of a latent, or D of a vector).
    mean, logvar: N×… tensors of the same shape. Returns shape (N,), in the inputs' dtype.
    """
    _check_pair(mean, logvar, ("mean", "logvar"))
    per_element = mean.pow(2) + torch.exp(logvar) - 1.0 - logvar
    return 0.5 * per_element.reshape(mean.shape[0], -1).sum(dim=1)


def _kl_cases(seed: int) -> list[Case]:
    g = _gen(seed, 51)
    f64 = torch.float64

    def randn(*shape, dtype=f64):
        return torch.randn(shape, generator=g, dtype=f64).to(dtype)

    def uniform(lo, hi, *shape, dtype=f64):
        return (lo + (hi - lo) * torch.rand(shape, generator=g, dtype=f64)).to(dtype)

    N = int(torch.randint(2, 6, (1,), generator=g))
    return [
        Case((randn(N, 4, 8, 8), uniform(-2.0, 1.0, N, 4, 8, 8)), label=f"random {N}×4×8×8 latents"),
        Case((randn(6, 16) * 2, uniform(-3.0, 2.0, 6, 16)), label="6 latent vectors of 16 dims"),
        Case((torch.zeros(3, 4, 5, 5, dtype=f64), torch.zeros(3, 4, 5, 5, dtype=f64)), label="μ = 0, logvar = 0: KL 0"),
        Case(
            (randn(2, 4, 4, 4), torch.cat([torch.full((1, 4, 4, 4), -20.0), torch.full((1, 4, 4, 4), 8.0)]).to(f64)),
            label="logvar −20 (σ² ≈ 2e−9) in one sample, +8 (σ² ≈ 2981) in the other",
        ),
        Case((randn(1, 3, 5, 7) * 3, torch.zeros(1, 3, 5, 7, dtype=f64)), label="a batch of 1, 3×5×7, logvar 0"),
        Case(
            (randn(4, 4, 6, 6, dtype=torch.float32), uniform(-4.0, 0.5, 4, 4, 6, 6, dtype=torch.float32)),
            label="float32 latents, 4×4×6×6",
        ),
    ]


def _kl_mistakes(case: Case) -> dict[str, Any]:
    """What the usual slips give on this case."""
    mean, logvar = (a.to(torch.float64) for a in case.args)
    N, D = mean.shape[0], mean[0].numel()

    def kl(var, sign=-1.0, minus_one=True, half=0.5):
        terms = mean**2 + var + (-1.0 if minus_one else 0.0) + sign * logvar
        return half * terms.reshape(N, -1).sum(1)

    right = kl(logvar.exp())
    return {
        "your values are twice the expected ones: you forgot the ½ in front of the sum": kl(logvar.exp(), half=1.0),
        "you used the standard deviation exp(½·logvar) where the formula has the variance σ² = exp(logvar)": kl(
            torch.exp(0.5 * logvar)
        ),
        "you used exp(2·logvar): logvar is already log σ² (the log of the variance), so σ² = exp(logvar)": kl(
            torch.exp(2 * logvar)
        ),
        "the log term has the wrong sign: it is − log σ² (= − logvar)": kl(logvar.exp(), sign=+1.0),
        "you forgot the − 1 inside the sum (it makes the KL 0 when μ = 0 and σ = 1)": kl(logvar.exp(), minus_one=False),
        f"your values are the mean over the {D} latent values of each sample: the KL is their sum": right / D,
        # with one sample a reduction over the batch is a squeeze: _squeezed_batch says that instead
        **({
            "you reduced over the batch too: return one KL per sample, shape (N,), not their sum": right.sum(),
            "you reduced over the batch too: return one KL per sample, shape (N,), not their mean": right.mean(),
        } if N > 1 else {}),
    }


def _squeezed_batch(got: Any, expected: Any) -> str:
    """The sentence for a batch of one returned without its batch dimension (shape () for (1,)), or ''."""
    arr = as_float_array(got)
    exp = np.asarray(expected)
    if arr is not None and arr.ndim == 0 and exp.shape == (1,):
        return ("a batch of 1 still needs shape (1,), one value per sample: do not .squeeze() or .item() the batch "
                "dimension away")
    return ""


def _kl_probe(answer: Any, case: Case) -> dict:
    """The answer's KL on the case's own tensors (an answer that writes into them is caught), and whether it is a
    training loss: called again on fresh leaves, its sum must carry the exact gradients ∂/∂μ = μ and
    ∂/∂logvar = ½(σ² − 1) back to both (None where the first call gave no tensor to judge)."""
    kl = answer(*case.args)
    out = {"kl": kl, "grad_ok": None}
    if isinstance(kl, torch.Tensor):
        mean, logvar = (a.detach().clone().requires_grad_(True) for a in case.args)
        try:
            again = answer(mean, logvar)
        except Exception as e:  # noqa: BLE001 (the learner's code)
            # x.mul_ on a leaf that requires grad is judged as an in-place write already (and a real encoder's
            # outputs are no leaves); anything else (.numpy() on a tensor that requires grad) is no training loss
            out["grad_ok"] = None if "in-place operation" in str(e) else False
            return out
        ok = isinstance(again, torch.Tensor) and again.requires_grad
        if ok:
            try:
                again.sum().backward()
            except RuntimeError:
                ok = False
        # whether gradients reach both inputs at all: wrong values have wrong gradients too, and only a missing
        # path (a .detach(), numpy) is then worth a word of its own
        out["grad_flows"] = bool(ok and mean.grad is not None and logvar.grad is not None)
        if ok:
            want_mean, want_logvar = mean.detach(), 0.5 * (logvar.detach().exp() - 1)
            tol = dict(rtol=1e-3, atol=1e-4) if mean.dtype == torch.float32 else dict(rtol=1e-6, atol=1e-8)
            ok = (
                mean.grad is not None and logvar.grad is not None
                and torch.allclose(mean.grad, want_mean, **tol) and torch.allclose(logvar.grad, want_logvar, **tol)
            )
        out["grad_ok"] = bool(ok)
    return out


def _kl_judge(case: Case, got, expected) -> list[SubCheck]:
    checks = _kl_value_checks(case, got.get("kl") if isinstance(got, dict) else got, expected["kl"])
    values_right = all(c.passed for c in checks)
    # right values with wrong gradients: something inside is cut off from the graph (a .detach() on one input);
    # wrong values: their gradients differ anyway, so only no gradient at all is named
    if isinstance(got, dict) and got.get("grad_ok") is False and (values_right or not got.get("grad_flows")):
        checks.append(SubCheck(
            "a training loss",
            False,
            0.5,
            "the KL is a training loss: compute it with torch on mean and logvar as given, so that gradients reach "
            "both (no .detach(), .item(), .data, numpy or torch.no_grad() inside)",
        ))
    return checks  # a cost, not a prize: carrying gradients earns nothing by itself


def _kl_value_checks(case: Case, got, expected) -> list[SubCheck]:
    checks = compare(got, expected, rtol=1e-5, atol=1e-5, label=case.label)
    diagnosis = _squeezed_batch(got, expected) or diagnose(
        got, _kl_mistakes(case), expected=expected, rtol=1e-5, atol=1e-5
    )
    arr = as_float_array(got)
    exp = np.asarray(expected)
    if not diagnosis and arr is not None and arr.ndim > 1 and arr.shape[0] == exp.shape[0]:
        diagnosis = (
            f"you kept dimensions {tuple(arr.shape[1:])}: sum over every dimension but the batch "
            "(e.g. flatten(1) then sum(dim=1))"
        )
    return with_diagnosis(checks, diagnosis)


register(
    Exercise(
        id="05.1",
        library_versions=("course_lib.nn.vae.kl_divergence",),
        lesson=LESSON,
        name="gaussian_kl",
        title="write gaussian_kl",
        reference=_gaussian_kl,
        cases=_kl_cases,
        probe=_kl_probe,
        judge=_kl_judge,
        points=3,
        hint="Each latent value contributes ½(μ² + σ² − 1 − log σ²), where logvar is log σ²; add those up "
        "within each sample and keep the batch dimension.",
    )
)


# =============================================================================================
# 05.2  reparameterize
# =============================================================================================


def _reparameterize(mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    r"""The reparameterisation trick: a sample of N(μ, diag σ²) written as a function of μ and σ,

        z = μ + σ ⊙ ε,     σ = exp(½ · logvar),     ε ~ N(0, I) given

    so that gradients flow to μ and logvar (∂z/∂μ = 1, ∂z/∂logvar = ½ σ ε) while the randomness
    sits in ε. mean, logvar, eps: tensors of one shape (N×C×H×W or N×D). Returns that shape.
    """
    _check_pair(mean, logvar, ("mean", "logvar"))
    if eps.shape != mean.shape:
        raise ValueError(f"eps must have the shape of mean, {tuple(mean.shape)}, got {tuple(eps.shape)}")
    std = torch.exp(0.5 * logvar)
    return mean + std * eps


def _reparam_cases(seed: int) -> list[Case]:
    g = _gen(seed, 52)
    f64 = torch.float64

    def randn(*shape):
        return torch.randn(shape, generator=g, dtype=f64)

    def uniform(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=f64)

    N = int(torch.randint(2, 6, (1,), generator=g))
    return [
        Case((randn(N, 4, 8, 8), uniform(-3.0, 1.0, N, 4, 8, 8), randn(N, 4, 8, 8)), label=f"random {N}×4×8×8 latents"),
        Case((randn(6, 16), uniform(-2.0, 2.0, 6, 16), randn(6, 16)), label="6 latent vectors of 16 dims"),
        Case((randn(3, 2, 4, 4), torch.zeros(3, 2, 4, 4, dtype=f64), randn(3, 2, 4, 4)), label="logvar 0: σ = 1"),
        Case(
            (randn(2, 4, 3, 3), uniform(-2.0, 2.0, 2, 4, 3, 3), torch.zeros(2, 4, 3, 3, dtype=f64)),
            label="ε = 0: z = μ",
        ),
        Case(
            (randn(1, 3, 5, 7), uniform(-20.0, 4.0, 1, 3, 5, 7), randn(1, 3, 5, 7)),
            label="a batch of 1, 3×5×7, logvar from −20 to 4",
        ),
    ]


def _grad_weights(like: torch.Tensor) -> torch.Tensor:
    """Fixed, distinct weights for the probe's loss Σ w ⊙ z (so each gradient entry is checked)."""
    return torch.linspace(0.5, 1.5, like.numel(), dtype=like.dtype).reshape(like.shape)


def _reparam_probe(answer: Any, case: Case) -> dict:
    """z for the case's ε, and the gradients of Σ w ⊙ z with respect to mean and logvar
    (None where no gradient arrives)."""
    mean, logvar = copies(case.args[:2])  # fresh leaves to take gradients
    eps = case.args[2]  # the case's own ε: an answer that writes into it is caught
    mean.requires_grad_(True)
    logvar.requires_grad_(True)
    z = answer(mean, logvar, eps, **case.kwargs)
    if not isinstance(z, torch.Tensor):
        return {"z": z, "grad_mean": None, "grad_logvar": None}
    out = {"z": z.detach().clone(), "grad_mean": None, "grad_logvar": None}
    if z.requires_grad and z.shape == mean.shape:
        try:
            (z * _grad_weights(z).to(z.dtype)).sum().backward()
        except RuntimeError:
            return out
        out["grad_mean"] = None if mean.grad is None else mean.grad.detach().clone()
        out["grad_logvar"] = None if logvar.grad is None else logvar.grad.detach().clone()
    return out


def _reparam_mistakes(case: Case) -> dict[str, Any]:
    mean, logvar, eps = case.args
    std = torch.exp(0.5 * logvar)
    return {
        "you returned the mean: z = μ + σ·ε adds the noise σ·ε to it": mean.clone(),
        "μ and ε are swapped: z = μ + σ·ε scales the noise ε by σ and shifts it by μ": eps + std * mean,
        "σ multiplies ε: z = μ + σ·ε, not μ + σ + ε": mean + std + eps,
        "logvar may be negative (σ < 1): σ = exp(½·logvar) as it is, no abs()": mean
        + torch.exp(0.5 * logvar.abs()) * eps,
        "exp(logvar) is the variance σ²: multiply ε by the standard deviation σ = exp(½·logvar)": mean
        + torch.exp(logvar) * eps,
        "logvar is log σ², not σ: the standard deviation is exp(½·logvar)": mean + logvar * eps,
        "you used exp(−½·logvar), which is 1/σ: the standard deviation is exp(+½·logvar)": mean
        + torch.exp(-0.5 * logvar) * eps,
        "you forgot to add the mean: z = μ + σ·ε": std * eps,
        "you multiplied by the mean: z = μ + σ·ε is a shift by μ, not a scaling": mean * std * eps,
        # NaN wherever logvar < 0, even with ε = 0 (NaN·0 is NaN): matched with equal_nan below
        "logvar is log σ², so σ = exp(½·logvar); sqrt(logvar) is NaN wherever logvar < 0": mean
        + torch.sqrt(logvar) * eps,
    }


def _fresh_noise(case: Case, got: np.ndarray) -> bool:
    """True when z = μ + σ·ε' for some ε' unrelated to the given ε (new noise was drawn)."""
    mean, logvar, eps = (a.numpy() for a in case.args)
    std = np.exp(0.5 * logvar)
    usable = std > 1e-3
    if usable.sum() < 8 or not np.all(np.isfinite(got)) or np.allclose(eps, 0):
        return False
    implied = ((got - mean) / np.where(usable, std, 1.0))[usable]
    given = eps[usable]
    if implied.std() < 1e-8:
        return False
    return abs(float(np.corrcoef(implied, given)[0, 1])) < 0.5


def _reparam_judge(case: Case, got, expected) -> list[SubCheck]:
    where = f" ({case.label})" if case.label else ""
    if not isinstance(got, dict) or "z" not in got:
        return [
            SubCheck("z: type", False, 1, f"expected a tensor z of the shape of mean{where}"),
            SubCheck("z: values", False, 2, ""),
            SubCheck("gradient to mean", False, 1, ""),
            SubCheck("gradient to logvar", False, 1, ""),
        ]
    z = got["z"]
    checks = compare(z, expected["z"], rtol=1e-5, atol=1e-8, label=case.label)
    for c in checks:
        c.name = f"z: {c.name}"
    zv = as_float_array(z)
    values_ok = all(c.passed for c in checks)
    if not values_ok and zv is not None and zv.shape == tuple(case.args[0].shape):
        diagnosis = diagnose(zv, _reparam_mistakes(case), expected=expected["z"], rtol=1e-5, atol=1e-8,
                             equal_nan=True)
        if not diagnosis and not np.all(np.isfinite(zv)):
            diagnosis = ("z holds NaN or inf where the expected z is finite: σ = exp(½·logvar) is finite for every "
                         "logvar here, so look for a sqrt or log of logvar, or a division")
        elif not diagnosis and np.allclose(case.args[2].numpy(), 0):
            diagnosis = "with ε = 0 the sample must be exactly the mean: use the eps you are given, draw no new noise"
        elif not diagnosis and _fresh_noise(case, zv):
            diagnosis = (
                "z does not follow the ε you were given: use the eps argument instead of drawing new noise "
                "(torch.randn_like), so that the same ε gives the same z"
            )
        checks = with_diagnosis(checks, diagnosis, "z: values")
    for key, name, slip in (
        ("grad_mean", "mean", "did you detach it, use .data or torch.no_grad()?"),
        ("grad_logvar", "logvar", "did you detach it, use .data, .item(), numpy or torch.no_grad()?"),
    ):
        g = got.get(key)
        exp = expected[key]
        if g is None and exp is not None and np.allclose(np.asarray(exp, dtype=np.float64), 0.0):
            # the right gradient is 0 here (ε = 0 for logvar): no gradient at all is the same derivative
            checks.append(SubCheck(f"gradient to {name}", True, 1, ""))
            continue
        if g is None:
            msg = f"no gradient reaches {name} from z{where}: {slip}"
            if as_float_array(z) is not None and not values_ok:
                msg = ""  # the value check already says what is wrong
            checks.append(SubCheck(f"gradient to {name}", False, 1, msg))
            continue
        ok = allclose(g, exp, rtol=1e-5, atol=1e-8)
        msg = ""
        if not ok and values_ok:
            msg = (
                f"the gradient of z with respect to {name} is wrong{where}: "
                "z must depend on mean and logvar only through mean + exp(½·logvar)·eps"
            )
        checks.append(SubCheck(f"gradient to {name}", ok, 1, msg))
    return checks


register(
    Exercise(
        id="05.2",
        library_versions=("course_lib.nn.vae.reparameterize",),
        lesson=LESSON,
        name="reparameterize",
        title="write reparameterize",
        reference=_reparameterize,
        cases=_reparam_cases,
        probe=_reparam_probe,
        judge=_reparam_judge,
        points=3,
        hint="Turn the log-variance into a standard deviation, scale the given noise by it and shift by the "
        "mean, all with differentiable torch operations.",
    )
)


# =============================================================================================
# 05.3  compression_analyser
# =============================================================================================

_KEYS = ("latent_side", "pixel_values", "latent_values", "ratio", "bytes_saved")


def _compression_analyser(
    resolutions, factor: int, latent_channels: int, image_channels: int = 3, bytes_per_value: int = 2
) -> dict:
    r"""Pixel space against latent space for square images of the given sides.

    An H×W image with C channels holds H·W·C values; an autoencoder that downsamples by f in each
    direction into c channels gives a latent of (H/f)·(W/f)·c values. For each side s (H = W = s):

        latent_side   = s / f                              (int; s must be a multiple of f)
        pixel_values  = s² · C                             (int)
        latent_values = (s/f)² · c                         (int)
        ratio         = pixel_values / latent_values = f²·C / c    (float, the same for every s)
        bytes_saved   = (pixel_values − latent_values) · bytes_per_value   (int, ∝ s²; < 0 if the
                                                                            latent is the larger)

    Returns a dict of those five keys, each a list with one entry per resolution, in order.
    Raises ValueError if a side is not a positive multiple of f.
    """
    f, c, C, b = int(factor), int(latent_channels), int(image_channels), int(bytes_per_value)
    sides = [int(s) for s in resolutions]
    for s in sides:
        if s <= 0 or s % f != 0:
            raise ValueError(f"resolution {s} is not a positive multiple of the downsampling factor {f}")
    out: dict[str, list] = {k: [] for k in _KEYS}
    for s in sides:
        latent_side = s // f
        pixels = s * s * C
        latents = latent_side * latent_side * c
        out["latent_side"].append(latent_side)
        out["pixel_values"].append(pixels)
        out["latent_values"].append(latents)
        out["ratio"].append(pixels / latents)
        out["bytes_saved"].append((pixels - latents) * b)
    return out


def _invalid(case: Case) -> bool:
    """True when the case holds a side that is not a positive multiple of the factor (the answer must raise)."""
    resolutions, factor = case.args[0], case.args[1]
    return any(int(s) <= 0 or int(s) % int(factor) for s in resolutions)


def _compression_cases(seed: int) -> list[Case]:
    g = _gen(seed, 53)

    def pick(options):
        return options[int(torch.randint(0, len(options), (1,), generator=g))]

    f = pick([4, 8, 16])
    c = pick([3, 4, 5, 6, 8, 16])
    sides = sorted(f * int(k) for k in torch.randint(64 // f, 1024 // f + 1, (3,), generator=g))
    sides = [sides[1], sides[2], sides[0]]  # not sorted: the answers come in the order given
    bad_f = pick([8, 16])
    bad = bad_f * int(torch.randint(16, 64, (1,), generator=g)) + int(torch.randint(1, bad_f, (1,), generator=g))
    return [
        Case(([256, 512, 768, 1024], 8, 4), label="Stable Diffusion: f = 8, c = 4, sides 256 … 1024"),
        Case((sides, f, c), {"bytes_per_value": 4}, label=f"sides {sides}, f = {f}, c = {c}, float32 (4 bytes)"),
        Case(([512], 8, 16), label="one side, 512, f = 8, c = 16 (an SD3-like latent)"),
        Case(
            ([28, 32, 64], 4, 1),
            {"image_channels": 1, "bytes_per_value": 1},
            label="grayscale bytes: C = 1, f = 4, c = 1",
        ),
        Case(([64, 96], 2, 16), label="f = 2, c = 16: the latent holds more values than the image"),
        Case(([512, bad], bad_f, 4), label=f"side {bad} is not a multiple of f = {bad_f}: raise ValueError"),
        Case(([256, 0], 8, 4), label="sides 256 and 0, f = 8: raise ValueError"),
    ]


def _compression_probe(answer: Any, case: Case) -> Any:
    """The answer's dict; for an invalid case, which exception it raised (None if it returned)."""
    args = (list(case.args[0]), *case.args[1:])
    if not _invalid(case):
        return answer(*args, **case.kwargs)
    try:
        answer(*args, **case.kwargs)
    except NotImplementedError:
        raise
    except Exception as e:  # the case asks for an exception: which one is the observation
        # a subclass of ValueError is one (an `except ValueError` catches it)
        return {"raised": "ValueError" if isinstance(e, ValueError) else type(e).__name__, "message": str(e)[:200]}
    return {"raised": None}


def _plain(x: Any) -> Any:
    """Arrays as lists of Python numbers (compare() reads int64 elements as non-numbers)."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def _compression_mistakes(case: Case, key: str) -> dict[str, Any]:
    resolutions, f, c = case.args
    C = case.kwargs.get("image_channels", 3)
    b = case.kwargs.get("bytes_per_value", 2)
    s = [int(v) for v in resolutions]
    pix = [v * v * C for v in s]
    lat = [(v // f) ** 2 * c for v in s]
    if key == "pixel_values":
        return {f"multiply by the image channels: an image holds H·W·C values, C = {C}": [v * v for v in s]}
    if key == "latent_values":
        return {
            "downsample both directions: the latent is (H/f)×(W/f), so divide the pixel count by f²": [
                (v // f) * v * c for v in s
            ],
            f"multiply by the latent channels c = {c}": [(v // f) ** 2 for v in s],
            f"the latent has c = {c} channels, not the image's C = {C}": [(v // f) ** 2 * C for v in s],
        }
    if key == "latent_side":
        return {"the latent side is the image side divided by f": [v * f for v in s]}
    if key == "ratio":
        return {
            "the ratio is pixel values over latent values (how many times fewer values the latent holds)": [
                q / p for p, q in zip(pix, lat)
            ],
            "use true division for the ratio: it need not be a whole number": [p // q for p, q in zip(pix, lat)],
        }
    if key == "bytes_saved":
        return {
            f"multiply the difference in values by bytes_per_value = {b}": [p - q for p, q in zip(pix, lat)],
            "memory saved is the pixel tensor's bytes minus the latent's, not the latent's bytes": [q * b for q in lat],
            "memory saved is the pixel tensor's bytes minus the latent's, not the pixel tensor's bytes": [
                p * b for p in pix
            ],
            "that is in bits: give bytes, (pixel − latent values) · bytes_per_value": [
                (p - q) * b * 8 for p, q in zip(pix, lat)
            ],
            "saved = pixel bytes − latent bytes (negative when the latent is the larger), not its absolute value": [
                abs(p - q) * b for p, q in zip(pix, lat)
            ],
        }
    return {}


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def _list_checks(key: str, value: Any, exp: list, case: Case) -> list[SubCheck]:
    """A length check and one values check for the list under ``key`` (counts compared exactly,
    the ratio to 1e-9 relative), with a diagnosis when the values match a known slip."""
    where = f" ({case.label})" if case.label else ""
    value = _plain(value)
    if not isinstance(value, list):
        msg = f"{key}: expected a list of {len(exp)} numbers, one per resolution, got "
        msg += "a single number" if _number(value) is not None else f"{type(value).__name__}"
        return [SubCheck(f"{key}: length", False, 1, msg + where), SubCheck(f"{key}: values", False, 2, "")]
    if len(value) != len(exp):
        return [
            SubCheck(
                f"{key}: length",
                False,
                1,
                f"{key}: expected {len(exp)} entries, one per resolution, got {len(value)}{where}",
            ),
            SubCheck(f"{key}: values", False, 2, ""),
        ]
    nums = [_number(v) for v in value]
    ok = all(
        n is not None and (n == e if isinstance(e, int) else math.isclose(n, e, rel_tol=1e-9, abs_tol=1e-12))
        for n, e in zip(nums, exp)
    )
    msg = ""
    if not ok:
        shown = [v if _number(v) is None or not float(v).is_integer() else int(v) for v in value]
        msg = f"{key}: expected {exp}, got {shown}{where}"
        if all(n is not None for n in nums):
            diagnosis = diagnose(nums, _compression_mistakes(case, key), expected=exp, rtol=1e-9, atol=0.0)
            if not diagnosis and sorted(nums) == sorted(float(e) for e in exp):
                diagnosis = "the right entries in another order: one per resolution, in the order given (no sorting)"
            msg += f" — {diagnosis}" if diagnosis else ""
        else:
            msg += " — every entry must be a number"
    return [SubCheck(f"{key}: length", True, 1, ""), SubCheck(f"{key}: values", ok, 2, msg)]


def _compression_judge(case: Case, got, expected) -> list[SubCheck]:
    where = f" ({case.label})" if case.label else ""
    if _invalid(case):
        raised = got.get("raised") if isinstance(got, dict) else None
        ok = raised == "ValueError"
        side = next(int(s) for s in case.args[0] if int(s) <= 0 or int(s) % int(case.args[1]))
        if ok:
            msg = ""
        elif side <= 0 and raised is None:
            msg = (
                f"a side of {side} is a multiple of f = {case.args[1]} but not a positive one, so there is no image: "
                f"raise ValueError for a side ≤ 0 too (test side <= 0 as well as side % f){where}"
            )
        elif side <= 0:
            msg = (
                f"a side of {side} must raise ValueError before anything is computed, not {raised}: test "
                f"side <= 0 as well as side % f (a side of 0 is a multiple of every f){where}"
            )
        elif raised is None:
            msg = (
                f"side {side} is not a multiple of f = {case.args[1]}, so there is no whole latent: raise ValueError "
                f"(do not round the latent size){where}"
            )
        else:
            msg = f"raise ValueError for a side that is not a multiple of f, not {raised}{where}"
        return [SubCheck("raises ValueError", ok, 8, msg)]
    if not isinstance(got, dict) or "__object__" in got or "raised" in got:
        what = got.get("__object__", "an object") if isinstance(got, dict) else type(got).__name__
        return [SubCheck("type", False, 1, f"expected a dict with keys {list(_KEYS)}, got {what}{where}")] + [
            SubCheck(k, False, 3, "") for k in _KEYS
        ]
    missing = [k for k in _KEYS if k not in got]
    checks = [SubCheck("keys", not missing, 1, f"missing keys {missing}{where}" if missing else "")]
    for key in _KEYS:
        if key in got:
            checks += _list_checks(key, got[key], expected[key], case)
        else:
            checks.append(SubCheck(f"{key}: values", False, 3, ""))
    return checks


register(
    Exercise(
        id="05.3",
        lesson=LESSON,
        name="compression_analyser",
        title="write the compression analyser",
        reference=_compression_analyser,
        cases=_compression_cases,
        probe=_compression_probe,
        judge=_compression_judge,
        points=4,
        hint="Count values: an s×s image with C channels holds s²·C, its latent (s/f)²·c; everything else "
        "(ratio, bytes) follows from those two counts, and a side that f does not divide has no latent.",
    )
)


# =============================================================================================
# 05.4  psnr
# =============================================================================================


def _psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Peak signal-to-noise ratio of each image pair, in decibels, for images in [−1, 1]:

        MSE_n  = mean over c, h, w of (x − y)²
        PSNR_n = 10 · log10( R² / MSE_n ),   R = 2 (the data range, 1 − (−1))

    +inf where MSE_n = 0 (identical images). x, y: N×C×H×W. Returns shape (N,).
    """
    _check_pair(x, y, ("x", "y"))
    mse = (x - y).pow(2).reshape(x.shape[0], -1).mean(dim=1)
    return 10.0 * torch.log10(4.0 / mse)


def _psnr_cases(seed: int) -> list[Case]:
    g = _gen(seed, 54)
    f64 = torch.float64

    def image(*shape, dtype=f64):
        return (2 * torch.rand(shape, generator=g, dtype=f64) - 1).to(dtype)

    def noisy(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=f64).reshape(-1, *([1] * (x.dim() - 1)))
        n = torch.randn(x.shape, generator=g, dtype=f64)
        return (x.to(f64) + sigma * n).clamp(-1, 1).to(x.dtype)

    N = int(torch.randint(2, 6, (1,), generator=g))
    x1 = image(N, 3, 8, 8)
    x2 = image(4, 3, 8, 8)
    x3 = image(3, 3, 6, 6)
    y3 = noisy(x3, 0.1)
    y3[1] = x3[1]
    x4 = image(1, 1, 5, 7)
    x6 = image(4, 3, 6, 6, dtype=torch.float32)
    return [
        Case((x1, noisy(x1, 0.1)), label=f"{N} random images, noise σ = 0.1"),
        Case((x2, noisy(x2, [0.01, 0.1, 0.5, 1.0])), label="noise σ = 0.01, 0.1, 0.5, 1 per image"),
        Case((x3, y3), label="the second image equals its reconstruction: PSNR +inf"),
        Case((x4, noisy(x4, 0.3)), label="a batch of 1, one channel, 5×7"),
        Case(
            (-torch.ones(2, 3, 4, 4, dtype=f64), torch.ones(2, 3, 4, 4, dtype=f64)), label="all −1 against all +1: 0 dB"
        ),
        Case((x6, noisy(x6, 0.05)), label="float32 images"),
    ]


_MEASURED_RANGE = (
    "the data range is fixed by the images' scale, [−1, 1], so R = 2: do not measure it from the data "
    "(x.max() − x.min() only comes near 2, and is 0 for a flat image)"
)


def _measured_range_psnrs(case: Case) -> list[torch.Tensor]:
    """What the PSNR gives with a data range measured from the data instead of R = 2: max − min of x,
    of y or of both, over the whole batch or per image."""
    x, y = (a.to(torch.float64) for a in case.args)
    N = x.shape[0]
    xf, yf = x.reshape(N, -1), y.reshape(N, -1)
    mse = (xf - yf).pow(2).mean(1)
    both = torch.cat([xf, yf], dim=1)
    ranges = [v.max() - v.min() for v in (xf, yf, both)] + [v.amax(1) - v.amin(1) for v in (xf, yf, both)]
    return [10 * torch.log10(r**2 / mse) for r in ranges]


def _psnr_mistakes(case: Case) -> dict[str, Any]:
    x, y = (a.to(torch.float64) for a in case.args)
    N = x.shape[0]
    mse = (x - y).pow(2).reshape(N, -1).mean(1)
    right = 10 * torch.log10(4.0 / mse)
    pooled = 10 * torch.log10(4.0 / mse.mean())  # one PSNR from the MSE of the whole batch
    per_image = "one PSNR per image, shape (N,)"
    mae = (x - y).abs().reshape(N, -1).mean(1)
    return {
        "about 6.02 dB too low: images in [−1, 1] have a data range of 2, so the peak power R² is 4, not 1": 10
        * torch.log10(1.0 / mse),
        "the peak 255 is for 8-bit images; these are floats in [−1, 1], data range 2": 10 * torch.log10(255.0**2 / mse),
        "20·log10 goes with the peak amplitude over the RMSE; with the MSE (a power) use 10·log10(R²/MSE)": 20
        * torch.log10(4.0 / mse),
        "20·log10(R/MSE) mixes an amplitude with a power: use 10·log10(R²/MSE) or 20·log10(R/RMSE)": 20
        * torch.log10(2.0 / mse),
        "decibels use log10, not the natural log": 10 * torch.log(4.0 / mse),
        "the peak *power* is R² = 4 for the data range R = 2: 10·log10(R²/MSE), not 10·log10(R/MSE)": 10
        * torch.log10(2.0 / mse),
        "you summed the squared errors: the MSE is their mean over C, H and W": 10
        * torch.log10(4.0 / (mse * x[0].numel())),
        **({
            f"{per_image}, not the batch's average PSNR": right.mean() if torch.isfinite(right).all() else None,
            f"{per_image}, not one PSNR from the MSE of all the images": pooled,
            f"{per_image}: the MSE averages within each image only": pooled.repeat(N),
        } if N > 1 else {}),  # with one image these are a squeeze: _squeezed_batch says that instead
        "that is the MSE itself: PSNR = 10·log10(R²/MSE) with R² = 4": mse,
        "you averaged |x − y|: the MSE is the mean of the squared differences (x − y)²": 10 * torch.log10(4.0 / mae),
        "with the RMSE (an amplitude) the factor is 20: 20·log10(R/RMSE), or 10·log10(R²/MSE)": 10
        * torch.log10(2.0 / mse.sqrt()),
    }


def _psnr_judge(case: Case, got, expected) -> list[SubCheck]:
    checks = compare(got, expected, rtol=1e-5, atol=1e-6, label=case.label)
    if all(c.passed for c in checks):
        return checks
    diagnosis = _squeezed_batch(got, expected) or diagnose(
        got, _psnr_mistakes(case), expected=expected, rtol=1e-5, atol=1e-6
    )
    for value in [] if diagnosis else _measured_range_psnrs(case):
        diagnosis = diagnose(got, {_MEASURED_RANGE: value}, expected=expected, rtol=1e-5, atol=1e-6)
        if diagnosis:
            break
    arr, exp = as_float_array(got), np.asarray(expected, dtype=np.float64)
    if not diagnosis and arr is not None and arr.shape == exp.shape:
        inf = np.isinf(exp)
        if inf.any() and np.isfinite(arr[inf]).all():
            diagnosis = (
                "an image identical to its reconstruction has MSE 0 and PSNR +inf: return inf there "
                "(10·log10(4/0) gives it; do not add a small epsilon or clamp the MSE)"
            )
        elif inf.any() and np.isnan(arr[inf]).any():
            diagnosis = "an image identical to its reconstruction must give +inf, not NaN"
    return with_diagnosis(checks, diagnosis)


register(
    Exercise(
        id="05.4",
        library_versions=("course_lib.nn.vae.psnr",),
        lesson=LESSON,
        name="psnr",
        title="write psnr",
        reference=_psnr,
        cases=_psnr_cases,
        judge=_psnr_judge,
        points=2,
        any_float=True,  # a measurement: a PSNR kept in float64 for float32 images is as right
        hint="10·log10(R² / MSE) with R = 2, the width of [−1, 1], and one MSE per image (the mean over its "
        "channels and pixels, not over the batch); identical images give +inf.",
    )
)

r"""Graded exercises of lesson 02, forward noising (``solutions/02_forward_noising.ipynb``).

02.1 ``q_sample_closed_form``: the one-jump formula with a timestep per sample.
02.2 ``forward_by_steps``: the step-by-step chain q(x_t | x_{t-1}), and the single noise
     ε̄ that makes the closed form land on the same x_t.
02.3 ``evaluate_noise_predictors``: the noise-predictor evaluator of the curriculum: the
     zero, random and oracle predictors' errors per band of timesteps, in noise space
     (ε-MSE) and in image space (x̂0-MSE).

Every check input is built from the grading seed; the noises are passed in, so a correct
answer matches the reference to rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from course_lib.grading.checks import allclose
from course_lib.grading.exercise import Case, Exercise, SubCheck, compare, register
from course_lib.schedules import NoiseSchedule

LESSON = "02_forward_noising"


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values (N,) shaped (N, 1, 1, …) to broadcast against like (N×C×H×W), in like's dtype."""
    return values.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def _random_betas(g: torch.Generator, num_steps: int) -> torch.Tensor:
    """A short, increasing, made-up schedule (float64), so answers cannot assume T = 1000."""
    return torch.sort(torch.rand(num_steps, generator=g, dtype=torch.float64) * 0.3 + 0.01).values


def _images(g: torch.Generator, shape: tuple, dtype=torch.float32) -> torch.Tensor:
    """Image-like values, uniform in [-1, 1]."""
    return torch.rand(shape, generator=g, dtype=dtype) * 2 - 1


def _diagnosis(message: str) -> SubCheck:
    """A note on what went wrong, added beside failed sub-checks; weight 0, so it never costs points.

    Its message is the same in every case, so the feedback (which drops repeated messages) shows it once.
    """
    return SubCheck("diagnosis", False, 0.0, message)


def _matches(got, candidate: torch.Tensor | np.ndarray, rtol=1e-4, atol=1e-6) -> bool:
    try:
        g = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    c = np.asarray(candidate.detach().double().numpy() if hasattr(candidate, "detach") else candidate, np.float64)
    return g.shape == c.shape and bool(np.allclose(g, c, rtol=rtol, atol=atol))


# ---------------------------------------------------------------------------------------------
# 02.1 q_sample_closed_form
# ---------------------------------------------------------------------------------------------


def _q_sample_closed_form(alphas_cumprod: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor):
    r"""x_t = sqrt(abar_t) x0 + sqrt(1 − abar_t) ε, with each sample's own abar_t.

    alphas_cumprod: (T,); x0, noise: N×C×H×W; t: int64 (N,) in 0 … T−1. Returns x_t, N×C×H×W.
    """
    abar = _per_sample(alphas_cumprod[t], x0)  # (N, 1, 1, 1): one abar per image
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def _cases_q_sample(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    linear = NoiseSchedule.linear(1000).alphas_cumprod
    cosine = NoiseSchedule.cosine(1000).alphas_cumprod

    def case(abar, shape, t, label):
        x0 = _images(g, shape)
        noise = torch.randn(shape, generator=g)
        return Case((abar, x0, torch.as_tensor(t, dtype=torch.long), noise), label=label)

    short = torch.cumprod(1 - _random_betas(g, 7), 0)
    return [
        case(linear, (6, 3, 5, 7), torch.randint(0, 1000, (6,), generator=g), "linear, 6 images, random t"),
        # W == N: abar[t] without reshaping broadcasts along the width instead of raising
        case(cosine, (4, 1, 8, 4), torch.randint(0, 1000, (4,), generator=g), "cosine, 4 images 1×8×4, random t"),
        # t away from the end, where sqrt(1 − abar) ≈ 1 − abar would hide a missing square root
        case(linear, (1, 3, 4, 4), [int(torch.randint(50, 900, (1,), generator=g))], "a batch of 1"),
        case(cosine, (3, 2, 3, 3), [0, 999, 0], "t = 0 and t = T−1"),
        case(short, (5, 2, 3, 3), torch.randint(0, 7, (5,), generator=g), "a made-up schedule with T = 7"),
    ]


def _q_sample_mistakes(abar_table, x0, t, noise):
    """What common wrong answers would return on these inputs (name, tensor)."""
    x0, noise = x0.double(), noise.double()
    a = _per_sample(abar_table[t], x0)
    out = [
        ("you used abar_t where sqrt(abar_t) belongs (and 1 − abar_t for its square root)", a * x0 + (1 - a) * noise),
        ("the noise term needs sqrt(1 − abar_t), not 1 − abar_t", a.sqrt() * x0 + (1 - a) * noise),
        ("the signal term needs sqrt(abar_t), not abar_t", a * x0 + (1 - a).sqrt() * noise),
        (
            "the coefficients are swapped: x0 keeps sqrt(abar_t), the noise gets sqrt(1 − abar_t)",
            (1 - a).sqrt() * x0 + a.sqrt() * noise,
        ),
    ]
    out.append(("you subtracted the noise: x_t = sqrt(abar_t)·x0 + sqrt(1 − abar_t)·ε adds it",
                a.sqrt() * x0 - (1 - a).sqrt() * noise))
    if len(t) > 1 and bool((t != t[0]).any()):  # one image's abar for the whole batch
        one = abar_table[t[0]].double()
        out.append((f"every image needs its own abar_t: you used abar at t[0] = {int(t[0])} for the whole batch "
                    "(alphas_cumprod[t] picks one per image)", one.sqrt() * x0 + (1 - one).sqrt() * noise))
    T = len(abar_table)
    for shift, word in ((-1, "t − 1"), (1, "t + 1")):
        s = t - 1 if shift < 0 else (t + 1).clamp(max=T - 1)  # alphas_cumprod[-1] wraps, as a slip would
        b = _per_sample(abar_table[s], x0)
        out.append((f"you read abar at {word}: abar_t is alphas_cumprod[t]", b.sqrt() * x0 + (1 - b).sqrt() * noise))
    if x0.shape[-1] == len(t):  # abar[t] of shape (N,) broadcast against the last axis, W
        w = abar_table[t].double()
        out.append(
            (
                "abar_t[t] has shape (N,), which broadcast along the image width: reshape it to (N, 1, 1, 1)",
                w.sqrt() * x0 + (1 - w).sqrt() * noise,
            )
        )
    return out


def _judge_q_sample(case: Case, got, expected) -> list[SubCheck]:
    checks = compare(got, expected, rtol=1e-4, atol=1e-6, label=case.label)
    if all(c.passed for c in checks) or not isinstance(got, np.ndarray) or got.shape != np.shape(expected):
        return checks
    # The reference casts abar_t to x0's dtype first, as the solution does; computing in float64 and casting
    # the result is more exact (1 − abar_0 keeps its digits) and differs by more than atol where x_t is small.
    abar_table, x0, t, noise = case.args
    a = abar_table[t].double().reshape(-1, *([1] * (x0.dim() - 1)))
    exact = (a.sqrt() * x0.double() + (1 - a).sqrt() * noise.double()).to(x0.dtype)
    exact_checks = compare(got, exact.double().numpy(), rtol=1e-4, atol=1e-6, label=case.label)
    if all(c.passed for c in exact_checks):
        return exact_checks
    for why, candidate in _q_sample_mistakes(*case.args):
        if _matches(got, candidate):
            return checks + [_diagnosis(f"It looks like {why}")]
    return checks


register(
    Exercise(
        id="02.1",
        library_versions=("course_lib.schedules.q_sample",),
        lesson=LESSON,
        name="q_sample_closed_form",
        title="write q_sample_closed_form",
        reference=_q_sample_closed_form,
        cases=_cases_q_sample,
        judge=_judge_q_sample,
        points=2,
        hint="Each image needs its own abar_t: pick them with t and give them a shape that broadcasts "
        "over C, H and W; then compare both coefficients with the closed form in the lesson.",
    )
)


# ---------------------------------------------------------------------------------------------
# 02.2 forward_by_steps
# ---------------------------------------------------------------------------------------------


def _forward_by_steps(betas: torch.Tensor, x0: torch.Tensor, noises: torch.Tensor) -> dict:
    r"""Run q(x_t | x_{t−1}) for t = 0 … k, k = len(noises) − 1, and find the equivalent jump noise.

    Each step:  x_t = sqrt(1 − beta_t) x_{t−1} + sqrt(beta_t) ε_t  (x_{−1} is the clean x0),
    with ε_t = noises[t]. The accumulated noise n_t = sqrt(1 − beta_t) n_{t−1} + sqrt(beta_t) ε_t
    has variance 1 − abar_t and x_t = sqrt(abar_t) x0 + n_t, so ε̄ = n_k / sqrt(1 − abar_k) is
    the single noise with  q_sample(x0, k, ε̄) = x_k.

    betas: (T,); x0: N×C×H×W; noises: (k+1)×N×C×H×W with k < T.
    Returns {"x_t": x_k (N×C×H×W), "eps_bar": ε̄ (N×C×H×W)}.
    """
    x = x0
    n = torch.zeros_like(x0)
    one_minus_abar = 0.0
    for step, eps in enumerate(noises):
        beta = float(betas[step])
        x = (1 - beta) ** 0.5 * x + beta**0.5 * eps
        n = (1 - beta) ** 0.5 * n + beta**0.5 * eps
        one_minus_abar = (1 - beta) * one_minus_abar + beta  # Var(n_t) = 1 − abar_t
    return {"x_t": x, "eps_bar": n / one_minus_abar**0.5}


def _cases_by_steps(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    linear, cosine = NoiseSchedule.linear(1000).betas, NoiseSchedule.cosine(1000).betas
    scaled = NoiseSchedule.scaled_linear(1000).betas
    cosine_200 = NoiseSchedule.cosine(200).betas  # its last beta is clipped at 0.999 too

    def case(betas, shape, k, label):
        x0 = _images(g, shape, torch.float64)
        noises = torch.randn((k + 1, *shape), generator=g, dtype=torch.float64)
        return Case((betas, x0, noises), label=label)

    k_mid = int(torch.randint(20, 200, (1,), generator=g))
    k_late = int(torch.randint(200, 400, (1,), generator=g))
    return [
        case(linear, (3, 1, 4, 4), k_mid, f"linear, k = {k_mid}"),
        case(cosine, (1, 3, 2, 2), 0, "a single step (k = 0), a batch of 1"),
        case(cosine_200, (2, 1, 3, 3), 199, "cosine with T = 200, all steps (k = T−1)"),
        case(scaled, (2, 2, 3, 5), k_late, f"scaled-linear, k = {k_late}"),
        case(_random_betas(g, 5), (5, 2, 3, 1), 4, "a made-up schedule, T = 5, all steps"),
    ]


_BY_STEPS_TIPS = {
    "x_t": "Step t keeps sqrt(1 − beta_t) of the previous x and adds sqrt(beta_t)·noises[t], starting "
    "from x0 with step t = 0 and ending with step k = len(noises) − 1",
    "eps_bar": "eps_bar is the unit-variance noise for which sqrt(abar_k)·x0 + sqrt(1 − abar_k)·eps_bar equals x_t, "
    "with abar_k = (1 − beta_0)(1 − beta_1)…(1 − beta_k): check abar_k (every step up to k itself, of 1 − beta) and "
    "the division by sqrt(1 − abar_k)",
}


def _by_steps_diagnosis(case: Case, got) -> str:
    """Which usual slip gives the learner's eps_bar on this case ('' if none)."""
    betas, x0, noises = case.args
    if not isinstance(got, dict) or "eps_bar" not in got or "x_t" not in got:
        return ""
    k = len(noises) - 1
    x_t = torch.as_tensor(np.asarray(got["x_t"], dtype=np.float64))  # theirs: the slip is in eps_bar alone
    b, x0d = betas.double(), x0.double()
    abar = torch.cumprod(1 - b, 0)
    candidates = [("abar_k is the product of (1 − beta_s), not of beta_s", torch.cumprod(b, 0)[k])]
    if k > 0:
        candidates.append(("your abar stops one step early: abar_k = (1 − beta_0)…(1 − beta_k) includes step k "
                           "itself, and prod(1 − betas[:k]) stops at step k − 1 (use betas[:k + 1])", abar[k - 1]))
    if k + 1 < len(b):
        candidates.append(("your abar goes one step too far: abar_k = (1 − beta_0)…(1 − beta_k) stops at step k, "
                           "without the factor (1 − beta_{k+1})", abar[k + 1]))
    for why, a in candidates:
        # a slip's abar near 1 divides by ~0; near 0 its eps_bar is x_t itself, which most wrong answers on an
        # all-steps case come close to: neither can be told apart there
        if float(1 - a) < 1e-12 or float(a) < 1e-6 or x_t.shape != x0d.shape:
            continue
        # two routes to eps_bar: solve x_t = sqrt(a)·x0 + sqrt(1 − a)·ε̄ with the slipped a, or carry the noise
        # n_k along the loop (right) and divide by sqrt(1 − a) with the slipped a, as the task suggests
        n_k = x_t - abar[k].sqrt() * x0d
        if _matches(got["eps_bar"], (x_t - a.sqrt() * x0d) / (1 - a).sqrt()) or _matches(
            got["eps_bar"], n_k / (1 - a).sqrt()
        ):
            return f"It looks like {why}"
    return ""


#: ε̄ is what this exercise adds to lesson 02's loop: its values weigh twice the loop's x_t, so a right loop with a
#: wrong ε̄ keeps a little over half the points, not three quarters
_EPS_BAR_WEIGHT = 4.0


def _judge_by_steps(case: Case, got, expected) -> list[SubCheck]:
    checks = compare(got, expected, rtol=1e-4, atol=1e-6, label=case.label)
    for c in checks:
        if c.name == "eps_bar: values":
            c.weight = _EPS_BAR_WEIGHT
    failed = {c.name.split(":")[0] for c in checks if not c.passed}
    named = _by_steps_diagnosis(case, got) if "eps_bar" in failed else ""
    tips = [tip for key, tip in _BY_STEPS_TIPS.items() if key in failed and not (key == "eps_bar" and named)]
    return checks + [_diagnosis(m) for m in ([named] if named else []) + tips]


register(
    Exercise(
        id="02.2",
        library_versions=("course_lib.schedules.q_step",),
        lesson=LESSON,
        name="forward_by_steps",
        title="write forward_by_steps",
        reference=_forward_by_steps,
        cases=_cases_by_steps,
        judge=_judge_by_steps,
        points=3,
        hint="Every step is linear in x and in the noise, so you can carry the accumulated noise (and its "
        "variance) along the loop exactly as you carry x.",
    )
)


# ---------------------------------------------------------------------------------------------
# 02.3 evaluate_noise_predictors
# ---------------------------------------------------------------------------------------------


def _evaluate_noise_predictors(
    alphas_cumprod: torch.Tensor,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    random_eps: torch.Tensor,
    bands,
) -> dict:
    r"""Errors of three noise predictors that need no training, per band of timesteps.

    Noise each image:  x_t = sqrt(abar_t) x0 + sqrt(1 − abar_t) ε  (ε = noise). Predictors:
    zero (ε̂ = 0), random (ε̂ = random_eps, drawn independently of ε) and oracle (ε̂ = ε).
    For each, in each band [lo, hi) (the samples with lo ≤ t < hi):

        eps_mse = mean of (ε̂ − ε)²                         over all values of the band's images
        x0_mse  = mean of (x̂0 − x0)²,  x̂0 = (x_t − sqrt(1 − abar_t) ε̂) / sqrt(abar_t)

    Expected values: eps_mse is 0 / 1 / 2 for oracle / zero / random at every t (flat), while
    x0_mse = eps_mse / SNR(t): the zero predictor is good in image space at small t only.

    alphas_cumprod: (T,); x0, noise, random_eps: N×C×H×W; t: int64 (N,); bands: B pairs (lo, hi).
    Returns {"zero" | "random" | "oracle": {"eps_mse": (B,), "x0_mse": (B,)}}.
    """
    abar = _per_sample(alphas_cumprod[t], x0)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    predictions = {"zero": torch.zeros_like(noise), "random": random_eps, "oracle": noise}
    masks = []
    for lo, hi in bands:
        mask = (t >= lo) & (t < hi)
        if not mask.any():
            raise ValueError(f"no sample has t in the band [{lo}, {hi})")
        masks.append(mask)
    out = {}
    for name, eps_hat in predictions.items():
        x0_hat = (x_t - (1 - abar).sqrt() * eps_hat) / abar.sqrt()
        eps_err = (eps_hat - noise).pow(2).flatten(1).mean(1)  # per image
        x0_err = (x0_hat - x0).pow(2).flatten(1).mean(1)
        out[name] = {
            "eps_mse": torch.stack([eps_err[m].mean() for m in masks]),
            "x0_mse": torch.stack([x0_err[m].mean() for m in masks]),
        }
    return out


def _cases_predictors(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    T = 1000
    linear, cosine = NoiseSchedule.linear(T).alphas_cumprod, NoiseSchedule.cosine(T).alphas_cumprod
    scaled = NoiseSchedule.scaled_linear(T).alphas_cumprod

    def case(abar, shape, fixed_t, bands, label):
        n = shape[0]
        t = torch.cat(
            [torch.tensor(fixed_t, dtype=torch.long), torch.randint(0, len(abar), (n - len(fixed_t),), generator=g)]
        )
        t = t[torch.randperm(n, generator=g)]
        x0 = _images(g, shape, torch.float64)
        noise = torch.randn(shape, generator=g, dtype=torch.float64)
        random_eps = torch.randn(shape, generator=g, dtype=torch.float64)
        return Case((abar, x0, t, noise, random_eps, bands), label=label)

    short = torch.cumprod(1 - _random_betas(g, 10), 0)
    return [
        # the band edges themselves: t = 99 and t = 100 fall in different bands
        case(
            linear,
            (24, 1, 4, 4),
            [0, 99, 100, 499, 500, 999],
            [(0, 100), (100, 500), (500, 1000)],
            "linear, bands [0,100) [100,500) [500,1000)",
        ),
        case(
            cosine,
            (16, 3, 3, 5),
            [0, 249, 250, 499, 500, 749, 750, 999],
            [(0, 250), (250, 500), (500, 750), (750, 1000)],
            "cosine, four bands, 3×3×5 images",
        ),
        case(
            linear,
            (12, 1, 2, 2),
            [3, 995],
            [(0, 10), (990, 1000)],
            "bands with a gap: samples outside every band are left out",
        ),
        case(scaled, (8, 2, 2, 2), [10, 600], [(500, 1000), (0, 500)], "scaled-linear, bands not in increasing order"),
        case(short, (5, 1, 3, 3), [0, 1, 9], [(0, 1), (1, 10)], "a made-up schedule, T = 10; the band [0,1)"),
    ]


_PREDICTOR_TIPS = {
    "eps_mse": "eps_mse is the mean of (ε̂ − noise)² over every value of the band's images; ε̂ is 0 (zero), "
    "random_eps (random) or noise itself (oracle)",
    "x0_mse": "x0_mse needs x_t = sqrt(abar_t)·x0 + sqrt(1 − abar_t)·noise, then x̂0 = (x_t − sqrt(1 − abar_t)·ε̂) "
    "/ sqrt(abar_t), then the mean of (x̂0 − x0)² over the band's images",
}


_HALF_OPEN = "A band [lo, hi) holds lo ≤ t < hi: an image with t == hi belongs to the next band"

#: Bands with the wrong edges: (message, which t the slip puts in the band [lo, hi) of a schedule of T steps).
#: The band ending at T comes before hi − 1 everywhere: where a case cannot tell them apart, it names the narrower.
_BAND_SLIPS = (
    (_HALF_OPEN, lambda t, lo, hi, T: (t >= lo) & (t <= hi)),
    (
        "your bands hold lo < t ≤ hi: a band [lo, hi) holds lo ≤ t < hi, so an image with t == lo belongs to it "
        "and one with t == hi to the next band",
        lambda t, lo, hi, T: (t > lo) & (t <= hi),
    ),
    (
        "your bands leave out t == lo: a band [lo, hi) holds lo ≤ t < hi, its lower edge included",
        lambda t, lo, hi, T: (t > lo) & (t < hi),
    ),
    (
        "the band that ends at T leaves out t = T − 1: a band [lo, hi) holds every t with lo ≤ t < hi, and t "
        "runs up to T − 1",
        lambda t, lo, hi, T: (t >= lo) & (t < min(hi, T - 1)),
    ),
    (
        "your bands leave out t == hi − 1: a band [lo, hi) holds lo ≤ t < hi, so hi − 1 is its last step (T − 1 "
        "in the band that ends at T)",
        lambda t, lo, hi, T: (t >= lo) & (t < hi - 1),
    ),
)

_RMSE = (
    "your scores look like the root of the mean squared error: eps_mse and x0_mse are the means of (ε̂ − ε)² and "
    "of (x̂0 − x0)², with no square root"
)

#: Another error measure: (message, the score of a band from its images' errors ε̂ − ε or x̂0 − x0, K×C×H×W).
_SCORE_SLIPS = (
    (_RMSE, lambda err: err.pow(2).mean().sqrt()),
    (_RMSE, lambda err: err.pow(2).flatten(1).mean(1).sqrt().mean()),  # a root per image, then their mean
    (
        "your scores look like the mean absolute error, mean |ε̂ − ε|: eps_mse and x0_mse are mean squared "
        "errors, the mean of (ε̂ − ε)²",
        lambda err: err.abs().mean(),
    ),
)


def _squared_mean(err: torch.Tensor) -> torch.Tensor:
    return err.pow(2).mean()


def _noised(abar, x0, noise):
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def _solved(x_t, abar, eps_hat):
    return (x_t - (1 - abar).sqrt() * eps_hat) / abar.sqrt()


def _predictor_slip(
    alphas_cumprod,
    x0,
    t,
    noise,
    random_eps,
    bands,
    in_band=None,
    score=_squared_mean,
    step=None,
    noised=_noised,
    solved=_solved,
) -> dict:
    """What an evaluator with other band edges (``in_band(t, lo, hi, T)``), another error measure
    (``score(err)``), another row of the table (``step(t)``), another x_t (``noised(abar, x0, noise)``) or
    another x̂0 (``solved(x_t, abar, ε̂)``) returns; an empty band scores NaN, as torch's mean of nothing does."""
    T = len(alphas_cumprod)
    abar = _per_sample(alphas_cumprod[t if step is None else step(t)], x0)
    x_t = noised(abar, x0, noise)
    masks = [in_band(t, lo, hi, T) if in_band else (t >= lo) & (t < hi) for lo, hi in bands]
    out = {}
    for name, eps_hat in {"zero": torch.zeros_like(noise), "random": random_eps, "oracle": noise}.items():
        x0_hat = solved(x_t, abar, eps_hat)
        out[name] = {
            "eps_mse": torch.stack([score((eps_hat - noise)[m]) for m in masks]),
            "x0_mse": torch.stack([score((x0_hat - x0)[m]) for m in masks]),
        }
    return out


def _same_scores(got, candidate: dict) -> bool:
    """Whether ``got`` holds the candidate's numbers at every predictor and score (NaN matching NaN)."""
    if not isinstance(got, dict):
        return False
    for name, scores in candidate.items():
        part = got.get(name)
        if not isinstance(part, dict):
            return False
        for key, value in scores.items():
            if not allclose(part.get(key), value.numpy(), rtol=1e-4, atol=1e-6, equal_nan=True):
                return False
    return True


_ONE_STEP_BACK = (
    "your x0_mse uses abar_{t−1}: image i was noised at step t_i, so take alphas_cumprod[t] (t counts from 0) "
    "both to build x_t and to solve for x̂0"
)
_NOISE_NOT_ROOT = (
    "your x_t scales the noise by 1 − abar_t: its standard deviation is sqrt(1 − abar_t), x_t = sqrt(abar_t)·x0 + "
    "sqrt(1 − abar_t)·noise, and x̂0 = (x_t − sqrt(1 − abar_t)·ε̂) / sqrt(abar_t)"
)

#: Slips in x_t or x̂0: (message, keyword arguments of _predictor_slip).
_JUMP_SLIPS = (
    (
        "your x̂0 divides by abar_t: solving x_t = sqrt(abar_t)·x0 + sqrt(1 − abar_t)·ε for x0 divides by its "
        "square root, x̂0 = (x_t − sqrt(1 − abar_t)·ε̂) / sqrt(abar_t)",
        {"solved": lambda x_t, abar, e: (x_t - (1 - abar).sqrt() * e) / abar},
    ),
    (_ONE_STEP_BACK, {"step": lambda t: (t - 1).clamp(min=0)}),
    (_ONE_STEP_BACK, {"step": lambda t: t - 1}),  # t = 0 reads the table's last row
    (
        _NOISE_NOT_ROOT,
        {
            "noised": lambda abar, x0, n: abar.sqrt() * x0 + (1 - abar) * n,
            "solved": lambda x_t, abar, e: (x_t - (1 - abar) * e) / abar.sqrt(),
        },
    ),
    (_NOISE_NOT_ROOT, {"noised": lambda abar, x0, n: abar.sqrt() * x0 + (1 - abar) * n}),
    (
        "your x0_mse compares x_t itself with x0: first solve for x̂0 = (x_t − sqrt(1 − abar_t)·ε̂) / "
        "sqrt(abar_t), with each predictor's ε̂, then take the mean of (x̂0 − x0)²",
        {"solved": lambda x_t, abar, e: x_t},
    ),
)


def _predictor_diagnosis(case: Case, got, expected) -> str:
    """The message of the band-edge, error-measure or x_t / x̂0 slip whose numbers ``got`` holds, or ''."""
    slips = [(why, {"in_band": rule}) for why, rule in _BAND_SLIPS]
    slips += [(why, {"score": score}) for why, score in _SCORE_SLIPS]
    slips += list(_JUMP_SLIPS)
    try:
        for why, how in slips:
            candidate = _predictor_slip(*case.args, **how)
            if not _same_scores(expected, candidate) and _same_scores(got, candidate):
                return why
        *args, bands = case.args  # the bands taken in increasing order instead of the order given
        candidate = _predictor_slip(*args, sorted(bands))
        if not _same_scores(expected, candidate) and _same_scores(got, candidate):
            return "the right scores in another order: one score per band, in the order of `bands` (do not sort them)"
    except (TypeError, ValueError, RuntimeError, IndexError, AttributeError):
        return ""
    return ""


def _judge_predictors(case: Case, got, expected) -> list[SubCheck]:
    """compare(), reweighted: the structure (keys, shapes) is worth little, and so are the oracle's
    values, which are 0 and which many wrong answers get right by accident; the zero and random
    predictors' values carry the points."""
    checks = compare(got, expected, rtol=1e-4, atol=1e-6, label=case.label)
    for c in checks:
        if c.name == "keys" or c.name.endswith((": keys", ": shape", ": type", ": length")):
            c.weight = 0.25
        elif c.name.startswith("oracle."):
            c.weight = 0.5
    if all(c.passed for c in checks):
        return checks
    named = _predictor_diagnosis(case, got, expected)
    if named:
        return checks + [_diagnosis(named)]
    failed = {c.name.split(":")[0].rsplit(".", 1)[-1] for c in checks if not c.passed}
    return checks + [_diagnosis(tip) for key, tip in _PREDICTOR_TIPS.items() if key in failed]


register(
    Exercise(
        id="02.3",
        lesson=LESSON,
        name="evaluate_noise_predictors",
        title="write evaluate_noise_predictors",
        reference=_evaluate_noise_predictors,
        cases=_cases_predictors,
        judge=_judge_predictors,
        points=4,
        hint="Noise the images with the true noise, turn each predictor's ε̂ into x̂0 by solving the jump for x0, "
        "and average each squared error only over the samples whose t lies in [lo, hi).",
    )
)

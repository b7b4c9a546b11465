r"""Graded exercises of lesson 09, a small Stable Diffusion (``solutions/09_small_stable_diffusion.ipynb``).

09.1  ``img2img_start(steps, strength)``                   where image-to-image starts in the step list,
                                                           and how many denoising steps it runs
09.2  ``inpaint_blend(x_known_noised, x_generated, mask)`` the per-step inpainting blend, with the pixel
                                                           mask brought down to the latent grid
09.3  ``pipeline_cost(height, width, factor, ...)``        U-Net calls, batch rows and latent values of
                                                           one text-to-image run, with CFG batched

The references are written from the maths with plain torch and Python, independently of
``course_lib.pipeline`` (tests/test_grading_lesson09.py checks them against hand-computed numbers
and independent computations). Every judge adds a diagnosis to a failed check when the answer
matches a known slip (round for int, strength read backwards, the mask inverted or averaged,
CFG counted as twice the calls …).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from course_lib.grading.checks import as_float_array, diagnose, with_diagnosis
from course_lib.grading.checks import case_generator as _gen
from course_lib.grading.checks import randint_in as _randint
from course_lib.grading.checks import uniform_in as _uniform
from course_lib.grading.exercise import Case, Exercise, SubCheck, compare, register

LESSON = "09_small_stable_diffusion"

__all__ = ["LESSON"]


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


# =============================================================================================
# 09.1  img2img_start
# =============================================================================================


def _img2img_start(steps: int, strength: float) -> tuple[int, int]:
    r"""Where image-to-image starts in a sampler's list of ``steps`` timesteps (noisiest first).

    Image-to-image noises the encoded image to an intermediate level and denoises from there.
    ``strength`` ∈ [0, 1] is the fraction of the step list that is run again (diffusers'
    ``StableDiffusionImg2ImgPipeline.get_timesteps``):

        init    = min(⌊steps · strength⌋, steps)        (int() truncation of the float product)
        t_start = max(steps − init, 0)                  index of the first timestep used
        n       = steps − t_start                       denoising steps that run

    so strength 1 starts at index 0 (pure noise, all ``steps``), strength 0 runs no step and
    returns the image unchanged. Returns ``(t_start, n)``, two ints.
    """
    steps = int(steps)
    init = min(int(steps * strength), steps)
    t_start = max(steps - init, 0)
    return t_start, steps - t_start


def _img2img_cases(seed: int) -> list[Case]:
    g = _gen(seed, 91)

    def fractional(steps: int, lo: float, hi: float) -> float:
        """A strength whose product with steps has a fractional part in [lo, hi] (never near a
        whole number, so that float rounding cannot decide the answer)."""
        k = _randint(g, 1, steps - 2)
        return (k + _uniform(g, lo, hi)) / steps

    s1, s2, s3 = _randint(g, 12, 100), _randint(g, 8, 60), _randint(g, 5, 80)
    st1 = fractional(s1, 0.55, 0.9)
    st2 = fractional(s2, 0.1, 0.45)
    return [
        Case((50, 0.8), label="50 steps, strength 0.8 (the usual image-to-image setting)"),
        Case((s1, st1), label=f"{s1} steps, strength {st1:.6g}"),
        Case((s2, st2), label=f"{s2} steps, strength {st2:.6g}"),
        Case((25, 0.3), label="25 steps, strength 0.3: steps · strength = 7.5"),
        Case((s3, 1.0), label=f"{s3} steps, strength 1: every step, from pure noise"),
        Case((s3, 0.0), label=f"{s3} steps, strength 0: no step, the image comes back unchanged"),
        Case((1, 0.5), label="1 step, strength 0.5"),
    ]


_ROUNDED = (
    "steps · strength is cut to a whole number with int() (truncation, as diffusers does), not rounded (int(7.5) is 7)"
)
_ROUNDED_UP = "steps · strength is cut to a whole number with int() (truncation, as diffusers does), not rounded up"
_ROUNDED_EITHER = (  # where round() and ceil() agree (7.5 → 8), one sentence for both
    "steps · strength is cut to a whole number with int() (truncation, as diffusers does), not round() or "
    "math.ceil() (int(7.5) is 7)"
)


def _one_step_off(case: Case, arr: np.ndarray, expected: Any) -> str:
    """The sentence for a t_start exactly one step off the expected one (n following it, so that the two
    still add up to steps); '' otherwise."""
    steps = int(case.args[0])
    t = int(np.asarray(expected).reshape(-1)[0])
    got_t = arr[0]
    if not float(got_t).is_integer() or abs(got_t - t) != 1 or arr[0] + arr[1] != steps:
        return ""
    return (
        f"t_start is one step {'early' if got_t < t else 'late'}, and n one step off with it: t_start = steps − "
        "init, the number of steps skipped, is already the index of the first step run (no ± 1)"
    )


def _img2img_mistakes(case: Case) -> dict[str, Any]:
    import math

    steps, strength = case.args
    steps = int(steps)
    x = steps * strength

    def from_init(init):
        init = min(init, steps)
        return [max(steps - init, 0), steps - max(steps - init, 0)]

    init = min(int(x), steps)
    rounded = {_ROUNDED_EITHER: from_init(round(x))} if round(x) == math.ceil(x) else {
        _ROUNDED: from_init(round(x)),
        _ROUNDED_UP: from_init(math.ceil(x)),
    }
    return {
        **rounded,
        "strength is read backwards (or the pair is swapped): strength 1 starts at index 0 and runs all the "
        "steps, strength 0 starts at index steps and runs none; return (t_start, number of steps)": [
            init,
            steps - init,
        ],
    }


def _img2img_judge(case: Case, got, expected) -> list[SubCheck]:
    checks = compare(got, expected, label=case.label)
    if all(c.passed for c in checks):
        return checks
    arr = as_float_array(got)
    diagnosis = ""
    if arr is not None and arr.shape == (2,):
        # one line per case for the pair, not one per element: "expected 10, got 41 at [0]" and "… at [1]"
        failed = [c for c in checks if not c.passed]
        if failed and all(c.name.startswith(("[0]", "[1]")) for c in failed):
            pair = ", ".join(f"{v:g}" for v in arr.tolist())
            failed[0].message = (f"expected (t_start, number of steps) = ({expected[0]}, {expected[1]}), got ({pair}) "
                                 f"({case.label})")
            for c in failed[1:]:
                c.message = ""
        diagnosis = diagnose(arr, _img2img_mistakes(case), expected=expected, rtol=0.0, atol=0.0)
        off = _one_step_off(case, arr, expected)
        # (the diagnosis may end "(another slip gives the same …)")
        if diagnosis.startswith((_ROUNDED, _ROUNDED_UP, _ROUNDED_EITHER)) and off:
            # rounding up moves t_start one step early: on this case a − 1 on t_start looks the same
            diagnosis += (
                "; or, if you did use int(), t_start is one step early: t_start = steps − init, with no − 1 "
                "(a case where steps · strength is whole tells the two apart)"
            )
        elif not diagnosis and off:
            diagnosis = off
        if not diagnosis and float(arr.sum()) != case.args[0]:
            diagnosis = f"t_start + number of steps must add up to steps = {case.args[0]}"
    elif arr is None or arr.ndim != 1:
        diagnosis = "return a pair (t_start, number of steps) of ints"
    return with_diagnosis(checks, diagnosis, name=None)


register(
    Exercise(
        id="09.1",
        lesson=LESSON,
        name="img2img_start",
        title="write img2img_start",
        reference=_img2img_start,
        cases=_img2img_cases,
        judge=_img2img_judge,
        points=2,
        hint="strength is the fraction of the step list that runs again, counted from the end of the list "
        "and cut to a whole number of steps the way int() does; the start index is what is skipped.",
    )
)


# =============================================================================================
# 09.2  inpaint_blend
# =============================================================================================


def _latent_mask(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    r"""The pixel mask N×1×H×W brought to the latent grid N×1×h×w (H = f·h, W = f·w): a latent cell
    is 1 if any pixel of its f×f block is 1 (the maximum over the block)."""
    N, _, H, W = mask.shape
    f = H // h
    blocks = mask.reshape(N, 1, h, f, w, f)
    return blocks.amax(dim=(3, 5))


def _inpaint_blend(x_known_noised: torch.Tensor, x_generated: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    r"""One inpainting step's blend in latent space.

    x_known_noised: N×C×h×w, the known image's latent noised to the current step's level;
    x_generated:    N×C×h×w, the sampler's latent after the current step;
    mask:           N×1×H×W pixel mask, 1 = repaint, 0 = keep, with H = f·h and W = f·w.

    The mask goes down to the latent grid by the maximum over each f×f block (a latent cell is
    repainted if any of its pixels is masked, so no masked pixel is left in a kept cell):

        m = maxpool_f(mask)                                  N×1×h×w
        x = m · x_generated + (1 − m) · x_known_noised        N×C×h×w

    Returns x, N×C×h×w.
    """
    if x_known_noised.shape != x_generated.shape or x_known_noised.dim() != 4:
        raise ValueError(
            "x_known_noised and x_generated must be N×C×h×w of one shape, got "
            f"{tuple(x_known_noised.shape)} and {tuple(x_generated.shape)}"
        )
    N, _, h, w = x_generated.shape
    if mask.dim() != 4 or mask.shape[:2] != (N, 1) or mask.shape[2] % h or mask.shape[3] % w:
        raise ValueError(f"mask must be N×1×H×W with H, W multiples of {h}, {w}, got {tuple(mask.shape)}")
    if mask.shape[2] // h != mask.shape[3] // w:
        raise ValueError("the mask must be downsampled by the same factor in height and width")
    m = _latent_mask(mask.to(x_generated.dtype), h, w)
    return m * x_generated + (1.0 - m) * x_known_noised


def _inpaint_cases(seed: int) -> list[Case]:
    g = _gen(seed, 92)
    f64 = torch.float64

    def latents(N, C, h, w, dtype=f64):
        a = torch.randn(N, C, h, w, generator=g, dtype=f64).to(dtype)
        b = torch.randn(N, C, h, w, generator=g, dtype=f64).to(dtype)
        return a, b

    def rectangles(N, H, W, count, aligned_to=1, dtype=f64):
        """Union of random rectangles per sample; corners on multiples of ``aligned_to``."""
        m = torch.zeros(N, 1, H, W, dtype=dtype)
        a = aligned_to
        for n in range(N):
            for _ in range(count):
                y0 = _randint(g, 0, H // a - 2) * a
                x0 = _randint(g, 0, W // a - 2) * a
                y1 = _randint(g, y0 // a + 1, H // a) * a
                x1 = _randint(g, x0 // a + 1, W // a) * a
                if a == 1:  # make sure the edges cut through latent cells
                    y0, x0 = y0 | 1, x0 | 1
                    y1, x1 = max(y1 - 1, y0 + 1), max(x1 - 1, x0 + 1)
                m[n, 0, y0:y1, x0:x1] = 1
        return m

    N = _randint(g, 2, 4)
    k1, g1 = latents(N, 4, 6, 6)
    m1 = rectangles(N, 48, 48, 2)
    k2, g2 = latents(2, 4, 8, 8)
    m2 = (torch.rand(2, 1, 32, 32, generator=g, dtype=f64) < 0.04).to(f64)
    k3, g3 = latents(3, 4, 6, 8)
    m3 = rectangles(3, 48, 64, 1, aligned_to=8)
    k4, g4 = latents(1, 4, 5, 7)
    m4 = torch.zeros(1, 1, 10, 14, dtype=f64)
    m4[0, 0, _randint(g, 0, 9), _randint(g, 0, 13)] = 1  # one masked pixel
    k5, g5 = latents(2, 3, 4, 4)
    m5 = torch.cat([torch.zeros(1, 1, 16, 16, dtype=f64), torch.ones(1, 1, 16, 16, dtype=f64)])
    k6, g6 = latents(2, 4, 4, 6, dtype=torch.float32)
    m6 = rectangles(2, 32, 48, 1, dtype=torch.float32)
    k7, g7 = latents(2, 4, 8, 8)
    m7 = (torch.rand(2, 1, 32, 32, generator=g, dtype=f64) < 0.3).to(f64)
    return [
        Case((k1, g1, m1), label=f"{N} latents 4×6×6, 48×48 masks of rectangles that cut through cells, f = 8"),
        Case((k2, g2, m2), label="scattered masked pixels, 32×32 masks, f = 4"),
        Case((k3, g3, m3), label="rectangles on the 8-pixel grid (every cell wholly in or out), f = 8"),
        Case((k4, g4, m4), label="a batch of 1, latent 5×7, a single masked pixel, f = 2"),
        Case((k5, g5, m5), label="mask all 0 (keep everything) in one sample, all 1 in the other, f = 4"),
        Case((k6, g6, m6), label="float32 latents and mask, f = 8"),
        Case((k7, g7, m7), label="32×32 masks, f = 4, again, with other values (an answer must compute each call "
             "afresh)"),
    ]


def _inpaint_mistakes(case: Case) -> dict[str, Any]:
    known, gen, mask = (a.to(torch.float64) for a in case.args)
    N, _, h, w = gen.shape
    f = mask.shape[2] // h
    blocks = mask.reshape(N, 1, h, f, w, f)
    mx = blocks.amax(dim=(3, 5))
    avg = blocks.mean(dim=(3, 5))
    nearest = mask[:, :, ::f, ::f]
    centre = mask[:, :, f // 2 :: f, f // 2 :: f]
    mn = blocks.amin(dim=(3, 5))

    def blend(m):
        return m * gen + (1 - m) * known

    cell = "a latent cell is repainted if any pixel of its f×f block is masked: take the maximum over the block"
    return {
        "the mask is inverted (or x_known_noised and x_generated are swapped): mask = 1 marks what to repaint, "
        "so take x_generated there and x_known_noised where mask = 0": blend(1 - mx),
        f"you averaged the mask over each f×f block, so a partly masked cell mixes both latents; {cell} "
        "(max-pool, or average-pool then > 0)": blend(avg),
        # before the majority vote: the two often agree, and F.interpolate's default is the likelier first try
        f"you sampled one pixel per cell (nearest-neighbour resizing, F.interpolate's default mode), which misses "
        f"masked pixels elsewhere in the cell; {cell}": blend(nearest),
        f"you averaged the mask and thresholded at ½ (a majority vote); {cell}": blend((avg >= 0.5).to(gen.dtype)),
        f"you sampled the centre pixel of each cell; {cell}": blend(centre),
        f"you repainted only cells that are wholly masked (the minimum over the block); {cell}": blend(mn),
    }


def _inpaint_judge(case: Case, got, expected) -> list[SubCheck]:
    checks = compare(got, expected, rtol=1e-5, atol=1e-6, label=case.label)
    if all(c.passed for c in checks):
        return checks
    diagnosis = diagnose(got, _inpaint_mistakes(case), expected=expected, rtol=1e-5, atol=1e-6)
    arr = as_float_array(got)
    if not diagnosis and arr is not None and arr.shape == tuple(case.args[2].shape):
        diagnosis = "you returned something of the mask's shape: return the blended latent, N×C×h×w"
    elif not diagnosis and arr is not None and arr.shape != tuple(np.shape(expected)):
        diagnosis = "return the blended latent, of the latents' shape N×C×h×w"
    return with_diagnosis(checks, diagnosis, name=None)


register(
    Exercise(
        id="09.2",
        lesson=LESSON,
        name="inpaint_blend",
        title="write inpaint_blend",
        reference=_inpaint_blend,
        cases=_inpaint_cases,
        judge=_inpaint_judge,
        points=3,
        hint="Bring the pixel mask to the latent grid so that any masked pixel marks its whole cell, then take "
        "the generated latent where the mask is 1 and the re-noised known latent where it is 0.",
    )
)


# =============================================================================================
# 09.3  pipeline_cost
# =============================================================================================

_COST_KEYS = ("latent_shape", "unet_calls", "unet_batch", "values_per_call", "total_values")


def _pipeline_cost(
    height: int, width: int, factor: int, latent_channels: int, steps: int, guidance_scale: float, batch_size: int = 1
) -> dict:
    r"""What the U-Net does in one text-to-image run of a latent pipeline.

    An H×W image is generated as a latent of c × (H/f) × (W/f). Each of the ``steps`` denoising
    steps calls the U-Net once. With classifier-free guidance (on only when guidance_scale > 1,
    as in diffusers) the unconditional (or negative-prompt) rows and the conditional rows go
    through the U-Net together, as one batch of 2N; at guidance_scale ≤ 1 only the N
    conditional rows are run:

        latent_shape    = [c, H/f, W/f]                       (ints)
        unet_calls      = steps                               (one batched call per step)
        unet_batch      = N · (2 if guidance_scale > 1 else 1)
        values_per_call = unet_batch · c · (H/f) · (W/f)      (latent values in one call's input)
        total_values    = unet_calls · values_per_call

    Returns a dict of those five keys. Raises ValueError if f does not divide H and W.
    """
    H, W, f, c = int(height), int(width), int(factor), int(latent_channels)
    if H <= 0 or W <= 0 or H % f or W % f:
        raise ValueError(f"height {H} and width {W} must be positive multiples of the factor {f}")
    h, w = H // f, W // f
    rows = int(batch_size) * (2 if guidance_scale > 1 else 1)
    per_call = rows * c * h * w
    calls = int(steps)
    return {
        "latent_shape": [c, h, w],
        "unet_calls": calls,
        "unet_batch": rows,
        "values_per_call": per_call,
        "total_values": calls * per_call,
    }


def _cost_cases(seed: int) -> list[Case]:
    g = _gen(seed, 93)

    def pick(options):
        return options[_randint(g, 0, len(options) - 1)]

    f = pick([4, 8, 16])
    H, W = f * _randint(g, 4, 96), f * _randint(g, 4, 96)
    c = pick([3, 4, 8, 16])
    steps = _randint(g, 4, 60)
    scale = round(_uniform(g, 1.5, 12.0), 2)
    N = _randint(g, 2, 6)
    return [
        Case((512, 512, 8, 4, 50, 7.5), label="Stable Diffusion 1.5: 512×512, f = 8, c = 4, 50 steps, scale 7.5"),
        Case(
            (H, W, f, c, steps, scale),
            {"batch_size": N},
            label=f"{H}×{W}, f = {f}, c = {c}, {steps} steps, scale {scale}, batch {N}",
        ),
        Case(
            (1024, 768, 8, 16, 28, 7.0),
            {"batch_size": 2},
            label="1024×768, an SD3-like 16-channel latent, 28 steps, scale 7, batch 2",
        ),
        # the unguided cases weigh half: the exercise is about what guidance doubles (the rows, not the calls)
        Case((768, 512, 8, 4, 30, 1.0), label="guidance scale 1: no guidance, 768×512, 30 steps", weight=0.5),
        Case((256, 384, 8, 4, 20, 0.0), {"batch_size": 3}, label="guidance scale 0 (no guidance), batch 3",
             weight=0.5),
        Case((512, 512, 8, 4, 25, 0.5), {"batch_size": 2},
             label="guidance scale 0.5: diffusers guides only above 1, batch 2", weight=0.5),
        Case((64, 64, 4, 4, 1, 3.0), label="a single step, 64×64, f = 4"),
    ]


def _cost_mistakes(case: Case, key: str) -> dict[str, Any]:
    H, W, f, c, steps, scale = case.args
    N = case.kwargs.get("batch_size", 1)
    h, w = H // f, W // f
    cfg = 2 if scale > 1 else 1
    cfg_ge = 2 if scale >= 1 else 1
    below = ("guidance is on only when guidance_scale > 1: at a scale ≤ 1 (0 included) pipelines run the N "
             "conditional rows alone")  # for an answer that guides at every scale but 1, or at every scale
    if 0 < scale < 1:  # the course's own pipeline guides here (every scale but 0 and 1): not what is counted
        below += ("; the course's pipeline guides between 0 and 1 too, but this exercise counts diffusers' rule, "
                  "guidance only above 1")
    unguided = scale <= 1  # where guiding anyway (2N rows) is a slip of its own
    doubled = "CFG runs the unconditional and the conditional rows in the same call (a batch of 2N): the calls stay"
    if key == "latent_shape":
        return {
            "the latent is c × H/f × W/f: channels first, then height, then width": [c, w, h],
            f"the latent has c = {c} channels": [3, h, w],
        }
    if key == "unet_calls":
        return {
            f"{doubled} one per step; the batch doubles, not the number of calls": steps * cfg,
            "one U-Net call per step: steps calls, not steps + 1": steps + 1,
        }
    if key == "unet_batch":
        return {
            "guidance is on only when guidance_scale > 1 (at 1 it gives the conditional prediction alone, so "
            "pipelines skip the unconditional rows)": N * cfg_ge,
            f"{doubled} one per step, with twice the rows: unet_batch = 2N under guidance": N,
            f"unet_batch counts the rows of all N = {N} images": cfg,
            **({below: 2 * N} if unguided else {}),
        }
    per_call = N * cfg * c * h * w
    if key == "values_per_call":
        return {
            "guidance is on only when guidance_scale > 1": N * cfg_ge * c * h * w,
            "count the rows of a call: unet_batch · c · (H/f) · (W/f)": c * h * w,
            "with guidance a call holds 2N rows: values_per_call = unet_batch · c · (H/f) · (W/f)": N * c * h * w,
            "the latent is downsampled by f in both directions": N * cfg * c * (H // f) * W,
            f"the latent has c = {c} channels, not the image's 3": N * cfg * 3 * h * w,
            **({below: 2 * N * c * h * w} if unguided else {}),
            "that is the pixel image's size: count latent values, c · (H/f) · (W/f) per row": N * cfg * 3 * H * W,
        }
    if key == "total_values":
        return {
            # first: where guidance is off, 2N rows is that slip, not the doubling counted twice
            **({below: steps * 2 * N * c * h * w} if unguided else {}),
            "guidance is on only when guidance_scale > 1": steps * N * cfg_ge * c * h * w,
            "under guidance each of the steps calls once with 2N rows: count the doubling once, not twice": 2
            * steps
            * per_call,
            "total_values = unet_calls · values_per_call": per_call,
            "one U-Net call per step: total_values = steps · values_per_call, not (steps + 1) ·": (steps + 1)
            * per_call,
            **(
                {
                    "under guidance a call holds 2N rows, so the total doubles too: total_values = unet_calls · "
                    "values_per_call": steps * N * c * h * w
                }
                if cfg == 2
                else {}
            ),
        }
    return {}


def _cost_number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    a = as_float_array(x)
    if a is None or a.size != 1:
        return None
    return float(a.reshape(-1)[0])


def _cost_judge(case: Case, got, expected) -> list[SubCheck]:
    where = f" ({case.label})" if case.label else ""
    if not isinstance(got, dict) or "__object__" in got:
        what = got.get("__object__", "an object") if isinstance(got, dict) else type(got).__name__
        return [SubCheck("type", False, 1, f"expected a dict with keys {list(_COST_KEYS)}, got {what}{where}")] + [
            SubCheck(k, False, 2, "") for k in _COST_KEYS
        ]
    missing = [k for k in _COST_KEYS if k not in got]
    checks = [SubCheck("keys", not missing, 1, f"missing keys {missing}{where}" if missing else "")]
    for key in _COST_KEYS:
        exp = expected[key]
        if key not in got:
            checks.append(SubCheck(key, False, 2, ""))
            continue
        value = got[key]
        if key == "latent_shape":
            arr = as_float_array(value)
            ok = arr is not None and arr.shape == (3,) and bool(np.array_equal(arr, np.asarray(exp, dtype=np.float64)))
            shown = arr.astype(np.int64).tolist() if arr is not None and np.all(np.isfinite(arr)) else value
        else:
            n = _cost_number(value)
            ok = n is not None and n == exp
            shown = (int(n) if n is not None and float(n).is_integer() else n) if n is not None else value
        msg = ""
        if not ok:
            msg = f"{key}: expected {exp}, got {shown}{where}"
            diagnosis = diagnose(
                as_float_array(value) if key == "latent_shape" else _cost_number(value),
                _cost_mistakes(case, key),
                expected=exp,
                rtol=0.0,
                atol=0.0,
            )
            msg += f" — {diagnosis}" if diagnosis else ""
        # what guidance doubles, the rows of each call and not the calls, weighs most
        checks.append(SubCheck(key, ok, 3 if key in ("unet_calls", "unet_batch") else 2, msg))
    return checks


register(
    Exercise(
        id="09.3",
        lesson=LESSON,
        name="pipeline_cost",
        title="write pipeline_cost",
        reference=_pipeline_cost,
        cases=_cost_cases,
        judge=_cost_judge,
        points=3,
        hint="Guidance changes how many rows go through the U-Net in each call, not how many calls there are, "
        "and it is only switched on above a scale of 1; the U-Net sees latents, c × (H // f) × (W // f) per row.",
    )
)

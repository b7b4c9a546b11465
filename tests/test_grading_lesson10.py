"""Lesson 10's graded exercises: the references agree with course_lib (DiT's patchify, the flow
sampler, ControlNet's zero convolutions) and with independent computations, and known-wrong answers
lose points with a message that says what went wrong; answers that raise, loop, return NaN or the
wrong type get a verdict, never a crash.

What every exercise must satisfy (references pass, determinism, stubs, the solutions notebook's
cells) is checked once for all in tests/test_exercises_common.py.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from grading_helpers import assert_known_wrong, assert_right_but_changes_inputs
from torch import nn

from course_lib.flow import euler_sample, flow_interpolate, flow_target, flow_times
from course_lib.grading.capture import capture
from course_lib.grading.encode import load_observations
from course_lib.grading.exercise import exercises_for, get_exercise, grade_answer, judge_outcomes
from course_lib.grading.grade import _outcomes
from course_lib.nn import dit
from course_lib.nn.controlnet import zero_conv

ROOT = Path(__file__).resolve().parents[1]
LESSON = "10_controlnet_dit_flow"
SOLUTIONS = ROOT / "solutions" / f"{LESSON}.ipynb"
IDS = ["10.1", "10.2", "10.3", "10.4", "10.5"]
NAMES = {
    "10.1": "patchify",
    "10.2": "unpatchify",
    "10.3": "flow_training_pair",
    "10.4": "euler_flow_sample",
    "10.5": "ControlledBlock",
}


def _grade(exercise_id, answer, seed=0):
    return grade_answer(exercise_id, answer, seed)


def _valid(exercise_id, seed):
    """The cases of an exercise whose input is valid (not the one that must raise)."""
    return [c for c in get_exercise(exercise_id).cases(seed) if "raise ValueError" not in c.label]


def test_lesson_registers_five_exercises():
    assert [(e.id, e.name) for e in exercises_for(LESSON)] == [(i, NAMES[i]) for i in IDS]
    assert sum(e.points for e in exercises_for(LESSON)) == 13


# ---------------------------------------------------------------------------------------------
# The references against course_lib and independent computations
# ---------------------------------------------------------------------------------------------


def _patchify_by_loops(x, p):
    """Independent of any reshape: token by token, value by value, the equation of 10.1."""
    N, C, H, W = x.shape
    h, w = H // p, W // p
    out = torch.empty(N, h * w, p * p * C, dtype=x.dtype)
    for i in range(h):
        for j in range(w):
            for a in range(p):
                for b in range(p):
                    for c in range(C):
                        out[:, i * w + j, (a * p + b) * C + c] = x[:, c, i * p + a, j * p + b]
    return out


@pytest.mark.parametrize("seed", [0, 5])
def test_patchify_reference_is_the_course_dit_layout(seed):
    ref = get_exercise("10.1").reference
    for case in _valid("10.1", seed):
        x, p = case.args
        got = ref(x, p)
        assert got.dtype == x.dtype
        assert torch.equal(got, dit.patchify(x, p)), case.label
        assert torch.equal(got, _patchify_by_loops(x, p)), case.label


@pytest.mark.parametrize("seed", [0, 5])
def test_unpatchify_reference_inverts_patchify_and_is_the_course_function(seed):
    ref, patchify = get_exercise("10.2").reference, get_exercise("10.1").reference
    for case in _valid("10.2", seed):
        tokens, p, C, H, W = case.args
        images = ref(tokens, p, C, H, W)
        assert images.shape == (tokens.shape[0], C, H, W) and images.dtype == tokens.dtype
        assert torch.equal(images, dit.unpatchify(tokens, p, C, H, W)), case.label
        assert torch.equal(patchify(images, p), tokens), case.label


def test_references_refuse_shapes_that_do_not_fit():
    patchify, unpatchify = get_exercise("10.1").reference, get_exercise("10.2").reference
    with pytest.raises(ValueError, match="divid"):
        patchify(torch.zeros(1, 1, 10, 8), 4)
    with pytest.raises(ValueError, match="N×C×H×W"):
        patchify(torch.zeros(1, 10, 8), 2)
    with pytest.raises(ValueError, match="tokens must be"):
        unpatchify(torch.zeros(2, 8, 8), 2, 1, 8, 8)  # the right number of values, cut the wrong way
    for exercise_id in ("10.1", "10.2"):
        ex = get_exercise(exercise_id)
        bad = [c for c in ex.cases(0) if "raise ValueError" in c.label]
        assert len(bad) == {"10.1": 2, "10.2": 3}[exercise_id] and sum(c.weight for c in bad) == 1
        for case in bad:
            with pytest.raises(ValueError):
                ex.reference(*case.args)
    # the invalid unpatchify case holds exactly the values a valid input would: a bare reshape takes it
    tokens, p, C, H, W = next(c for c in get_exercise("10.2").cases(0) if "raise" in c.label).args
    assert tokens.numel() == tokens.shape[0] * C * H * W


def test_patchify_cases_tell_rows_from_columns():
    """A grid that is not square, and more than one channel, in most cases: the slips must show."""
    for seed in range(10):
        cases = _valid("10.1", seed)
        grids = [(c.args[0].shape[2] // c.args[1], c.args[0].shape[3] // c.args[1]) for c in cases]
        assert sum(h != w for h, w in grids) >= 2
        assert sum(c.args[0].shape[1] > 1 and c.args[1] > 1 for c in cases) >= 3


@pytest.mark.parametrize("seed", [0, 5])
def test_flow_pair_reference_is_the_course_path_and_target(seed):
    ref = get_exercise("10.3").reference
    for case in get_exercise("10.3").cases(seed):
        x0, eps, t = case.args
        x_t, v = ref(x0, eps, t)
        torch.testing.assert_close(x_t, flow_interpolate(x0, eps, t))
        torch.testing.assert_close(v, flow_target(x0, eps))
        # the target is the derivative of the path along t (finite difference, exact for a line)
        h = 1e-3
        slope = ref(x0.double(), eps.double(), t.double() + h)[0] - ref(x0.double(), eps.double(), t.double() - h)[0]
        torch.testing.assert_close(slope / (2 * h), v.double(), rtol=1e-6, atol=1e-6)


def test_flow_pair_cases_catch_a_time_that_broadcasts_along_the_width():
    for seed in range(10):
        cases = get_exercise("10.3").cases(seed)
        assert any(c.args[0].shape[0] == c.args[0].shape[-1] for c in cases)
        assert any(bool((c.args[2] == 0).any()) and bool((c.args[2] == 1).any()) for c in cases)


def _field_of(case):
    from course_lib.grading.lesson10 import _field

    _, _, _, kind, params = case.args
    return lambda x, t: _field(kind, params, x, t)


@pytest.mark.parametrize("seed", [0, 5])
def test_euler_reference_is_the_course_sampler_on_the_course_times(seed):
    ex = get_exercise("10.4")
    for case in ex.cases(seed):
        x1, steps, shift, kind, params = case.args
        s = 1.0 if shift is None else shift
        asked, field = [], _field_of(case)

        def velocity(x, t, asked=asked, field=field):
            asked.append(t)
            return field(x, t)

        out = ex.reference(velocity, x1, steps, s)
        assert asked == pytest.approx(flow_times(steps, s)[:-1], abs=1e-12)
        torch.testing.assert_close(out, euler_sample(_field_of(case), x1, steps, s))
        if kind == "exact":  # straight paths: Euler lands on the one image at any step count
            torch.testing.assert_close(out, params[0].expand_as(out), rtol=1e-5, atol=1e-5)


def test_sd3_shift_moves_the_times_towards_the_noise():
    ref = get_exercise("10.4").reference
    times = {}
    for s in (0.5, 1.0, 3.0):
        seen = []
        ref(lambda x, t, seen=seen: seen.append(t) or torch.zeros_like(x), torch.zeros(1, 1, 2, 2), 8, s)
        times[s] = seen
    assert times[1.0] == pytest.approx([1 - i / 8 for i in range(8)])
    assert all(a < b < c for a, b, c in zip(times[0.5][1:], times[1.0][1:], times[3.0][1:]))
    assert times[3.0][4] == pytest.approx(0.75)  # σ_3(½) = 1.5 / 2


def _blocks():
    from course_lib.grading.lesson10 import _make_block

    return [(_make_block(kind, 8, 3), kind) for kind in ("conv", "residual", "mlp")]


def test_controlled_block_reference_starts_as_the_frozen_block_and_opens_from_zero_out():
    Ref = get_exercise("10.5").reference
    g = torch.Generator().manual_seed(0)
    for block, kind in _blocks():
        frozen = copy.deepcopy(block)
        m = Ref(block, 8, 1)
        x, hint = torch.randn(2, 8, 6, 6, generator=g), torch.randn(2, 1, 6, 6, generator=g).sign()
        y = m(x, hint)
        assert torch.equal(y, frozen(x)), kind
        # the zero convolutions are course_lib's (all zero, 1×1, with bias)
        zc = zero_conv(8)
        assert all(torch.equal(a, b) for a, b in zip(m.zero_out.state_dict().values(), zc.state_dict().values()))
        assert m.zero_in.weight.abs().sum() == 0 and m.zero_in.bias.abs().sum() == 0
        # step 0: only zero_out gets a gradient; the frozen block gets none at all
        y.pow(2).sum().backward()
        assert m.zero_out.weight.grad.abs().sum() > 0
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in [*m.copy.parameters(), *m.zero_in.parameters()])
        assert all(p.grad is None for p in m.block.parameters())
        # one SGD step opens zero_out; from then on the gradient reaches the copy and zero_in
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
        opt.step()
        opt.zero_grad()
        m(x, hint).pow(2).sum().backward()
        assert any(p.grad.abs().sum() > 0 for p in m.copy.parameters())
        assert m.zero_in.weight.grad.abs().sum() > 0
        assert all(torch.equal(a, b) for a, b in zip(m.block.state_dict().values(), frozen.state_dict().values()))


def test_controlled_block_cases_use_blocks_whose_copy_can_be_told_apart():
    """The opened copy differs from the block, so a wiring that uses the block twice shows."""
    from course_lib.grading.lesson10 import _make_block, _opened_weights

    for case in get_exercise("10.5").cases(0):
        kind, C, hc, x, hint, r, seed = case.args
        a, b = _make_block(kind, C, seed), _make_block(kind, C, seed)
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        offsets = _opened_weights(case)["copy offsets"]
        assert len(offsets) == len(list(a.parameters())) and all(o.abs().sum() > 0 for o in offsets)


# ---------------------------------------------------------------------------------------------
# Known-wrong answers
# ---------------------------------------------------------------------------------------------


def _check_p(x, p):
    if x.shape[2] % p or x.shape[3] % p:
        raise ValueError("p must divide H and W")


def _patchify(perm, name):
    def patchify(x, p):
        _check_p(x, p)
        N, C, H, W = x.shape
        h, w = H // p, W // p
        return x.reshape(N, C, h, p, w, p).permute(*perm).reshape(N, h * w, p * p * C)

    patchify.__name__ = name
    return patchify


patchify_channel_first = _patchify((0, 2, 4, 1, 3, 5), "patchify_channel_first")
patchify_grid_by_columns = _patchify((0, 4, 2, 3, 5, 1), "patchify_grid_by_columns")
patchify_patch_by_columns = _patchify((0, 2, 4, 5, 3, 1), "patchify_patch_by_columns")


def patchify_unfold(x, p):
    _check_p(x, p)
    return F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)


def patchify_plain_reshape(x, p):
    _check_p(x, p)
    N, C, H, W = x.shape
    return x.reshape(N, (H // p) * (W // p), p * p * C)


def patchify_unchecked(x, p):
    N, C, H, W = x.shape
    return x.reshape(N, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1).reshape(N, -1, p * p * C)


def patchify_unfold_unchecked(x, p):
    # the right layout, but F.unfold silently drops the pixels p does not cover
    N, C = x.shape[:2]
    cols = F.unfold(x, kernel_size=p, stride=p)  # N×(C·p·p)×L, channel first
    return cols.reshape(N, C, p * p, -1).permute(0, 3, 2, 1).reshape(N, -1, p * p * C)


def patchify_transposed(x, p):
    return _patchify((0, 2, 4, 3, 5, 1), "right")(x, p).transpose(1, 2)


def _unpatchify(view_perm, name):
    """An unpatchify that undoes a patchify with the axes (N, h, w, a, b, C) listed in ``view_perm``."""

    def unpatchify(tokens, p, channels, height, width):
        h, w = height // p, width // p
        if tuple(tokens.shape[1:]) != (h * w, p * p * channels):
            raise ValueError("tokens do not fit")
        N = tokens.shape[0]
        sizes = dict(zip("nhwabc", (N, h, w, p, p, channels)))
        grid = tokens.reshape(*(sizes[k] for k in view_perm))
        order = [view_perm.index(k) for k in "nchawb"]
        return grid.permute(*order).reshape(N, channels, height, width)

    unpatchify.__name__ = name
    return unpatchify


unpatchify_channel_first = _unpatchify("nhwcab", "unpatchify_channel_first")
unpatchify_grid_by_columns = _unpatchify("nwhabc", "unpatchify_grid_by_columns")
unpatchify_right_by_axes = _unpatchify("nhwabc", "unpatchify_right_by_axes")


def unpatchify_fold(tokens, p, channels, height, width):
    if tuple(tokens.shape[1:]) != ((height // p) * (width // p), p * p * channels):
        raise ValueError("tokens do not fit")
    return F.fold(tokens.transpose(1, 2), (height, width), kernel_size=p, stride=p)


def unpatchify_plain_reshape(tokens, p, channels, height, width):
    if tuple(tokens.shape[1:]) != ((height // p) * (width // p), p * p * channels):
        raise ValueError("tokens do not fit")
    return tokens.reshape(tokens.shape[0], channels, height, width)


def unpatchify_unchecked(tokens, p, channels, height, width):
    N, h, w = tokens.shape[0], height // p, width // p
    grid = tokens.reshape(N, h, w, p, p, channels)
    return grid.permute(0, 5, 1, 3, 2, 4).reshape(N, channels, height, width)


def unpatchify_channels_last(tokens, p, channels, height, width):
    return unpatchify_right_by_axes(tokens, p, channels, height, width).permute(0, 2, 3, 1)


def _nchw(t, x0):
    return t.to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))


def pair_sign_flipped(x0, eps, t):
    t = _nchw(t, x0)
    return (1 - t) * x0 + t * eps, x0 - eps


def pair_t_swapped(x0, eps, t):
    t = _nchw(t, x0)
    return t * x0 + (1 - t) * eps, eps - x0


def pair_square_roots(x0, eps, t):
    t = _nchw(t, x0)
    return (1 - t).sqrt() * x0 + t.sqrt() * eps, eps - x0


def pair_noise_target(x0, eps, t):
    t = _nchw(t, x0)
    return (1 - t) * x0 + t * eps, eps


def pair_divides_by_t(x0, eps, t):
    t = _nchw(t, x0)
    x_t = (1 - t) * x0 + t * eps
    return x_t, (x_t - x0) / t


def pair_broadcast_along_width(x0, eps, t):
    return (1 - t) * x0 + t * eps, eps - x0


def pair_dict(x0, eps, t):
    t = _nchw(t, x0)
    return {"x_t": (1 - t) * x0 + t * eps, "v": eps - x0}


def _sigma(t, s):
    return s * t / (1 + (s - 1) * t)


def _euler(times_of, sign=1.0, eval_at_end=False, dt_of=None, name="euler"):
    def euler_flow_sample(velocity, x1, steps, shift=1.0):
        ts = times_of(steps, shift)
        x = x1
        for t, t_next in zip(ts[:-1], ts[1:]):
            dt = (t_next - t) if dt_of is None else dt_of(steps)
            x = x + sign * dt * velocity(x, t_next if eval_at_end else t)
        return x

    euler_flow_sample.__name__ = name
    return euler_flow_sample


def _times(steps, shift):
    return [_sigma(1 - i / steps, shift) for i in range(steps + 1)]


euler_no_shift = _euler(lambda n, s: [1 - i / n for i in range(n + 1)], name="euler_no_shift")
euler_shift_inverted = _euler(lambda n, s: _times(n, 1 / s), name="euler_shift_inverted")
euler_upwards = _euler(lambda n, s: [_sigma(i / n, s) for i in range(n + 1)], name="euler_upwards")
euler_sign_flipped = _euler(_times, sign=-1.0, name="euler_sign_flipped")
euler_end_of_step = _euler(_times, eval_at_end=True, name="euler_end_of_step")
euler_even_steps = _euler(_times, dt_of=lambda n: -1.0 / n, name="euler_even_steps")
euler_too_few_times = _euler(
    lambda n, s: [_sigma(float(v), s) for v in torch.linspace(1, 0, n, dtype=torch.float64)], name="euler_too_few"
)


def euler_calls_at_zero(velocity, x1, steps, shift=1.0):
    ts = _times(steps, shift)
    x = x1
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t) * velocity(x, t)
    velocity(x, ts[-1])  # one call too many, at t = 0
    return x


def euler_batch_of_times(velocity, x1, steps, shift=1.0):
    ts = _times(steps, shift)
    x = x1
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t) * velocity(x, torch.full((len(x),), t))
    return x


def euler_returns_trajectory(velocity, x1, steps, shift=1.0):
    ts = _times(steps, shift)
    xs = [x1]
    for t, t_next in zip(ts[:-1], ts[1:]):
        xs.append(xs[-1] + (t_next - t) * velocity(xs[-1], t))
    return torch.stack(xs)


def _zero(conv):
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class _Controlled(nn.Module):
    """A ControlledBlock with switches for the usual slips."""

    freeze_first = share = no_freeze = default_init = zero_everything = False

    def __init__(self, block, channels, hint_channels):
        super().__init__()
        if self.freeze_first:
            self.block = block.requires_grad_(False)
            self.copy = copy.deepcopy(block)  # a copy of a frozen block: frozen too
        elif self.share:
            self.copy = block
            self.block = block.requires_grad_(False)
        else:
            self.copy = copy.deepcopy(block)
            self.block = block if self.no_freeze else block.requires_grad_(False)
        self.zero_in = nn.Conv2d(hint_channels, channels, 1)
        self.zero_out = nn.Conv2d(channels, channels, 1)
        if not self.default_init:
            _zero(self.zero_in), _zero(self.zero_out)
        if self.zero_everything:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    _zero(m)

    def forward(self, x, hint):
        return self.block(x) + self.zero_out(self.copy(x + self.zero_in(hint)))


def _controlled(name, **flags):
    return type(name, (_Controlled,), flags)


ControlledDefaultInit = _controlled("ControlledDefaultInit", default_init=True)
ControlledFrozenCopy = _controlled("ControlledFrozenCopy", freeze_first=True)
ControlledSharedCopy = _controlled("ControlledSharedCopy", share=True)
ControlledBlockTrains = _controlled("ControlledBlockTrains", no_freeze=True)
ControlledZeroEverything = _controlled("ControlledZeroEverything", zero_everything=True)


class ControlledBlockTwice(_Controlled):
    def forward(self, x, hint):
        return self.block(x) + self.zero_out(self.block(x + self.zero_in(hint)))


class ControlledPathsSwapped(_Controlled):
    def forward(self, x, hint):
        return self.copy(x) + self.zero_out(self.block(x + self.zero_in(hint)))


class ControlledHintInMainPath(_Controlled):
    def forward(self, x, hint):
        return self.block(x + self.zero_in(hint)) + self.zero_out(self.copy(x))


class ControlledHintAfterCopy(_Controlled):
    def forward(self, x, hint):
        return self.block(x) + self.zero_out(self.copy(x) + self.zero_in(hint))


class ControlledOtherNames(nn.Module):
    def __init__(self, block, channels, hint_channels):
        super().__init__()
        self.trainable = copy.deepcopy(block)
        self.frozen = block.requires_grad_(False)
        self.zin, self.zout = _zero(nn.Conv2d(hint_channels, channels, 1)), _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x, hint):
        return self.frozen(x) + self.zout(self.trainable(x + self.zin(hint)))


class ControlledCopyReinitialised(_Controlled):
    """The copy re-initialised after the deep copy: it no longer starts from the block's knowledge."""

    def __init__(self, block, channels, hint_channels):
        super().__init__(block, channels, hint_channels)
        for m in self.copy.modules():
            if hasattr(m, "reset_parameters") and m is not self.copy:
                m.reset_parameters()


class ControlledZeroInRandom(_Controlled):
    """Only zero_out zeroed: zero_in keeps PyTorch's random start."""

    def __init__(self, block, channels, hint_channels):
        super().__init__(block, channels, hint_channels)
        self.zero_in = nn.Conv2d(hint_channels, channels, 1)


def unpatchify_with_patchifys_permute(tokens, p, C, H, W):
    N = tokens.shape[0]
    return tokens.reshape(N, H // p, W // p, p, p, C).permute(0, 2, 4, 3, 5, 1).reshape(N, C, H, W)


# (exercise, answer, substring of the feedback, status)
WRONG = [
    ("10.2", unpatchify_with_patchifys_permute, "does not undo itself", "partial"),
    ("10.5", ControlledCopyReinitialised, "the copy must start with the block's own weights", "partial"),
    ("10.5", ControlledZeroInRandom, "zero_in must start with weight and bias at 0", "partial"),
    ("10.1", patchify_channel_first, "you flattened the patch channel first", "partial"),
    ("10.1", patchify_unfold, "as F.unfold or a stride-p convolution does", "partial"),
    ("10.1", patchify_grid_by_columns, "yours run column by column", "partial"),
    ("10.1", patchify_patch_by_columns, "inside a patch the pixels go row by row", "partial"),
    ("10.1", patchify_plain_reshape, "a plain reshape of N×C×H×W does not cut patches", "partial"),
    (
        "10.1",
        patchify_unchecked,
        "raise a ValueError that says what was expected (yours raised RuntimeError",
        "partial",
    ),
    ("10.1", patchify_unfold_unchecked, "your function returned a result, but p does not divide", "partial"),
    ("10.1", patchify_transposed, "tokens are the rows", "partial"),
    ("10.2", unpatchify_channel_first, "you read the patch channel first", "partial"),
    ("10.2", unpatchify_fold, "as F.unfold or a stride-p convolution does", "partial"),
    ("10.2", unpatchify_grid_by_columns, "yours are read column by column", "partial"),
    ("10.2", unpatchify_plain_reshape, "a plain reshape", "partial"),
    ("10.2", unpatchify_unchecked, "your function returned a result, but the tokens' shape does not fit", "partial"),
    ("10.2", unpatchify_channels_last, "N×C×H×W", "partial"),
    ("10.3", pair_sign_flipped, "yours has the sign flipped", "partial"),
    ("10.3", pair_t_swapped, "you swapped t and 1 − t", "partial"),
    ("10.3", pair_square_roots, "square roots", "partial"),
    ("10.3", pair_noise_target, "not the noise ε", "partial"),
    ("10.3", pair_divides_by_t, "compute ε − x0 directly, not (x_t − x0)/t", "partial"),
    ("10.3", pair_broadcast_along_width, "as an (N,) tensor it broadcasts along the width", "partial"),
    ("10.3", pair_dict, "return a pair (x_t, v)", "fail"),
    ("10.4", euler_no_shift, "apply SD3's shift to every time", "partial"),
    ("10.4", euler_shift_inverted, "the shift is the wrong way round", "partial"),
    ("10.4", euler_upwards, "walks down to t = 0; yours walks up", "partial"),
    ("10.4", euler_sign_flipped, "your steps move along it", "partial"),
    ("10.4", euler_end_of_step, "not where it ends", "partial"),
    ("10.4", euler_even_steps, "not −1/steps", "partial"),
    ("10.4", euler_too_few_times, "torch.linspace(1, 0, steps + 1)", "partial"),
    ("10.4", euler_calls_at_zero, "never at t = 0", "partial"),
    ("10.4", euler_batch_of_times, "takes t as one number", "partial"),
    ("10.4", euler_returns_trajectory, "return x at t = 0, of x1's shape", "partial"),
    ("10.5", ControlledDefaultInit, "not PyTorch's default initialisation", "partial"),
    ("10.5", ControlledFrozenCopy, "a deep copy of a frozen block is frozen too", "partial"),
    ("10.5", ControlledSharedCopy, "the copy is the block itself", "partial"),
    ("10.5", ControlledBlockTrains, "the frozen block trains too", "partial"),
    ("10.5", ControlledZeroEverything, "you changed the frozen block's weights", "partial"),
    ("10.5", ControlledBlockTwice, "the control branch must run the trainable copy", "partial"),
    ("10.5", ControlledPathsSwapped, "you ran the copy on the main path", "partial"),
    ("10.5", ControlledHintInMainPath, "not the frozen block's", "partial"),
    ("10.5", ControlledHintAfterCopy, "not next to its output", "partial"),
    ("10.5", ControlledOtherNames, "use those names", "partial"),
]


@pytest.mark.parametrize("exercise_id,answer,message,status", WRONG, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG])
@pytest.mark.parametrize("seed", [0, 3])
def test_known_wrong_answers_lose_points_with_a_useful_message(exercise_id, answer, message, status, seed):
    assert_known_wrong(exercise_id, answer, message, status, seed)


def test_partial_credit_reflects_how_much_is_right():
    # a missing ValueError costs only the invalid case; a wrong layout costs every value check
    assert 2 > _grade("10.1", patchify_unchecked).points > _grade("10.1", patchify_channel_first).points > 0
    assert _grade("10.1", patchify_unchecked).points == _grade("10.1", patchify_unfold_unchecked).points
    # half of the pair right (its shapes and one half's values, 5 of 8 weights a case) is a little over half the
    # points: the path and the velocity weigh alike (the DDPM-style path kept 71% when x_t weighed 2 against v's 3)
    assert _grade("10.3", pair_sign_flipped).points == _grade("10.3", pair_t_swapped).points == round(2 * 5 / 8, 2)
    # right times with wrong steps keep the time checks (3 of 8 weights a case) and the result's shape (0.5); wrong
    # times spoil both
    assert _grade("10.4", euler_sign_flipped).points == round(3 * 3.5 / 8, 2)
    assert _grade("10.4", euler_even_steps).points > _grade("10.4", euler_sign_flipped).points
    assert _grade("10.4", euler_no_shift).points > _grade("10.4", euler_upwards).points
    # a frozen copy loses the count only; a default-initialised zero conv loses the start and the gradients
    assert 4 > _grade("10.5", ControlledFrozenCopy).points > _grade("10.5", ControlledDefaultInit).points > 0
    # what trains is ControlNet's point: a frozen copy kept 3.6/4 when the count weighed 1 of 10
    assert _grade("10.5", ControlledFrozenCopy).points <= 2.8
    # ignoring SD3's shift spoils every case where it moves the times, which weigh double (it kept 2.2/3)
    assert _grade("10.4", euler_no_shift).points <= 1.9


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_right_answers_written_differently_pass(seed):
    def patchify_by_unfold(x, p):
        if x.shape[2] % p or x.shape[3] % p:
            raise ValueError("p must divide H and W")
        N, C = x.shape[:2]
        cols = F.unfold(x, kernel_size=p, stride=p)  # N×(C·p·p)×L, channel first
        return cols.reshape(N, C, p * p, -1).permute(0, 3, 2, 1).reshape(N, -1, p * p * C)

    def patchify_by_einsum(x, p):
        _check_p(x, p)
        N, C, H, W = x.shape
        grid = x.reshape(N, C, H // p, p, W // p, p)
        return torch.einsum("nciajb->nijabc", grid).reshape(N, -1, p * p * C)

    def pair_as_list(x0, eps, t):
        t = t[:, None, None, None].to(x0.dtype)
        return [x0 + t * (eps - x0), eps - x0]

    def euler_with_linspace(velocity, x1, steps, shift=1.0):
        ts = torch.linspace(1, 0, steps + 1)
        ts = shift * ts / (1 + (shift - 1) * ts)
        x = x1
        for i in range(steps):
            x = x - (ts[i] - ts[i + 1]) * velocity(x, ts[i])  # a 0-dim tensor t reads as a number
        return x

    class ControlledByHand(nn.Module):
        def __init__(self, block, channels, hint_channels):
            super().__init__()
            self.copy = copy.deepcopy(block)
            self.block = block
            for p in self.block.parameters():
                p.requires_grad = False
            self.zero_in = nn.Conv2d(hint_channels, channels, 1)
            self.zero_out = nn.Conv2d(channels, channels, 1)
            with torch.no_grad():
                for conv in (self.zero_in, self.zero_out):
                    conv.weight.zero_()
                    conv.bias.zero_()

        def forward(self, x, hint):
            control = self.copy(x + self.zero_in(hint))
            return self.zero_out(control) + self.block(x)

    for exercise_id, answer in [
        ("10.1", patchify_by_unfold),
        ("10.1", patchify_by_einsum),
        ("10.2", unpatchify_right_by_axes),
        ("10.3", pair_as_list),
        ("10.4", euler_with_linspace),
        ("10.5", ControlledByHand),
    ]:
        result = _grade(exercise_id, answer, seed)
        assert result.status == "pass", result.feedback()


def test_answers_that_write_into_their_inputs_keep_the_values_but_lose_a_point():
    def pair_in_place(x0, eps, t):
        t = t.view(-1, 1, 1, 1).to(x0.dtype)
        v = eps.sub_(x0)  # eps is now the velocity
        return x0.add_(t * v), v

    def euler_in_place(velocity, x1, steps, shift=1.0):
        ts = _times(steps, shift)
        for t, t_next in zip(ts[:-1], ts[1:]):
            x1.add_((t_next - t) * velocity(x1, t))
        return x1

    def patchify_after_scaling(x, p):
        x.mul_(2)  # the caller's image is now twice as bright
        return get_exercise("10.1").reference(x, p) / 2

    def patchify_scaling_a_copy(x, p):
        x = x.clone()
        x.mul_(2)  # a copy of its own: nothing outside changes
        return get_exercise("10.1").reference(x, p) / 2

    class ControlledAddingInPlaceAfterTheBlock(_Controlled):
        def forward(self, x, hint):
            y = self.block(x)
            x += self.zero_in(hint)  # right values, but the U-Net's x is now x + zero_in(hint)
            return y + self.zero_out(self.copy(x))

    class ControlledAddingInPlaceBeforeTheBlock(_Controlled):
        def forward(self, x, hint):
            x += self.zero_in(hint)  # the frozen block then sees the hint too
            return self.block(x) + self.zero_out(self.copy(x))

    after = _grade("10.5", ControlledAddingInPlaceAfterTheBlock)
    assert after.status == "partial" and 3 < after.points < 4, after.feedback()
    assert "forward changed its input `x` in place" in after.feedback()
    before = _grade("10.5", ControlledAddingInPlaceBeforeTheBlock).feedback()
    assert "forward changed its input `x` in place" in before
    assert "here it saw x + zero_in(hint) too" in before and "as an in-place x += … makes it" in before
    assert_right_but_changes_inputs("10.3", pair_in_place, ["x0", "eps"])
    assert_right_but_changes_inputs("10.4", euler_in_place, ["x1"])
    assert_right_but_changes_inputs("10.1", patchify_after_scaling, ["x"])
    assert _grade("10.1", patchify_scaling_a_copy).status == "pass"


# ---------------------------------------------------------------------------------------------
# Junk: answers that raise, return the wrong thing, NaN, or never return
# ---------------------------------------------------------------------------------------------


def test_answers_that_raise_are_errors_not_crashes():
    def broken(*args, **kwargs):
        raise TypeError("boom")

    for exercise_id in IDS:
        result = _grade(exercise_id, broken)
        assert result.status == "error" and result.points == 0
        assert "TypeError: boom" in result.feedback()


@pytest.mark.parametrize("junk", ["tokens", None, 3.5, {"a": 1}, [1, 2, 3], torch.zeros(2, 2, dtype=torch.int64)])
def test_answers_returning_junk_score_nothing_without_crashing(junk):
    for exercise_id in IDS:
        result = _grade(exercise_id, lambda *args, **kwargs: junk)
        # 10.5 builds a module: anything else is an error ("must build an nn.Module")
        assert result.status == ("error" if exercise_id == "10.5" else "fail"), result.feedback()
        assert result.points == 0
        assert result.feedback()


def test_an_answer_that_refuses_everything_earns_only_the_must_raise_case():
    def refuses(*args, **kwargs):
        raise ValueError("I refuse everything")

    for exercise_id in ("10.1", "10.2"):
        result = _grade(exercise_id, refuses)
        assert result.status == "partial" and 0 < result.points < 0.2 * get_exercise(exercise_id).points


def test_nan_outputs_are_named():
    def patchify_nan(x, p):
        _check_p(x, p)
        return get_exercise("10.1").reference(x, p) * float("nan")

    def euler_nan(velocity, x1, steps, shift=1.0):
        return get_exercise("10.4").reference(velocity, x1, steps, shift) / 0.0 * 0.0

    for exercise_id, answer in (("10.1", patchify_nan), ("10.4", euler_nan)):
        result = _grade(exercise_id, answer)
        assert result.status in ("partial", "fail") and "NaN or inf" in result.feedback()


def test_a_sampler_that_never_stops_calling_the_velocity_is_stopped():
    def euler_forever(velocity, x1, steps, shift=1.0):
        x = x1
        while True:
            x = x + 0.01 * velocity(x, 0.5)

    result = _grade("10.4", euler_forever)
    assert result.status == "error" and result.points == 0
    assert "velocity was called more than" in result.feedback()


@pytest.mark.parametrize("exercise_id", ["10.1", "10.5"])
def test_an_infinite_loop_times_out_in_the_graders_capture(exercise_id, tmp_path):
    """What ``course grade`` runs in the learner's kernel: every call under a time limit."""

    def forever(*args, **kwargs):
        while True:
            pass

    out = tmp_path / "obs.json"
    capture(exercise_id, {NAMES[exercise_id]: forever}, seed=0, out=str(out), time_limit=0.2)
    outcomes = _outcomes(load_observations(out))
    assert all(o.timed_out for o in outcomes)
    result = judge_outcomes(get_exercise(exercise_id), 0, outcomes)
    assert result.status == "timeout" and result.points == 0


def test_the_controlnet_probe_leaves_the_global_random_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    _grade("10.5", ControlledDefaultInit)  # builds convolutions with PyTorch's default (random) init
    assert torch.equal(torch.rand(3), expected)


def test_exercise_cells_do_not_use_the_course_library():
    """The exercises are the maths itself: no exercise cell leans on course_lib's DiT, flow or
    ControlNet code, and no cell of the solutions notebook imports them."""
    nb = nbformat.read(SOLUTIONS, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for module in ("course_lib.nn.dit", "course_lib.flow", "course_lib.nn.controlnet", "diffusers"):
            assert module not in cell.source
        if any(t.startswith("exercise:") for t in cell.metadata.get("tags", [])):
            assert "course_lib" not in cell.source


def test_notebook_title_and_runtime():
    first = nbformat.read(SOLUTIONS, as_version=4).cells[0].source
    assert first.startswith("# Exercises 10: ControlNet, DiT and flow matching")
    assert all(f"**{i}**" in first for i in IDS)
    assert math.isfinite(float(first.split("**Runtime:** about ")[1].split(" s")[0]))


def test_euler_at_the_step_end_is_named_first_even_with_one_step():
    """With one step, evaluating at the step's end and walking upwards both call velocity at t = 0: the end of
    the step, the likelier slip, comes first."""
    result = grade_answer("10.4", euler_end_of_step, 0)
    for check in result.checks:
        if not check.passed and "walks up" in check.message:
            assert check.message.index("not where it ends") < check.message.index("walks up"), check.message


class ControlledThreeByThree(_Controlled):
    """Zero convolutions built 3×3 (padding 1): zero_out's own 9·C·C + C values get the first gradient."""

    def __init__(self, block, channels, hint_channels):
        super().__init__(block, channels, hint_channels)
        self.zero_in = nn.Conv2d(hint_channels, channels, 3, padding=1)
        self.zero_out = nn.Conv2d(channels, channels, 3, padding=1)
        _zero(self.zero_in), _zero(self.zero_out)


class ControlledHintIntoTheBlock(_Controlled):
    """zero_in(hint) also enters the frozen block: zero_in gets a gradient past zero_out."""

    def forward(self, x, hint):
        h = x + self.zero_in(hint)
        return self.block(h) + self.zero_out(self.copy(h))


def test_controlnet_a_branch_outside_zero_out_is_not_blamed_on_its_initialisation():
    class ControlledWithoutZeroOut(_Controlled):
        def forward(self, x, hint):
            return self.block(x) + self.copy(x + self.zero_in(hint))  # zero_out built, at 0, and never used

    feedback = grade_answer("10.5", ControlledWithoutZeroOut, 0).feedback()
    assert "zero_out is at 0, so something reaches the output without passing through it" in feedback
    assert "must start with weight and bias 0" not in feedback


def test_controlnet_gradient_messages_name_what_the_answer_did():
    three = grade_answer("10.5", ControlledThreeByThree, 0).feedback()
    assert "a zero convolution is 1×1" in three and "they are 1×1 convolutions" in three, three
    assert "through the frozen block's input" not in three, three
    into_block = grade_answer("10.5", ControlledHintIntoTheBlock, 0).feedback()
    assert "the extra came another way" in into_block, into_block


# --------------------------------------------------------------------------- slips a second review found


def patchify_height_and_width_swapped(x, p):
    """The image transposed before cutting: the grid runs column by column and so do the pixels of a patch."""
    _check_p(x, p)
    return _patchify((0, 2, 4, 3, 5, 1), "right")(x.transpose(2, 3), p)


def pair_in_the_wrong_order(x0, eps, t):
    t = _nchw(t, x0)
    return eps - x0, (1 - t) * x0 + t * eps


def euler_default_shift_3(velocity, x1, steps, shift=3.0):
    x = x1
    ts = _times(steps, shift)
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t) * velocity(x, t)
    return x


class ControlledCopyWithoutX(_Controlled):
    """The copy sees only the hint: copy(zero_in(hint)), x left out of its input."""

    def forward(self, x, hint):
        return self.block(x) + self.zero_out(self.copy(self.zero_in(hint)))


WRONG_2 = [
    ("10.1", patchify_height_and_width_swapped, "you swapped H and W", "partial"),
    ("10.3", pair_in_the_wrong_order, "return the pair as (x_t, v)", "partial"),
    ("10.4", euler_default_shift_3, "shift's default is 1", "partial"),
    ("10.5", ControlledCopyWithoutX, "the copy's input is x + zero_in(hint)", "partial"),
]


@pytest.mark.parametrize("exercise_id,answer,message,status", WRONG_2, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG_2])
@pytest.mark.parametrize("seed", [0, 1, 3, 12345])
def test_slips_a_second_review_found_are_named(exercise_id, answer, message, status, seed):
    assert_known_wrong(exercise_id, answer, message, status, seed)


def test_10_3_a_stacked_pair_is_told_to_return_a_tuple():
    ex = get_exercise("10.3")
    stacked = grade_answer(ex, lambda *a, **k: torch.stack(list(ex.reference(*a, **k))), 0)
    assert stacked.status == "fail" and "return them as a tuple" in stacked.feedback()
    assert "ndarray" not in stacked.feedback()


def test_10_1_a_width_that_p_does_not_divide_must_raise_too():
    def checks_height_only(x, p):
        if x.shape[2] % p:
            raise ValueError("H must be a multiple of p")
        x = x[..., : (x.shape[3] // p) * p]  # silently crops the columns
        return get_exercise("10.1").reference(x, p)

    result = _grade("10.1", checks_height_only)
    assert result.status == "partial" and "W = " in result.feedback(), result.feedback()


def test_10_2_checking_one_dimension_of_the_tokens_is_not_enough():
    reference = get_exercise("10.2").reference

    def checks_the_count_only(tokens, p, channels, height, width):
        if tokens.shape[1] != (height // p) * (width // p):
            raise ValueError("wrong number of tokens")
        return reference(tokens[..., : p * p * channels], p, channels, height, width)

    result = _grade("10.2", checks_the_count_only)
    assert result.status == "partial" and "each of 8 values instead of 4" in result.feedback(), result.feedback()


class ControlledSharedNeverFrozen(nn.Module):
    """self.copy = block, and no freezing at all: the count is right (the block's parameters train as 'the copy')."""

    def __init__(self, block, channels, hint_channels):
        super().__init__()
        self.block, self.copy = block, block
        self.zero_in = nn.Conv2d(hint_channels, channels, 1)
        self.zero_out = nn.Conv2d(channels, channels, 1)
        _zero(self.zero_in), _zero(self.zero_out)

    def forward(self, x, hint):
        return self.block(x) + self.zero_out(self.copy(x + self.zero_in(hint)))


def test_10_5_a_copy_that_is_the_block_is_named_even_when_nothing_is_frozen():
    """A fresh-eyes learner was told only 'block.requires_grad_(False)', which would freeze the copy too."""
    result = _grade("10.5", ControlledSharedNeverFrozen)
    assert result.status == "partial" and "self.copy is the block itself" in result.feedback(), result.feedback()

"""Lesson 03's graded exercises: references pass, realistic mistakes fail with useful feedback,
stubs are 'not_implemented', and the solutions notebook's answers pass."""

from __future__ import annotations

import math
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from grading_helpers import assert_library_values_right_but_nothing_earned
from torch import nn

from course_lib.grading import lesson03 as L
from course_lib.grading.exercise import exercises_for, get_exercise, grade_answer
from course_lib.nn.blocks import Downsample, ResBlock, SelfAttention, Upsample, group_norm, timestep_embedding
from course_lib.nn.unet import UNet, UNetConfig

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions" / "03_unet_blocks.ipynb"
SEEDS = [0, 1, 7, 2024, 2**31 - 1]
NAMES = {"03.1": "sinusoidal_embedding", "03.2": "TimeResBlock", "03.3": "analyse_unet"}


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------


def test_lesson_03_registers_three_exercises():
    """The lesson's own exercises, in order (what every exercise must satisfy: test_exercises_common.py)."""
    assert [(e.id, e.name) for e in exercises_for("03_unet_blocks")] == list(NAMES.items())


# ---------------------------------------------------------------------------------------------
# 03.1 sinusoidal_embedding
# ---------------------------------------------------------------------------------------------


def test_embedding_reference_is_the_course_function():
    for dim in (2, 8, 10, 64):
        t = torch.tensor([0, 1, 17, 500, 999])
        assert torch.allclose(L._sinusoidal_embedding(t, dim), timestep_embedding(t, dim), atol=2e-4)


def test_course_timestep_embedding_has_the_right_values_but_earns_nothing():
    assert_library_values_right_but_nothing_earned("03.1", lambda t, dim: timestep_embedding(t, dim), [5])


def _embedding(t, dim, *, order="cos", exponent_div=None, sign=-1.0, interleave=False, check_odd=True):
    if check_odd and (dim < 2 or dim % 2):
        raise ValueError("odd dim")
    half = dim // 2
    div = half if exponent_div is None else exponent_div(dim)
    omega = 10_000.0 ** (sign * torch.arange(half, dtype=torch.float64) / div)
    a = t.double()[:, None] * omega
    parts = [a.cos(), a.sin()] if order == "cos" else [a.sin(), a.cos()]
    out = torch.stack(parts, 2).reshape(len(t), -1) if interleave else torch.cat(parts, 1)
    return out.float()


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda t, d: _embedding(t, d, order="sin"), "halves are swapped"),
        (lambda t, d: _embedding(t, d, exponent_div=lambda d: d), "i/dim"),
        (lambda t, d: _embedding(t, d, interleave=True), "interleaved"),
        (lambda t, d: _embedding(t, d, sign=+1.0), "exponent is negative"),
    ],
    ids=["sin-first", "i-over-dim", "interleaved", "positive-exponent"],
)
def test_embedding_mistakes_are_named(wrong, words):
    result = grade_answer("03.1", wrong, 11)
    assert result.status == "partial", result.feedback()  # the shape is right: partial credit
    assert 0 < result.points < 2
    assert words in result.feedback()


def test_embedding_without_odd_dim_check_loses_a_little():
    def no_check(t, dim):
        return _embedding(t, dim, check_odd=False)

    result = grade_answer("03.1", no_check, 3)
    assert result.status == "partial"
    assert 1.5 < result.points < 2
    assert "raise a ValueError" in result.feedback()


def test_embedding_float32_angles_pass():
    # the learner computing in float32, exactly as the library does, must not be penalised
    def f32(t, dim):
        if dim < 2 or dim % 2:
            raise ValueError("dim must be even and at least 2")
        half = dim // 2
        omega = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / half)
        a = t.float()[:, None] * omega
        return torch.cat([a.cos(), a.sin()], 1)

    for seed in SEEDS:
        assert grade_answer("03.1", f32, seed).status == "pass"


def test_embedding_wrong_shape_fails():
    result = grade_answer("03.1", lambda t, dim: _embedding(t, dim)[:, : dim // 2], 0)
    assert result.status in ("partial", "fail")
    assert "expected shape" in result.feedback()


# ---------------------------------------------------------------------------------------------
# 03.2 TimeResBlock
# ---------------------------------------------------------------------------------------------


class CourseResBlock(ResBlock):
    def __init__(self, in_ch, out_ch, emb_dim):
        super().__init__(in_ch, out_ch, emb_dim)


def test_course_resblock_has_the_right_values_but_earns_nothing():
    assert_library_values_right_but_nothing_earned("03.2", CourseResBlock, SEEDS[:3])


def test_resblock_reference_matches_the_course_block():
    for in_ch, out_ch in [(32, 64), (64, 64), (48, 24)]:
        ref = L._TimeResBlock(in_ch, out_ch, 96).eval()
        course = ResBlock(in_ch, out_ch, 96).eval()
        course.load_state_dict(L._reference_weights(in_ch, out_ch, 96, 5))
        ref.load_state_dict(L._reference_weights(in_ch, out_ch, 96, 5))
        x, e = torch.randn(2, in_ch, 6, 6), torch.randn(2, 96)
        with torch.no_grad():
            assert torch.allclose(ref(x, e), course(x, e), atol=1e-5)
        assert sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in course.parameters())


def test_resblock_cases_avoid_one_channel_groups():
    # with one channel per GroupNorm group the time bias is normalised away: the probe could not see it
    for case in L._resblock_cases(0):
        out_ch = case.args[1]
        assert out_ch // group_norm(out_ch).num_groups >= 2


class _Block(nn.Module):
    """A configurable learner's block, to make the mistakes with."""

    skip_always_conv = False
    skip_never_conv = False
    use_time = True
    silu_on_e = True
    bias_after_conv2 = False
    residual = True
    groups = None  # None: group_norm(C); "channels": one channel per group; a number: that many groups
    activation = "silu"  # after each GroupNorm: "silu", "relu", "gelu", "tanh" or "none"
    e_activation = "silu"  # on e before W_e (when silu_on_e)
    bias_after_norm2 = False
    skip_of_normed = False
    eps = 1e-6

    def _norm(self, channels):
        if self.groups is None:
            return nn.GroupNorm(group_norm(channels).num_groups, channels, eps=self.eps)
        return nn.GroupNorm(channels if self.groups == "channels" else self.groups, channels, eps=self.eps)

    @staticmethod
    def _act(name, x):
        return {"silu": F.silu, "relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "none": lambda v: v}[name](x)

    def __init__(self, in_ch, out_ch, emb_dim):
        super().__init__()
        self.norm1 = self._norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        if self.use_time:
            self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = self._norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        conv = (self.skip_always_conv or in_ch != out_ch) and not self.skip_never_conv
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if conv else nn.Identity()

    def forward(self, x, e):
        h = self.conv1(self._act(self.activation, self.norm1(x)))
        e_in = self._act(self.e_activation, e) if self.silu_on_e else e
        bias = self.emb(e_in)[:, :, None, None] if self.use_time else 0
        if not (self.bias_after_conv2 or self.bias_after_norm2):
            h = h + bias
        h = self.norm2(h)
        if self.bias_after_norm2:
            h = h + bias
        h = self.conv2(self._act(self.activation, h))
        if self.bias_after_conv2:
            h = h + bias
        skip = self.skip(self.norm1(x) if self.skip_of_normed else x)
        return skip + h if self.residual else h


def _variant(**flags):
    return type("Variant", (_Block,), flags)


@pytest.mark.parametrize(
    "flags, words, partial",
    [
        ({"skip_always_conv": True}, "should be nn.Identity()", True),
        ({"use_time": False}, "does not change with the time embedding", True),
        ({"silu_on_e": False}, "differs from the reference", True),
        ({"bias_after_conv2": True}, "differs from the reference", True),
        ({"residual": False}, "differs from the reference", True),
    ],
    ids=["always-1x1-skip", "no-time", "no-silu-on-e", "bias-after-conv2", "no-residual"],
)
def test_resblock_mistakes(flags, words, partial):
    result = grade_answer("03.2", _variant(**flags), 4)
    assert result.status == ("partial" if partial else "fail"), result.feedback()
    assert 0 < result.points < 3
    assert words in result.feedback()


@pytest.mark.parametrize("flags", [{"bias_after_conv2": True}, {"activation": "relu"}, {"residual": False}])
def test_a_resblock_with_the_right_layers_but_a_wrong_forward_keeps_under_half(flags):
    """Copying the layer table earns the structural checks; the forward pass is the exercise's other half and
    more (a fresh-eyes learner's wrong orders kept 2.17/3 when the values weighed 2 of 7.25)."""
    result = grade_answer("03.2", _variant(**flags), 4)
    assert 0.9 < result.points < 1.5, (flags, result.points)


@pytest.mark.parametrize(
    "flags, words",
    [
        ({"groups": "channels"}, "norm2 has one channel per group"),
        ({"groups": "channels"}, "norm1 has 32 groups for 32 channels, group_norm(32) has 8"),
        ({"groups": 1}, "norm1 has 1 group for"),
        ({"groups": 8}, "groups for 16 channels, group_norm(16) has 4"),
        ({"activation": "relu", "e_activation": "relu"}, "ReLU where SiLU belongs"),
        ({"activation": "relu"}, "ReLU where SiLU belongs"),
        ({"activation": "none", "silu_on_e": False}, "no SiLU at all"),
        ({"activation": "none"}, "no activation after the GroupNorms"),
        ({"silu_on_e": False}, "W_e is applied to e itself"),
        ({"bias_after_conv2": True}, "the time bias is added after conv2"),
        ({"residual": False}, "your output leaves out skip(x)"),
        ({"skip_never_conv": True}, "self.skip is nn.Identity(), but 32 → 64 channels need"),
        ({"activation": "gelu", "e_activation": "gelu"}, "GELU where SiLU belongs"),
        ({"activation": "tanh"}, "tanh where SiLU belongs"),
        ({"bias_after_norm2": True}, "the time bias is added after norm2"),
        ({"skip_of_normed": True}, "your skip takes norm1(x)"),
    ],
    ids=[
        "groups=C-time",
        "groups=C-values",
        "groups=1",
        "groups=8",
        "relu",
        "relu-features",
        "no-activation",
        "no-activation-features",
        "no-silu-on-e",
        "bias-after-conv2",
        "no-residual",
        "identity-skip-when-widening",
        "gelu",
        "tanh-features",
        "bias-after-norm2",
        "skip-of-norm1",
    ],
)
def test_resblock_slips_are_named_on_every_seed(flags, words):
    for seed in SEEDS[:3]:
        result = grade_answer("03.2", _variant(**flags), seed)
        assert result.status == "partial", result.feedback()
        assert 0 < result.points < 3
        assert words in result.feedback(), result.feedback()


def test_resblock_with_torch_default_eps_loses_a_little_and_is_told():
    """nn.GroupNorm's default eps 1e-5 gives outputs within the value tolerance: only the eps sub-check fails."""
    for seed in SEEDS[:3]:
        result = grade_answer("03.2", _variant(eps=1e-5), seed)
        failed = {c.name for c in result.checks if not c.passed}
        assert failed == {"GroupNorm eps"}, result.feedback()
        assert result.status == "partial" and 2.5 < result.points < 3, result.feedback()
        assert "norm1 has eps = 1e-05" in result.feedback(), result.feedback()


def test_resblock_written_other_ways_passes():
    """nn.SiLU modules, x·σ(x) by hand, GroupNorm built from its numbers, the bias unsqueezed, a dropout of p = 0."""

    class Modules(nn.Module):
        def __init__(self, in_ch, out_ch, emb_dim):
            super().__init__()
            self.norm1 = nn.GroupNorm(group_norm(in_ch).num_groups, in_ch, eps=1e-6)
            self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=(3, 3), padding="same")
            self.emb = nn.Linear(emb_dim, out_ch)
            self.norm2 = nn.GroupNorm(group_norm(out_ch).num_groups, out_ch, eps=1e-6)
            self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=(3, 3), padding="same")
            self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
            self.act, self.drop = nn.SiLU(), nn.Dropout(0.0)  # p = 0: no dropout, as asked

        def forward(self, x, e):
            t = self.emb(e * torch.sigmoid(e)).unsqueeze(-1).unsqueeze(-1)
            h = self.conv1(self.act(self.norm1(x))) + t
            return self.conv2(self.drop(self.act(self.norm2(h)))) + self.skip(x)

    for seed in SEEDS[:3]:
        result = grade_answer("03.2", Modules, seed)
        assert result.status == "pass", result.feedback()


def test_resblock_with_other_layer_names_is_told_the_names():
    class Renamed(nn.Module):
        def __init__(self, in_ch, out_ch, emb_dim):
            super().__init__()
            self.gn1, self.c1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
            self.t = nn.Linear(emb_dim, out_ch)
            self.gn2, self.c2 = group_norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
            self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

        def forward(self, x, e):
            h = self.c1(F.silu(self.gn1(x))) + self.t(F.silu(e))[:, :, None, None]
            return self.skip(x) + self.c2(F.silu(self.gn2(h)))

    result = grade_answer("03.2", Renamed, 0)
    assert result.status == "partial"
    assert "norm1, conv1, emb, norm2, conv2, skip" in result.feedback()


def test_resblock_that_crashes_is_an_error():
    class Broken(_Block):
        def forward(self, x, e):
            return self.conv1(x) + self.emb(e)  # N×C×H×W + N×C: a broadcasting error

    result = grade_answer("03.2", Broken, 0)
    assert result.status == "error"
    assert result.points == 0


def test_resblock_probe_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    grade_answer("03.2", CourseResBlock, 0)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------------------------------------
# 03.3 analyse_unet
# ---------------------------------------------------------------------------------------------


def _config(case):
    ch, blocks, attention = case.args
    kw = case.kwargs
    return UNetConfig(
        channels=ch,
        blocks=blocks,
        attention=attention,
        image_size=kw.get("image_size", 32),
        in_channels=kw.get("in_channels", 1),
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_analyser_parameters_match_the_module(seed):
    for case in L._analyse_cases(seed):
        got = L._analyse_unet(*case.args, **case.kwargs)
        model = UNet(_config(case))
        assert got["parameters"] == model.parameters_by_level(), case.label
        assert got["total_parameters"] == model.num_parameters()


_BLOCKS = (ResBlock, SelfAttention, Downsample, Upsample)


def _measured_activation_bytes(model: UNet, batch: int) -> dict[str, int]:
    """4 × the values in every block output, by part, from forward hooks."""
    n = len(model.config.channels)
    totals: dict[str, int] = {}

    def part(name):
        head = name.split(".")
        if head[0] == "down":
            return f"level {head[1]}"
        if head[0] == "up":
            return f"level {n - 1 - int(head[1])}"
        return "middle" if head[0].startswith("mid") else "stem"

    def hook(name):
        return lambda mod, inp, out: totals.__setitem__(part(name), totals.get(part(name), 0) + 4 * out.numel())

    handles = [
        m.register_forward_hook(hook(name))
        for name, m in model.named_modules()
        if isinstance(m, _BLOCKS) or name in ("conv_in", "conv_out")
    ]
    cfg = model.config
    with torch.inference_mode():
        model(torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size), torch.zeros(batch, dtype=torch.long))
    for h in handles:
        h.remove()
    return totals


@pytest.mark.parametrize("seed", [0, 1])
def test_analyser_activation_memory_matches_forward_hooks(seed):
    for case in L._analyse_cases(seed):
        got = L._analyse_unet(*case.args, **case.kwargs)
        batch = case.kwargs.get("batch", 1)
        measured = _measured_activation_bytes(UNet(_config(case)).eval(), batch)
        assert got["activation_bytes"] == measured, case.label
        assert got["total_activation_bytes"] == sum(measured.values())


def _analyser(**mistakes):
    """The reference with one mistake switched on."""

    def analyse(channels, blocks, attention, image_size=32, in_channels=1, batch=1):
        out = L._analyse_unet(channels, blocks, attention, image_size, in_channels, batch)
        if mistakes.get("values_not_bytes"):
            out["activation_bytes"] = {k: v // 4 for k, v in out["activation_bytes"].items()}
        if mistakes.get("ignore_batch"):
            out["activation_bytes"] = {k: v // batch for k, v in out["activation_bytes"].items()}
        if mistakes.get("wide_upsampler"):  # the upsampler keeps C_i instead of narrowing to C_{i-1}
            for i in range(1, len(channels)):
                c, c_prev = channels[i], channels[i - 1]
                out["parameters"][f"level {i}"] += (9 * c * c + c) - (9 * c * c_prev + c_prev)
                r = image_size // 2**i
                out["activation_bytes"][f"level {i}"] += 4 * batch * (c - c_prev) * (2 * r) ** 2
        if mistakes.get("no_attention_params"):
            for i, (c, b, a) in enumerate(zip(channels, blocks, attention)):
                out["parameters"][f"level {i}"] -= 2 * b * a * (4 * c * c + 6 * c)
            c = channels[-1]
            out["parameters"]["middle"] -= 4 * c * c + 6 * c
        if mistakes.get("level_keys"):
            out["parameters"] = {k.replace(" ", ""): v for k, v in out["parameters"].items()}
        out["total_parameters"] = sum(out["parameters"].values())
        out["total_activation_bytes"] = sum(out["activation_bytes"].values())
        return out

    return analyse


@pytest.mark.parametrize(
    "mistake, words",
    [
        ("values_not_bytes", "float32 takes 4 bytes"),
        ("ignore_batch", "multiply by the batch (3)"),
        ("wide_upsampler", "parameters.level 1"),
        ("no_attention_params", "parameters.middle"),
        ("level_keys", "missing keys at parameters"),
    ],
)
def test_analyser_mistakes(mistake, words):
    result = grade_answer("03.3", _analyser(**{mistake: True}), 0)
    assert result.status == "partial", result.feedback()
    assert 0 < result.points < 4
    assert words in result.feedback()


def _analyser_with(**slips):
    """analyse_unet counted from the formulas again (not from the reference), with channel slips switched on."""

    def analyse(channels, blocks, attention, image_size=32, in_channels=1, batch=1):
        ch, n, S, D = list(channels), len(channels), image_size, 4 * channels[0]

        def conv(k, a, b):
            return k * k * a * b + b

        def res(a, b):
            skip = conv(1, a, b) if a != b and not slips.get("no_1x1_skip") else 0
            return 2 * a + conv(3, a, b) + (D * b + b) + 2 * b + conv(3, b, b) + skip

        def attn(c):
            norm = 0 if slips.get("attention_without_norm") else 2 * c
            bias = 0 if slips.get("attention_without_biases") else 3 * c + c
            return norm + 3 * c * c + c * c + bias

        params = {"stem": (ch[0] * D + D) + (D * D + D) + conv(3, in_channels, ch[0]) + 2 * ch[0]}
        params["stem"] += conv(3, ch[0], in_channels)
        values = {"stem": (ch[0] + in_channels) * S * S}
        for i, (c, b, a) in enumerate(zip(ch, blocks, attention)):
            prev, r = ch[max(i - 1, 0)], S // 2**i
            first = c if slips.get("encoder_from_c_i") else prev
            decoder_in = [2 * c] * b
            if slips.get("no_skip_channels"):
                decoder_in = [c] * b
            elif slips.get("skip_for_the_first_only"):
                decoder_in = [2 * c] + [c] * (b - 1)
            p = res(first, c) + (b - 1) * res(c, c) + sum(res(w, c) for w in decoder_in) + 2 * b * a * attn(c)
            p += (conv(3, c, c) if i < n - 1 else 0) + (conv(3, c, prev) if i > 0 else 0)
            params[f"level {i}"] = p
            values[f"level {i}"] = 2 * b * (1 + a) * c * r * r
            down = r if slips.get("downsampler_at_r_i") else r // 2
            values[f"level {i}"] += (c * down**2 if i < n - 1 else 0) + (prev * (2 * r) ** 2 if i > 0 else 0)
        params["middle"] = 2 * res(ch[-1], ch[-1]) + attn(ch[-1])
        values["middle"] = 3 * ch[-1] * (S // 2 ** (n - 1)) ** 2
        act = {k: slips.get("bytes_per_value", 4) * batch * v for k, v in values.items()}
        return {
            "parameters": params,
            "activation_bytes": act,
            "total_parameters": sum(params.values()),
            "total_activation_bytes": sum(act.values()),
        }

    return analyse


@pytest.mark.parametrize("seed", SEEDS)
def test_analyser_counted_another_way_passes(seed):
    result = grade_answer("03.3", _analyser_with(), seed)
    assert result.status == "pass", result.feedback()


@pytest.mark.parametrize(
    "slips, words",
    [
        ({"no_skip_channels": True}, "the decoder's ResBlocks take 2·C_i channels"),
        ({"skip_for_the_first_only": True}, "every decoder ResBlock gets a skip"),
        ({"attention_without_biases": True}, "P_attn(C) counts the biases"),
        ({"attention_without_norm": True}, "P_attn(C) starts with its GroupNorm's 2C"),
        ({"encoder_from_c_i": True}, "the encoder's first ResBlock at level i goes C_{i−1} → C_i"),
        ({"no_1x1_skip": True}, "has a 1×1 skip conv, conv(1, a, b) = ab + b parameters"),
        ({"downsampler_at_r_i": True}, "the downsampler halves the side"),
        ({"bytes_per_value": 2}, "that is 2 bytes per value (bf16 or float16)"),
        (
            {"no_skip_channels": True, "attention_without_biases": True},
            "the decoder's ResBlocks take 2·C_i channels (h and the skip concatenated), yours count C_i; "
            "P_attn(C) counts the biases",
        ),
    ],
    ids=[
        "no-skip-channels",
        "skip-for-the-first-only",
        "attention-without-biases",
        "attention-without-norm",
        "encoder-from-c-i",
        "no-1x1-skip",
        "downsampler-at-r-i",
        "bf16-bytes",
        "both",
    ],
)
def test_analyser_channel_slips_are_named_on_every_seed(slips, words):
    for seed in SEEDS:
        result = grade_answer("03.3", _analyser_with(**slips), seed)
        assert result.status == "partial", result.feedback()
        assert 0 < result.points < 4
        assert words in result.feedback(), result.feedback()


def test_analyser_wide_upsampler_is_named_on_every_seed():
    for seed in SEEDS:
        feedback = grade_answer("03.3", _analyser(wide_upsampler=True), seed).feedback()
        assert "the upsampler narrows C_i to C_{i−1}: a 3×3 conv C_i → C_{i−1}" in feedback, feedback


def test_analyser_that_builds_a_unet_dict_of_wrong_type_fails():
    result = grade_answer("03.3", lambda *a, **k: 42, 0)
    assert result.status == "fail"
    assert "expected a dict" in result.feedback()


# ---------------------------------------------------------------------------------------------
# the solutions notebook
# ---------------------------------------------------------------------------------------------


def _notebook():
    return nbformat.read(SOLUTIONS, as_version=4)


def test_notebook_title():
    assert _notebook().cells[0].source.startswith("# Exercises 03: U-Net blocks")


def test_resblock_whose_weights_do_not_load_is_not_told_it_returned_none():
    """A 1×1 skip where the channels are equal: the skip, the count and the layer names are said; the output the
    probe could not observe (None) is not blamed on the learner's forward, which does return a tensor."""
    from course_lib.nn.blocks import group_norm

    class AlwaysConvSkip(nn.Module):
        def __init__(self, in_ch, out_ch, emb_dim):
            super().__init__()
            self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
            self.emb, self.norm2 = nn.Linear(emb_dim, out_ch), group_norm(out_ch)
            self.conv2, self.skip = nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.Conv2d(in_ch, out_ch, 1)

        def forward(self, x, e):
            h = self.conv1(F.silu(self.norm1(x))) + self.emb(F.silu(e))[:, :, None, None]
            return self.skip(x) + self.conv2(F.silu(self.norm2(h)))

    feedback = grade_answer("03.2", AlwaysConvSkip, 0).feedback()
    assert "should be nn.Identity()" in feedback and "could not load the reference weights" in feedback
    assert "NoneType" not in feedback and "return a torch tensor" not in feedback, feedback


def test_resblock_with_dropout_or_writing_into_its_inputs_loses_a_little():
    """The text says "No dropout" (eval() would hide it), and forward must leave x and e as they were."""
    ref = get_exercise("03.2").reference

    class WithDropout(ref):
        def __init__(self, *args):
            super().__init__(*args)
            self.drop = nn.Dropout(0.1)

    class SiluInPlace(ref):
        def forward(self, x, e):
            h = self.conv1(F.silu(self.norm1(x))) + self.emb(F.silu(e, inplace=True))[:, :, None, None]
            return self.skip(x) + self.conv2(F.silu(self.norm2(h)))

    for answer, message in ((WithDropout, "has no dropout"), (SiluInPlace, "changed its input `e` in place")):
        for seed in SEEDS:
            result = grade_answer("03.2", answer, seed)
            assert result.status == "partial" and message in result.feedback(), result.feedback()


def test_embedding_must_refuse_a_width_below_two():
    ref = get_exercise("03.1").reference

    def odd_only(t, dim):
        if dim % 2:
            raise ValueError("odd")
        return ref(t, dim) if dim >= 2 else torch.zeros(len(t), 0)

    result = grade_answer("03.1", odd_only, 0)
    assert result.status == "partial" and "dim = 0 is below 2" in result.feedback(), result.feedback()


def test_03_2_other_layer_names_are_told_from_the_learners_side_once():
    """gn1/gn2 for norm1/norm2: the message names what the block lacks and what it has instead (PyTorch's words are
    the other way round), once for all cases, and no probe field ('norm_groups') leaks into the feedback."""

    class OtherNames(nn.Module):
        def __init__(self, in_ch, out_ch, emb_dim):
            super().__init__()
            self.gn1, self.gn2 = group_norm(in_ch), group_norm(out_ch)
            self.conv1, self.conv2 = nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.Conv2d(out_ch, out_ch, 3, padding=1)
            self.emb = nn.Linear(emb_dim, out_ch)
            self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

        def forward(self, x, e):
            h = self.conv1(F.silu(self.gn1(x))) + self.emb(F.silu(e))[:, :, None, None]
            return self.skip(x) + self.conv2(F.silu(self.gn2(h)))

    feedback = grade_answer("03.2", OtherNames, 0).feedback()
    assert feedback.count("your block has no norm1.weight") == 1, feedback
    assert "it has gn1.weight" in feedback and "norm_groups" not in feedback and "Missing key" not in feedback

r"""Graded exercises of lesson 03 (U-Net blocks).

03.1 ``sinusoidal_embedding(t, dim)``: the timestep embedding, cosines first, then sines.
03.2 ``TimeResBlock(in_ch, out_ch, emb_dim)``: a ResBlock with the time injected as a bias.
03.3 ``analyse_unet(channels, blocks, attention, ...)``: parameters and float32 activation
     memory per level of the course U-Net, without building it.

The references below are written out from the equations; the tests check them against
``course_lib.nn.blocks`` and ``UNet.parameters_by_level()`` / forward hooks.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.grading.checks import as_float_array
from course_lib.grading.exercise import Case, Exercise, SubCheck, compare, register

LESSON = "03_unet_blocks"


# =============================================================================================
# 03.1 sinusoidal_embedding
# =============================================================================================


def _sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    r"""emb(t) = [cos(ω_0 t) … cos(ω_{h−1} t), sin(ω_0 t) … sin(ω_{h−1} t)],  ω_i = 10000^(−i/h), h = dim/2.

    t: (N,) int64 time steps; returns N×dim float32. ``dim`` must be even and ≥ 2 (ValueError).
    Computed in float64 and rounded once, so it is the exact value the float32 library approximates.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"dim must be an even number ≥ 2, got {dim}")
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64)
    omega = torch.pow(torch.tensor(10_000.0, dtype=torch.float64), -i / half)  # (h,)
    angles = torch.as_tensor(t).to(torch.float64)[:, None] * omega[None, :]  # N×h
    return torch.cat([angles.cos(), angles.sin()], dim=1).float()


def _embedding_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    T = 1000
    rand_t = torch.randint(0, T, (6,), generator=g)
    dim_a = int(2 * torch.randint(8, 33, (1,), generator=g))  # an even width 16..64
    dim_b = int(2 * torch.randint(2, 6, (1,), generator=g) + 1)  # an odd half: 5, 7, 9, 11 pairs
    return [
        Case((rand_t, dim_a), label=f"random t, dim = {dim_a}"),
        Case((torch.tensor([0, 0, 0]), 8), label="t = 0 (all cosines 1, all sines 0), dim = 8"),
        Case((torch.tensor([T - 1, T - 2, 1]), 64), label="large t = T−1 = 999, dim = 64"),
        Case((torch.randint(0, T, (1,), generator=g), 2), label="a batch of 1, dim = 2 (one frequency, ω = 1)"),
        Case((torch.randint(0, T, (4,), generator=g), 2 * dim_b), label=f"dim = {2 * dim_b} (an odd number of pairs)"),
        Case((torch.tensor([3, 50]), 7), label="odd dim = 7 must raise ValueError", weight=0.5),
        Case((torch.tensor([3, 50]), 0), label="dim = 0 (below 2) must raise ValueError", weight=0.5),
    ]


def _embedding_probe(answer, case: Case):
    """The embedding; for an odd dim, the name of the exception raised (or 'no error')."""
    t, dim = case.args
    if dim >= 2 and dim % 2 == 0:
        return answer(t, dim)
    try:
        answer(t.clone(), dim)
    except NotImplementedError:
        raise
    except ValueError:
        return "ValueError"
    except Exception as e:  # noqa: BLE001 - the learner's code: report which error it was
        return type(e).__name__
    return "no error"


def _variants_of_embedding(t: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
    """Common mistakes, to name them when an answer matches one (float64, N×dim)."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64)
    tt = t.to(torch.float64)[:, None]

    def emb(omega, first="cos", interleave=False):
        a = tt * omega[None, :]
        c, s = a.cos(), a.sin()
        if interleave:
            return torch.stack([c, s] if first == "cos" else [s, c], dim=2).reshape(len(t), dim)
        return torch.cat([c, s] if first == "cos" else [s, c], dim=1)

    omega = 10_000.0 ** (-i / half)
    out = {
        "the halves are swapped: the course puts all the cosines first, then all the sines": emb(omega, "sin"),
        "cos and sin are interleaved: concatenate all cosines, then all sines (torch.cat on dim 1)": emb(
            omega, interleave=True
        ),
        "sin and cos are interleaved: concatenate all cosines, then all sines (torch.cat on dim 1)": emb(
            omega, "sin", interleave=True
        ),
        "the frequencies use i/dim: the exponent is −i/(dim/2), i = 0 … dim/2 − 1": emb(10_000.0 ** (-i / dim)),
        "the frequencies are t·10000^(+i/(dim/2)): the exponent is negative, so ω_0 = 1 is the fastest": emb(
            10_000.0 ** (i / half)
        ),
    }
    if half > 1:
        out["the frequencies use i/(dim/2 − 1): the exponent is −i/(dim/2), so the last ω is not 1/10000"] = emb(
            10_000.0 ** (-i / (half - 1))
        )
    return out


def _embedding_judge(case: Case, got, expected) -> list[SubCheck]:
    t, dim = case.args
    if isinstance(expected, str):  # the odd-dim case
        ok = got == expected
        msg = (
            ""
            if ok
            else (
                (f"dim = {dim} is odd: raise a ValueError (an embedding has as many sines as cosines); " if dim % 2
                 else f"dim = {dim} is below 2: raise a ValueError (an embedding needs a cosine and a sine at least); ")
                + f"your function gave {got}{' (it returned a result)' if got == 'no error' else ''}"
            )
        )
        return [SubCheck("raises ValueError for odd dim" if dim % 2 else "raises ValueError for dim < 2", ok, 2, msg)]
    checks = compare(got, expected, rtol=_EMB.rtol, atol=_EMB.atol, label=case.label)
    values = next((c for c in checks if c.name == "values"), None)
    if values is not None and not values.passed and any(c.name == "shape" and c.passed for c in checks):
        g = torch.as_tensor(got, dtype=torch.float64)
        for why, v in _variants_of_embedding(t, dim).items():
            if torch.allclose(g, v, rtol=1e-3, atol=1e-3):
                values.message += f" — {why}"
                break
    return checks


_EMB = register(
    Exercise(
        id="03.1",
        library_versions=("course_lib.nn.blocks.timestep_embedding",),
        lesson=LESSON,
        name="sinusoidal_embedding",
        title="write sinusoidal_embedding",
        reference=_sinusoidal_embedding,
        cases=_embedding_cases,
        points=2,
        probe=_embedding_probe,
        judge=_embedding_judge,
        rtol=1e-4,
        atol=1e-3,  # float32 angles up to 999 rad carry rounding errors ~1e-4
        hint="ω_i = 10000^(−i/(dim/2)) for i = 0 … dim/2 − 1; cat the cosines of t·ω, then the sines, along dim 1",
    )
)


# =============================================================================================
# 03.2 TimeResBlock
# =============================================================================================


def _gn(channels: int) -> nn.GroupNorm:
    """The course's ``group_norm``: gcd(channels, 32) groups, halved until each holds ≥ 4 channels."""
    groups = math.gcd(channels, 32)
    while groups > 1 and channels // groups < 4 and groups % 2 == 0:
        groups //= 2
    return nn.GroupNorm(groups, channels, eps=1e-6)


class _TimeResBlock(nn.Module):
    r"""h = Conv3×3(SiLU(GN(x))) + W_e·SiLU(e);  out = skip(x) + Conv3×3(SiLU(GN(h))).

    skip = identity if in_ch == out_ch, else a 1×1 convolution.
    x: N×in_ch×H×W, e: N×emb_dim → N×out_ch×H×W.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int):
        super().__init__()
        self.norm1 = _gn(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = _gn(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, kernel_size=1)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        bias = self.emb(F.silu(e)).view(e.shape[0], -1, 1, 1)  # N×out_ch×1×1
        h = self.conv1(F.silu(self.norm1(x))) + bias
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


def _resblock_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    # (in_ch, out_ch, emb_dim, batch, H, W, label)
    shapes = [
        (32, 64, 128, 2, 8, 8, "32 → 64 channels (1×1 skip)"),
        (64, 64, 256, 2, 8, 8, "64 → 64 channels (identity skip)"),
        (48, 24, 64, 1, 5, 7, "48 → 24 channels, a batch of 1, odd 5×7 map"),
        (24, 24, 32, 3, 4, 4, "24 → 24 channels, 3 images"),
        (16, 40, 96, 2, 6, 6, "16 → 40 channels (GroupNorm with 4 and 8 groups)"),
        (16, 16, 64, 2, 4, 4, "16 → 16 channels (4 groups of 4)"),
    ]
    cases = []
    for in_ch, out_ch, emb_dim, n, h, w, label in shapes:
        x = torch.randn(n, in_ch, h, w, generator=g)
        e = torch.randn(n, emb_dim, generator=g)
        e2 = torch.randn(n, emb_dim, generator=g)
        weight_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
        cases.append(Case((in_ch, out_ch, emb_dim, x, e, e2, weight_seed), label=label))
    return cases


def _reference_weights(in_ch: int, out_ch: int, emb_dim: int, seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights in the layout of the reference block (not the default init: GN affine ≠ 1, 0)."""
    g = torch.Generator().manual_seed(seed)
    layout = _TimeResBlock(in_ch, out_ch, emb_dim).state_dict()
    weights = {}
    for name, p in layout.items():
        if p.dim() > 1:  # conv / linear weight: variance 1/fan_in
            weights[name] = torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel())
        elif name.startswith("norm") and name.endswith("weight"):
            weights[name] = 1 + 0.2 * torch.randn(p.shape, generator=g)
        else:
            weights[name] = 0.2 * torch.randn(p.shape, generator=g)
    return weights


def _describe_skip(block) -> str:
    skip = getattr(block, "skip", None)
    if skip is None:
        return "missing"
    if isinstance(skip, nn.Identity):
        return "identity"
    if isinstance(skip, nn.Conv2d):
        return "1×1 conv" if tuple(skip.kernel_size) == (1, 1) else f"{skip.kernel_size[0]}×{skip.kernel_size[1]} conv"
    return type(skip).__name__


def _resblock_probe(answer, case: Case) -> dict:
    """Build the block, load seeded weights by name, and observe what it does."""
    with torch.random.fork_rng(devices=[]):  # seeded default init, and the caller's RNG left untouched
        torch.manual_seed(case.args[-1])
        return _observe_resblock(answer, case)


def _observe_resblock(answer, case: Case) -> dict:
    in_ch, out_ch, emb_dim, x, e, e2, weight_seed = case.args
    block = answer(in_ch, out_ch, emb_dim)
    params = sum(p.numel() for p in block.parameters())
    weights = _reference_weights(in_ch, out_ch, emb_dim, weight_seed)
    try:
        block.load_state_dict(weights, strict=True)
        load_error = ""
    except (RuntimeError, KeyError) as err:
        load_error = _load_error_in_learners_words(block, weights) or " ".join(str(err).split())[:300]
    # dropout is switched off by eval() below, so look for it: the exercise's block has none
    dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in block.modules())
    block.eval()
    try:
        with torch.no_grad():
            y2 = block(x.clone(), e2.clone())
            # the case's own x and e last: an answer that writes into them (x += …, F.silu(e, inplace=True)) is
            # seen by probe_case, which compares them before and after, and its output is still judged
            y = block(x, e)
    except NotImplementedError:
        raise
    except RuntimeError as err:
        widening = in_ch != out_ch and "must match the size of tensor" in str(err)
        if widening and isinstance(getattr(block, "skip", None), nn.Identity):
            raise RuntimeError(
                f"{err} — self.skip is nn.Identity(), but {in_ch} → {out_ch} channels need "
                f"nn.Conv2d({in_ch}, {out_ch}, 1) to bring x to the output's width before the sum"
            ) from err
        raise
    same_shape = tuple(y.shape) == tuple(y2.shape)
    return {
        "output_shape": list(y.shape),
        "parameters": int(params),
        "skip": _describe_skip(block),
        "time_changes_output": bool(not same_shape or not torch.allclose(y, y2, rtol=1e-5, atol=1e-6)),
        "load_error": load_error,
        "output": y if not load_error else None,
        "norm_groups": [_groups_of(getattr(block, name, None)) for name in ("norm1", "norm2")],
        "norm_eps": [_eps_of(getattr(block, name, None)) for name in ("norm1", "norm2")],
        "dropout": bool(dropout),
    }


def _load_error_in_learners_words(block: nn.Module, weights: dict) -> str:
    """Why the spec's weights do not load, from the learner's side: the names the spec has and the block lacks,
    and the block's own names in their place ('' when the names agree and the shapes are what differ). PyTorch's
    message says it the other way round ("Missing key(s): gn1.weight" for the learner's own layer)."""
    own = set(block.state_dict())
    lacking = [k for k in weights if k not in own]
    extra = [k for k in block.state_dict() if k not in weights]
    if not lacking and not extra:
        return ""

    def names(keys):
        return ", ".join(keys[:6]) + (" …" if len(keys) > 6 else "")

    if lacking and extra:
        return f"your block has no {names(lacking)}; it has {names(extra)} instead"
    if lacking:
        return f"your block has no {names(lacking)}"
    return f"your block has {names(extra)} too, which the spec does not"


def _eps_of(norm) -> float | None:
    """The eps of a GroupNorm layer, None for anything else."""
    return float(norm.eps) if isinstance(norm, nn.GroupNorm) else None


def _eps_check(got: dict, where: str) -> SubCheck:
    """Both GroupNorms use eps = 1e-6, as group_norm(C) does (torch's default is 1e-5); a layer that is not a
    GroupNorm, or a probe that did not record eps, passes here (other checks speak for it)."""
    wrong = []
    try:
        for name, eps in zip(("norm1", "norm2"), got.get("norm_eps") or ()):
            if (
                isinstance(eps, (int, float))
                and not isinstance(eps, bool)
                and not math.isclose(eps, 1e-6, rel_tol=1e-3)
            ):
                wrong.append(f"{name} has eps = {eps:g}")
    except (TypeError, ValueError, AttributeError):
        wrong = []
    if not wrong:
        return SubCheck("GroupNorm eps", True, 0.25)
    return SubCheck(
        "GroupNorm eps",
        False,
        0.25,
        "; ".join(wrong) + f": the spec's GroupNorms use eps = 1e-6 (group_norm(C) does; nn.GroupNorm's default is "
        f"1e-5){where}",
    )


def _groups_of(norm) -> int | None:
    """The number of groups of a GroupNorm layer, None for anything else."""
    return int(norm.num_groups) if isinstance(norm, nn.GroupNorm) else None


def _groups_diagnosis(case: Case, got: dict) -> str:
    """What the block's GroupNorms do differently from group_norm(C), or ''."""
    in_ch, out_ch = case.args[0], case.args[1]
    try:
        groups = got.get("norm_groups")
        if not isinstance(groups, (list, tuple)) or len(groups) != 2:
            return ""
        wrong = []
        for name, channels, g in zip(("norm1", "norm2"), (in_ch, out_ch), groups):
            want = _gn(channels).num_groups
            if isinstance(g, (int, float)) and not isinstance(g, bool) and int(g) != want:
                g = int(g)
                wrong.append(
                    f"{name} has {g} group{'' if g == 1 else 's'} for {channels} channels, "
                    f"group_norm({channels}) has {want}"
                )
    except (TypeError, ValueError, AttributeError, OverflowError):
        return ""
    if not wrong:
        return ""
    return (
        "; ".join(wrong) + ": build both with group_norm(C) from course_lib.nn.blocks (gcd(C, 32) groups, halved "
        "until each holds at least 4 channels)"
    )


def _one_channel_groups(case: Case, got: dict) -> bool:
    """Whether norm2 normalises every channel on its own (as many groups as channels)."""
    groups = got.get("norm_groups")
    return isinstance(groups, (list, tuple)) and len(groups) == 2 and groups[1] == case.args[1]


def _resblock_slips(case: Case) -> list[tuple[str, torch.Tensor]]:
    """The outputs of the usual slips in forward, with the reference's layers and the case's weights."""
    in_ch, out_ch, emb_dim, x, e, _, weight_seed = case.args
    block = _TimeResBlock(in_ch, out_ch, emb_dim)
    block.load_state_dict(_reference_weights(in_ch, out_ch, emb_dim, weight_seed))
    block.eval()
    relu, silu, none = F.relu, F.silu, (lambda v: v)
    gelu, gelu_tanh, tanh = F.gelu, (lambda v: F.gelu(v, approximate="tanh")), torch.tanh

    def forward(act=silu, act_e=silu, bias_after_conv2=False, residual=True, bias_after_norm2=False, skip_normed=False):
        with torch.no_grad():
            bias = block.emb(act_e(e)).view(e.shape[0], -1, 1, 1)
            h = block.conv1(act(block.norm1(x)))
            h = h if bias_after_conv2 or bias_after_norm2 else h + bias
            h = block.norm2(h) + bias if bias_after_norm2 else block.norm2(h)
            h = block.conv2(act(h))
            h = h + bias if bias_after_conv2 else h
            skip = block.skip(block.norm1(x) if skip_normed else x)
            return skip + h if residual else h

    relu_msg = (
        "your block uses ReLU where SiLU belongs: SiLU(x) = x·σ(x) (F.silu), after each GroupNorm and on e before W_e"
    )
    gelu_msg = "your block uses GELU where SiLU belongs: SiLU(x) = x·σ(x) (F.silu), after each GroupNorm and on e"
    tanh_msg = "your block uses tanh where SiLU belongs: SiLU(x) = x·σ(x) (F.silu), after each GroupNorm and on e"
    return [
        (relu_msg, forward(act=relu, act_e=relu)),
        (relu_msg, forward(act=relu)),
        (relu_msg, forward(act_e=relu)),
        (gelu_msg, forward(act=gelu, act_e=gelu)),
        (gelu_msg, forward(act=gelu)),
        (gelu_msg, forward(act_e=gelu)),
        (gelu_msg, forward(act=gelu_tanh, act_e=gelu_tanh)),
        (gelu_msg, forward(act=gelu_tanh)),
        (tanh_msg, forward(act=tanh, act_e=tanh)),
        (tanh_msg, forward(act=tanh)),
        (tanh_msg, forward(act_e=tanh)),
        (
            "your block has no SiLU at all: h = conv1(SiLU(GN(x))) + W_e·SiLU(e), and conv2(SiLU(GN(h)))",
            forward(act=none, act_e=none),
        ),
        (
            "your block has no activation after the GroupNorms: h = conv1(SiLU(GN(x))), then conv2(SiLU(GN(h)))",
            forward(act=none),
        ),
        ("W_e is applied to e itself: the time bias is W_e·SiLU(e), emb(F.silu(e))", forward(act_e=none)),
        (
            "the time bias is added after conv2: add W_e·SiLU(e) to h between conv1 and norm2",
            forward(bias_after_conv2=True),
        ),
        ("your output leaves out skip(x): out = skip(x) + conv2(SiLU(GN(h)))", forward(residual=False)),
        (
            "the time bias is added after norm2: add W_e·SiLU(e) to h = conv1(SiLU(GN(x))) first, then normalise "
            "it, conv2(SiLU(norm2(h)))",
            forward(bias_after_norm2=True),
        ),
        (
            "your skip takes norm1(x): the skip carries x itself, out = skip(x) + conv2(SiLU(GN(h)))",
            forward(skip_normed=True),
        ),
    ]


def _resblock_diagnosis(case: Case, got: dict) -> str:
    """The message of the slip whose output the block gives, or ''."""
    groups = _groups_diagnosis(case, got)
    if groups:
        return groups
    try:
        out = as_float_array(got.get("output"))
        if out is None:
            return ""
        for message, value in _resblock_slips(case):
            if out.shape == tuple(value.shape) and np.allclose(out, value.double().numpy(), rtol=1e-4, atol=1e-4):
                return message
    except (TypeError, ValueError, RuntimeError, KeyError, AttributeError):
        return ""
    return ""


#: what the block computes weighs a little more than its five structural checks together (shape, skip, parameter
#: count, time dependence, layer names): copying the layer table with a wrong forward pass keeps under half
_RESBLOCK_VALUES = 6.0


def _resblock_judge(case: Case, got, expected) -> list[SubCheck]:
    in_ch, out_ch, emb_dim, x, *_ = case.args
    where = f" ({case.label})"
    if not isinstance(got, dict) or "output_shape" not in got:
        return [SubCheck("observed", False, 6, f"could not observe the block{where}")]
    checks = []
    shape_ok = list(got["output_shape"]) == list(expected["output_shape"])
    checks.append(
        SubCheck(
            "shape",
            shape_ok,
            1,
            ""
            if shape_ok
            else f"output shape should be {tuple(expected['output_shape'])}, got {tuple(got['output_shape'])}{where}",
        )
    )
    if got.get("dropout"):  # weight 0.5: the block computes the right thing in eval mode, but not as asked
        checks.append(SubCheck("no dropout", False, 0.5, "the exercise's block has no dropout (the lesson's ResBlock "
                               "does): leave out nn.Dropout, so the block is the same in training and in eval mode"))
    skip_ok = got["skip"] == expected["skip"]
    want = "nn.Identity()" if in_ch == out_ch else "a 1×1 nn.Conv2d"
    checks.append(
        SubCheck(
            "skip",
            skip_ok,
            1,
            "" if skip_ok else f"self.skip should be {want} for {in_ch} → {out_ch} channels, got {got['skip']}{where}",
        )
    )
    p_ok = got["parameters"] == expected["parameters"]
    checks.append(
        SubCheck(
            "parameters",
            p_ok,
            1,
            ""
            if p_ok
            else f"the block should have {expected['parameters']:,} parameters, got {got['parameters']:,}{where}",
        )
    )
    t_ok = bool(got["time_changes_output"])
    t_msg = ""
    if not t_ok and _one_channel_groups(case, got):
        t_msg = (
            f"the output does not change with the time embedding e: norm2 has one channel per group ({out_ch} "
            f"groups for {out_ch} channels), so it subtracts each channel's mean, and the time bias with it; use "
            f"group_norm({out_ch}){where}"
        )
    elif not t_ok:
        t_msg = (
            f"the output does not change with the time embedding e: add W_e·SiLU(e) to every pixel of h as a "
            f"per-channel bias{where}"
        )
    checks.append(SubCheck("time", t_ok, 1, t_msg))
    load_ok = not got["load_error"]
    checks.append(
        SubCheck(
            "layer names",
            load_ok,
            1,
            ""
            if load_ok
            else "could not load the reference weights (use the layers norm1, conv1, emb, norm2, "
            f"conv2, skip with the shapes of the exercise): {got['load_error']}"
            # a difference of names is the same on every case: said once (no case label)
            + ("" if str(got["load_error"]).startswith("your block has") else where),
        )
    )
    if load_ok and shape_ok:
        cmp = compare(got["output"], expected["output"], rtol=1e-4, atol=1e-4, label=case.label)
        v_ok = all(c.passed for c in cmp)
        msg = next((c.message for c in cmp if not c.passed and c.message), "")
        if not v_ok:
            named = _resblock_diagnosis(case, got)
            msg = f"with the same weights your output differs from the reference: {msg}" + (
                f" — {named}"
                if named
                else "; check the order GN → SiLU → conv, SiLU on e before W_e, the bias after conv1, and the skip "
                "added at the end"
            )
        checks.append(SubCheck("values", v_ok, _RESBLOCK_VALUES, msg))
    else:
        checks.append(SubCheck("values", False, _RESBLOCK_VALUES, ""))
    checks.append(_eps_check(got, where))
    return checks


_RES = register(
    Exercise(
        id="03.2",
        judges_type=True,  # the probe observes the module; the learner returns no values
        library_versions=("course_lib.nn.blocks.ResBlock.forward",),
        lesson=LESSON,
        name="TimeResBlock",
        title="build TimeResBlock",
        reference=_TimeResBlock,
        cases=_resblock_cases,
        points=3,
        probe=_resblock_probe,
        judge=_resblock_judge,
        # the block's forward(x, e) is what may write into its inputs: name them so
        input_names=("in_ch", "out_ch", "emb_dim", "x", "e", "e2", "weight_seed"),
        hint="conv1(SiLU(GN(x))) plus emb(SiLU(e)) reshaped to N×C×1×1, then conv2(SiLU(GN(h))), plus skip(x)",
    )
)


# =============================================================================================
# 03.3 analyse_unet
# =============================================================================================


def _analyse_unet(channels, blocks, attention, image_size: int = 32, in_channels: int = 1, batch: int = 1) -> dict:
    r"""Parameters and float32 activation memory per part of ``UNet(UNetConfig(...))``, counted by hand.

    With D = 4·C_0 (time embedding), conv(k, a, b) = k²ab + b, lin(a, b) = ab + b, GN(c) = 2c:

        P_res(a, b)  = GN(a) + conv(3, a, b) + lin(D, b) + GN(b) + conv(3, b, b) + [a ≠ b]·conv(1, a, b)
        P_attn(c)    = GN(c) + lin(c, 3c) + lin(c, c)
        stem         = lin(C_0, D) + lin(D, D) + conv(3, in, C_0) + GN(C_0) + conv(3, C_0, in)
        level i      = encoder: P_res(C_{i−1}, C_i) + (B_i − 1)·P_res(C_i, C_i) + B_i·a_i·P_attn(C_i)
                       + [i < n−1]·conv(3, C_i, C_i)                      (downsampler)
                     + decoder: B_i·P_res(2C_i, C_i) + B_i·a_i·P_attn(C_i)  (input: h and the skip)
                       + [i > 0]·conv(3, C_i, C_{i−1})                    (upsampler, narrowing)
                     (C_{−1} = C_0: conv_in already gives C_0 channels)
        middle       = 2·P_res(C_{n−1}, C_{n−1}) + P_attn(C_{n−1})

    Activation memory: 4 bytes × batch × the number of values in the output of every block
    (ResBlock, SelfAttention, Downsample, Upsample; conv_in and conv_out for the stem), where
    level i works at side R_i = image_size / 2^i.

    channels, blocks, attention: one entry per level; returns
    {"parameters": {part: int}, "activation_bytes": {part: int}, "total_parameters": int,
    "total_activation_bytes": int} with parts "stem", "level 0" … "level n−1", "middle".
    """
    return _count_unet(channels, blocks, attention, image_size, in_channels, batch)


#: Channel slips in analyse_unet, in the order their messages are joined: (key, what the learner counted).
_UNET_SLIPS = (
    (
        "no skip channels",
        "the decoder's ResBlocks take 2·C_i channels (h and the skip concatenated), yours count C_i",
    ),
    (
        "skip for the first only",
        "every decoder ResBlock gets a skip, so each takes 2·C_i channels, not only the first",
    ),
    (
        "encoder from C_i",
        "the encoder's first ResBlock at level i goes C_{i−1} → C_i (a 1×1 skip where they "
        "differ), yours counts C_i → C_i",
    ),
    (
        "wide upsampler",
        "the upsampler narrows C_i to C_{i−1}: a 3×3 conv C_i → C_{i−1}, whose output holds C_{i−1}·(2R_i)² values",
    ),
    ("attention without biases", "P_attn(C) counts the biases: 2C + (3C² + 3C) + (C² + C)"),
    ("attention without norm", "P_attn(C) starts with its GroupNorm's 2C"),
    (
        "no 1×1 skip",
        "a ResBlock whose widths differ (a ≠ b) has a 1×1 skip conv, conv(1, a, b) = ab + b parameters, in P_res(a, b)",
    ),
    (
        "downsampler at R_i",
        "the downsampler halves the side: its output holds C_i·(R_i/2)² values, not C_i·R_i²",
    ),
)


def _count_unet(channels, blocks, attention, image_size=32, in_channels=1, batch=1, slips=frozenset()) -> dict:
    """The reference's counts; ``slips`` (keys of _UNET_SLIPS) switch on the mistakes a diagnosis names."""
    ch, nb, at = [int(c) for c in channels], [int(b) for b in blocks], [bool(a) for a in attention]
    n, D, S = len(ch), 4 * ch[0], int(image_size)

    def conv(k, a, b):
        return k * k * a * b + b

    def lin(a, b):
        return a * b + b

    def res(a, b):
        skip = conv(1, a, b) if a != b and "no 1×1 skip" not in slips else 0
        return 2 * a + conv(3, a, b) + lin(D, b) + 2 * b + conv(3, b, b) + skip

    def attn(c):
        if "attention without biases" in slips:
            return (0 if "attention without norm" in slips else 2 * c) + 3 * c * c + c * c
        return (0 if "attention without norm" in slips else 2 * c) + lin(c, 3 * c) + lin(c, c)

    def decoder_in(c, b):  # the input width of each of the b decoder ResBlocks
        if "no skip channels" in slips:
            return [c] * b
        if "skip for the first only" in slips:
            return [2 * c] + [c] * (b - 1)
        return [2 * c] * b

    params = {"stem": lin(ch[0], D) + lin(D, D) + conv(3, in_channels, ch[0]) + 2 * ch[0] + conv(3, ch[0], in_channels)}
    values = {"stem": ch[0] * S * S + in_channels * S * S}
    for i in range(n):
        c, b, a = ch[i], nb[i], at[i]
        prev = ch[i - 1] if i > 0 else c
        up = c if "wide upsampler" in slips else prev  # the upsampler's output width
        first = c if "encoder from C_i" in slips else prev
        encoder = res(first, c) + (b - 1) * res(c, c) + b * a * attn(c) + (conv(3, c, c) if i < n - 1 else 0)
        # every decoder ResBlock takes h (C_i channels: the upsampler from below already narrowed it,
        # or the middle at the bottom) concatenated with a skip of C_i channels
        decoder = sum(res(w, c) for w in decoder_in(c, b)) + b * a * attn(c) + (conv(3, c, up) if i > 0 else 0)
        params[f"level {i}"] = encoder + decoder
        r = S // 2**i
        down = r if "downsampler at R_i" in slips else r // 2  # the downsampler's output side
        values[f"level {i}"] = (
            2 * b * (1 + a) * c * r * r + (c * down**2 if i < n - 1 else 0) + (up * (2 * r) ** 2 if i > 0 else 0)
        )
    r = S // 2 ** (n - 1)
    params["middle"] = 2 * res(ch[-1], ch[-1]) + attn(ch[-1])
    values["middle"] = 3 * ch[-1] * r * r
    act = {k: 4 * batch * v for k, v in values.items()}
    return {
        "parameters": params,
        "activation_bytes": act,
        "total_parameters": sum(params.values()),
        "total_activation_bytes": sum(act.values()),
    }


def _random_unet_config(g: torch.Generator) -> tuple[tuple, tuple, tuple]:
    """2–4 levels of non-decreasing widths 16·2^k, 1–2 blocks each, random attention (deepest level on).

    Widths ≤ 64 or multiples of 64 only: SelfAttention (also in the middle) needs them with head_dim 64.
    """
    n = int(torch.randint(2, 5, (1,), generator=g))
    c = [16, 32, 64][int(torch.randint(0, 3, (1,), generator=g))]
    widths = []
    for _ in range(n):
        widths.append(c)
        c *= [1, 2, 2][int(torch.randint(0, 3, (1,), generator=g))]
    blocks = tuple(int(b) for b in torch.randint(1, 3, (n,), generator=g))
    attention = [bool(torch.rand(1, generator=g) < 0.5) for _ in widths[:-1]] + [True]
    return tuple(widths), blocks, tuple(attention)


def _analyse_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    cases = [
        Case(((64, 128, 256), (1, 2, 2), (False, False, True)), label="the course default (64, 128, 256)"),
        Case(((32, 64), (1, 1), (False, True)), label="2 levels (32, 64)"),
        Case(
            ((32, 64, 128, 128), (1, 1, 1, 1), (False, False, True, True)),
            {"in_channels": 3, "image_size": 64},
            label="4 levels, RGB 64×64",
        ),
        Case(
            ((64, 128), (2, 2), (True, True)),
            {"in_channels": 4, "image_size": 16, "batch": 3},
            label="3 latents 16×16×4",
        ),
    ]
    for _ in range(2):
        ch, b, a = _random_unet_config(g)
        cases.append(Case((ch, b, a), label=f"random widths {ch}, blocks {b}, attention {a}"))
    return cases


def _lookup(tree, path: str):
    """tree["a"]["b"] for path "a.b" (keys hold no dots), None when absent."""
    for key in path.split(".", 1):
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _unet_slip_variants(case: Case) -> list[tuple[tuple[str, ...], dict]]:
    """The counts of every combination of up to three channel slips (both skip slips at once excluded),
    fewest slips first, so that a number is blamed on the smallest set of slips that explains it."""
    keys = [key for key, _ in _UNET_SLIPS]
    out = []
    for size in (1, 2, 3):
        for combo in itertools.combinations(keys, size):
            if "no skip channels" in combo and "skip for the first only" in combo:
                continue
            out.append((combo, _count_unet(*case.args, **case.kwargs, slips=frozenset(combo))))
    return out


def _unet_slip_diagnosis(variants, path: str, got, expected) -> str:
    """The slips whose count at ``path`` is ``got`` (and not the expected one), or ''."""
    messages = dict(_UNET_SLIPS)
    for combo, counts in variants:
        value = _lookup(counts, path)
        if _is_number(value) and value != expected and value == got:
            return "; ".join(messages[key] for key in combo)
    return ""


def _analyse_judge(case: Case, got, expected) -> list[SubCheck]:
    """compare(), exactly; messages print whole integers and name the usual slips."""
    checks = compare(got, expected, rtol=0.0, atol=0.5, label=case.label)
    batch = case.kwargs.get("batch", 1)
    variants = None
    for c in checks:
        if c.passed or not c.name.endswith(": value"):
            continue
        path = c.name[: -len(": value")]
        g, e = _lookup(got, path), _lookup(expected, path)
        if not (_is_number(g) and _is_number(e)):
            continue
        c.message = f"{path}: expected {e:,.0f}, got {g:,.0f}, off by {g - e:+,.0f} ({case.label})"
        why = ""
        if path.startswith(("activation_bytes", "total_activation_bytes")) and e:
            if math.isclose(4 * g, e):
                why = "that is the number of values: float32 takes 4 bytes each"
            elif math.isclose(2 * g, e):
                why = "that is 2 bytes per value (bf16 or float16): the activations are float32, 4 bytes each"
            elif batch > 1 and math.isclose(batch * g, e):
                why = f"multiply by the batch ({batch})"
            elif batch > 1 and math.isclose(4 * batch * g, e):
                why = f"count 4 bytes per value and multiply by the batch ({batch})"
        if not why and math.isfinite(g) and g == int(g):
            try:
                variants = variants if variants is not None else _unet_slip_variants(case)
                why = _unet_slip_diagnosis(variants, path, int(g), e)
            except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError):
                why = ""
        if why:
            c.message += f" — {why}"
    return checks


_UNET = register(
    Exercise(
        id="03.3",
        library_versions=("course_lib.nn.unet.UNet.__init__", "course_lib.nn.unet.UNet.parameters_by_level"),
        lesson=LESSON,
        name="analyse_unet",
        title="write analyse_unet",
        reference=_analyse_unet,
        cases=_analyse_cases,
        points=4,
        judge=_analyse_judge,
        rtol=0.0,
        atol=0.5,
        hint="walk the levels as UNet.__init__ does: every decoder ResBlock takes 2·C_i channels (h and a skip), "
        "the upsampler narrows C_i to C_{i−1}, and a block output at side S/2^i holds C·side² values",
    )
)

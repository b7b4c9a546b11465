"""U-Net blocks and the assembled network: shapes, a hand-counted parameter total, bad input."""

import math

import pytest
import torch

from course_lib.nn.blocks import Downsample, ResBlock, SelfAttention, Upsample, timestep_embedding
from course_lib.nn.unet import UNet, UNetConfig


@pytest.mark.parametrize(
    "cfg",
    [
        UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4),
        UNetConfig(channels=(8, 16, 32), blocks=(2, 1, 1), attention=(False, False, True), head_dim=16, groups=8),
        UNetConfig(in_channels=3, channels=(16,), blocks=(2,), attention=(True,), head_dim=8, image_size=16),
        UNetConfig(in_channels=4, channels=(8, 8, 16, 16), blocks=1, attention=(False,) * 4, groups=4,
                   image_size=8, num_classes=5),
    ],
    ids=["2-level", "3-level", "rgb-1-level", "latent-4-level"],
)
def test_output_shape_equals_input_shape(cfg):
    m = UNet(cfg)
    x = torch.randn(3, cfg.in_channels, cfg.image_size, cfg.image_size)
    assert m(x, torch.tensor([0, 5, 999])).shape == x.shape
    if cfg.num_classes:
        assert m(x, torch.tensor([0, 5, 999]), torch.tensor([0, 4, 5])).shape == x.shape


# Hand-derived counts: a conv has k·k·in·out weights + out biases, a linear in·out + out,
# a GroupNorm a scale and a shift per channel.
def conv(i, o, k=3):
    return k * k * i * o + o


def linear(i, o):
    return i * o + o


def gn(c):
    return 2 * c


def res(i, o, e):
    return gn(i) + conv(i, o) + linear(e, o) + gn(o) + conv(o, o) + (conv(i, o, 1) if i != o else 0)


def attn(c):
    return gn(c) + linear(c, 3 * c) + linear(c, c)


def test_parameter_count_equals_hand_formula():
    c0, c1, e, cin = 8, 16, 32, 1  # emb = 4 * c0
    cfg = UNetConfig(in_channels=cin, channels=(c0, c1), blocks=(1, 1), attention=(False, True),
                     head_dim=8, groups=4)
    stem = linear(c0, e) + linear(e, e) + conv(cin, c0) + gn(c0) + conv(c0, cin)
    level0 = res(c0, c0, e) + conv(c0, c0) + res(c0 + c0, c0, e)  # down block + Downsample; up block
    level1 = res(c0, c1, e) + attn(c1) + res(c1 + c1, c1, e) + attn(c1) + conv(c1, c0)  # + Upsample c1 → c0
    middle = 2 * res(c1, c1, e) + attn(c1)
    m = UNet(cfg)
    assert m.num_parameters() == stem + level0 + level1 + middle
    by_level = m.parameters_by_level()
    assert by_level == {"stem": stem, "level 0": level0, "level 1": level1, "middle": middle}
    # with class labels: one embedding row per class plus the "no class" row
    m2 = UNet(UNetConfig(**{**cfg.to_dict(), "num_classes": 10}))
    assert m2.num_parameters() == m.num_parameters() + 11 * e


def test_timestep_embedding_is_the_sinusoid():
    t = torch.tensor([0, 1, 500])
    emb = timestep_embedding(t, 8)
    assert emb.shape == (3, 8)
    freqs = [10_000 ** (-i / 4) for i in range(4)]
    expected = [[math.cos(f * s) for f in freqs] + [math.sin(f * s) for f in freqs] for s in (0, 1, 500)]
    assert torch.allclose(emb, torch.tensor(expected), atol=1e-4)
    with pytest.raises(ValueError, match="even"):
        timestep_embedding(t, 7)


def test_resblock_shapes_and_time_matters():
    blk = ResBlock(8, 16, 32, groups=4)
    x = torch.randn(2, 8, 6, 6)
    e1, e2 = torch.randn(2, 32), torch.randn(2, 32)
    assert blk(x, e1).shape == (2, 16, 6, 6)
    assert not torch.allclose(blk(x, e1), blk(x, e2))


@pytest.mark.parametrize("channels", [16, 32, 48, 64, 96, 320])
def test_time_reaches_every_block_width_the_recipes_use(channels):
    """The time bias is added just before norm2: a GroupNorm with one channel per group would
    subtract it again (each channel's own mean), and the block would ignore t."""
    torch.manual_seed(0)
    blk = ResBlock(channels, channels, 32)
    assert channels // blk.norm2.num_groups >= 4
    x = torch.randn(2, channels, 8, 8)
    e1, e2 = torch.randn(2, 32), torch.randn(2, 32)
    change = (blk(x, e1) - blk(x, e2)).abs().max().item()
    assert change > 1e-2, f"the time embedding barely changes the output ({change:.2e})"
    # the known-wrong norm: one channel per group erases the time bias (to float precision)
    blk.norm2 = torch.nn.GroupNorm(channels, channels, eps=1e-6)
    assert (blk(x, e1) - blk(x, e2)).abs().max().item() < 1e-4


def test_self_attention_is_permutation_equivariant_over_positions():
    """Attention sees a set of positions: permuting pixels permutes the output."""
    torch.manual_seed(0)
    att = SelfAttention(16, head_dim=8, groups=4).eval()
    x = torch.randn(2, 16, 4, 4)
    perm = torch.randperm(16)
    xp = x.flatten(2)[:, :, perm].view_as(x)
    out, outp = att(x).flatten(2), att(xp).flatten(2)
    assert torch.allclose(out[:, :, perm], outp, atol=1e-5)


def test_untrained_unet_starts_as_zero_predictor():
    m = UNet(UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4))
    assert torch.count_nonzero(m(torch.randn(2, 1, 32, 32), torch.tensor([3, 4]))) == 0


def test_bad_input_says_what_was_expected():
    m = UNet(UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4))
    with pytest.raises(ValueError, match="N×1×H×W, got 3 dims"):
        m(torch.randn(1, 32, 32), torch.tensor([1]))
    with pytest.raises(ValueError, match="1 channel"):
        m(torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="divisible by 2"):
        m(torch.randn(2, 1, 31, 31), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        m(torch.randn(2, 1, 32, 32), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="no num_classes"):
        m(torch.randn(2, 1, 32, 32), torch.tensor([1, 2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one entry per level"):
        UNetConfig(channels=(8, 16), blocks=(1, 1, 1), attention=(False, True))
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(channels=(8, 16, 32, 64), blocks=1, attention=(False,) * 4, image_size=20)


def test_blocks_say_what_they_expected_instead_of_failing_inside_torch():
    """Lesson 03's blocks wired wrongly: each names itself and the shape it takes (before, some raised a GroupNorm
    or conv error from inside torch, and ResBlock and Upsample silently took a 3-dim x)."""
    res, attn = ResBlock(8, 16, emb_dim=32, groups=4), SelfAttention(16, head_dim=8, groups=4)
    x, emb = torch.randn(2, 8, 8, 8), torch.randn(2, 32)
    assert res(x, emb).shape == (2, 16, 8, 8)
    cases = [
        (lambda: res(torch.randn(2, 4, 8, 8), emb), r"ResBlock takes x as a float N×8×H×W tensor, got a 4-dim"),
        (lambda: res(torch.randn(8, 8, 8), emb), r"ResBlock takes x as a float N×8×H×W tensor, got a 3-dim"),
        (lambda: res(x.long(), emb), r"ResBlock takes x as a float N×8×H×W tensor, got a 4-dim torch.int64"),
        (lambda: res(x, torch.randn(2, 31)), r"emb of shape N×32 with N = 2 \(x's batch\), got a 2-dim"),
        (lambda: res(x, torch.randn(3, 32)), r"emb of shape N×32 with N = 2"),
        (lambda: res(x), r"emb of shape N×32 with N = 2 \(x's batch\), got None"),
        (lambda: ResBlock(8, 8, groups=4)(x, emb), "built with emb_dim=None"),
        (lambda: attn(torch.randn(2, 16, 8)), r"SelfAttention takes x as a float N×16×H×W tensor, got a 3-dim"),
        (lambda: attn(torch.randn(2, 8, 4, 4)), r"SelfAttention takes x as a float N×16×H×W"),
        (lambda: Downsample(16)(torch.randn(2, 8, 8, 8)), r"Downsample takes x as a float N×16×H×W"),
        (lambda: Upsample(16, 8)(torch.randn(16, 8, 8)), r"Upsample takes x as a float N×16×H×W tensor, got a 3-dim"),
        (lambda: Upsample(16, 8)([1, 2]), r"Upsample takes x as a float N×16×H×W tensor, got a list"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    m = UNet(UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4))
    with pytest.raises(ValueError, match="x must be a float tensor"):
        m(torch.zeros(2, 1, 32, 32, dtype=torch.long), torch.tensor([1, 2]))


def test_config_round_trip():
    cfg = UNetConfig(channels=(8, 16), blocks=(1, 2), attention=(False, True), num_classes=3)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg


# --------------------------------------------------------------------------- dtypes, labels, config types
SMALL_C = UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4, image_size=16,
                     num_classes=10)


def test_a_float64_or_int_batch_is_refused_by_name_but_autocast_and_converted_models_run():
    m = UNet(SMALL_C).eval()
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"x must be torch.float32 like the model's weights, got torch.float64: "
                                         r"use x.float\(\)"):
        m(x.double(), t)
    with pytest.raises(ValueError, match=r"got torch.bfloat16: use x.float\(\)"):  # bf16 without autocast
        m(x.bfloat16(), t)
    with pytest.raises(ValueError, match=r"x must be a float tensor \(images or latents\), got torch.uint8: scale"):
        m((x.abs() * 100).to(torch.uint8), t)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # float32 in, float32 weights: fine
        assert m(x, t).dtype == torch.bfloat16
    with torch.no_grad():
        assert UNet(SMALL_C).bfloat16()(x.bfloat16(), t).dtype == torch.bfloat16
        assert UNet(SMALL_C).double()(x.double(), t).dtype == torch.float64


def test_the_blocks_name_a_dtype_mismatch_too():
    res, attn = ResBlock(8, 8, emb_dim=32, groups=4), SelfAttention(8, head_dim=8, groups=4)
    x, emb = torch.randn(2, 8, 4, 4), torch.randn(2, 32)
    with pytest.raises(ValueError, match=r"x must be torch.float32 like this ResBlock's weights, got torch.float64"):
        res(x.double(), emb.double())
    with pytest.raises(ValueError, match=r"emb must be torch.float32 like this ResBlock's weights, got torch.float64"):
        res(x, emb.double())
    with pytest.raises(ValueError, match=r"x must be torch.float32 like this SelfAttention's weights"):
        attn(x.double())
    with pytest.raises(ValueError, match=r"like this Downsample's weights"):
        Downsample(8)(x.double())
    with pytest.raises(ValueError, match=r"like this Upsample's weights"):
        Upsample(8)(x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert res(x, emb).shape == attn(x).shape == (2, 8, 4, 4)


def test_float_labels_are_refused_instead_of_truncated():
    m = UNet(SMALL_C).eval()
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="labels must be integer class indices, got torch.float32"):
        m(x, t, torch.tensor([1.6, 2.9]))
    with pytest.raises(ValueError, match="labels must be integer class indices, got torch.float32"):
        m(x, t, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"labels must lie in 0..10 \(10 = no class\), got -1..1"):
        m(x, t, torch.tensor([1, -1]))
    with torch.no_grad():  # any integer dtype is a class index
        assert torch.equal(m(x, t, torch.tensor([1, 2], dtype=torch.int32)), m(x, t, torch.tensor([1, 2])))
        assert torch.equal(m(x, t, torch.tensor([1, 2], dtype=torch.uint8)), m(x, t, [1, 2]))


@pytest.mark.parametrize("overrides, message", [
    (dict(channels=64), r"channels must be a tuple of positive ints, one per level, e.g. \(32, 64, 128\); got 64"),
    (dict(channels=(8, 0)), r"channels must be a tuple of positive ints.*got \(8, 0\)"),
    (dict(channels=()), r"channels must be a tuple of positive ints"),
    (dict(attention=True), r"attention must be a tuple of bools, one per level, e.g. \(False, False, True\); got True"),
    (dict(blocks=(1, 0)), r"blocks must be a tuple of positive ints"),
    (dict(blocks=1.5), r"blocks must be a tuple of positive ints.*got 1.5"),
    (dict(num_classes=10.0), r"num_classes must be None or a positive int \(≥ 1\), got 10.0"),
    (dict(num_classes=0), r"num_classes must be None or a positive int"),
    (dict(in_channels=0), r"in_channels must be a positive int, got 0"),
    (dict(image_size=16.0), r"image_size must be a positive int, got 16.0"),
    (dict(head_dim=0), r"head_dim must be a positive int, got 0"),
    (dict(groups=-4), r"groups must be a positive int, got -4"),
    (dict(out_channels=0), r"out_channels must be None or a positive int, got 0"),
    (dict(context_dim=12.5), r"context_dim must be None or ≥ 1"),
])
def test_config_names_the_field_that_has_the_wrong_type(overrides, message):
    base = dict(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4, image_size=16)
    with pytest.raises(ValueError, match=message):
        UNetConfig(**{**base, **overrides})


def test_config_takes_lists_as_json_gives_them():
    listed = UNetConfig(channels=[8, 16], blocks=[1, 2], attention=[False, True], num_classes=3)
    assert listed == UNetConfig(channels=(8, 16), blocks=(1, 2), attention=(False, True), num_classes=3)
    assert UNetConfig(channels=(8, 16), blocks=1, attention=(0, 1)).attention == (False, True)


def test_the_checks_trace_without_a_graph_break():
    """torch.compile sees plain Python on shapes and dtypes (fullgraph=True fails on any graph break)."""
    m = UNet(UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4,
                        image_size=16)).eval()
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([1, 2])
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    with torch.no_grad():
        assert torch.equal(compiled(x, t), m(x, t))

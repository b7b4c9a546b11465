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

"""Cross-attention (lesson 06): a naive reference, masks, attention maps, and the U-Net with a context."""

import pytest
import torch

from course_lib.nn.blocks import CrossAttention, record_attention, token_heatmaps
from course_lib.nn.unet import UNet, UNetConfig

C, D, HEAD = 16, 12, 4  # 4 heads of width 4; the text tokens are 12 wide


def make_layer(seed=0, channels=C, context_dim=D, head_dim=HEAD):
    """A CrossAttention with every weight random (W_o is zero at init, which would hide everything)."""
    torch.manual_seed(seed)
    layer = CrossAttention(channels, context_dim, head_dim=head_dim, groups=4)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return layer.eval()


def reference(layer, x, context, mask=None):
    """out = x + W_o · softmax(q kᵀ/√d + B) v, head by head, with loops and no fused kernel."""
    n, c, h, w = x.shape
    heads, d = layer.heads, c // layer.heads
    q = layer.to_q(layer.norm(x).flatten(2).transpose(1, 2))  # N×HW×C
    k, v = layer.to_k(context), layer.to_v(context)  # N×L×C
    out = torch.zeros(n, h * w, c)
    probs = torch.zeros(n, heads, h * w, context.shape[1])
    for i in range(n):
        for j in range(heads):
            cols = slice(j * d, (j + 1) * d)
            scores = q[i, :, cols] @ k[i, :, cols].T / d**0.5  # HW×L
            if mask is not None:
                scores = scores.masked_fill(~mask[i], float("-inf"))
            p = torch.softmax(scores, dim=-1)
            probs[i, j] = p
            out[i, :, cols] = p @ v[i, :, cols]
    return x + layer.out(out).transpose(1, 2).reshape(n, c, h, w), probs


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, C, 4, 4, generator=g)
    context = torch.randn(2, 5, D, generator=g)
    mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    return x, context, mask


@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("return_attention", [False, True], ids=["fused", "explicit"])
def test_equals_naive_reference(inputs, masked, return_attention):
    x, context, mask = inputs
    mask = mask if masked else None
    layer = make_layer()
    assert layer.heads == 4
    with torch.no_grad():
        expected, expected_probs = reference(layer, x, context, mask)
        got = layer(x, context, mask, return_attention=return_attention)
    if return_attention:
        got, probs = got
        assert probs.shape == (2, 4, 16, 5)
        torch.testing.assert_close(probs, expected_probs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_padding_tokens_do_not_change_the_output(inputs):
    x, context, mask = inputs
    layer = make_layer()
    padding = 100 * torch.randn(2, 3, D)  # arbitrary, large values in the padded slots
    longer = torch.cat([context, padding], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, longer, longer_mask), layer(x, context, mask), atol=1e-5, rtol=1e-5)
        # and what already sits in a masked slot does not matter either
        changed = context.clone()
        changed[0, 3:] = -50.0
        torch.testing.assert_close(layer(x, changed, mask), layer(x, context, mask), atol=1e-5, rtol=1e-5)


def test_a_different_context_changes_the_output(inputs):
    x, context, mask = inputs
    layer = make_layer()
    with torch.no_grad():
        other = layer(x, torch.randn_like(context), mask)
        assert (other - layer(x, context, mask)).abs().max() > 1e-2


def test_starts_as_the_identity(inputs):
    """W_o starts at zero: a new cross-attention layer passes x through unchanged."""
    x, context, mask = inputs
    layer = CrossAttention(C, D, head_dim=HEAD, groups=4)
    out, probs = layer(x, context, mask, return_attention=True)
    assert torch.equal(out, x)
    assert not torch.allclose(probs[..., 0], probs[..., 1])  # its maps are already informative


def test_probabilities_sum_to_one_over_real_tokens_and_vanish_on_padding(inputs):
    x, context, mask = inputs
    _, probs = make_layer()(x, context, mask, return_attention=True)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 16))
    assert torch.all(probs[0, :, :, 3:] == 0)
    assert torch.all(probs[0, :, :, :3] > 0)


def test_a_prompt_with_every_token_masked_gives_no_nan(inputs):
    x, context, mask = inputs
    mask = mask.clone()
    mask[0] = False
    layer = make_layer()
    out, probs = layer(x, context, mask, return_attention=True)
    assert torch.isfinite(layer(x, context, mask)).all() and torch.isfinite(out).all()
    assert torch.all(probs[0, ..., 0] == 1)  # the first token is kept visible


def test_bad_input_says_what_was_expected(inputs):
    x, context, mask = inputs
    layer = make_layer()
    with pytest.raises(ValueError, match="N×L×12"):
        layer(x, torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="N×L×12"):
        layer(x, torch.randn(5, D))
    with pytest.raises(ValueError, match="one prompt per image"):
        layer(x, context[:1])
    with pytest.raises(ValueError, match="x must be N×16×H×W"):
        layer(x[:, :8], context)
    with pytest.raises(ValueError, match="bool"):
        layer(x, context, mask.long())
    with pytest.raises(ValueError, match=r"N×L = \(2, 5\)"):
        layer(x, context, mask[:, :4])
    with pytest.raises(ValueError, match="multiple of head_dim"):
        CrossAttention(24, D, head_dim=16)


# ----------------------------------------------------------------------------- the U-Net


def small_config(**kw):
    return UNetConfig(**{**dict(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4),
                         **kw})


def test_unet_with_context_shape_and_gradients_reach_cross_attention():
    torch.manual_seed(0)
    m = UNet(small_config(context_dim=D))
    torch.nn.init.normal_(m.conv_out.weight, std=0.1)  # the zero predictor would stop every gradient
    x, t = torch.randn(3, 1, 32, 32), torch.tensor([1, 50, 900])
    context, mask = torch.randn(3, 6, D), torch.rand(3, 6) < 0.7
    mask[:, 0] = True
    out = m(x, t, context=context, context_mask=mask)
    assert out.shape == x.shape
    out.square().mean().backward()
    names = [n for n, _ in m.named_parameters() if "xattn" in n]
    assert any(n.startswith("mid_xattn") for n in names) and any(n.startswith("down.1.xattn") for n in names)
    assert any(n.startswith("up.0.xattn") for n in names) and not any(n.startswith("down.0.xattn") for n in names)
    # at init only W_o of a cross-attention learns (it is zero, and the rest sits behind it) ...
    for n, p in m.named_parameters():
        if "xattn" in n and n.endswith("out.weight"):
            assert p.grad is not None and p.grad.abs().sum() > 0, n
    # ... and once W_o is non-zero the gradient reaches every cross-attention weight
    for n, p in m.named_parameters():
        if "xattn" in n and ".out." in n:
            torch.nn.init.normal_(p, std=0.1)
    m.zero_grad()
    m(x, t, context=context, context_mask=mask).square().mean().backward()
    for n, p in m.named_parameters():
        if "xattn" in n:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
    # the prompt steers the output
    with torch.no_grad():
        assert not torch.allclose(m(x, t, context=context, context_mask=mask), m(x, t, context=-context))


def test_unet_context_works_with_class_labels_and_a_text_embedding():
    from course_lib.text import TextEmbedding

    m = UNet(small_config(context_dim=D, num_classes=3)).eval()
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([3, 4])
    emb = TextEmbedding(torch.randn(2, 4, D), torch.tensor([[True] * 4, [True, True, False, False]]))
    with torch.no_grad():
        a = m(x, t, torch.tensor([0, 2]), context=emb)
        b = m(x, t, torch.tensor([0, 2]), context=emb.tokens, context_mask=emb.mask)
    torch.testing.assert_close(a, b)


def test_unet_bad_context_says_what_was_expected():
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([1, 2])
    plain = UNet(small_config())
    with pytest.raises(ValueError, match="no context_dim, so it takes no context"):
        plain(x, t, context=torch.randn(2, 4, D))
    m = UNet(small_config(context_dim=D))
    with pytest.raises(ValueError, match=r"context_dim=12: pass context"):
        m(x, t)
    with pytest.raises(ValueError, match="N×L×12"):
        m(x, t, context=torch.randn(2, 4, 384))
    with pytest.raises(ValueError, match="one prompt per image"):
        m(x, t, context=torch.randn(3, 4, D))
    with pytest.raises(ValueError, match="context_mask must be a bool tensor"):
        m(x, t, context=torch.randn(2, 4, D), context_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="context_dim must be None or ≥ 1"):
        small_config(context_dim=0)


#: UNet(UNetConfig()).num_parameters() at commit 99969bc, before cross-attention existed.
DEFAULT_UNET_PARAMETERS = 12_454_913


def test_configs_without_context_keep_their_parameters_and_dict():
    m = UNet(UNetConfig())
    assert m.num_parameters() == DEFAULT_UNET_PARAMETERS
    assert not any("xattn" in n for n in m.state_dict())
    assert "context_dim" not in UNetConfig().to_dict()  # so cache keys of old configs are unchanged
    assert UNetConfig.from_dict(UNetConfig().to_dict()) == UNetConfig()
    cfg = small_config(context_dim=384)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg


def test_cross_attention_parameters_are_counted_in_their_level():
    c1 = 16

    def xattn(c, d):  # GroupNorm, W_q, W_k, W_v without bias, W_o with bias
        return 2 * c + c * c + 2 * d * c + c * c + c

    plain, text = UNet(small_config()), UNet(small_config(context_dim=384))
    a, b = plain.parameters_by_level(), text.parameters_by_level()
    assert b["stem"] == a["stem"] and b["level 0"] == a["level 0"]
    assert b["level 1"] == a["level 1"] + 2 * xattn(c1, 384)  # one in the encoder, one in the decoder
    assert b["middle"] == a["middle"] + xattn(c1, 384)
    assert text.num_parameters() == sum(b.values())


def test_record_attention_returns_a_map_per_layer():
    torch.manual_seed(0)
    m = UNet(small_config(channels=(8, 16, 16), blocks=(1, 2, 1), attention=(False, True, True),
                          context_dim=D)).eval()
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([1, 2])
    context, mask = torch.randn(2, 5, D), torch.tensor([[True] * 5, [True, True, False, False, False]])
    with torch.no_grad():
        plain = m(x, t, context=context, context_mask=mask)
        with record_attention(m) as maps:
            recorded = m(x, t, context=context, context_mask=mask)
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)  # recording changes nothing
    heads = 16 // 8
    expected = {"down.1.xattn.0": 16 * 16, "down.1.xattn.1": 16 * 16, "down.2.xattn.0": 8 * 8,
                "mid_xattn": 8 * 8, "up.0.xattn.0": 8 * 8, "up.1.xattn.0": 16 * 16, "up.1.xattn.1": 16 * 16}
    assert {k: tuple(v.shape) for k, v in maps.items()} == {k: (2, heads, hw, 5) for k, hw in expected.items()}
    for probs in maps.values():
        assert torch.all(probs[1, ..., 2:] == 0)
    heat = token_heatmaps(maps, 32)
    assert heat.shape == (2, 5, 32, 32)
    assert all(layer.attention_sink is None for layer in m.modules() if isinstance(layer, CrossAttention))
    with pytest.raises(ValueError, match="no CrossAttention"):
        with record_attention(UNet(small_config())):
            pass


def test_cross_attention_under_bf16_autocast(inputs):
    """The explicit path (attention maps) and the fused one agree under autocast (CPU bf16 here)."""
    x, context, mask = inputs
    layer = make_layer()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fused = layer(x, context, mask)
        explicit, probs = layer(x, context, mask, return_attention=True)
    assert fused.dtype == torch.float32 and torch.isfinite(fused).all()
    torch.testing.assert_close(explicit, fused, atol=0.1, rtol=0.05)
    torch.testing.assert_close(probs.float().sum(-1), torch.ones(2, 4, 16), atol=1e-2, rtol=0)


"""Classifier-free guidance (lesson 07): the combination rule, condition dropout, and the
batched conditional + unconditional pass."""

import math

import pytest
import torch

from course_lib.guidance import cfg_combine, drop_condition, guided_eps
from course_lib.text import TextEmbedding


def _pair(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randn(n, 1, 8, 8, generator=g)


# --------------------------------------------------------------------------- cfg_combine
def test_cfg_combine_scales_0_1_2():
    eps_u, eps_c = _pair()
    assert torch.equal(cfg_combine(eps_u, eps_c, 0.0), eps_u)
    assert torch.allclose(cfg_combine(eps_u, eps_c, 1.0), eps_c, atol=1e-6)
    assert torch.allclose(cfg_combine(eps_u, eps_c, 2), 2 * eps_c - eps_u, atol=1e-6)
    assert torch.allclose(cfg_combine(eps_u, eps_c, 7.5), eps_u + 7.5 * (eps_c - eps_u))


def test_cfg_combine_per_image_scale():
    eps_u, eps_c = _pair()
    scale = torch.tensor([0.0, 1.0, 2.0, 5.0])
    got = cfg_combine(eps_u, eps_c, scale)
    for i, s in enumerate(scale.tolist()):
        assert torch.allclose(got[i], cfg_combine(eps_u[i : i + 1], eps_c[i : i + 1], s)[0], atol=1e-6)
    assert torch.allclose(cfg_combine(eps_u, eps_c, torch.tensor(3.0)), cfg_combine(eps_u, eps_c, 3.0))


def test_cfg_combine_bad_input():
    eps_u, eps_c = _pair()
    with pytest.raises(ValueError, match=r"same shape, got \(4, 1, 8, 8\) and \(3, 1, 8, 8\)"):
        cfg_combine(eps_u, eps_c[:3], 1.0)
    with pytest.raises(ValueError, match=r"an \(4,\) tensor \(one per image\)"):
        cfg_combine(eps_u, eps_c, torch.ones(3))
    for bad in (float("nan"), "2", None, True):
        with pytest.raises(ValueError, match="scale must be a finite number"):
            cfg_combine(eps_u, eps_c, bad)
    with pytest.raises(ValueError, match="must be tensors"):
        cfg_combine(eps_u.numpy(), eps_c, 1.0)


# --------------------------------------------------------------------------- drop_condition
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_rate_matches_p(p):
    n = 20_000
    drop = drop_condition(torch.zeros(n, dtype=torch.long), p, torch.Generator().manual_seed(1))
    assert drop.dtype == torch.bool and drop.shape == (n,)
    sigma = math.sqrt(p * (1 - p) / n)  # binomial standard error of the rate
    assert abs(drop.float().mean().item() - p) < 5 * sigma


def test_drop_none_all_and_reproducible():
    labels = torch.arange(1000)
    assert not drop_condition(labels, 0.0).any()
    assert drop_condition(labels, 1.0).all()
    a = drop_condition(labels, 0.3, torch.Generator().manual_seed(7))
    b = drop_condition(labels, 0.3, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    # the same draws for every p: a larger p drops a superset
    c = drop_condition(labels, 0.6, torch.Generator().manual_seed(7))
    assert (c | a).equal(c)


def test_drop_accepts_batch_size_mask_or_text():
    assert drop_condition(5, 1.0).shape == (5,)
    assert drop_condition(torch.ones(6, 3, dtype=torch.bool), 1.0).shape == (6,)
    emb = TextEmbedding(torch.zeros(7, 2, 4), torch.ones(7, 2, dtype=torch.bool))
    assert drop_condition(emb, 0.5).shape == (7,)
    with pytest.raises(ValueError, match="labels_or_mask must be a batch size"):
        drop_condition(torch.tensor(3), 0.1)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.1", None, True])
def test_drop_bad_p(p):
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\]"):
        drop_condition(torch.zeros(4), p)


# --------------------------------------------------------------------------- guided_eps
class ToyModel:
    """ε(x, t, c) = x·cos(t/10) + e(c), with e a class table or a masked mean of text tokens."""

    def __init__(self):
        self.calls = []
        self.table = torch.randn(11, generator=torch.Generator().manual_seed(3))

    def __call__(self, x, t, c):
        self.calls.append(len(x))
        if isinstance(c, TextEmbedding):
            m = c.mask.unsqueeze(-1).float()
            e = ((c.tokens * m).sum(1) / m.sum(1)).sum(-1)
        else:
            e = self.table[c]
        return x * torch.cos(t.float() / 10).view(-1, 1, 1, 1) + e.view(-1, 1, 1, 1)


def test_guided_eps_equals_two_separate_calls_with_labels():
    model = ToyModel()
    x, _ = _pair(4)
    t = torch.tensor([0, 5, 50, 99])
    labels, null = torch.tensor([1, 2, 3, 4]), torch.full((4,), 10)
    for scale in (3.0, torch.tensor([0.0, 1.0, 2.0, 7.5])):
        model.calls.clear()
        got = guided_eps(model, x, t, labels, null, scale)
        assert model.calls == [8]  # one call of 2N
        want = cfg_combine(model(x, t, null), model(x, t, labels), scale)
        assert torch.allclose(got, want, atol=1e-6)
    # a single null label serves every image; a 0-dim t is repeated
    got = guided_eps(model, x, torch.tensor(5), labels, torch.tensor([10]), 2.0)
    want = cfg_combine(model(x, torch.full((4,), 5), null), model(x, torch.full((4,), 5), labels), 2.0)
    assert torch.allclose(got, want, atol=1e-6)


def test_guided_eps_with_text_pads_to_a_common_length():
    model = ToyModel()
    x, _ = _pair(3)
    t = torch.tensor([1, 2, 3])
    g = torch.Generator().manual_seed(0)
    cond = TextEmbedding(torch.randn(3, 6, 4, generator=g), torch.ones(3, 6, dtype=torch.bool))
    null = TextEmbedding(torch.randn(1, 2, 4, generator=g), torch.ones(1, 2, dtype=torch.bool))
    got = guided_eps(model, x, t, cond, null, 4.0)
    null3 = TextEmbedding(null.tokens.expand(3, -1, -1), null.mask.expand(3, -1))
    want = cfg_combine(model(x, t, null3), model(x, t, cond), 4.0)
    assert torch.allclose(got, want, atol=1e-5)


def test_guided_eps_skips_the_unused_pass_at_scale_0_and_1():
    model = ToyModel()
    x, _ = _pair(4)
    t = torch.arange(4)
    labels, null = torch.tensor([1, 2, 3, 4]), torch.full((4,), 10)
    assert torch.equal(guided_eps(model, x, t, labels, null, 1.0), model(x, t, labels))
    assert torch.equal(guided_eps(model, x, t, labels, null, 0), model(x, t, null))
    assert model.calls == [4, 4, 4, 4]


def test_guided_eps_bad_input():
    model = ToyModel()
    x, _ = _pair(4)
    t = torch.arange(4)
    labels = torch.tensor([1, 2, 3, 4])
    with pytest.raises(ValueError, match="both be tensors .* or both TextEmbeddings"):
        guided_eps(model, x, t, labels, TextEmbedding(torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.bool)), 2.0)
    with pytest.raises(ValueError, match=r"one condition per image \(4; uncond may hold 1\), got 4 and 2"):
        guided_eps(model, x, t, labels, torch.tensor([10, 10]), 2.0)
    with pytest.raises(ValueError, match=r"t must be a 0-dim tensor or have shape \(4,\)"):
        guided_eps(model, x, torch.arange(3), labels, torch.tensor([10]), 2.0)
    with pytest.raises(ValueError, match=r"must return a batch of 8 predictions"):
        guided_eps(lambda x, t, c: x[:1], x, t, labels, torch.tensor([10]), 2.0)

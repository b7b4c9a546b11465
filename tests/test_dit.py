"""The transformer denoiser (DiT, lesson 10): patches, adaLN-Zero, and the drop-in contract with
the course's training and sampling code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.flow import flow_sample
from course_lib.nn.dit import DiT, DiTConfig, flops_per_image, patchify, unpatchify
from course_lib.samplers import sample
from course_lib.schedules import NoiseSchedule
from course_lib.train import TrainConfig, train_diffusion

SMALL = DiTConfig(image_size=16, patch_size=4, width=32, depth=2, heads=2)


def test_patchify_is_undone_by_unpatchify_and_cuts_real_patches():
    x = torch.randn(2, 3, 8, 12)
    tokens = patchify(x, 4)
    assert tokens.shape == (2, 6, 48)
    torch.testing.assert_close(unpatchify(tokens, 4, 3, 8, 12), x)
    # token 1 is the top row's second patch: columns 4..7 of rows 0..3, flattened (row, col, channel)
    torch.testing.assert_close(tokens[0, 1], x[0, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1))


def test_patchify_says_what_it_expected():
    with pytest.raises(ValueError, match="must be a positive int that divides H and W = 8×12, got 5"):
        patchify(torch.randn(2, 3, 8, 12), 5)
    with pytest.raises(ValueError, match=r"takes images N×C×H×W, got \(3, 8, 12\)"):
        patchify(torch.randn(3, 8, 12), 4)


def test_an_untrained_dit_predicts_zero_and_every_block_starts_as_the_identity():
    torch.manual_seed(0)
    model = DiT(SMALL)
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([0, 500, 999])
    assert torch.equal(model(x, t), torch.zeros_like(x))
    h, c = torch.randn(3, SMALL.tokens, 32), torch.randn(3, 32)
    assert torch.equal(model.blocks[0](h, c), h)


def _perturbed(config, seed=1):
    torch.manual_seed(seed)
    model = DiT(config)
    with torch.no_grad():  # leave the zero start so that t and labels can show in the output
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_attention_equals_the_naive_softmax_formula():
    block = _perturbed(SMALL).blocks[0]
    h = torch.randn(2, SMALL.tokens, 32)
    q, k, v = block.qkv(h).reshape(2, SMALL.tokens, 3, 2, 16).permute(2, 0, 3, 1, 4)
    naive = F.softmax(q @ k.transpose(-1, -2) / 16**0.5, dim=-1) @ v
    expected = block.proj(naive.transpose(1, 2).reshape(2, SMALL.tokens, 32))
    torch.testing.assert_close(block.attention(h), expected, rtol=1e-5, atol=1e-5)


def test_time_and_labels_change_the_prediction():
    cfg = DiTConfig(**{**SMALL.to_dict(), "num_classes": 10})
    model = _perturbed(cfg)
    x = torch.randn(2, 1, 16, 16)
    t = torch.tensor([100, 100])
    base = model(x, t, torch.tensor([3, 3]))
    assert not torch.allclose(base, model(x, torch.tensor([900, 900]), torch.tensor([3, 3])))
    assert not torch.allclose(base, model(x, t, torch.tensor([4, 4])))
    torch.testing.assert_close(model(x, t), model(x, t, torch.tensor([10, 10])))  # no label = the null label


def test_flops_formula_matches_torchs_counter():
    from torch.utils.flop_counter import FlopCounterMode

    model = _perturbed(SMALL)
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 1, 16, 16), torch.tensor([10]))
    counted = counter.get_total_flops()
    # torch's counter sees the fused attention kernel on some backends and not on others (the CPU)
    assert counted in (flops_per_image(SMALL), flops_per_image(SMALL, attention=False))
    assert flops_per_image(SMALL) - flops_per_image(SMALL, attention=False) == 2 * 2 * (2 * 16 * 16 * 32)


def test_bad_configs_and_inputs_are_refused():
    with pytest.raises(ValueError, match="divisible by patch_size"):
        DiTConfig(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="split into 3 heads"):
        DiTConfig(width=32, heads=3)
    model = DiT(SMALL)
    with pytest.raises(ValueError, match="x must be N×1×16×16"):
        model(torch.randn(2, 1, 32, 32), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="takes no labels"):
        model(torch.randn(2, 1, 16, 16), torch.tensor([1, 2]), torch.tensor([0, 1]))


def _squares(n=256):
    g = torch.Generator().manual_seed(6)
    x = -torch.ones(n, 1, 16, 16)
    for i, (r, c) in enumerate(torch.randint(0, 12, (n, 2), generator=g).tolist()):
        x[i, :, r : r + 4, c : c + 4] = 1.0
    return x


def test_dit_drops_into_the_ddpm_training_and_sampling_code():
    torch.manual_seed(0)
    config = TrainConfig(steps=100, batch_size=32, lr=1e-3, warmup_steps=10, ema_decay=0.9)
    schedule = NoiseSchedule.cosine(100)
    result = train_diffusion(DiT(SMALL), schedule, _squares(), config, device="cpu", progress=False)
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.7 * first, (first, last)
    images = sample(result.model, schedule, 4, sampler="ddim", steps=10, progress=False)
    assert images.shape == (4, 1, 16, 16) and images.abs().max() <= 1


def test_dit_drops_into_flow_matching():
    torch.manual_seed(0)
    config = TrainConfig(steps=60, batch_size=32, lr=1e-3, warmup_steps=10, ema_decay=0.9)
    result = train_diffusion(DiT(SMALL), None, _squares(), config, device="cpu", progress=False, objective="flow")
    assert result.losses[-1] < result.losses[0]
    assert flow_sample(result.model, 3, steps=5).shape == (3, 1, 16, 16)


LABELLED = DiTConfig(image_size=16, patch_size=4, width=32, depth=1, heads=2, num_classes=10)


def test_bad_labels_get_the_unets_messages():
    model, x, t = DiT(LABELLED).eval(), torch.randn(2, 1, 16, 16), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\), one class per image, got \(3,\)"):
        model(x, t, torch.tensor([1, 2, 3]))
    # a 0-dim label used to broadcast silently
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\), one class per image, got \(\)"):
        model(x, t, torch.tensor(3))
    with pytest.raises(ValueError, match=r"labels must lie in 0..10 \(10 = no class\), got 1..11"):
        model(x, t, torch.tensor([1, 11]))
    with pytest.raises(ValueError, match=r"labels must lie in 0..10 \(10 = no class\), got -1..1"):
        model(x, t, torch.tensor([1, -1]))
    with pytest.raises(ValueError, match="labels must be integer class indices, got torch.float32"):
        model(x, t, torch.tensor([1.6, 2.9]))
    with torch.no_grad():
        assert torch.equal(model(x, t, torch.tensor([1, 10], dtype=torch.int32)), model(x, t, [1, 10]))


def test_wrong_dtypes_are_named_but_autocast_runs():
    model, x, t = DiT(SMALL).eval(), torch.randn(2, 1, 16, 16), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"x must be torch.float32 like the model's weights, got torch.float64: "
                                         r"use x.float\(\)"):
        model(x.double(), t)
    with pytest.raises(ValueError, match=r"x must be a float tensor \(images or latents\), got torch.uint8"):
        model((x.abs() * 10).to(torch.uint8), t)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model(x, t).dtype == torch.bfloat16
        assert DiT(SMALL).bfloat16()(x.bfloat16(), t).dtype == torch.bfloat16


@pytest.mark.parametrize("overrides, message", [
    (dict(mlp_ratio=-1), r"mlp_ratio must be a positive number .* got -1"),
    (dict(mlp_ratio=0), r"mlp_ratio must be a positive number"),
    (dict(mlp_ratio="4"), r"mlp_ratio must be a positive number .* got '4'"),
    (dict(mlp_ratio=float("nan")), r"mlp_ratio must be a positive number"),
    (dict(num_classes=10.0), r"num_classes must be None or a positive int, got 10.0"),
])
def test_config_names_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        DiTConfig(**{**SMALL.to_dict(), **overrides})


def test_unpatchify_checks_tokens_against_the_image_it_is_asked_for():
    tokens = patchify(torch.randn(2, 1, 16, 16), 4)  # 2×16×16
    with pytest.raises(ValueError, match=r"tokens must be N×64×4 .* from 2×2 patches: L = \(H/p\)·\(W/p\) = 64 "
                                         r"tokens of p·p·C = 4 values; got N×16×16"):
        unpatchify(tokens, 2, 1, 16, 16)  # used to scramble the image silently
    with pytest.raises(ValueError, match=r"tokens must be N×16×48 to make 3×16×16 images"):
        unpatchify(tokens, 4, 3, 16, 16)
    with pytest.raises(ValueError, match=r"unpatchify takes tokens N×L×\(p·p·C\), got \(16, 16\)"):
        unpatchify(tokens[0], 4, 1, 16, 16)
    with pytest.raises(ValueError, match="the patch side p must divide H and W = 16×16, got 3"):
        unpatchify(tokens, 3, 1, 16, 16)
    with pytest.raises(ValueError, match="unpatchify's c must be a positive int, got 0"):
        unpatchify(tokens, 4, 0, 16, 16)


def test_the_checks_trace_without_a_graph_break():
    model, x, t = DiT(SMALL).eval(), torch.randn(2, 1, 16, 16), torch.tensor([1, 2])
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        assert torch.equal(compiled(x, t), model(x, t))

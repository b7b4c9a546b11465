"""The DDPM step against diffusers' DDPMScheduler, and the sampling loop."""

import pytest
import torch

from course_lib.nn.unet import UNet, UNetConfig
from course_lib.samplers import ddpm_step, sample
from course_lib.schedules import NoiseSchedule

diffusers = pytest.importorskip("diffusers")

SCHEDULES = [("linear", "linear", {}), ("cosine", "squaredcos_cap_v2", {}),
             ("scaled_linear", "scaled_linear", {"beta_start": 0.00085, "beta_end": 0.012})]
STEPS = [999, 731, 500, 37, 1, 0]


def _reference(ds_name, kw, tables_from=None, variance_type="fixed_small"):
    ref = diffusers.DDPMScheduler(beta_schedule=ds_name, clip_sample=False, variance_type=variance_type, **kw)
    if tables_from is not None:  # same float64 tables: compares the step equation alone
        ref.betas, ref.alphas, ref.alphas_cumprod = tables_from.betas, tables_from.alphas, tables_from.alphas_cumprod
    return ref


def _inputs(seed, dtype):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(4, 1, 8, 8, generator=g, dtype=dtype), torch.randn(4, 1, 8, 8, generator=g, dtype=dtype))


@pytest.mark.parametrize("name,ds_name,kw", SCHEDULES, ids=[s[0] for s in SCHEDULES])
@pytest.mark.parametrize("t", STEPS)
def test_ddpm_step_equals_diffusers_same_tables(name, ds_name, kw, t):
    ours = NoiseSchedule.from_name(name)
    ref = _reference(ds_name, kw, tables_from=ours)
    x, eps = _inputs(t, torch.float64)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    expected = ref.step(eps, t, x, generator=torch.Generator().manual_seed(7)).prev_sample
    assert torch.allclose(ddpm_step(ours, x, eps, t, noise=z), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,ds_name,kw", SCHEDULES, ids=[s[0] for s in SCHEDULES])
@pytest.mark.parametrize("t", STEPS)
def test_ddpm_step_equals_diffusers_float32(name, ds_name, kw, t):
    """Out of the box, float32 on both sides: equal up to float32 rounding of abar."""
    ours = NoiseSchedule.from_name(name)
    ref = _reference(ds_name, kw)
    x, eps = _inputs(t, torch.float32)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    expected = ref.step(eps, t, x, generator=torch.Generator().manual_seed(7)).prev_sample
    got = ddpm_step(ours, x, eps, t, noise=z)
    assert ((got - expected).abs() / (expected.abs() + 1)).max() < 1e-4


@pytest.mark.parametrize("t", [999, 500, 1])
def test_ddpm_step_with_clipping_equals_diffusers_clip_sample(t):
    ours = NoiseSchedule.cosine()
    ref = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=True, variance_type="fixed_small")
    ref.betas, ref.alphas, ref.alphas_cumprod = ours.betas, ours.alphas, ours.alphas_cumprod
    x, eps = _inputs(t, torch.float64)
    x = 3 * x  # far outside [-1, 1]: the clamp is active
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    expected = ref.step(eps, t, x, generator=torch.Generator().manual_seed(7)).prev_sample
    assert torch.allclose(ddpm_step(ours, x, eps, t, noise=z, clip_x0=True), expected, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(ddpm_step(ours, x, eps, t, noise=z), expected, atol=1e-3)


def test_known_wrong_variance_fails_the_comparison():
    """beta_t instead of the posterior variance (diffusers' fixed_large) fails the tolerance above."""
    ours = NoiseSchedule.linear()
    ref = diffusers.DDPMScheduler(beta_schedule="linear", clip_sample=False, variance_type="fixed_large")
    x, eps = _inputs(0, torch.float32)
    got = ddpm_step(ours, x, eps, 10, noise=torch.randn(x.shape, generator=torch.Generator().manual_seed(7)))
    wrong = ref.step(eps, 10, x, generator=torch.Generator().manual_seed(7)).prev_sample
    assert ((got - wrong).abs() / (wrong.abs() + 1)).max() > 1e-3


@pytest.mark.parametrize("name,ds_name,kw", SCHEDULES, ids=[s[0] for s in SCHEDULES])
@pytest.mark.parametrize("t", STEPS)
def test_large_variance_equals_diffusers_fixed_large(name, ds_name, kw, t):
    """variance="large" (σ² = β_t) is DDPMScheduler(variance_type="fixed_large"), the posterior one is not."""
    ours = NoiseSchedule.from_name(name)
    ref = _reference(ds_name, kw, tables_from=ours, variance_type="fixed_large")
    x, eps = _inputs(t, torch.float64)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    expected = ref.step(eps, t, x, generator=torch.Generator().manual_seed(7)).prev_sample
    assert torch.allclose(ddpm_step(ours, x, eps, t, noise=z, variance="large"), expected, rtol=1e-10, atol=1e-10)
    small = ddpm_step(ours, x, eps, t, noise=z)
    if 0 < t < 100:  # β̃_t = β_t (1 − abar_{t−1}) / (1 − abar_t) is well below β_t only near the data end
        assert not torch.allclose(small, expected, atol=1e-4)
    elif t == 0:  # the last step adds no noise with either
        assert torch.equal(small, ddpm_step(ours, x, eps, t, noise=z, variance="large"))


def test_variance_is_checked_and_used_by_sample():
    s = NoiseSchedule.cosine(50)
    m = _tiny_model()
    kw = dict(seed=1, steps=10, progress=False)
    small, large = sample(m, s, 2, **kw), sample(m, s, 2, variance="large", **kw)
    assert torch.equal(small, sample(m, s, 2, variance="small", **kw))
    assert not torch.allclose(small, large, atol=1e-3)
    with pytest.raises(ValueError, match="unknown variance 'big'; expected one of 'small', 'large'"):
        sample(m, s, 2, variance="big", **kw)
    with pytest.raises(ValueError, match="variance applies to sampler='ddpm' only"):
        sample(m, s, 2, sampler="ddim", variance="large", **kw)
    with pytest.raises(ValueError, match="unknown variance"):
        ddpm_step(s, torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), 3, variance="fixed_large")


def test_last_step_adds_no_noise():
    s = NoiseSchedule.cosine()
    x, eps = _inputs(3, torch.float32)
    a = ddpm_step(s, x, eps, 0, noise=torch.randn_like(x))
    b = ddpm_step(s, x, eps, 0, noise=torch.zeros_like(x))
    assert torch.equal(a, b)


def test_per_sample_timesteps_match_scalar_steps():
    s = NoiseSchedule.linear()
    x, eps = _inputs(4, torch.float32)
    z = torch.randn_like(x)
    t = torch.tensor([0, 5, 500, 999])
    batched = ddpm_step(s, x, eps, t, noise=z)
    for i in range(4):
        one = ddpm_step(s, x[i : i + 1], eps[i : i + 1], int(t[i]), noise=z[i : i + 1])
        assert torch.allclose(batched[i : i + 1], one, atol=1e-6)


def _tiny_model(**kw):
    torch.manual_seed(0)
    m = UNet(UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4, **kw))
    for p in m.parameters():  # the zero-initialised output would make every sample pure noise
        p.data.add_(0.01 * torch.randn_like(p))
    return m


def test_sampling_with_a_seed_is_reproducible_and_seeds_differ():
    s = NoiseSchedule.linear(num_steps=20)
    m = _tiny_model()
    a = sample(m, s, 3, seed=1, progress=False)
    b = sample(m, s, 3, seed=1, progress=False)
    c = sample(m, s, 3, seed=2, progress=False)
    assert a.shape == (3, 1, 32, 32)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.min() >= -1 and a.max() <= 1


def test_sampling_trajectory_and_labels():
    s = NoiseSchedule.cosine(num_steps=10)
    m = _tiny_model(num_classes=3)
    x, frames = sample(m, s, 2, labels=torch.tensor([0, 2]), trajectory_every=5, progress=False)
    assert len(frames) == 3 and frames[-1].shape == x.shape
    assert torch.equal(frames[-1], x)


def test_sampling_bad_input():
    s = NoiseSchedule.linear(num_steps=5)
    m = _tiny_model(num_classes=3)
    with pytest.raises(ValueError, match="positive int"):
        sample(m, s, 0, progress=False)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        sample(m, s, 2, labels=torch.tensor([1, 2, 0]), progress=False)
    x = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match="eps must have x_t's shape"):
        ddpm_step(s, x, torch.randn(2, 1, 4, 3), 1)
    with pytest.raises(ValueError, match="0..4"):
        ddpm_step(s, x, torch.randn_like(x), 5)


def test_sampling_names_what_a_learner_might_pass_wrongly():
    """A float label, a string seed, a step count for a schedule, a batch of -1, a seed for a generator and a
    missing t_prev: each a clear error (float labels used to run as their integer parts)."""
    from course_lib.samplers import ddim_invert, ddim_step

    s = NoiseSchedule.cosine(num_steps=10)
    m = _tiny_model(num_classes=3)
    run = dict(steps=2, sampler="ddim", progress=False)
    with pytest.raises(ValueError, match="labels must be integer class indices, got torch.float32"):
        sample(m, s, 2, labels=torch.tensor([1.6, 2.0]), **run)
    assert sample(m, s, 2, labels=[1, 2], **run).shape == (2, 1, 32, 32)  # a list of ints is fine
    with pytest.raises(TypeError, match=r"seed must be an int or None, got '0' \(str\)"):
        sample(m, s, 2, seed="0", **run)
    with pytest.raises(TypeError, match="schedule must be the NoiseSchedule the model was trained with"):
        sample(m, 10, 2, **run)
    with pytest.raises(ValueError, match="batch_size must be an int ≥ 1"):
        sample(m, s, 2, batch_size=-1, **run)
    with pytest.raises(ValueError, match="guidance_scale must be ≥ 0 .* got -3.0; to steer away"):
        sample(m, s, 2, labels=[1, 2], guidance_scale=-3.0, **run)
    with pytest.raises(ValueError, match="trajectory_every must be an int ≥ 1"):
        sample(m, s, 2, trajectory_every=0.5, **run)
    with pytest.raises(ValueError, match="batch_size must be an int ≥ 1"):
        ddim_invert(m, s, torch.zeros(2, 1, 32, 32), 2, batch_size=0)
    x = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match="t_prev must be an int .*the step to land on.*got None"):
        ddim_step(s, x, torch.randn_like(x), 5, None)
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator or None, got int: .*manual_seed\(0\)"):
        ddpm_step(s, x, torch.randn_like(x), 5, generator=0)

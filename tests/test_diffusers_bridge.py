"""The bridge to diffusers: configs, schedulers on the course's schedules, and sampling the course's U-Net."""

import math

import pytest
import torch

from course_lib.diffusers_bridge import SCHEDULER_NAMES, make_scheduler, sample_with_diffusers, to_diffusers_config
from course_lib.nn.unet import UNet, UNetConfig
from course_lib.samplers import DPM_LAMBDA_MIN, sample, sampler_timesteps, timesteps
from course_lib.schedules import NoiseSchedule

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SCHEDULES = {
    "linear": NoiseSchedule.linear,
    "cosine": NoiseSchedule.cosine,
    "scaled_linear": NoiseSchedule.scaled_linear,
    "linear_T100": lambda: NoiseSchedule.linear(num_steps=100, beta_start=1e-3, beta_end=0.05),
    "cosine_s0.02": lambda: NoiseSchedule.cosine(s=0.02),
}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = UNet(UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4,
                        num_classes=3))
    for p in m.parameters():  # the zero-initialised output would make every sample pure noise
        p.data.add_(0.01 * torch.randn_like(p))
    return m


def test_config_names_the_matching_diffusers_schedule():
    c = to_diffusers_config(NoiseSchedule.linear())
    assert c == {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
                 "clip_sample": False, "prediction_type": "epsilon", "set_alpha_to_one": True, "steps_offset": 0}
    assert to_diffusers_config(NoiseSchedule.cosine())["beta_schedule"] == "squaredcos_cap_v2"
    sl = to_diffusers_config(NoiseSchedule.scaled_linear())
    assert (sl["beta_schedule"], sl["beta_start"], sl["beta_end"]) == ("scaled_linear", 0.00085, 0.012)
    odd = to_diffusers_config(NoiseSchedule.cosine(s=0.02))  # diffusers fixes s = 0.008: pass the betas
    assert len(odd["trained_betas"]) == 1000
    with pytest.raises(ValueError, match="schedule must be a NoiseSchedule"):
        to_diffusers_config("linear")


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
@pytest.mark.parametrize("sched", list(SCHEDULES))
def test_bridge_schedulers_reproduce_the_course_alphas_cumprod(name, sched):
    ours = SCHEDULES[sched]()
    ref = make_scheduler(name, ours)
    assert ref.config.num_train_timesteps == ours.num_steps
    assert ref.config.prediction_type == "epsilon"
    # diffusers keeps float32 tables: equal to float32 rounding, relative to abar itself
    assert torch.allclose(ref.alphas_cumprod.double(), ours.alphas_cumprod, rtol=2e-5, atol=0)


def test_make_scheduler_kinds_options_and_errors():
    s = NoiseSchedule.cosine()
    assert isinstance(make_scheduler("ddim", s), diffusers.DDIMScheduler)
    dpm = make_scheduler("dpm++2m", s, spacing="trailing")
    assert isinstance(dpm, diffusers.DPMSolverMultistepScheduler)
    assert (dpm.config.algorithm_type, dpm.config.solver_order, dpm.config.timestep_spacing) == (
        "dpmsolver++", 2, "trailing")
    assert (dpm.config.lower_order_final, dpm.config.final_sigmas_type) == (True, "zero")
    # no λ clip by default, as the course sampler; a caller may turn it on
    assert dpm.config.lambda_min_clipped == -math.inf
    on = make_scheduler("dpm++2m", s, lambda_min_clipped=DPM_LAMBDA_MIN)
    assert on.config.lambda_min_clipped == DPM_LAMBDA_MIN
    assert isinstance(make_scheduler("euler", s), diffusers.EulerDiscreteScheduler)
    assert make_scheduler("ddpm", s).config.variance_type == "fixed_small"
    assert make_scheduler("ddim", s, clip_sample=True).config.clip_sample is True
    ddim = make_scheduler("ddim", s, spacing="linspace")
    ddim.set_timesteps(25)
    assert torch.equal(ddim.timesteps, timesteps(s, 25, "linspace"))
    with pytest.raises(ValueError, match="unknown scheduler 'heun'; expected one of 'ddim', 'dpm\\+\\+2m', 'euler'"):
        make_scheduler("heun", s)
    with pytest.raises(ValueError, match="DDIMScheduler has no option solver_order"):
        make_scheduler("ddim", s, solver_order=3)
    with pytest.raises(ValueError, match="unknown spacing 'even'"):
        make_scheduler("ddim", s, spacing="even")


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_diffusers_ddim_sampling_equals_the_course_ddim_sampler(tiny, eta):
    s = NoiseSchedule.linear()
    labels = torch.tensor([0, 2])
    ours = sample(tiny, s, 2, labels=labels, seed=11, sampler="ddim", steps=8, eta=eta, clip_x0=False, progress=False)
    theirs = sample_with_diffusers(tiny, s, "ddim", 2, 8, seed=11, labels=labels, eta=eta)
    assert theirs.shape == (2, 1, 32, 32)
    assert (ours - theirs).abs().max() < 1e-4
    assert (ours - sample_with_diffusers(tiny, s, "ddim", 2, 8, seed=12, labels=labels, eta=eta)).abs().max() > 1e-2


def test_diffusers_ddpm_and_dpm_sampling_equal_the_course_samplers(tiny):
    s = NoiseSchedule.cosine()
    ours = sample(tiny, s, 2, seed=5, sampler="ddpm", steps=6, clip_x0=False, progress=False)
    assert (ours - sample_with_diffusers(tiny, s, "ddpm", 2, 6, seed=5)).abs().max() < 1e-4
    ours = sample(tiny, s, 2, seed=5, sampler="dpm++2m", steps=6, spacing="trailing", clip_x0=False, progress=False)
    assert (ours - sample_with_diffusers(tiny, s, "dpm++2m", 2, 6, seed=5, spacing="trailing")).abs().max() < 1e-4
    # with the λ clip on both sides they agree too, and differ from the unclipped samples
    kw = dict(seed=5, steps=6, spacing="trailing", clip_x0=False, progress=False)
    clipped = sample(tiny, s, 2, sampler="dpm++2m", lambda_min=DPM_LAMBDA_MIN, **kw)
    theirs = sample_with_diffusers(tiny, s, "dpm++2m", 2, 6, seed=5, spacing="trailing",
                                   lambda_min_clipped=DPM_LAMBDA_MIN)
    assert (clipped - theirs).abs().max() < 1e-4
    assert (clipped - ours).abs().max() > 1e-3
    # started lower ("leading": the first step at t = 833 of 1000 for 6 steps) they still agree
    kw["spacing"] = "leading"
    leading = sample(tiny, s, 2, sampler="dpm++2m", **kw)
    assert (leading - sample_with_diffusers(tiny, s, "dpm++2m", 2, 6, seed=5, spacing="leading")).abs().max() < 1e-4
    assert (leading - ours).abs().max() > 1e-3


class GaussianEps(torch.nn.Module):
    """The exact ε̂ for data N(μ, diag(v)): samples that stay inside [-1, 1], unlike a random network's,
    so two samplers that differ show it after the final clamp."""

    def __init__(self, schedule):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.register_buffer("abar", schedule.alphas_cumprod.float())
        self.register_buffer("mu", 0.4 * (torch.rand(1, 1, 8, 8, generator=g) - 0.5))
        self.register_buffer("v", torch.logspace(-4, -1, 64).view(1, 1, 8, 8))
        self.unused = torch.nn.Parameter(torch.zeros(()))  # sample() reads the device from a parameter

    def forward(self, x, t):
        a = self.abar[t.long()].view(-1, 1, 1, 1)
        return (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.v + 1 - a)


def test_the_logsnr_grid_reaches_diffusers_as_a_list_of_timesteps(tiny):
    """diffusers has no "logsnr" spacing: the bridge hands DPMSolverMultistepScheduler (and DDPMScheduler) the
    course's grid through set_timesteps(timesteps=...), and the two samplers agree; DDIMScheduler takes no list."""
    s = NoiseSchedule.cosine()
    model = GaussianEps(s)
    kw = dict(seed=5, steps=6, shape=(1, 8, 8))
    for sampler in ("dpm++2m", "ddpm"):
        ours = sample(model, s, 4, sampler=sampler, spacing="logsnr", clip_x0=False, progress=False, **kw)
        assert (ours.abs() < 1).float().mean() > 0.9  # a real comparison, not of clamped ±1s
        theirs = sample_with_diffusers(model, s, sampler, 4, 6, seed=5, shape=(1, 8, 8), spacing="logsnr")
        assert (ours - theirs).abs().max() < 1e-4, sampler
        other = sample(model, s, 4, sampler=sampler, spacing="trailing", clip_x0=False, progress=False, **kw)
        assert (ours - other).abs().max() > 1e-2, sampler  # the grid is really another one
    with pytest.raises(ValueError, match="DDIMScheduler takes no list of timesteps"):
        sample_with_diffusers(tiny, s, "ddim", 2, 6, spacing="logsnr")
    with pytest.raises(ValueError, match="diffusers has no 'logsnr' timestep_spacing"):
        make_scheduler("dpm++2m", s, spacing="logsnr")
    with pytest.raises(ValueError, match="diffusers has no 'logsnr' timestep_spacing"):
        make_scheduler("dpm++2m", s, timestep_spacing="logsnr")
    with pytest.raises(ValueError, match="lambda_min_clipped would be ignored with spacing='logsnr'"):
        sample_with_diffusers(model, s, "dpm++2m", 2, 6, shape=(1, 8, 8), spacing="logsnr",
                              lambda_min_clipped=DPM_LAMBDA_MIN)


def test_each_sampler_defaults_to_its_diffusers_schedulers_spacing(tiny):
    """No spacing on either side: sample() and the diffusers scheduler visit the same grid. For DPM-Solver++
    that is "linspace", which starts at t = T − 1 (its "leading" grid starts a stride lower)."""
    s = NoiseSchedule.cosine()
    for sampler in ("ddpm", "ddim", "dpm++2m"):
        ours = sample(tiny, s, 2, seed=5, sampler=sampler, steps=6, clip_x0=False, progress=False)
        assert (ours - sample_with_diffusers(tiny, s, sampler, 2, 6, seed=5)).abs().max() < 1e-4, sampler
    assert sampler_timesteps(s, 20, None, "dpm++2m")[0] == 999
    assert sampler_timesteps(s, 20, None, "ddim") == sampler_timesteps(s, 20, "leading", "ddim")
    assert sampler_timesteps(s, 20, "leading", "dpm++2m")[0] == 940


def test_euler_runs_and_is_reproducible(tiny):
    """Euler's timesteps are fractional (999, 749.25, …): the model gets them as float32."""
    s = NoiseSchedule.linear()
    labels = torch.tensor([0, 1])
    a = sample_with_diffusers(tiny, s, "euler", 2, 5, seed=1, labels=labels)
    assert a.shape == (2, 1, 32, 32) and torch.isfinite(a).all()
    assert torch.equal(a, sample_with_diffusers(tiny, s, "euler", 2, 5, seed=1, labels=labels))


def test_sample_with_diffusers_bad_input(tiny):
    s = NoiseSchedule.linear(num_steps=10)
    with pytest.raises(ValueError, match="unknown scheduler 'dpm'"):
        sample_with_diffusers(tiny, s, "dpm", 1, 5)
    with pytest.raises(ValueError, match=r"steps must be an int in 1\.\.10"):
        sample_with_diffusers(tiny, s, "ddim", 1, 11)
    with pytest.raises(ValueError, match="eta applies to the 'ddim' scheduler only"):
        sample_with_diffusers(tiny, s, "euler", 1, 5, eta=0.5)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        sample_with_diffusers(tiny, s, "ddim", 2, 5, labels=torch.tensor([0]))


def test_euler_on_epsilon_is_unclamped_ddim(tiny):
    """An Euler step in σ = √((1−ᾱ)/ᾱ) on x/√ᾱ with ε-prediction is DDIM's η = 0 step: on the same (trailing,
    integer) timesteps diffusers' Euler gives the course's DDIM without the x̂₀ clamp, and not the clamped one."""
    s = NoiseSchedule.linear()
    labels = torch.tensor([0, 2])
    euler = sample_with_diffusers(tiny, s, "euler", 2, 5, seed=3, labels=labels, spacing="trailing")
    plain = sample(tiny, s, 2, labels=labels, sampler="ddim", steps=5, spacing="trailing", clip_x0=False, seed=3,
                   progress=False)
    clamped = sample(tiny, s, 2, labels=labels, sampler="ddim", steps=5, spacing="trailing", seed=3, progress=False)
    # float32 rounding at σ_max ≈ 157 (and diffusers starting from σ_max·z, not √(σ_max² + 1)·z) stays below 1e-3
    assert (euler - plain).abs().max() < 2e-3
    assert (euler - clamped).abs().max() > 5e-2

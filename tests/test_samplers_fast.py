"""Lesson 08: timestep spacing, DDIM, DDIM inversion, DPM-Solver++(2M) and fewer-step DDPM.

Step equations are checked against diffusers' schedulers on the same inputs; whole
trajectories against diffusers' multistep solver on a fixed analytic ε function.
"""

import math

import pytest
import torch

from course_lib.nn.unet import UNet, UNetConfig
from course_lib.samplers import (
    DPM_LAMBDA_MIN,
    LOGSNR_SIGMA_MAX,
    ddim_invert,
    ddim_step,
    ddpm_step,
    dpm_solver_pp_2m_step,
    dpm_timesteps,
    logsnr_timesteps,
    sample,
    sample_loop,
    sampler_timesteps,
    timesteps,
)
from course_lib.schedules import NoiseSchedule

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside diffusers

SCHEDULES = [("linear", "linear"), ("cosine", "squaredcos_cap_v2")]
SPACINGS = ["leading", "trailing", "linspace"]


def _inputs(seed, dtype=torch.float64, shape=(4, 1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=g, dtype=dtype) for _ in range(3))


def _share_tables(ref, ours):
    """Give a diffusers scheduler the course's float64 tables: compares the step equation alone."""
    ref.betas, ref.alphas, ref.alphas_cumprod = ours.betas, ours.alphas, ours.alphas_cumprod
    return ref


class GaussianDataEps:
    r"""The exact ε-predictor when the data are N(μ, s²I): a smooth analytic stand-in for a trained model.

    E[ε | x_t] = sqrt(1 − abar) (x_t − sqrt(abar) μ) / (abar s² + 1 − abar).
    """

    def __init__(self, schedule, mu, s=0.5):
        self.abar, self.mu, self.s2 = schedule.alphas_cumprod, mu, s * s

    def __call__(self, x, t):
        a = self.abar[torch.as_tensor(t).cpu()].view(-1, 1, 1, 1).to(x.dtype)
        return (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.s2 + 1 - a)

    def eps_fn(self, x, t: int):
        return self(x, torch.full((len(x),), t))


def _mu(dtype=torch.float64):
    return torch.linspace(-0.8, 0.8, 64, dtype=dtype).view(1, 1, 8, 8)


# ----------------------------------------------------------------- timesteps
def test_timesteps_equal_diffusers_for_every_step_count_and_spacing():
    for T in (1000, 999, 7):
        for spacing in SPACINGS:
            ref = diffusers.DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=0)
            for steps in range(1, T + 1):
                ref.set_timesteps(steps)
                ours = timesteps(T, steps, spacing)
                assert ours.dtype == torch.int64 and ours.shape == (steps,)
                assert (ours[1:] < ours[:-1]).all() and ours.min() >= 0 and ours.max() <= T - 1
                if len(ref.timesteps) == steps:
                    assert torch.equal(ours, ref.timesteps), (T, spacing, steps)
                else:  # diffusers' np.arange overshoot: one extra, invalid t = -1 at the end
                    assert spacing == "trailing" and len(ref.timesteps) == steps + 1 and ref.timesteps[-1] == -1
                    assert torch.equal(ours, ref.timesteps[:-1]), (T, spacing, steps)


def test_timesteps_known_values_and_schedule_argument():
    s = NoiseSchedule.linear()
    assert timesteps(s, 10).tolist() == list(range(900, -1, -100))
    assert timesteps(s, 10, "trailing").tolist() == list(range(999, 0, -100))
    assert timesteps(s, 4, "linspace").tolist() == [999, 666, 333, 0]
    assert torch.equal(timesteps(s, 1000), torch.arange(999, -1, -1))


# ----------------------------------------------------------------- DDIM step
@pytest.mark.parametrize("name,ds_name", SCHEDULES, ids=[s[0] for s in SCHEDULES])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_ddim_step_equals_diffusers(name, ds_name, eta, where):
    ours = NoiseSchedule.from_name(name)
    ref = diffusers.DDIMScheduler(beta_schedule=ds_name, clip_sample=False, set_alpha_to_one=True, steps_offset=0)
    _share_tables(ref, ours)
    ref.set_timesteps(50)
    i = {"first": 0, "middle": 23, "last": 49}[where]
    t = int(ref.timesteps[i])
    t_prev = int(ref.timesteps[i + 1]) if i < 49 else -1
    x, eps, z = _inputs(i)
    expected = ref.step(eps, t, x, eta=eta, variance_noise=z).prev_sample
    got = ddim_step(ours, x, eps, t, t_prev, eta=eta, noise=z)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-10)
    # the same step with per-sample (N,) timestep tensors
    got_t = ddim_step(ours, x, eps, torch.full((4,), t), torch.full((4,), t_prev), eta=eta, noise=z)
    assert torch.allclose(got_t, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,ds_name", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_ddim_step_equals_diffusers_float32_out_of_the_box(name, ds_name):
    ours = NoiseSchedule.from_name(name)
    ref = diffusers.DDIMScheduler(beta_schedule=ds_name, clip_sample=False)
    ref.set_timesteps(20)
    for i in (0, 10, 19):
        t = int(ref.timesteps[i])
        x, eps, z = _inputs(i, torch.float32)
        expected = ref.step(eps, t, x, eta=1.0, variance_noise=z).prev_sample
        got = ddim_step(ours, x, eps, t, t - 50, eta=1.0, noise=z)
        assert ((got - expected).abs() / (expected.abs() + 1)).max() < 1e-4


def test_ddim_step_with_clipping_equals_diffusers_clip_sample():
    ours = NoiseSchedule.cosine()
    ref = _share_tables(diffusers.DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=True), ours)
    ref.set_timesteps(10)
    x, eps, z = _inputs(3)
    x = 3 * x
    expected = ref.step(eps, 500, x, eta=0.5, variance_noise=z, use_clipped_model_output=True).prev_sample
    assert torch.allclose(ddim_step(ours, x, eps, 500, 400, eta=0.5, noise=z, clip_x0=True), expected, atol=1e-10)
    assert not torch.allclose(ddim_step(ours, x, eps, 500, 400, eta=0.5, noise=z), expected, atol=1e-3)
    # the known-wrong variant: a clamped x̂_0 beside the raw ε̂ (diffusers' default step)
    raw = ref.step(eps, 500, x, eta=0.5, variance_noise=z).prev_sample
    assert not torch.allclose(ddim_step(ours, x, eps, 500, 400, eta=0.5, noise=z, clip_x0=True), raw, atol=1e-3)


def test_ddim_eta_one_between_neighbours_is_the_ddpm_step():
    s = NoiseSchedule.linear()
    x, eps, z = _inputs(5)
    for t in (999, 400, 1):
        assert torch.allclose(ddim_step(s, x, eps, t, t - 1, eta=1.0, noise=z), ddpm_step(s, x, eps, t, noise=z))


def test_ddim_per_sample_timesteps_match_scalar_steps():
    s = NoiseSchedule.cosine()
    x, eps, z = _inputs(6, torch.float32)
    t, t_prev = torch.tensor([0, 5, 500, 999]), torch.tensor([-1, 2, 480, 899])
    batched = ddim_step(s, x, eps, t, t_prev, eta=0.7, noise=z)
    for i in range(4):
        one = ddim_step(s, x[i : i + 1], eps[i : i + 1], int(t[i]), int(t_prev[i]), eta=0.7, noise=z[i : i + 1])
        assert torch.allclose(batched[i : i + 1], one, atol=1e-6)


# ----------------------------------------------------------------- DDPM with skipped steps
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("variance", ["small", "large"])
def test_ddpm_step_between_non_adjacent_steps_equals_diffusers_set_timesteps(spacing, variance):
    ours = NoiseSchedule.linear()
    kind = {"small": "fixed_small", "large": "fixed_large"}[variance]
    ref = _share_tables(diffusers.DDPMScheduler(clip_sample=False, timestep_spacing=spacing, variance_type=kind), ours)
    ref.set_timesteps(50)
    ts = ref.timesteps.tolist()
    for i in (0, 17, 48, 49):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        x, eps, z = _inputs(i)
        expected = ref.step(eps, ts[i], x, generator=torch.Generator().manual_seed(9)).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
        got = ddpm_step(ours, x, eps, ts[i], noise=z, t_prev=t_prev, variance=variance)
        assert torch.allclose(got, expected, rtol=1e-10, atol=1e-10), (spacing, i)


# ----------------------------------------------------------------- DPM-Solver++(2M)
def _analytic_eps(schedule, dtype=torch.float32):
    """A fixed smooth ε(x, t): the Gaussian-data predictor plus a nonlinear term (so it is no ODE in closed form)."""
    abar, mu = schedule.alphas_cumprod, torch.linspace(-0.8, 0.8, 16, dtype=dtype).view(1, 1, 4, 4)

    def eps_fn(x, t: int):
        a = float(abar[t])
        gaussian = (x - math.sqrt(a) * mu) / (0.25 * a + 1 - a)
        return math.sqrt(1 - a) * (gaussian + 0.2 * math.sqrt(a) * torch.tanh(3 * x))

    return eps_fn


def _diffusers_trajectory(ref, eps_fn, x):
    for t in ref.timesteps:
        x = ref.step(eps_fn(x, int(t)), t, x).prev_sample
    return x


@pytest.mark.parametrize("name,ds_name", SCHEDULES, ids=[s[0] for s in SCHEDULES])
@pytest.mark.parametrize("steps", [3, 10, 14, 15, 25])
def test_dpm_solver_pp_2m_equals_diffusers_over_a_whole_trajectory(name, ds_name, steps):
    """diffusers' defaults (linspace spacing, lower_order_final, final_sigmas_type="zero") on the same outputs."""
    ours = NoiseSchedule.from_name(name)
    ref = diffusers.DPMSolverMultistepScheduler(beta_schedule=ds_name, algorithm_type="dpmsolver++", solver_order=2)
    ref.alphas_cumprod = ours.alphas_cumprod.clone()  # its sigmas (float32) are then built from float64 abar
    ref.set_timesteps(steps)
    eps_fn = _analytic_eps(ours)
    x_T = _inputs(steps, torch.float32, (2, 1, 4, 4))[0]
    expected = _diffusers_trajectory(ref, eps_fn, x_T)
    got = sample_loop(eps_fn, ours, x_T, ref.timesteps, "dpm++2m")
    assert (got - expected).abs().max() < 5e-6
    # a first-order solver (DDIM) on the same timesteps is far outside that tolerance
    assert (sample_loop(eps_fn, ours, x_T, ref.timesteps, "ddim") - expected).abs().max() > 1e-3


def test_dpm_solver_pp_2m_out_of_the_box_float32_tables():
    """With diffusers' own float32 abar the trajectories still agree to float32 rounding (linear schedule)."""
    ours = NoiseSchedule.linear()
    ref = diffusers.DPMSolverMultistepScheduler(
        algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing"
    )
    ref.set_timesteps(20)
    assert torch.equal(ref.timesteps, timesteps(ours, 20, "trailing"))
    eps_fn = _analytic_eps(ours)
    x_T = _inputs(1, torch.float32, (2, 1, 4, 4))[0]
    got = sample_loop(eps_fn, ours, x_T, timesteps(ours, 20, "trailing"), "dpm++2m")
    assert (got - _diffusers_trajectory(ref, eps_fn, x_T)).abs().max() < 1e-4


def test_dpm_solver_first_and_last_steps_are_first_order():
    s = NoiseSchedule.cosine()
    x, x0, x0_last = _inputs(2)
    # first order equals deterministic DDIM with ε̂ implied by x̂_0
    a = float(s.alphas_cumprod[700])
    eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
    assert torch.allclose(dpm_solver_pp_2m_step(s, x, x0, 700, 500), ddim_step(s, x, eps, 700, 500), atol=1e-10)
    # the final jump to abar = 1 lands on x̂_0, with or without a previous prediction
    assert torch.equal(dpm_solver_pp_2m_step(s, x, x0, 20, -1, x0_last, 40), x0)
    # the second-order correction vanishes when x̂_0 did not change
    assert torch.allclose(dpm_solver_pp_2m_step(s, x, x0, 700, 500, x0, 900), dpm_solver_pp_2m_step(s, x, x0, 700, 500))
    # per-sample tensors, some rows on their final step
    t, tp, tl = torch.tensor([700, 20, 300, 900]), torch.tensor([500, -1, 100, 0]), torch.tensor([900, 40, 500, 999])
    got = dpm_solver_pp_2m_step(s, x, x0, t, tp, x0_last, tl)
    for i in range(4):
        row = slice(i, i + 1)
        one = dpm_solver_pp_2m_step(s, x[row], x0[row], int(t[i]), int(tp[i]), x0_last[row], int(tl[i]))
        assert torch.allclose(got[i : i + 1], one, atol=1e-10)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpm_solver_is_more_accurate_than_ddim_at_20_trailing_steps(name):
    """Against the ODE solution (DDIM with all T steps) on the Gaussian-data model.

    With "leading"/"linspace" spacing this does not hold at 10–20 steps: the step into t ≈ 0 is
    long in λ, and the multistep extrapolation through the much shorter step before it overshoots
    (diffusers' solver gives the same numbers, see the trajectory test above).
    """
    s = NoiseSchedule.from_name(name)
    m = GaussianDataEps(s, _mu())
    x_T = _inputs(0, shape=(2, 1, 8, 8))[0]
    exact = sample_loop(m.eps_fn, s, x_T, timesteps(s, 1000), "ddim")
    ts = timesteps(s, 20, "trailing")
    err = {k: float((sample_loop(m.eps_fn, s, x_T, ts, k) - exact).abs().max()) for k in ("ddim", "dpm++2m")}
    assert err["dpm++2m"] < err["ddim"] / 3, err



@pytest.mark.parametrize("T", [1000, 250, 7])
def test_dpm_timesteps_equal_diffusers_multistep_solver_for_every_spacing(T):
    """DPM-Solver++'s grid is not DDIM's: "leading" and "linspace" lay steps + 1 points and drop t = 0."""
    s = NoiseSchedule.cosine(T)
    for spacing in SPACINGS:
        for clip in (None, DPM_LAMBDA_MIN):
            ref = diffusers.DPMSolverMultistepScheduler(
                num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", algorithm_type="dpmsolver++",
                timestep_spacing=spacing, steps_offset=0, lambda_min_clipped=-math.inf if clip is None else clip,
            )
            top = T if clip is None else T - int(torch.searchsorted(ref.lambda_t.flip(0), clip))
            most = top if spacing == "trailing" else top - 1
            for steps in sorted({1, 2, 3, 5, 10, 20, 25, 50, most // 2, most - 1, most} & set(range(1, most + 1))):
                ref.set_timesteps(steps)
                if spacing == "trailing" and clip is not None and ref.timesteps[-1] < 0:
                    continue  # more trailing steps than fit below the clip: the course refuses (test below)
                ours = dpm_timesteps(s, steps, spacing, clip)
                assert ours.tolist() == ref.timesteps.tolist(), (T, spacing, clip, steps)
                assert sampler_timesteps(s, steps, spacing, "dpm++2m", clip) == ours.tolist()
    # DDIM's leading grid ends at t = 0; DPM-Solver++'s stops one stride above it
    assert dpm_timesteps(1000, 20, "leading").tolist()[-3:] == [141, 94, 47]
    assert timesteps(1000, 20, "leading").tolist()[-2:] == [50, 0]
    assert sampler_timesteps(s, None, "leading", "dpm++2m") == dpm_timesteps(s, T - 1, "leading").tolist()
    with pytest.raises(ValueError, match="visits at most T − 1"):
        dpm_timesteps(s, T, "linspace")
    with pytest.raises(ValueError, match="unknown spacing 'even'"):
        dpm_timesteps(s, 3, "even")


# ----------------------------------------------------------------- the λ clip of DPM-Solver++
@pytest.mark.parametrize("T", [1000, 250])
def test_lambda_clip_equals_diffusers_lambda_min_clipped(T):
    """Trailing timesteps below the λ floor are those of DPMSolverMultistepScheduler(lambda_min_clipped=−5.1)."""
    s = NoiseSchedule.cosine(T)
    ref = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", algorithm_type="dpmsolver++",
        timestep_spacing="trailing", lambda_min_clipped=DPM_LAMBDA_MIN,
    )
    for steps in (1, 2, 5, 10, 20, 25, 50, 100, 150):
        ref.set_timesteps(steps)
        assert sampler_timesteps(s, steps, "trailing", "dpm++2m", DPM_LAMBDA_MIN) == ref.timesteps.tolist()
        assert timesteps(s, steps, "trailing", lambda_min=DPM_LAMBDA_MIN).tolist() == ref.timesteps.tolist()
    # T = 1000: λ < −5.1 at t = 996 … 999 only (σ/α from 214 up to 2·10⁴)
    if T == 1000:
        assert timesteps(s, 20, "trailing", lambda_min=DPM_LAMBDA_MIN)[:2].tolist() == [995, 945]


def test_lambda_clip_changes_nothing_where_lambda_stays_above_it():
    lin = NoiseSchedule.linear()  # λ_999 = −5.06
    for spacing in SPACINGS:
        assert torch.equal(timesteps(lin, 20, spacing, lambda_min=DPM_LAMBDA_MIN), timesteps(lin, 20, spacing))
    cos = NoiseSchedule.cosine()
    assert torch.equal(timesteps(cos, 20, "trailing", lambda_min=-math.inf), timesteps(cos, 20, "trailing"))
    # every sampler keeps the unclipped grid by default; the clip is there when asked for
    assert sampler_timesteps(cos, 20, "trailing", "ddim") == timesteps(cos, 20, "trailing").tolist()
    assert sampler_timesteps(cos, None, "leading", "ddpm") == timesteps(cos, 1000).tolist()
    assert sampler_timesteps(cos, 20, "trailing", "dpm++2m")[0] == 999
    assert sampler_timesteps(cos, 20, "trailing", "dpm++2m", DPM_LAMBDA_MIN)[0] == 995
    # leading and linspace: the same rule on the kept range t < T' = 996
    assert timesteps(cos, 4, "linspace", lambda_min=DPM_LAMBDA_MIN).tolist() == [995, 663, 332, 0]
    assert timesteps(cos, 4, "leading", lambda_min=DPM_LAMBDA_MIN).tolist() == [747, 498, 249, 0]


def test_lambda_clip_bad_input():
    cos = NoiseSchedule.cosine()
    with pytest.raises(ValueError, match="300 trailing steps do not fit below the λ clip"):
        timesteps(cos, 300, "trailing", lambda_min=DPM_LAMBDA_MIN)
    with pytest.raises(ValueError, match="do not fit"):
        timesteps(cos, 1000, "leading", lambda_min=DPM_LAMBDA_MIN)
    with pytest.raises(ValueError, match="needs the NoiseSchedule"):
        timesteps(1000, 20, "trailing", lambda_min=DPM_LAMBDA_MIN)
    with pytest.raises(ValueError, match="lambda_min must be a number"):
        timesteps(cos, 20, "trailing", lambda_min=float("nan"))
    with pytest.raises(ValueError, match="every timestep has"):
        timesteps(cos, 20, "trailing", lambda_min=50.0)
    with pytest.raises(ValueError, match="unknown spacing 'even'"):
        timesteps(cos, 20, "even", lambda_min=DPM_LAMBDA_MIN)


# ----------------------------------------------------------------- the "logsnr" grid
def _lam(s):
    abar = s.alphas_cumprod.double()
    return 0.5 * (abar.log() - (1 - abar).log())


@pytest.mark.parametrize("name,T", [("cosine", 1000), ("linear", 1000), ("scaled_linear", 1000), ("cosine", 250)])
def test_logsnr_grid_starts_at_pure_noise_ends_clean_and_steps_evenly_in_lambda(name, T):
    s = NoiseSchedule.from_name(name, num_steps=T)
    lam = _lam(s)
    lam_hi = max(lam[-1].item(), -math.log(LOGSNR_SIGMA_MAX))
    for steps in (2, 5, 10, 20):
        ts = timesteps(s, steps, "logsnr")
        assert ts.dtype == torch.int64 and ts.shape == (steps,)
        assert ts[0] == T - 1 and ts[-1] == 0 and (ts[1:] < ts[:-1]).all()
        # after the jump from pure noise, each step covers the same stretch of λ, to within the rounding to
        # whole timesteps; the uniform-in-t grids are far from that (the known-wrong variant must fail)
        want = (lam[0].item() - lam_hi) / (steps - 1)
        gaps = (lam[ts[2:]] - lam[ts[1:-1]]) / want
        assert ((gaps > 0.6) & (gaps < 1.4)).all(), (steps, gaps)
        if steps >= 5:
            trailing = timesteps(s, steps, "trailing")
            wrong = (lam[trailing[2:]] - lam[trailing[1:-1]]) / want
            assert not ((wrong > 0.6) & (wrong < 1.4)).all()
        # the same grid for every sampler: DPM-Solver++ too ends at t = 0, then jumps to the clean image
        assert dpm_timesteps(s, steps, "logsnr").tolist() == ts.tolist()
        assert sampler_timesteps(s, steps, "logsnr", "dpm++2m") == sampler_timesteps(s, steps, "logsnr", "ddim")
    assert timesteps(s, 1, "logsnr").tolist() == [T - 1]
    if (name, T) == ("cosine", 1000):  # σ/α = 80 falls at t ≈ 992: the first jump, then even steps in λ
        assert timesteps(s, 10, "logsnr").tolist() == [999, 976, 934, 818, 556, 249, 86, 25, 5, 0]


def test_logsnr_grid_lifts_repeats_and_says_how_many_steps_fit():
    s = NoiseSchedule.cosine(250)
    with pytest.raises(ValueError, match=r"at most (\d+) distinct timesteps") as info:
        timesteps(s, 250, "logsnr")
    most = int(info.value.args[0].split("at most ")[1].split()[0])
    ts = timesteps(s, most, "logsnr")  # the largest count the message names does fit
    assert len(set(ts.tolist())) == most and (ts[1:] < ts[:-1]).all()
    with pytest.raises(ValueError, match="at most"):
        timesteps(s, most + 1, "logsnr")
    with pytest.raises(ValueError, match="needs the NoiseSchedule"):
        timesteps(1000, 20, "logsnr")
    with pytest.raises(ValueError, match="lambda_min applies to"):
        timesteps(NoiseSchedule.cosine(), 20, "logsnr", lambda_min=DPM_LAMBDA_MIN)
    with pytest.raises(ValueError, match="sigma_max must be a positive number"):
        logsnr_timesteps(s, 10, sigma_max=0)
    with pytest.raises(ValueError, match=r"sigma_max must be above σ/α at t = 0 \(0\.0"):
        logsnr_timesteps(NoiseSchedule.cosine(), 6, sigma_max=1e-3)  # every point would pile up at t = 0
    with pytest.raises(ValueError, match="steps=None asks for all T timesteps"):
        sampler_timesteps(NoiseSchedule.cosine(), None, "logsnr", "dpm++2m")
    with pytest.raises(ValueError, match=r"steps must be an int in 1\.\.250"):
        logsnr_timesteps(s, 0)
    # a higher σ_max starts the even steps higher: the second timestep moves up
    assert logsnr_timesteps(NoiseSchedule.cosine(), 10, sigma_max=1000.0)[1] > timesteps(
        NoiseSchedule.cosine(), 10, "logsnr")[1]


@pytest.mark.parametrize("name", ["cosine", "linear", "scaled_linear"])
def test_dpm_solver_on_the_logsnr_grid_lands_closest_to_the_exact_ode_solution(name):
    """Data N(μ, diag(v)) with per-pixel variances from 10⁻⁵ to 1: the exact ε̂ is known, and so is where the
    probability-flow ODE takes each x_T, x_0 = μ + (x_T − sqrt(abar_T) μ) · sqrt(v / (abar_T v + 1 − abar_T))
    (each pixel keeps its quantile). With 20 model calls on the "logsnr" grid DPM-Solver++ lands several times
    closer to that x_0 than on the uniform-in-t grids, and closer than DDIM with 50."""
    s = NoiseSchedule.from_name(name)
    abar = s.alphas_cumprod.double()
    g = torch.Generator().manual_seed(0)
    v = torch.logspace(-5, 0, 256, dtype=torch.float64).view(1, 1, 16, 16)
    mu = torch.rand(1, 1, 16, 16, generator=g, dtype=torch.float64) - 0.5
    x_T = torch.randn(8, 1, 16, 16, generator=g, dtype=torch.float64)

    def eps(x, t):
        a = abar[t]
        return (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * v + 1 - a)

    exact = mu + (x_T - abar[-1].sqrt() * mu) * (v / (abar[-1] * v + 1 - abar[-1])).sqrt()

    def rms(ts, sampler):
        return float(((sample_loop(eps, s, x_T, ts, sampler) - exact) ** 2).mean().sqrt())

    logsnr = rms(timesteps(s, 20, "logsnr"), "dpm++2m")
    assert logsnr < rms(timesteps(s, 20, "trailing"), "dpm++2m") / 2.5
    assert logsnr < rms(dpm_timesteps(s, 20, "linspace"), "dpm++2m") / 2.5
    assert logsnr < rms(timesteps(s, 50, "leading"), "ddim") / 2


@pytest.mark.parametrize("clip_x0", [False, True])
def test_lambda_clip_keeps_a_small_eps_error_small(clip_x0):
    """A network whose ε̂ is off by 10⁻³ everywhere. At t = 999 of the cosine schedule σ/α = 2·10⁴, so
    the first x̂_0 is off by 20: unclamped it wrecks the sample, clamped it is a ±1 guess that still
    shows at the end. Starting below the λ clip (t = 995, σ/α ≈ 160) the same error does no harm."""
    s = NoiseSchedule.cosine()
    m = GaussianDataEps(s, 0.5 * _mu(), s=0.2)  # data inside [−1, 1], so the clamp alone changes little
    x_T = _inputs(0, shape=(4, 1, 8, 8))[0]
    exact = sample_loop(m.eps_fn, s, x_T, timesteps(s, 1000), "ddim")

    def err(eps_fn, lambda_min):
        ts = timesteps(s, 20, "trailing", lambda_min=lambda_min)
        return float((sample_loop(eps_fn, s, x_T, ts, "dpm++2m", clip_x0=clip_x0) - exact).abs().mean())

    def biased(x, t):
        return m.eps_fn(x, t) + 1e-3

    clipped, unclipped = err(biased, DPM_LAMBDA_MIN), err(biased, -math.inf)
    assert clipped < 1.1 * err(m.eps_fn, DPM_LAMBDA_MIN)  # the error of ε̂ barely shows
    assert unclipped > (10 if not clip_x0 else 1.5) * clipped, (clipped, unclipped)


def test_sample_clips_lambda_only_when_asked():
    torch.manual_seed(0)
    tiny = UNet(UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, False), groups=4))
    for p in tiny.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    s = NoiseSchedule.cosine()
    kw = dict(seed=3, steps=6, spacing="trailing", progress=False)
    # off by default (diffusers' default too): on lesson 04's DDPM the clip raised the FD (RESULTS.md)
    dpm = sample(tiny, s, 2, sampler="dpm++2m", **kw)
    assert torch.equal(dpm, sample(tiny, s, 2, sampler="dpm++2m", lambda_min=-math.inf, **kw))
    assert not torch.allclose(dpm, sample(tiny, s, 2, sampler="dpm++2m", lambda_min=DPM_LAMBDA_MIN, **kw), atol=1e-3)
    ddim = sample(tiny, s, 2, sampler="ddim", **kw)
    assert torch.equal(ddim, sample(tiny, s, 2, sampler="ddim", lambda_min=-math.inf, **kw))


# ----------------------------------------------------------------- oracle and inversion
@pytest.mark.parametrize("steps", [10, 50, 1000])
def test_deterministic_ddim_with_an_oracle_recovers_x0_at_any_step_count(steps):
    s = NoiseSchedule.cosine()
    x0, x_T, _ = _inputs(steps, shape=(2, 1, 8, 8))
    x0 = x0.clamp(-1, 1)

    def oracle(x, t):  # knows x0: ε = (x_t − sqrt(abar) x0) / sqrt(1 − abar)
        a = float(s.alphas_cumprod[t])
        return (x - math.sqrt(a) * x0) / math.sqrt(1 - a)

    for spacing in SPACINGS:
        assert torch.allclose(sample_loop(oracle, s, x_T, timesteps(s, steps, spacing), "ddim"), x0, atol=1e-8)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddim_inversion_then_sampling_returns_the_image(name):
    s = NoiseSchedule.from_name(name)
    m = GaussianDataEps(s, _mu())
    x0 = _mu() + 0.5 * _inputs(1, shape=(3, 1, 8, 8))[0]
    errors = []
    for steps in (10, 50, 200):
        x_T = ddim_invert(m, s, x0, steps)
        assert x_T.shape == x0.shape
        back = sample_loop(m.eps_fn, s, x_T, timesteps(s, steps), "ddim")
        errors.append(float((back - x0).abs().max()))
    assert errors[2] < 0.06 and errors[0] > errors[1] > errors[2], errors  # first order: error ∝ 1/steps
    assert 0.9 < float(x_T.std()) < 1.2  # the inverted image looks like unit noise
    # through sample() with a model in float32: same round trip
    x_T = ddim_invert(m, s, x0.float(), 200)
    back = sample(_AsModule(m), s, 3, shape=(1, 8, 8), x_T=x_T, sampler="ddim", steps=200, clip_x0=False,
                  progress=False)
    assert (back - x0.float().clamp(-1, 1)).abs().max() < 0.06


class _AsModule(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn, self.dummy = fn, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        return self.fn(x, t).to(x.dtype)


# ----------------------------------------------------------------- sample()
def _tiny_model(**kw):
    torch.manual_seed(0)
    m = UNet(UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4, **kw))
    for p in m.parameters():  # the zero-initialised output would make every sample pure noise
        p.data.add_(0.01 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def tiny():
    return _tiny_model()


def test_sample_ddim_runs_and_eta0_is_bit_reproducible(tiny):
    s = NoiseSchedule.linear()
    a = sample(tiny, s, 2, seed=3, sampler="ddim", steps=6, progress=False)
    b = sample(tiny, s, 2, seed=3, sampler="ddim", steps=6, progress=False)
    c = sample(tiny, s, 2, seed=4, sampler="ddim", steps=6, progress=False)
    assert a.shape == (2, 1, 32, 32) and torch.equal(a, b) and not torch.allclose(a, c)
    d = sample(tiny, s, 2, seed=3, sampler="ddim", steps=6, eta=1.0, progress=False)
    e = sample(tiny, s, 2, seed=3, sampler="ddim", steps=6, eta=1.0, progress=False)
    assert torch.equal(d, e) and not torch.allclose(a, d)


def test_sample_dpm_and_fewer_step_ddpm_run(tiny):
    s = NoiseSchedule.cosine()
    x, frames = sample(tiny, s, 2, seed=1, sampler="dpm++2m", steps=6, spacing="trailing", trajectory_every=3,
                       progress=False)
    assert x.shape == (2, 1, 32, 32) and len(frames) == 3 and torch.equal(frames[-1], x)
    y = sample(tiny, s, 2, seed=1, sampler="ddpm", steps=5, progress=False)
    assert torch.isfinite(y).all()
    assert torch.equal(y, sample(tiny, s, 2, seed=1, sampler="ddpm", steps=5, progress=False))


def test_default_sampling_is_the_old_ancestral_ddpm_loop(tiny):
    """sample() without the new arguments = ddpm_step with (N,) timestep tensors for t = T−1 … 0, clip_x0 on."""
    s = NoiseSchedule.linear(num_steps=8)
    got = sample(tiny, s, 2, None, None, 5, None, False)
    g = torch.Generator().manual_seed(5)
    x = torch.randn((2, 1, 32, 32), generator=g)
    with torch.no_grad():
        for t in range(7, -1, -1):
            tt = torch.full((2,), t)
            x = ddpm_step(s, x, tiny(x, tt), tt, generator=g, clip_x0=True)
    assert torch.allclose(got, x.clamp(-1, 1), atol=1e-5)
    assert torch.equal(got, sample(tiny, s, 2, seed=5, progress=False, sampler="ddpm", steps=8))


# ----------------------------------------------------------------- bad input
def test_bad_input_raises_clear_value_errors(tiny):
    s = NoiseSchedule.linear(num_steps=10)
    x = torch.randn(2, 1, 4, 4)
    for steps in (0, 11, 2.5):
        with pytest.raises(ValueError, match=r"steps must be an int in 1\.\.10"):
            sample(tiny, s, 1, sampler="ddim", steps=steps, progress=False)
    with pytest.raises(ValueError, match="unknown sampler 'euler'; expected one of 'ddpm', 'ddim', 'dpm\\+\\+2m'"):
        sample(tiny, s, 1, sampler="euler", progress=False)
    with pytest.raises(ValueError, match="eta must be a finite number ≥ 0"):
        sample(tiny, s, 1, sampler="ddim", eta=-0.5, progress=False)
    with pytest.raises(ValueError, match="eta applies to sampler='ddim' only"):
        sample(tiny, s, 1, sampler="dpm++2m", eta=1.0, progress=False)
    with pytest.raises(ValueError, match="unknown spacing 'uniform'; expected one of 'leading', 'trailing', 'lin"):
        timesteps(s, 5, "uniform")
    with pytest.raises(ValueError, match=r"x_T must have shape \(1, 1, 32, 32\)"):
        sample(tiny, s, 1, x_T=torch.randn(1, 1, 8, 8), progress=False)
    with pytest.raises(ValueError, match="eta must be"):
        ddim_step(s, x, torch.randn_like(x), 5, 3, eta=-1)
    with pytest.raises(ValueError, match="t_prev must be smaller than t when eta > 0"):
        ddim_step(s, x, torch.randn_like(x), 3, 5, eta=0.5)
    with pytest.raises(ValueError, match=r"t_prev must be a negative value \(the clean image\) or in 0\.\.9"):
        ddim_step(s, x, torch.randn_like(x), 3, 10)
    with pytest.raises(ValueError, match=r"t must be in 0\.\.9, got 10"):
        ddim_step(s, x, torch.randn_like(x), 10, 3)
    with pytest.raises(ValueError, match="eps must have x_t's shape"):
        ddim_step(s, x, torch.randn(2, 1, 4, 3), 5, 3)
    with pytest.raises(ValueError, match="t_prev must be smaller than t"):
        ddpm_step(s, x, torch.randn_like(x), 3, t_prev=3)
    with pytest.raises(ValueError, match="pass both x0_hat_last and t_last"):
        dpm_solver_pp_2m_step(s, x, x, 5, 3, x0_hat_last=x)
    with pytest.raises(ValueError, match="strictly descending"):
        sample_loop(lambda x, t: x, s, x, [3, 5], "ddim")


def test_deterministic_ddim_runs_forwards_for_inversion():
    s = NoiseSchedule.linear()
    x, eps, _ = _inputs(8)
    up = ddim_step(s, x, eps, 100, 300)  # eta = 0: t_prev > t is allowed
    assert torch.allclose(ddim_step(s, up, eps, 300, 100), x, atol=1e-10)  # same ε̂: exactly reversible


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sampling_loop_never_synchronises_with_the_gpu(tiny):
    s = NoiseSchedule.cosine()
    m = _tiny_model().cuda()
    sample(m, s, 2, sampler="ddim", steps=2, progress=False)  # warm-up (cuDNN, allocator)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for sampler, eta in (("ddim", 0.0), ("ddim", 1.0), ("dpm++2m", 0.0), ("ddpm", 0.0)):
            x = torch.randn(2, 1, 32, 32, device="cuda")
            gen = torch.Generator(device="cuda").manual_seed(0)
            eps_fn = lambda x, t: m(x, torch.full((len(x),), t, device="cuda"))
            sample_loop(eps_fn, s, x, timesteps(s, 5), sampler, eta=eta, generator=gen, clip_x0=True)
    finally:
        torch.cuda.set_sync_debug_mode(0)

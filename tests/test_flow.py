"""Flow matching / rectified flow (lesson 10): closed-form checks of the path, the target, the
Euler sampler with exact velocities, and training through the shared loop."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib.flow import (
    TIME_SCALE,
    euler_sample,
    flow_interpolate,
    flow_matching_loss,
    flow_sample,
    flow_target,
    flow_times,
    sample_times,
)
from course_lib.nn.unet import UNet, UNetConfig
from course_lib.train import TrainConfig, train_diffusion


def test_path_runs_from_the_data_to_the_noise_in_a_straight_line():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    torch.testing.assert_close(flow_interpolate(x0, eps, torch.zeros(3)), x0)
    torch.testing.assert_close(flow_interpolate(x0, eps, torch.ones(3)), eps)
    # the derivative along t is the target, at every t (finite difference, exact for a line)
    t, h = torch.tensor([0.1, 0.5, 0.9]), 1e-3
    slope = (flow_interpolate(x0, eps, t + h) - flow_interpolate(x0, eps, t - h)) / (2 * h)
    torch.testing.assert_close(slope, flow_target(x0, eps), rtol=1e-3, atol=1e-3)


def test_euler_with_the_exact_velocity_of_one_image_lands_on_it_at_any_step_count():
    """For a single data point x* the optimal velocity is (x − x*)/t: straight paths, so Euler is exact."""
    g = torch.Generator().manual_seed(1)
    target = torch.randn(1, 1, 4, 4, generator=g)
    x1 = torch.randn(5, 1, 4, 4, generator=g)
    for steps in (1, 3, 17):
        out = euler_sample(lambda x, t: (x - target) / t, x1, steps)
        torch.testing.assert_close(out, target.expand_as(out), rtol=1e-5, atol=1e-5)


def test_euler_with_the_exact_velocity_carries_noise_onto_a_gaussian():
    """x_0 ~ N(μ, s²), ε ~ N(0, 1): v*(x, t) = E[ε − x_0 | x_t = x] is linear in x (Gaussian
    conditioning), and the flow it generates maps N(0, 1) onto N(μ, s²); Euler at 400 steps
    gets the mean and standard deviation to within a few thousandths."""
    mu, s = 1.5, 0.3

    def v(x, t):
        m, var = (1 - t) * mu, (1 - t) ** 2 * s**2 + t**2
        e_x0 = mu + (1 - t) * s**2 / var * (x - m)
        e_eps = t / var * (x - m)
        return e_eps - e_x0

    x1 = torch.randn(200_000, 1, 1, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = euler_sample(v, x1, 400)
    assert abs(out.mean().item() - mu) < 0.01
    assert abs(out.std().item() - s) < 0.01
    # the sign matters: integrating forwards in t (the known-wrong direction) ends far away
    wrong = euler_sample(lambda x, t: -v(x, t), x1, 400)
    assert abs(wrong.mean().item() - mu) > 0.5


def test_loss_is_zero_for_the_oracle_and_large_for_the_reversed_velocity():
    x_star = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))

    class Oracle(torch.nn.Module):
        def __init__(self, sign=1.0):
            super().__init__()
            self.sign = sign

        def forward(self, x, t):
            t = (t / TIME_SCALE).view(-1, 1, 1, 1)
            return self.sign * (x - x_star) / t

    x0 = x_star.expand(64, -1, -1, -1).clone()
    g = torch.Generator().manual_seed(4)
    assert flow_matching_loss(Oracle(), x0, generator=g, t_sampling="uniform").item() < 1e-8
    assert flow_matching_loss(Oracle(-1.0), x0, generator=g, t_sampling="uniform").item() > 1.0


def test_time_sampling_and_grids():
    g = torch.Generator().manual_seed(5)
    t = sample_times(100_000, g, kind="logit_normal")
    assert 0 < t.min() and t.max() < 1 and abs(t.median().item() - 0.5) < 0.01
    u = sample_times(100_000, g, kind="uniform")
    assert abs(u.mean().item() - 0.5) < 0.01
    assert flow_times(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    shifted = flow_times(4, shift=3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and shifted[2] == pytest.approx(0.75)  # 3·0.5/(1 + 2·0.5)


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="steps must be an int ≥ 1"):
        flow_times(0)
    with pytest.raises(ValueError, match="shift must be a positive number"):
        flow_times(4, shift=-1.0)
    with pytest.raises(ValueError, match="unknown t sampling 'beta'"):
        sample_times(3, kind="beta")
    with pytest.raises(ValueError, match="t must have shape \\(2,\\)"):
        flow_interpolate(torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="objective must be 'eps' or 'flow'"):
        train_diffusion(UNet(_tiny()), None, torch.zeros(4, 1, 32, 32), TrainConfig(steps=1, batch_size=2),
                        device="cpu", progress=False, objective="velocity")


def _tiny():
    return UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4)


def test_flow_training_runs_through_the_shared_loop_and_learns():
    """Bright squares on a dark ground (16×16): the loss falls, and samples come out in range with about
    the data's share of bright pixels."""
    g = torch.Generator().manual_seed(6)
    x = -torch.ones(256, 1, 16, 16)
    for i, (r, c) in enumerate(torch.randint(0, 12, (256, 2), generator=g).tolist()):
        x[i, :, r : r + 4, c : c + 4] = 1.0
    torch.manual_seed(0)
    cfg = UNetConfig(image_size=16, channels=(8, 16), blocks=(1, 1), attention=(False, False), groups=4)
    config = TrainConfig(steps=120, batch_size=32, lr=3e-3, warmup_steps=10, ema_decay=0.9)
    result = train_diffusion(UNet(cfg), None, x, config, device="cpu", progress=False, objective="flow")
    first, last = sum(result.losses[:15]) / 15, sum(result.losses[-15:]) / 15
    assert math.isfinite(last) and last < 0.6 * first, (first, last)
    samples = flow_sample(result.model, 16, steps=20)
    assert samples.shape == (16, 1, 16, 16) and samples.min() >= -1 and samples.max() <= 1
    bright = (samples > 0).float().mean().item()
    assert abs(bright - 16 / 256) < 0.1, bright  # 4×4 of 16×16 pixels are bright in the data


def test_steps_for_times_and_a_broadcast_eps_are_refused():
    """DDPM's int steps where flow times in [0, 1] belong would give x_t of thousands; one ε for a batch of images
    would broadcast silently; a velocity of the wrong shape would too."""
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="t must be float times in \\[0, 1\\], got torch.int64: DDPM steps"):
        flow_interpolate(x, torch.ones_like(x), torch.tensor([500, 900]))
    with pytest.raises(ValueError, match="x0 and eps must have the same shape"):
        flow_target(x, torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="velocity\\(x, t\\) must return a tensor of x's shape \\(2, 1, 4, 4\\)"):
        euler_sample(lambda x, t: torch.zeros(1, 1, 4, 4), x, 2)
    m = UNet(_tiny())
    with pytest.raises(TypeError, match="seed must be an int or None"):
        flow_sample(m, 2, steps=1, seed="1")

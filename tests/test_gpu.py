"""GPU tests: the CUDA fast path (bf16 autocast, channels_last, fused AdamW, torch.compile)
and a training step and sampling loops that never wait for the device.

Marked ``gpu`` and skipped with a reason where no CUDA device exists (CI has none); run them
on a GPU machine with ``python -m pytest -m gpu tests/test_gpu.py``. Speed is measured by
benchmarks/, not here: these tests check behaviour only.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from course_lib.device import autocast, autocast_dtype
from course_lib.nn.unet import UNet, UNetConfig
from course_lib.samplers import sample
from course_lib.schedules import NoiseSchedule
from course_lib.train import TrainConfig, train_diffusion

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)"),
]

SMALL = UNetConfig(channels=(16, 32, 64), blocks=(1, 1, 1), attention=(False, False, True), head_dim=32, groups=8)


def _images(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    # a learnable toy distribution: bright squares at random places
    x = -torch.ones(n, 1, 32, 32)
    for i, (r, c) in enumerate(torch.randint(0, 24, (n, 2), generator=g).tolist()):
        x[i, :, r : r + 8, c : c + 8] = 1.0
    return x


def test_pick_device_is_the_device_tensors_report():
    from course_lib.device import pick_device

    assert torch.zeros(1, device=pick_device()).device == pick_device()


def test_bf16_is_the_cuda_precision_policy():
    assert autocast_dtype("cuda") is torch.bfloat16
    model = UNet(SMALL).cuda()
    x, t = torch.randn(4, 1, 32, 32, device="cuda"), torch.randint(0, 100, (4,), device="cuda")
    with autocast("cuda"):
        out = model(x, t)
    assert out.dtype == torch.bfloat16
    ref = model(x, t)  # fp32
    assert ref.dtype == torch.float32
    err = (out.float() - ref).abs().max().item()
    assert err < 0.05 * ref.abs().max().item() + 1e-3, f"bf16 output strays {err} from fp32"


@pytest.mark.parametrize("switches", [
    {},  # bf16 autocast + fused AdamW, the CUDA defaults
    {"amp": False, "fused": False},  # plain fp32, foreach AdamW
    {"channels_last": True},
    {"compile": True},
])
def test_training_on_cuda_learns_with_each_speed_switch(switches):
    schedule = NoiseSchedule.cosine(100)
    config = TrainConfig(steps=120, batch_size=64, lr=2e-3, warmup_steps=10, ema_decay=0.9)
    result = train_diffusion(UNet(SMALL), schedule, _images(), config, device="cuda", progress=False, **switches)
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.7 * first, f"{switches}: loss {first:.3f} → {last:.3f}"
    assert result.steady_images_per_second > 0
    p = next(result.model.parameters())
    assert p.device.type == "cuda" and p.dtype == torch.float32 and p.is_contiguous()


def test_switches_do_not_change_the_maths():
    """fp32 eager and fp32 channels_last take the same first steps (same seed, same batches)."""
    schedule = NoiseSchedule.cosine(100)
    config = TrainConfig(steps=5, batch_size=32, lr=1e-3, warmup_steps=1)
    runs = []
    for cl in (False, True):
        torch.manual_seed(0)
        r = train_diffusion(UNet(SMALL), schedule, _images(64), config, device="cuda", progress=False,
                            amp=False, fused=False, channels_last=cl)
        runs.append(torch.tensor(r.losses))
    torch.testing.assert_close(runs[0], runs[1], rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m", "ddpm"])
def test_sampling_loop_never_waits_for_the_gpu(sampler):
    """torch's sync debug mode raises on any device→host synchronisation inside the loop."""
    model = UNet(SMALL).cuda().eval()
    schedule = NoiseSchedule.cosine(100)
    sample(model, schedule, 8, sampler=sampler, steps=3, progress=False)  # warm-up, outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x = sample(model, schedule, 8, sampler=sampler, steps=10, progress=False, seed=1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.shape == (8, 1, 32, 32) and x.device.type == "cuda"


@pytest.mark.parametrize("gamma", [None, 5.0])
def test_training_step_never_waits_for_the_gpu(gamma):
    """diffusion_loss, backward, gradient clipping and fused AdamW: no device→host synchronisation, so the host
    queues the next step while the GPU runs this one (q_sample's range check and a host→device copy of the
    schedule's table each used to make every step wait)."""
    from course_lib.train import diffusion_loss

    model = UNet(SMALL).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    schedule = NoiseSchedule.cosine(100)
    x0 = _images(32).cuda()
    gen = torch.Generator(device="cuda").manual_seed(0)

    def step():
        loss = diffusion_loss(model, schedule, x0, generator=gen, min_snr_gamma=gamma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.detach()

    step()  # warm-up: the schedule's tables reach the GPU once, here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [step() for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(torch.stack(losses)).all()


def test_guided_text_sampling_never_waits_for_the_gpu():
    """The guided loop itself: prompts are encoded (and copied to the GPU) once, before it."""
    from course_lib.samplers import _conditioned_eps_fn, sample_loop, timesteps
    from course_lib.text import PromptTable, TextEmbedding

    cfg = UNetConfig(**{**SMALL.to_dict(), "context_dim": 24})
    model = UNet(cfg).cuda().eval()
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[True, False, False], [True, True, False], [True, True, True]])
    table = PromptTable(["", "a", "b c"], TextEmbedding(torch.randn(3, 3, 24, generator=g) * mask[..., None], mask))
    schedule = NoiseSchedule.cosine(100)
    eps_fn = _conditioned_eps_fn(model, 4, None, ["a", "b c"] * 2, None, 3.0, table.to("cuda"), None,
                                 torch.device("cuda"))
    x_T = torch.randn(4, 1, 32, 32, device="cuda")
    ts = timesteps(schedule, 5)
    with torch.no_grad():
        sample_loop(eps_fn, schedule, x_T, ts, "ddim")  # warm-up
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            x = sample_loop(eps_fn, schedule, x_T, ts, "ddim")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(x).all()


def test_eta0_sampling_is_reproducible_on_cuda():
    model = UNet(SMALL).cuda().eval()
    schedule = NoiseSchedule.cosine(100)
    a = sample(model, schedule, 6, sampler="ddim", steps=8, progress=False, seed=3)
    b = sample(model, schedule, 6, sampler="ddim", steps=8, progress=False, seed=3)
    assert torch.equal(a, b)


def test_a_cpu_generator_gives_the_same_noise_on_cuda():
    """A learner's seeded CPU generator works with GPU tensors, and draws what it draws on the CPU."""
    from course_lib.samplers import ddpm_step

    schedule = NoiseSchedule.linear(100)
    x, eps = torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    on_cpu = ddpm_step(schedule, x, eps, 50, generator=torch.Generator().manual_seed(7))
    on_gpu = ddpm_step(schedule, x.cuda(), eps.cuda(), 50, generator=torch.Generator().manual_seed(7))
    assert on_gpu.is_cuda
    torch.testing.assert_close(on_gpu.cpu(), on_cpu)


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken_compile(model, **kw):
        def fails(*a, **k):
            raise RuntimeError("inductor: no kernel for this op (simulated)")
        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    config = TrainConfig(steps=3, batch_size=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = train_diffusion(UNet(SMALL), NoiseSchedule.cosine(100), _images(32), config, device="cuda",
                            progress=False, compile=True)
    assert len(r.losses) == 3
    assert any("torch.compile failed" in str(w.message) for w in caught)

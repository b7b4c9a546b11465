"""Noise schedules against diffusers, closed forms and known-wrong variants."""

import math

import pytest
import torch

from course_lib.schedules import NoiseSchedule, predict_x0, q_sample, q_step

diffusers = pytest.importorskip("diffusers")

CASES = [
    (NoiseSchedule.linear, "linear", {}),
    (NoiseSchedule.cosine, "squaredcos_cap_v2", {}),
    (NoiseSchedule.scaled_linear, "scaled_linear", {"beta_start": 0.00085, "beta_end": 0.012}),
]


@pytest.mark.parametrize("build,ds_name,kw", CASES, ids=[c[1] for c in CASES])
def test_alphas_cumprod_match_diffusers(build, ds_name, kw):
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=ds_name, **kw)
    ours = build(num_steps=1000)
    assert ours.alphas_cumprod.shape == (1000,)
    assert torch.allclose(ours.alphas_cumprod, ref.alphas_cumprod.double(), atol=1e-6, rtol=0)
    assert torch.allclose(ours.betas, ref.betas.double(), atol=1e-6, rtol=0)


def test_known_wrong_cosine_without_clip_differs_from_diffusers():
    ref = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2").betas.double()
    wrong = NoiseSchedule.cosine(max_beta=0.99999).betas  # the clip matters at the last step
    assert not torch.allclose(wrong, ref, atol=1e-6)


def test_known_wrong_linear_on_sqrt_scale_differs():
    ref = diffusers.DDPMScheduler(beta_schedule="linear").alphas_cumprod.double()
    wrong = NoiseSchedule.scaled_linear(beta_start=1e-4, beta_end=0.02).alphas_cumprod
    assert (wrong - ref).abs().max() > 1e-3


def test_curriculum_landmarks():
    lin, cos = NoiseSchedule.linear(), NoiseSchedule.cosine()
    assert abs(lin.alphas_cumprod[500].item() - 0.08) < 0.01
    assert abs(cos.alphas_cumprod[500].item() - 0.49) < 0.01
    assert 240 <= lin.zero_db_step() <= 270
    assert 480 <= cos.zero_db_step() <= 510
    # SNR is abar/(1-abar) and 0 dB exactly where abar = 1/2
    s = lin.snr[lin.zero_db_step()].item()
    assert s <= 1.0 and lin.snr[lin.zero_db_step() - 1].item() > 1.0
    assert torch.allclose(lin.snr_db(), 10 * torch.log10(lin.alphas_cumprod / (1 - lin.alphas_cumprod)))


def test_abar_is_decreasing_and_in_unit_interval():
    for s in (NoiseSchedule.linear(), NoiseSchedule.cosine(), NoiseSchedule.scaled_linear()):
        a = s.alphas_cumprod
        assert (a > 0).all() and (a < 1).all()
        assert (a[1:] < a[:-1]).all()


def test_config_round_trip():
    s = NoiseSchedule.cosine(num_steps=250)
    r = NoiseSchedule.from_config(s.config())
    assert r.num_steps == 250 and torch.equal(r.betas, s.betas)


def test_q_sample_is_the_closed_form():
    s = NoiseSchedule.linear()
    x0 = torch.randn(5, 1, 4, 4)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 10, 250, 500, 999])
    a = s.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    expected = a.sqrt() * x0 + (1 - a).sqrt() * noise
    assert torch.allclose(q_sample(s, x0, t, noise), expected, atol=1e-6)
    # and predict_x0 inverts it
    assert torch.allclose(predict_x0(s, q_sample(s, x0, t, noise), noise, t), x0, atol=1e-3)


@pytest.mark.parametrize("k", [0, 50, 300, 999])
def test_iterated_steps_match_closed_form_in_distribution(k):
    """q(x_k|x_0) by k+1 single steps vs one jump: same mean and variance (fixed seed)."""
    s = NoiseSchedule.linear()
    torch.manual_seed(0)
    n = 20_000
    x0 = torch.full((n, 1, 1, 1), 0.7)
    x = x0.clone()
    for t in range(k + 1):
        x = q_step(s, x, torch.full((n,), t))
    jump = q_sample(s, x0, torch.full((n,), k))
    abar = s.alphas_cumprod[k].item()
    mean, var = 0.7 * math.sqrt(abar), 1 - abar
    tol_mean = 4 * math.sqrt(var / n) + 1e-4
    for sample in (x, jump):
        assert abs(sample.mean().item() - mean) < tol_mean
        assert abs(sample.var().item() - var) < 4 * var * math.sqrt(2 / n) + 1e-5
    # a known-wrong iteration (forgetting to shrink x by sqrt(1-beta)) drifts visibly at large k
    if k >= 300:
        wrong = x0.clone()
        for t in range(k + 1):
            wrong = wrong + s.betas[t].sqrt().float() * torch.randn_like(wrong)
        assert abs(wrong.var().item() - var) > 0.05 or abs(wrong.mean().item() - mean) > 0.05


def test_bad_input_says_what_was_expected():
    s = NoiseSchedule.linear()
    with pytest.raises(ValueError, match="N×C×H×W"):
        q_sample(s, torch.randn(3, 32, 32), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="0..999"):
        q_sample(s, torch.randn(2, 1, 4, 4), torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="0..999"):
        q_sample(s, torch.randn(2, 1, 4, 4), torch.tensor([-1, 3]))
    with pytest.raises(ValueError, match="integers"):
        q_sample(s, torch.randn(2, 1, 4, 4), torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        q_sample(s, torch.randn(2, 1, 4, 4), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="noise must have"):
        q_step(s, torch.randn(2, 1, 4, 4), torch.tensor([0, 1]), torch.randn(2, 1, 4, 5))
    with pytest.raises(ValueError, match="0..999"):
        predict_x0(s, torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4), torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="eps must have"):
        predict_x0(s, torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unknown schedule 'sigmoid'.*linear, cosine, scaled_linear"):
        NoiseSchedule.from_name("sigmoid")
    with pytest.raises(ValueError, match="num_steps"):
        NoiseSchedule.linear(num_steps=0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        NoiseSchedule(torch.tensor([0.1, 1.5]))


def test_q_sample_check_t_false_skips_only_the_range_check():
    """Training passes check_t=False (it drew t in range itself): same x_t, and shapes are still checked."""
    s = NoiseSchedule.cosine(50)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 1, 4, 4, generator=g), torch.randn(6, 1, 4, 4, generator=g)
    t = torch.randint(0, 50, (6,), generator=g)
    assert torch.equal(q_sample(s, x0, t, noise, check_t=False), q_sample(s, x0, t, noise))
    with pytest.raises(ValueError, match="0..49"):
        q_sample(s, x0, torch.full((6,), 50), noise)
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        q_sample(s, x0, t[:4], noise, check_t=False)


def test_gather_keeps_one_copy_of_a_table_per_device_and_renews_a_changed_one():
    """A GPU batch gathers from a copy made once (a host→device copy per step would make the GPU drain its
    queue every step). The meta device stands in for a GPU here."""
    s = NoiseSchedule.cosine(20)
    meta = torch.device("meta")
    first = s._on(s.alphas_cumprod, meta)
    assert first.device == meta and first.shape == s.alphas_cumprod.shape
    assert s._on(s.alphas_cumprod, meta) is first  # kept
    assert s._on(s.snr, meta) is not first  # one copy per table
    s.alphas_cumprod.mul_(1.0)  # changed in place: its version counter moves
    assert s._on(s.alphas_cumprod, meta) is not first
    assert s._on(s.alphas_cumprod, torch.device("cpu")) is s.alphas_cumprod  # no copy on its own device
    like = torch.zeros(3, 1, 2, 2, device=meta)
    assert s.gather(s.alphas_cumprod, torch.tensor([0, 5, 19]), like).shape == (3, 1, 1, 1)


def test_tables_go_to_apples_mps_as_float32(monkeypatch):
    """MPS has no float64: moving a float64 table there raises, so training on a Mac's default device failed at
    its first q_sample. Copies follow ``device.table_dtype``: float64 on CPU and CUDA, float32 on MPS. Without an
    MPS device here, meta stands in for it (the policy is patched to treat meta as MPS)."""
    from course_lib import device as device_module
    from course_lib import schedules

    assert device_module.table_dtype("mps") is torch.float32
    assert device_module.table_dtype(torch.device("mps", 0)) is torch.float32
    assert device_module.table_dtype("cpu") is torch.float64 and device_module.table_dtype("cuda:0") is torch.float64
    s = NoiseSchedule.linear(20)
    assert s._on(s.alphas_cumprod, torch.device("meta")).dtype is torch.float64  # float64 wherever it exists
    monkeypatch.setattr(schedules, "table_dtype", lambda d: torch.float32 if torch.device(d).type == "meta" else
                        torch.float64)
    s = NoiseSchedule.linear(20)
    assert s._on(s.betas, torch.device("meta")).dtype is torch.float32
    x = torch.zeros(2, 1, 4, 4, device="meta")
    assert q_sample(s, x, torch.tensor([3, 7]), torch.zeros_like(x), check_t=False).dtype is torch.float32

    # and a whole training loss, with MPS's refusal emulated: no float64 tensor may land on "meta"
    from course_lib.nn.unet import UNet, UNetConfig
    from course_lib.train import diffusion_loss

    real_to = torch.Tensor.to

    def refusing_to(self, *args, **kwargs):
        out = real_to(self, *args, **kwargs)
        if out.device.type == "meta" and out.dtype == torch.float64:
            raise TypeError("Cannot convert a MPS Tensor to float64 dtype (emulated)")
        return out

    monkeypatch.setattr(torch.Tensor, "to", refusing_to)
    model = UNet(UNetConfig(image_size=8, channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8,
                            groups=4)).to("meta")
    x = torch.zeros(4, 1, 8, 8, device="meta")
    for gamma in (None, 5.0):  # Min-SNR gathers the SNR table too
        loss = diffusion_loss(model, NoiseSchedule.cosine(50), x, generator=torch.Generator(), min_snr_gamma=gamma)
        assert loss.device.type == "meta" and loss.shape == ()

"""The VAE: KL and reparameterisation are the maths; shapes, training, checkpoints, errors."""

import math

import pytest
import torch

from course_lib.data import load_images
from course_lib.nn.blocks import ResBlock
from course_lib.nn.vae import VAE, VAEConfig, kl_divergence, latent_scaling_factor, psnr, reparameterize
from course_lib.train import (
    VAETrainConfig,
    cached_vae,
    load_checkpoint,
    save_checkpoint,
    train_vae,
    vae_loss,
    vae_recipe,
)

TINY = VAEConfig(channels=(8, 16, 16), blocks=(1, 1, 1), latent_channels=4)


def _perturbed(cfg=TINY, seed=0):
    torch.manual_seed(seed)
    m = VAE(cfg)
    for p in m.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    return m.eval()


def test_kl_is_the_closed_form_and_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(5, 4, 3, 3, generator=g), 2 * torch.randn(5, 4, 3, 3, generator=g)
    kl = kl_divergence(mean, logvar)
    assert kl.shape == (5,)
    by_hand = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    reference = torch.distributions.kl_divergence(q, p).sum(dim=(1, 2, 3))
    torch.testing.assert_close(kl, by_hand)
    torch.testing.assert_close(kl, reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


def test_gradients_flow_through_the_reparameterised_sample():
    mean = torch.randn(3, 4, requires_grad=True)
    logvar = torch.randn(3, 4, requires_grad=True)
    g = torch.Generator().manual_seed(1)
    z = reparameterize(mean, logvar, g)
    z.sum().backward()
    eps = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(z.detach(), mean.detach() + (0.5 * logvar.detach()).exp() * eps)
    torch.testing.assert_close(mean.grad, torch.ones(3, 4))  # ∂z/∂μ = 1
    torch.testing.assert_close(logvar.grad, 0.5 * (0.5 * logvar.detach()).exp() * eps)  # ∂z/∂logvar = ½σε


@pytest.mark.parametrize("cfg, latent", [(VAEConfig.factor4(channels=(8, 16, 16)), (4, 8, 8)),
                                         (VAEConfig.factor2(channels=(8, 16)), (4, 16, 16))])
def test_decode_encode_keeps_the_shape(cfg, latent):
    assert cfg.latent_shape == latent and cfg.factor == 32 // latent[1]
    m = VAE(cfg).eval()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        z = m.encode(x)
        out = m(x)
    assert z.shape == (2, *latent)
    assert m.decode(z).shape == x.shape
    assert out.recon.shape == x.shape and out.mean.shape == out.logvar.shape == out.z.shape == (2, *latent)


def test_named_configs_and_round_trip():
    assert VAEConfig.factor4().factor == 4 and VAEConfig.factor4().latent_shape == (4, 8, 8)
    assert VAEConfig.factor2().factor == 2 and VAEConfig.factor2().latent_shape == (4, 16, 16)
    assert VAEConfig.factor4().compression == 4.0
    cfg = VAEConfig.factor4(latent_channels=3)
    assert VAEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="divisible by the factor"):
        VAEConfig(channels=(8, 8, 8, 8), image_size=20)


def test_resblock_without_time_embedding():
    block = ResBlock(8, 16, groups=8)
    assert block.emb is None
    assert block(torch.randn(2, 8, 4, 4)).shape == (2, 16, 4, 4)
    with pytest.raises(ValueError, match="takes no emb"):
        block(torch.randn(2, 8, 4, 4), torch.randn(2, 32))
    with pytest.raises(ValueError, match="time embedding"):
        ResBlock(8, 8, 32, groups=8)(torch.randn(2, 8, 4, 4))


def test_mean_encoding_is_deterministic_and_sampling_is_not():
    m = _perturbed()
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(m.encode(x, sample=False), m.encode(x, sample=False))
        a, b = m.encode(x), m.encode(x)
        assert not torch.equal(a, b)
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        assert torch.equal(m.encode(x, generator=g1), m.encode(x, generator=g2))
        mean, logvar = m.encode_distribution(x)
        assert torch.equal(m.encode(x, sample=False), mean)
        assert logvar.min() >= -30 and logvar.max() <= 20


def test_short_training_lowers_the_reconstruction_error():
    images = load_images("digits").images[:300]
    res = train_vae(VAE(TINY), images, VAETrainConfig(steps=40, batch_size=16, lr=3e-3, warmup_steps=5),
                    device="cpu", progress=False)
    assert len(res.losses) == len(res.recon_mse) == len(res.kl_per_value) == 40
    first, last = sum(res.recon_mse[:3]) / 3, sum(res.recon_mse[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert not res.model.training


def test_vae_loss_weighs_beta_against_the_summed_squared_error():
    m = _perturbed()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    out = m(x, generator=torch.Generator().manual_seed(0))
    loss0, mse, kl = vae_loss(x, out, beta=0.0)
    loss1, _, _ = vae_loss(x, out, beta=0.5)
    torch.testing.assert_close(loss0, ((out.recon - x) ** 2).mean())
    torch.testing.assert_close(mse, loss0.detach())
    kl_sum = kl_divergence(out.mean, out.logvar).mean()
    torch.testing.assert_close(loss1 - loss0, 0.5 * kl_sum / 1024)  # β · KL / D, D = 32·32 pixels
    torch.testing.assert_close(kl, kl_sum.detach() / (4 * 8 * 8))  # nats per latent value


def test_save_then_load_gives_identical_outputs(tmp_path):
    m = _perturbed()
    m.scaling_factor = 0.37
    save_checkpoint(tmp_path / "vae", m, {"note": "hi"})
    m2, meta = load_checkpoint(tmp_path / "vae", device="cpu")
    assert isinstance(m2, VAE) and m2.config == m.config and meta == {"note": "hi"}
    assert m2.scaling_factor == 0.37
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(m.decode(m.encode(x, sample=False)), m2.decode(m2.encode(x, sample=False)))
        assert torch.equal(m.encode_latents(x), m2.encode_latents(x))
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_scaling_factor_gives_latents_of_unit_std():
    m = _perturbed()
    x = load_images("digits").images[:200]
    s = latent_scaling_factor(m, x, batch_size=64)
    m.scaling_factor = s
    with torch.no_grad():
        z = m.encode_latents(x)
        assert abs(z.std().item() - 1) < 0.01
        torch.testing.assert_close(m.decode_latents(z), m.decode(m.encode(x, sample=False)), rtol=1e-4, atol=1e-4)


def test_cached_vae_reuses_the_model_and_stores_the_scaling_factor(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    tc = VAETrainConfig(steps=2, batch_size=4)
    a = cached_vae(TINY, tc, dataset="digits", device="cpu", progress=False, scaling_images=64)
    b = cached_vae(TINY, tc, dataset="digits", device="cpu", progress=False, scaling_images=64)
    assert not a.from_cache and b.from_cache
    assert a.scaling_factor == b.scaling_factor == b.model.scaling_factor != 1.0
    assert a.recon_mse == b.recon_mse
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    assert [p.name.split("-")[0] for p in (tmp_path / "models").iterdir()] == ["vae"]


def test_recipes():
    for quick in (True, False):
        for factor in (2, 4):
            vae, train = vae_recipe(quick, factor)
            assert vae.factor == factor and vae.latent_channels == 4 and train.beta > 0
    with pytest.raises(ValueError, match="factor must be 2 or 4"):
        vae_recipe(True, 8)


def test_psnr_on_a_known_error():
    x = torch.zeros(2, 1, 4, 4)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 → 10·log10(4 / 0.01) = 26.02 dB
    y[1, :, :2] += 0.2  # half the pixels off by 0.2: MSE 0.02
    torch.testing.assert_close(psnr(x, y), torch.tensor([10 * math.log10(400), 10 * math.log10(200)]))
    assert psnr(x, x).isinf().all()


def test_bad_input_says_what_was_expected():
    m = VAE(TINY)
    with pytest.raises(ValueError, match=r"N×1×H×W .*got 3 channel"):
        m.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"divisible by 4, got size 30×30"):
        m.encode(torch.zeros(1, 1, 30, 30))
    with pytest.raises(ValueError, match="got 3 dims"):
        m.encode(torch.zeros(1, 32, 32))
    with pytest.raises(ValueError, match=r"latents N×4×h×w, got 1 channel"):
        m.decode(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="latents N×4×h×w"):
        m.decode_latents(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        kl_divergence(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))


SMALL16 = VAEConfig(channels=(8, 16), blocks=1, latent_channels=4, groups=4, image_size=16)


def test_uint8_and_float64_are_named_but_autocast_and_converted_models_run():
    m, x = VAE(SMALL16).eval(), torch.rand(2, 1, 16, 16) * 2 - 1
    with pytest.raises(ValueError, match=r"x must be a float tensor \(images in \[-1, 1\]\), got torch.uint8: "
                                         r"scale uint8 pixels to \[-1, 1\] first, x.float\(\) / 127.5 - 1"):
        m.encode(((x + 1) * 127.5).to(torch.uint8))
    for call in (lambda: m.encode(x.double()), lambda: m(x.double())):
        with pytest.raises(ValueError, match=r"x must be torch.float32 like the model's weights, got torch.float64"):
            call()
    with pytest.raises(ValueError, match=r"z must be torch.float32 like the model's weights, got torch.float64: "
                                         r"use z.float\(\)"):
        m.decode(torch.randn(2, 4, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"z must be a float tensor \(latents\), got torch.int64"):
        m.decode(torch.zeros(2, 4, 8, 8, dtype=torch.long))
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert m(x).recon.shape == x.shape
        bf16 = VAE(SMALL16).bfloat16()
        assert bf16.decode(bf16.encode(x.bfloat16()).bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), float("inf"), "0.2", True, None])
def test_scaling_factor_must_be_a_positive_finite_number(bad):
    with pytest.raises(ValueError, match="scaling_factor must be a positive finite number"):
        VAE(SMALL16, scaling_factor=bad)
    m = VAE(SMALL16)
    with pytest.raises(ValueError, match="scaling_factor must be a positive finite number"):
        m.scaling_factor = bad  # as train.cached_vae sets it after measuring
    assert m.scaling_factor == 1.0


def test_scaling_factor_takes_any_real_number():
    assert VAE(SMALL16, scaling_factor=torch.tensor(0.5)).scaling_factor == 0.5
    m = VAE(SMALL16, scaling_factor=2)
    m.scaling_factor = 0.18215
    assert isinstance(m.scaling_factor, float) and m.scaling_factor == 0.18215


@pytest.mark.parametrize("overrides, message", [
    (dict(channels=32), r"channels must be a tuple of positive ints, one per level, e.g. \(32, 64, 128\); got 32"),
    (dict(blocks=(1, 0)), r"blocks must be a tuple of positive ints"),
    (dict(in_channels=0), r"in_channels must be a positive int, got 0"),
    (dict(latent_channels=4.0), r"latent_channels must be a positive int, got 4.0"),
    (dict(groups=0), r"groups must be a positive int, got 0"),
])
def test_config_names_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        VAEConfig(**{**SMALL16.to_dict(), **overrides})
    assert VAEConfig(**SMALL16.to_dict()) == SMALL16  # to_dict has lists: they are taken


def test_a_bf16_vae_runs_its_training_pass_without_autocast():
    """forward() hands the float32 sample to the decoder: a VAE converted to bf16 must take it in its own dtype."""
    vae = VAE(VAEConfig(channels=(8, 16), blocks=1, latent_channels=2, groups=4, image_size=16)).to(torch.bfloat16)
    out = vae(torch.zeros(2, 1, 16, 16, dtype=torch.bfloat16))
    assert out.recon.dtype == torch.bfloat16 and out.mean.dtype == torch.float32

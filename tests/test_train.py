"""Training lowers the loss; checkpoints round-trip; the cache reuses a trained model."""

import pytest
import torch

from course_lib.nn.unet import UNet, UNetConfig
from course_lib.samplers import sample
from course_lib.schedules import NoiseSchedule
from course_lib.train import EMA, TrainConfig, cached_train, load_checkpoint, save_checkpoint, train_diffusion

TINY = UNetConfig(channels=(16, 32), blocks=(1, 1), attention=(False, True), head_dim=16, groups=8,
                  image_size=16)


def _blobs(n=256, size=16):
    """A toy dataset with structure to learn: one bright square per image, random place."""
    g = torch.Generator().manual_seed(0)
    x = -torch.ones(n, 1, size, size)
    pos = torch.randint(0, size - 6, (n, 2), generator=g)
    for i, (r, c) in enumerate(pos.tolist()):
        x[i, :, r : r + 6, c : c + 6] = 1.0
    return x


def test_training_lowers_the_loss():
    res = train_diffusion(UNet(TINY), NoiseSchedule.cosine(), _blobs(),
                          TrainConfig(steps=120, batch_size=32, lr=2e-3, warmup_steps=10), device="cpu",
                          progress=False)
    first, last = res.losses[0], sum(res.losses[-20:]) / 20
    assert len(res.losses) == 120
    assert abs(first - 1) < 0.2  # the untrained U-Net is a zero predictor: loss E ε² = 1
    assert last < 0.5 * first, (first, last)
    assert not res.model.training


def test_training_is_reproducible_with_a_seed():
    cfg = TrainConfig(steps=5, batch_size=8, warmup_steps=1)
    torch.manual_seed(0)
    model_a = UNet(TINY)
    torch.manual_seed(0)
    model_b = UNet(TINY)
    a = train_diffusion(model_a, NoiseSchedule.linear(), _blobs(32), cfg, device="cpu", progress=False)
    torch.randn(10)  # a different global random state must not matter: training seeds itself
    b = train_diffusion(model_b, NoiseSchedule.linear(), _blobs(32), cfg, device="cpu", progress=False)
    assert a.losses == b.losses
    c = train_diffusion(UNet(TINY), NoiseSchedule.linear(), _blobs(32), TrainConfig(steps=5, batch_size=8, seed=1),
                        device="cpu", progress=False)
    assert c.losses != a.losses


def test_class_conditional_training_uses_labels():
    cfg = UNetConfig(**{**TINY.to_dict(), "num_classes": 2})
    res = train_diffusion(UNet(cfg), NoiseSchedule.linear(), _blobs(32), TrainConfig(steps=3, batch_size=8),
                          labels=torch.randint(0, 2, (32,)), device="cpu", progress=False)
    assert len(res.losses) == 3


def test_ema_is_the_moving_average():
    m = torch.nn.Linear(2, 1, bias=False)
    m.weight.data.fill_(0.0)
    ema = EMA(m, decay=0.5)
    m.weight.data.fill_(1.0)
    ema.update(m)  # warm-up decay min(0.5, 2/11) = 2/11
    assert torch.allclose(ema.model.weight, torch.full((1, 2), 1 - 2 / 11))
    ema.update(m)  # min(0.5, 3/12) = 1/4
    assert torch.allclose(ema.model.weight, torch.full((1, 2), 1 - (2 / 11) * (1 / 4)))


def test_checkpoint_round_trip_gives_the_same_samples(tmp_path):
    torch.manual_seed(0)
    m = UNet(TINY)
    for p in m.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    save_checkpoint(tmp_path / "ckpt", m, {"note": "hi"})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    m2, meta = load_checkpoint(tmp_path / "ckpt", device="cpu")
    assert meta == {"note": "hi"} and m2.config == m.config
    s = NoiseSchedule.linear(num_steps=10)
    assert torch.equal(sample(m.eval(), s, 2, seed=3, progress=False), sample(m2, s, 2, seed=3, progress=False))
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp folder left


def test_cached_train_reuses_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    cfg = UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4)
    tc = TrainConfig(steps=2, batch_size=4)
    a = cached_train(cfg, NoiseSchedule.linear(), tc, dataset="digits", device="cpu", progress=False)
    b = cached_train(cfg, NoiseSchedule.linear(), tc, dataset="digits", device="cpu", progress=False)
    assert not a.from_cache and b.from_cache
    assert a.losses == b.losses
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    # a different budget is a different model
    c = cached_train(cfg, NoiseSchedule.linear(), TrainConfig(steps=3, batch_size=4), dataset="digits",
                     device="cpu", progress=False)
    assert not c.from_cache
    assert len(list((tmp_path / "models").iterdir())) == 2


def test_full_mode_on_a_cpu_stops_before_a_day_long_training(tmp_path, monkeypatch):
    """Lesson 00 on a laptop without COURSE_QUICK=1 must not start 15 000 steps of 128 on the CPU: a clear error
    first, saying what to do; quick mode, a GPU, a small budget or COURSE_FULL_ON_CPU=1 pass."""
    from course_lib.nn.vae import VAE, VAEConfig
    from course_lib.pipeline import train_latent_text_model
    from course_lib.train import CPU_FULL_MODE_IMAGES, VAETrainConfig, cached_vae, check_cpu_budget, ddpm_recipe

    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("COURSE_QUICK", "0")
    monkeypatch.delenv("COURSE_FULL_ON_CPU", raising=False)
    unet_config, schedule, full = ddpm_recipe(quick=False)
    assert full.steps * full.batch_size > CPU_FULL_MODE_IMAGES  # the recipe it is meant to stop
    quick = ddpm_recipe(quick=True)[2]
    assert quick.steps * quick.batch_size <= CPU_FULL_MODE_IMAGES  # and quick mode's is far below it
    with pytest.raises(RuntimeError, match=r"(?s)15,000 steps of 128.*COURSE_QUICK=1.*COURSE_FULL_ON_CPU=1"):
        cached_train(unet_config, schedule, full, dataset="digits", device="cpu", progress=False)
    tiny_vae = VAEConfig(channels=(8, 16), blocks=1, latent_channels=4, groups=4)
    with pytest.raises(RuntimeError, match="the VAE"):
        cached_vae(tiny_vae, VAETrainConfig(steps=10_000, batch_size=128), dataset="digits", device="cpu",
                   progress=False)
    latent = UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4,
                        in_channels=4, image_size=8, context_dim=384)
    with pytest.raises(RuntimeError, match="the latent U-Net"):
        train_latent_text_model(VAE(tiny_vae), latent, schedule, TrainConfig(steps=20_000, batch_size=128),
                                dataset="digits", device="cpu", progress=False)
    assert not (tmp_path / "models").exists()  # nothing was trained or written
    # what passes: one image over the limit is the first to stop
    check_cpu_budget("cpu", CPU_FULL_MODE_IMAGES, 1, "x")
    with pytest.raises(RuntimeError):
        check_cpu_budget("cpu", CPU_FULL_MODE_IMAGES + 1, 1, "x")
    check_cpu_budget("cuda", 15_000, 128, "x")  # a GPU
    monkeypatch.setenv("COURSE_FULL_ON_CPU", "1")
    check_cpu_budget("cpu", 15_000, 128, "x")
    monkeypatch.setenv("COURSE_FULL_ON_CPU", "0")
    monkeypatch.setenv("COURSE_QUICK", "1")
    check_cpu_budget("cpu", 15_000, 128, "x")


def test_cached_train_asks_training_compile_for_its_device_and_steps(tmp_path, monkeypatch):
    """The lessons' trainings compile as COURSE_COMPILE says for their device and length (CUDA graphs on a GPU)."""
    from course_lib import train as train_module

    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    asked, passed = [], []
    monkeypatch.setattr(train_module, "training_compile", lambda device, steps: asked.append((device, steps)) or "mode")
    real = train_module.train_diffusion

    def spy(*args, compile=False, **kw):
        passed.append(compile)
        return real(*args, **kw)  # uncompiled here: a CPU

    monkeypatch.setattr(train_module, "train_diffusion", spy)
    cfg = UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4)
    cached_train(cfg, NoiseSchedule.linear(), TrainConfig(steps=3, batch_size=4), dataset="digits", device="cpu",
                 progress=False)
    assert asked == [(torch.device("cpu"), 3)] and passed == ["mode"]


def test_text_conditional_training_uses_captions_and_drops_the_asked_share(monkeypatch):
    """Each image gets a phrasing of its own label; class_dropout of them get the empty prompt (row 0)."""
    import pytest

    from course_lib import train as train_module
    from course_lib.data import CAPTIONS
    from course_lib.text import NULL_ID, TextEmbedding, dataset_captions

    rows = dataset_captions("fashion_mnist")
    g = torch.Generator().manual_seed(0)
    table = TextEmbedding(torch.randn(len(rows), 3, 8, generator=g), torch.ones(len(rows), 3, dtype=torch.bool))
    seen = []
    real_lookup = train_module.lookup

    def spy(tab, ids, **kw):
        seen.append(ids.clone())
        return real_lookup(tab, ids, **kw)

    monkeypatch.setattr(train_module, "lookup", spy)
    labels = torch.randint(0, 10, (64,), generator=g)
    cfg = UNetConfig(**{**TINY.to_dict(), "context_dim": 8})
    model = UNet(cfg)
    with pytest.raises(ValueError, match="captions"):
        train_diffusion(model, NoiseSchedule.linear(), _blobs(64), TrainConfig(steps=1), labels=labels,
                        device="cpu", progress=False)
    res = train_diffusion(model, NoiseSchedule.linear(), _blobs(64), TrainConfig(steps=40, batch_size=16,
                          class_dropout=0.25, lr=2e-3, warmup_steps=1), labels=labels, device="cpu", progress=False,
                          captions=table, caption_dataset="fashion_mnist")
    ids = torch.cat(seen)
    share = (ids == NULL_ID).float().mean().item()
    assert abs(share - 0.25) < 0.08, share  # 640 draws: sd of the share ≈ 0.017
    # every other id is a phrasing of some class: never out of the table
    owner = torch.tensor([-1] + [k for k, phrasings in enumerate(CAPTIONS["fashion_mnist"]) for _ in phrasings])
    assert (owner[ids[ids != NULL_ID]] >= 0).all()
    # the trained model reads the caption: a different context changes the prediction
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 500])
    a = res.model(x, t, context=table[[1, 1]])
    b = res.model(x, t, context=table[[len(rows) - 1, len(rows) - 1]])
    assert (a - b).abs().max() > 1e-4
    # the steps skip the range checks (a GPU sync each): bad labels and a short table are refused up front
    for bad, match in ((labels.clone().fill_(10), "labels must lie in 0..9"), (-labels - 1, "labels must lie")):
        with pytest.raises(ValueError, match=match):
            train_diffusion(UNet(cfg), NoiseSchedule.linear(), _blobs(64), TrainConfig(steps=1), labels=bad,
                            device="cpu", progress=False, captions=table, caption_dataset="fashion_mnist")
    with pytest.raises(ValueError, match=f"captions has 5 rows, fewer than the {len(rows)}"):
        train_diffusion(UNet(cfg), NoiseSchedule.linear(), _blobs(64), TrainConfig(steps=1), labels=labels,
                        device="cpu", progress=False, captions=table[list(range(5))], caption_dataset="fashion_mnist")


# ---------------------------------------------------------------- speed switches (CPU side)
def _switch_images(n=64):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 32, 32, generator=g) * 2 - 1


def _tiny_unet():
    from course_lib.nn.unet import UNet, UNetConfig

    torch.manual_seed(0)
    return UNet(UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4))


def test_channels_last_and_amp_switches_keep_the_losses_on_cpu():
    from course_lib.schedules import NoiseSchedule
    from course_lib.train import TrainConfig, train_diffusion

    config = TrainConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=1)
    plain = train_diffusion(_tiny_unet(), NoiseSchedule.cosine(50), _switch_images(), config, device="cpu",
                            progress=False)
    switched = train_diffusion(_tiny_unet(), NoiseSchedule.cosine(50), _switch_images(), config, device="cpu",
                               progress=False, channels_last=True, amp=False, fused=False)
    torch.testing.assert_close(torch.tensor(plain.losses), torch.tensor(switched.losses), rtol=1e-4, atol=1e-6)
    assert all(p.is_contiguous() for p in switched.model.parameters())  # handed back in the usual layout
    assert switched.steady_images_per_second > 0


def test_a_compiler_that_fails_falls_back_with_a_warning(monkeypatch):
    from course_lib.schedules import NoiseSchedule
    from course_lib.train import TrainConfig, train_diffusion

    def broken_compile(model, **kw):
        def fails(*a, **k):
            raise RuntimeError("backend compiler failed (simulated)")
        return fails

    config = TrainConfig(steps=3, batch_size=8, lr=1e-3, warmup_steps=1)
    reference = train_diffusion(_tiny_unet(), NoiseSchedule.cosine(50), _switch_images(), config, device="cpu",
                                progress=False)
    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(RuntimeWarning, match="torch.compile failed.*simulated"):
        fallback = train_diffusion(_tiny_unet(), NoiseSchedule.cosine(50), _switch_images(), config, device="cpu",
                                   progress=False, compile=True)
    # the failed first try must not have consumed random numbers: same batches, same losses
    assert fallback.losses == pytest.approx(reference.losses, rel=1e-6)


def test_compile_mode_is_checked():
    from course_lib.device import compile_model

    with pytest.raises(ValueError, match="compile must be True or one of"):
        compile_model(_tiny_unet(), "fastest")


def test_training_leaves_the_callers_random_stream_alone():
    """train_diffusion and train_vae seed the global generators for themselves and put them back."""
    import random

    import numpy as np

    from course_lib.nn.vae import VAE, VAEConfig
    from course_lib.train import VAETrainConfig, train_vae

    def draws():
        return torch.rand(3), np.random.rand(2), random.random()

    unet, vae = UNet(TINY), VAE(VAEConfig(image_size=16, channels=(8, 16), latent_channels=2, groups=4))
    runs = [  # the models are built first: their initial weights are drawn from the global generator
        lambda: train_diffusion(unet, NoiseSchedule.linear(), _blobs(16), TrainConfig(steps=2, batch_size=4),
                                device="cpu", progress=False),
        lambda: train_vae(vae, _blobs(16), VAETrainConfig(steps=2, batch_size=4, warmup_steps=1), device="cpu",
                          progress=False),
    ]
    for run in runs:
        torch.manual_seed(7), np.random.seed(7), random.seed(7)
        expected = draws()
        torch.manual_seed(7), np.random.seed(7), random.seed(7)
        run()
        got = draws()
        assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_min_snr_weighting_is_the_stated_formula_and_not_its_look_alikes():
    """diffusion_loss with γ: mean over images of min(SNR_t, γ)/SNR_t · mean‖ε − ε̂‖², with the same t and ε
    as the unweighted loss draws. Known-wrong variants (min(SNR, γ) without the division, the weight on the
    batch mean instead of per image) give other numbers; γ above every SNR gives the plain loss back."""
    from course_lib.schedules import q_sample
    from course_lib.train import diffusion_loss

    torch.manual_seed(0)
    model = UNet(TINY).eval()
    schedule = NoiseSchedule.cosine(100)
    x0 = _blobs(16)
    gamma = 1.0
    with torch.no_grad():
        got = diffusion_loss(model, schedule, x0, generator=torch.Generator().manual_seed(3), min_snr_gamma=gamma)
        plain = diffusion_loss(model, schedule, x0, generator=torch.Generator().manual_seed(3))
        huge = diffusion_loss(model, schedule, x0, generator=torch.Generator().manual_seed(3),
                              min_snr_gamma=float(schedule.snr.max()) * 2)
        g = torch.Generator().manual_seed(3)  # the draws diffusion_loss makes, in its order
        t = torch.randint(0, schedule.num_steps, (len(x0),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        err = (model(q_sample(schedule, x0, t, noise), t) - noise).pow(2).mean(dim=(1, 2, 3))
    snr = schedule.snr[t].float()
    want = (torch.minimum(snr, torch.tensor(gamma)) / snr * err).mean()
    assert (snr > gamma).any() and (snr < gamma).any(), "the draw must cover both sides of γ"
    assert torch.allclose(got, want, rtol=1e-5)
    assert torch.allclose(plain, err.mean(), rtol=1e-5) and torch.allclose(huge, plain, rtol=1e-5)
    wrong_no_division = (torch.minimum(snr, torch.tensor(gamma)) * err).mean()
    wrong_batch_weight = (torch.minimum(snr, torch.tensor(gamma)) / snr).mean() * err.mean()
    for wrong in (wrong_no_division, wrong_batch_weight, plain):
        assert not torch.allclose(got, wrong, rtol=1e-3)


def test_min_snr_is_checked_and_used_by_the_quick_conditional_recipe():
    from course_lib.train import conditional_recipe

    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="min_snr_gamma"):
            TrainConfig(min_snr_gamma=bad)
    with pytest.raises(ValueError, match="flow objective"):
        train_diffusion(UNet(TINY), None, _blobs(16), TrainConfig(steps=1, min_snr_gamma=1.0), device="cpu",
                        progress=False, objective="flow")
    for kind in ("text", "class"):
        assert conditional_recipe(kind, quick=True)[2].min_snr_gamma == 1.0
        assert conditional_recipe(kind, quick=False)[2].min_snr_gamma is None  # full mode: the plain loss
    # training with it runs and records the weighted loss, which sits below the plain one at the start
    weighted = train_diffusion(UNet(TINY), NoiseSchedule.cosine(), _blobs(64),
                               TrainConfig(steps=3, batch_size=16, min_snr_gamma=1.0), device="cpu", progress=False)
    plain = train_diffusion(UNet(TINY), NoiseSchedule.cosine(), _blobs(64), TrainConfig(steps=3, batch_size=16),
                            device="cpu", progress=False)
    assert weighted.losses[0] < plain.losses[0]


@pytest.mark.parametrize("gamma", [None, 5.0])
def test_a_training_loss_never_reads_a_tensor_back_to_the_host(monkeypatch, gamma):
    """On a GPU, reading a value back (int(t.max()), .item(), if tensor:) makes the host wait for every queued
    kernel, each training step. Here on the CPU, every way of reading one is made to raise while the loss and its
    gradient are computed (tests/test_gpu.py checks the same with CUDA's own sync detector)."""
    from course_lib.train import diffusion_loss

    model = UNet(TINY)
    schedule = NoiseSchedule.cosine(50)
    x0, gen = _blobs(8), torch.Generator().manual_seed(0)
    diffusion_loss(model, schedule, x0, generator=gen, min_snr_gamma=gamma)  # warm-up, unchecked

    def refuse(self, *args):
        raise AssertionError("a tensor was read back to the host inside a training step")

    for name in ("__int__", "__index__", "__float__", "__bool__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    loss = diffusion_loss(model, schedule, x0, generator=gen, min_snr_gamma=gamma)
    loss.backward()
    monkeypatch.undo()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_training_refuses_what_a_learner_might_hand_it():
    """0..255 pixels, float labels, a model built for another size, a config of the wrong kind: each a clear error
    before the first step; [0, 1] images a warning; a list of labels is taken as it is."""
    from course_lib.nn.vae import VAE, VAEConfig
    from course_lib.train import VAETrainConfig, train_vae

    s, x = NoiseSchedule.cosine(20), _blobs(8)
    cfg = TrainConfig(steps=1, batch_size=4)

    def run(images=x, **kw):
        return train_diffusion(UNet(kw.pop("model_config", TINY)), s, images, kw.pop("config", cfg), device="cpu",
                               progress=False, **kw)

    with pytest.raises(ValueError, match=r"got torch.uint8: 0..255 pixels\? use x / 127.5 − 1"):
        run(((x + 1) * 127.5).to(torch.uint8))
    with pytest.raises(ValueError, match=r"got values from 0 to 255: 0..255 pixels\?"):
        run((x + 1) * 127.5)
    with pytest.raises(ValueError, match="images is empty"):
        run(x[:0])
    with pytest.raises(ValueError, match="N×C×H×W, got shape"):
        run(x[:, 0])
    with pytest.warns(UserWarning, match=r"lie in \[0, 1\].*x \* 2 − 1"):
        run((x + 1) / 2)
    labelled = UNetConfig(**{**TINY.__dict__, "num_classes": 3})
    with pytest.raises(ValueError, match="labels must be integer class indices, got torch.float32"):
        run(labels=torch.tensor([0.0, 1, 2, 0, 1, 2, 0, 1]), model_config=labelled)
    assert len(run(labels=[0, 1, 2, 0, 1, 2, 0, 1], model_config=labelled).losses) == 1
    with pytest.raises(ValueError, match=r"images are 16×16, but the model's config.image_size is 32"):
        run(model_config=UNetConfig(**{**TINY.__dict__, "image_size": 32}))
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        run(config={"steps": 1})
    # scaled VAE latents (unit variance, tails past ±1) train without a word
    latents = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 1.5
    assert len(run(latents).losses) == 1
    with pytest.raises(ValueError, match=r"images must be in \[-1, 1\], got values"):
        train_vae(VAE(VAEConfig(channels=(8, 16), blocks=1, latent_channels=2, groups=4, image_size=16)),
                  latents, VAETrainConfig(steps=1, batch_size=4), device="cpu", progress=False)


@pytest.mark.parametrize("kw, error, match", [
    ({"steps": "100"}, TypeError, r"TrainConfig.steps must be an int, got '100' \(str\)"),
    ({"steps": 2.5}, TypeError, "TrainConfig.steps must be an int, got 2.5"),
    ({"batch_size": True}, TypeError, "TrainConfig.batch_size must be an int"),
    ({"lr": "1e-3"}, TypeError, "TrainConfig.lr must be a finite number, got '1e-3'"),
    ({"lr": 0}, ValueError, "TrainConfig.lr must be > 0"),
    ({"lr": float("nan")}, TypeError, "TrainConfig.lr must be a finite number"),
    ({"warmup_steps": -5}, ValueError, "TrainConfig.warmup_steps must be ≥ 0"),
    ({"grad_clip": -1.0}, ValueError, "TrainConfig.grad_clip must be ≥ 0"),
])
def test_a_training_config_names_the_field_it_refuses(kw, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**kw)


def test_a_vae_config_and_numpy_ints_are_checked_alike():
    import numpy as np

    from course_lib.train import VAETrainConfig

    with pytest.raises(TypeError, match="VAETrainConfig.beta must be a finite number, got '0.1'"):
        VAETrainConfig(beta="0.1")
    assert TrainConfig(steps=np.int64(5), grad_clip=0).steps == 5  # a numpy int is an int; grad_clip 0 = off


def test_recipes_and_the_loss_refuse_a_quick_or_gamma_that_would_be_misread():
    from course_lib.pipeline import pipeline_recipe
    from course_lib.train import conditional_recipe, ddpm_recipe, diffusion_loss, vae_recipe

    for recipe in (ddpm_recipe, vae_recipe, pipeline_recipe, lambda quick: conditional_recipe("class", quick)):
        with pytest.raises(TypeError, match="quick must be True, False or None .*got 'no'"):
            recipe(quick="no")
    assert ddpm_recipe(quick=False)[2].steps == 15_000
    with pytest.raises(ValueError, match="min_snr_gamma must be None .* or > 0, got -1"):
        diffusion_loss(UNet(TINY), NoiseSchedule.cosine(20), _blobs(2), min_snr_gamma=-1)

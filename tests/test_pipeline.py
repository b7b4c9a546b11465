"""The small Stable Diffusion pipeline (lesson 09): txt2img, img2img, inpainting, save/load.

A tiny random pipeline (a 2-level VAE → 4×8×8 latents, a tiny latent U-Net with
cross-attention to the bundled text encoder's 384-wide tokens); nothing is trained.
The U-Net's output conv starts at zero, so its weights are perturbed to make ε̂ depend
on the input, the time and the prompt.
"""

import json

import pytest
import torch

from course_lib.guidance import cfg_combine
from course_lib.nn.unet import UNet, UNetConfig
from course_lib.nn.vae import VAE, VAEConfig
from course_lib.pipeline import LatentDiffusionPipeline, encode_dataset, pipeline_recipe
from course_lib.samplers import sample_loop, timesteps
from course_lib.schedules import NoiseSchedule
from course_lib.text import CAPTION_MAX_LENGTH, load_text_encoder

STEPS = 6


@pytest.fixture(scope="module")
def encoder():
    return load_text_encoder(device="cpu")


@pytest.fixture(scope="module")
def pipe(encoder):
    torch.manual_seed(0)
    vae = VAE(VAEConfig(channels=(8, 16, 16), blocks=1, latent_channels=4, groups=4), scaling_factor=0.7)
    unet = UNet(UNetConfig(in_channels=4, image_size=8, channels=(16, 32), blocks=(1, 1), attention=(False, True),
                           head_dim=16, groups=4, context_dim=384))
    with torch.no_grad():  # a random, non-zero ε_θ
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return LatentDiffusionPipeline(vae, unet, NoiseSchedule.scaled_linear(1000), encoder,
                                   {"steps": STEPS, "guidance_scale": 3.0})


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 1, 32, 32, generator=g) * 2 - 1


def test_txt2img_shape_range_and_seed(pipe):
    x = pipe("a shoe", num_images=2, seed=3)
    assert x.shape == (2, 1, 32, 32)
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, pipe("a shoe", num_images=2, seed=3))
    assert not torch.equal(x, pipe("a shoe", num_images=2, seed=4))
    assert pipe(["a shoe", "a bag", "a coat"]).shape == (3, 1, 32, 32)


def test_save_load_same_images(pipe, tmp_path):
    folder = pipe.save(tmp_path / "sd")
    for f in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
              "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"):
        assert (folder / f).exists(), f
    loaded = LatentDiffusionPipeline.load(folder, device="cpu")
    assert loaded.defaults == pipe.defaults and loaded.vae.scaling_factor == pipe.vae.scaling_factor
    assert torch.equal(loaded("a dress", seed=7), pipe("a dress", seed=7))
    with pytest.raises(FileNotFoundError):
        LatentDiffusionPipeline.load(tmp_path / "nothing")


def test_img2img_strength_0_is_the_vae_reconstruction(pipe, images):
    out = pipe.img2img(images, "a bag", strength=0.0)
    with torch.no_grad():
        recon = pipe.vae.decode_latents(pipe.vae.encode_latents(images)).clamp(-1, 1)
    torch.testing.assert_close(out, recon, atol=1e-6, rtol=0)


def test_img2img_strength_1_ignores_the_input_and_is_txt2img(pipe, images):
    a = pipe.img2img(images, "a bag", strength=1.0, seed=5)
    b = pipe.img2img(-images, "a bag", strength=1.0, seed=5)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(a, pipe("a bag", num_images=2, seed=5), atol=1e-6, rtol=0)
    # in between, the input matters
    c = pipe.img2img(images, "a bag", strength=0.5, seed=5)
    d = pipe.img2img(-images, "a bag", strength=0.5, seed=5)
    assert (c - d).abs().max() > 1e-3


def test_inpaint_keeps_the_unmasked_region(pipe, images):
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:24, 8:24] = 1
    out = pipe.inpaint(images, mask, "a shirt", seed=2)
    keep = mask == 0
    assert torch.equal(out[keep.expand_as(out)], images[keep.expand_as(images)])  # pasted back: exact
    assert (out[~keep] - images[~keep]).abs().max() > 1e-3  # the hole was repainted
    # without pasting: an all-zero mask keeps every latent cell, so the result is the VAE
    # reconstruction (the last blend puts z_0 back); an all-one mask is plain txt2img
    raw = pipe.inpaint(images, torch.zeros_like(mask), "a shirt", seed=2, paste=False)
    with torch.no_grad():
        recon = pipe.vae.decode_latents(pipe.vae.encode_latents(images)).clamp(-1, 1)
    torch.testing.assert_close(raw, recon, atol=1e-6, rtol=0)
    full = pipe.inpaint(images, torch.ones_like(mask), "a shirt", seed=2, paste=False)
    torch.testing.assert_close(full, pipe("a shirt", num_images=2, seed=2), atol=1e-6, rtol=0)
    # a 1×1×H×W mask serves the whole batch
    assert torch.equal(pipe.inpaint(images, mask[:1], "a shirt", seed=2), out)


def test_negative_prompt_is_the_unconditional_branch(pipe, encoder):
    prompt, negative, w, seed = "a sneaker", "a blurry bag", 3.0, 11
    got = pipe(prompt, negative_prompt=negative, seed=seed)
    # by hand: ε̃ = ε(z, t, c_neg) + w (ε(z, t, c) − ε(z, t, c_neg)), DDIM from the seeded noise
    c = encoder.encode([prompt], max_length=CAPTION_MAX_LENGTH)
    u = encoder.encode([negative], max_length=CAPTION_MAX_LENGTH)

    def eps_fn(z, t):
        tt = torch.full((len(z),), t, dtype=torch.long)
        return cfg_combine(pipe.unet(z, tt, context=u), pipe.unet(z, tt, context=c), w)

    g = torch.Generator().manual_seed(seed)
    z_T = torch.randn((1, 4, 8, 8), generator=g)
    with torch.no_grad():
        z0 = sample_loop(eps_fn, pipe.schedule, z_T, timesteps(pipe.schedule, STEPS), "ddim", clip_x0=False)
        want = pipe.vae.decode_latents(z0).clamp(-1, 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(pipe(prompt, negative_prompt="", seed=seed), pipe(prompt, seed=seed))
    assert (got - pipe(prompt, seed=seed)).abs().max() > 1e-4


def test_a_pipeline_on_the_logsnr_grid_saves_a_config_diffusers_can_read(pipe, tmp_path):
    """"logsnr" is the course's grid, not a diffusers spacing: the saved DDIMScheduler config keeps one that
    diffusers knows, says so in a note, and the course's own defaults (model_index.json) keep "logsnr"."""
    diffusers = pytest.importorskip("diffusers")
    logsnr = LatentDiffusionPipeline(pipe.vae, pipe.unet, pipe.schedule, pipe.text_encoder,
                                     {**pipe.defaults, "spacing": "logsnr"})
    folder = logsnr.save(tmp_path / "sd")
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert config["timestep_spacing"] == "leading" and "logsnr" in config["course_note"]
    diffusers.DDIMScheduler.from_config(config).set_timesteps(STEPS)  # a config diffusers can use
    loaded = LatentDiffusionPipeline.load(folder, device="cpu")
    assert loaded.defaults["spacing"] == "logsnr"
    assert torch.equal(loaded("a bag", seed=2, sampler="dpm++2m"), logsnr("a bag", seed=2, sampler="dpm++2m"))
    assert (logsnr("a bag", seed=2, sampler="dpm++2m") - pipe("a bag", seed=2, sampler="dpm++2m")).abs().max() > 1e-4


def test_each_sampler_takes_its_own_spacing_unless_the_pipeline_names_one(pipe):
    """defaults["spacing"] None: DDIM on "leading", DPM-Solver++ on "linspace" (samplers.DEFAULT_SPACING)."""
    fixed = LatentDiffusionPipeline(pipe.vae, pipe.unet, pipe.schedule, pipe.text_encoder,
                                    {**pipe.defaults, "spacing": "linspace"})
    leading = LatentDiffusionPipeline(pipe.vae, pipe.unet, pipe.schedule, pipe.text_encoder,
                                      {**pipe.defaults, "spacing": "leading"})
    assert pipe.defaults["spacing"] is None
    dpm = pipe("a bag", seed=2, sampler="dpm++2m")
    assert torch.equal(dpm, fixed("a bag", seed=2, sampler="dpm++2m"))
    assert (dpm - leading("a bag", seed=2, sampler="dpm++2m")).abs().max() > 1e-4
    assert torch.equal(pipe("a bag", seed=2), leading("a bag", seed=2))
    with pytest.raises(ValueError, match="spacing"):
        LatentDiffusionPipeline(pipe.vae, pipe.unet, pipe.schedule, pipe.text_encoder, {"spacing": "middle"})
    # a grid that cannot be laid is refused when the pipeline is made, not at its first call
    with pytest.raises(ValueError, match="at most"):
        LatentDiffusionPipeline(pipe.vae, pipe.unet, NoiseSchedule.cosine(1000), pipe.text_encoder,
                                {"steps": 500, "spacing": "logsnr"})


@pytest.mark.parametrize("call, match", [
    (lambda p, x: p.img2img(x, "a", strength=1.5), "strength"),
    (lambda p, x: p.img2img(x, "a", strength=-0.1), "strength"),
    (lambda p, x: p.inpaint(x, torch.ones(2, 1, 16, 16), "a"), "mask"),
    (lambda p, x: p.inpaint(x, torch.ones(2, 32, 32), "a"), "mask"),
    (lambda p, x: p.inpaint(x, 2 * torch.ones(2, 1, 32, 32), "a"), "mask"),
    (lambda p, x: p("a", sampler="euler-ish"), "sampler"),
    (lambda p, x: p.img2img(x, "a", strength=0.5, sampler="nope"), "sampler"),
    (lambda p, x: p.img2img(torch.zeros(2, 3, 32, 32), "a", strength=0.5), "image"),
    (lambda p, x: p.img2img(torch.zeros(1, 32, 32), "a", strength=0.5), "image"),
    (lambda p, x: p.inpaint(torch.zeros(2, 1, 16, 16), torch.ones(2, 1, 16, 16), "a"), "image"),
    (lambda p, x: p("a", steps=0), "steps"),
    (lambda p, x: p("a", num_images=0), "num_images"),
    (lambda p, x: p(["a", "b"], num_images=3), "prompt"),
])
def test_bad_inputs_raise_value_error(pipe, images, call, match):
    with pytest.raises(ValueError, match=match):
        call(pipe, images)


def test_constructor_checks(pipe):
    vae, sched = pipe.vae, pipe.schedule
    with pytest.raises(ValueError, match="text-conditioned"):
        LatentDiffusionPipeline(vae, UNet(UNetConfig(in_channels=4, image_size=8, channels=(8, 16), blocks=1,
                                                     attention=(False, True), head_dim=8, groups=4)), sched)
    with pytest.raises(ValueError, match="latents"):
        LatentDiffusionPipeline(vae, UNet(UNetConfig(in_channels=1, image_size=32, channels=(8, 16), blocks=1,
                                                     attention=(False, True), head_dim=8, groups=4,
                                                     context_dim=384)), sched)


def test_encode_dataset_and_recipe(pipe, images):
    z = encode_dataset(pipe.vae, images, batch_size=1)
    assert z.shape == (2, 4, 8, 8)
    torch.testing.assert_close(z, pipe.encode(images), atol=1e-5, rtol=0)  # batching rounds differently
    for quick in (True, False):
        unet, schedule, train, defaults = pipeline_recipe(quick)
        assert (unet.in_channels, unet.image_size, unet.context_dim) == (4, 8, 384)
        assert schedule.num_steps == 1000 and train.class_dropout > 0 and defaults["sampler"] == "ddim"


def test_a_pipeline_remembers_how_to_reload_its_text_encoder(tmp_path):
    """A TextEncoder's short ``name`` is not loadable elsewhere: the saved name is "bundled" for the
    course's encoder and the folder (``source``) for any other; a PromptTable of the bundled encoder
    counts as the bundled encoder."""
    import shutil

    from course_lib.pipeline import _encoder_name
    from course_lib.text import BUNDLED, PromptTable, bundled_path, load_text_encoder

    bundled = load_text_encoder(device="cpu")
    assert _encoder_name(bundled) == BUNDLED
    assert _encoder_name(PromptTable.build(["a bag"], bundled)) == BUNDLED
    folder = tmp_path / "mini"
    shutil.copytree(bundled_path(), folder)
    other = load_text_encoder(str(folder), device="cpu")
    assert other.name == "mini" and _encoder_name(other) == str(folder.resolve())
    assert load_text_encoder(_encoder_name(other), device="cpu").source == other.source

"""Classifier-free guidance in ``sample``: class labels and text prompts, negative prompts.

Tiny untrained U-Nets (their predictions are arbitrary but deterministic) and a few DDIM
steps: each guided run must equal the same loop with the guidance combination written out
by hand, so the test checks the wiring, not a trained model.
"""

from __future__ import annotations

import pytest
import torch

from course_lib.guidance import cfg_combine
from course_lib.nn.blocks import CrossAttention
from course_lib.nn.unet import UNet, UNetConfig
from course_lib.samplers import sample, sample_loop, timesteps
from course_lib.schedules import NoiseSchedule
from course_lib.text import CAPTION_MAX_LENGTH, load_text_encoder

SCHEDULE = NoiseSchedule.cosine(50)
N, SHAPE, STEPS = 3, (1, 8, 8), 4


def _tiny(**kw):
    torch.manual_seed(0)
    cfg = UNetConfig(image_size=8, channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4, **kw)
    model = UNet(cfg).eval()
    # conv_out starts at zero (a zero predictor): give it weights so predictions differ by condition
    torch.nn.init.normal_(model.conv_out.weight, std=0.1)
    for m in model.modules():
        if isinstance(m, CrossAttention):  # zero-initialised: the text would not matter yet
            torch.nn.init.normal_(m.out.weight, std=0.1)
    return model


def _by_hand(eps_fn, seed=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((N, *SHAPE), generator=g)
    return sample_loop(eps_fn, SCHEDULE, x, timesteps(SCHEDULE, STEPS).tolist(), "ddim", 0.0, g, True).clamp(-1, 1)


def _sample(model, **kw):
    return sample(model, SCHEDULE, N, SHAPE, seed=5, progress=False, sampler="ddim", steps=STEPS, **kw)


@pytest.fixture(scope="module")
def class_model():
    return _tiny(num_classes=10)


@pytest.fixture(scope="module")
def text_model():
    return _tiny(context_dim=384)


@pytest.fixture(scope="module")
def encoder():
    return load_text_encoder(device="cpu")


def test_class_guidance_is_the_cfg_combination(class_model):
    labels = torch.tensor([1, 7, 3])
    null = torch.full((N,), 10)

    @torch.no_grad()
    def guided(x, t):
        tt = torch.full((N,), t)
        return cfg_combine(class_model(x, tt, null), class_model(x, tt, labels), 3.0)

    got = _sample(class_model, labels=labels, guidance_scale=3.0)
    assert torch.allclose(got, _by_hand(guided), atol=1e-5)
    # s = 1 is plain conditional sampling, s = 0 the "no class" token
    assert torch.allclose(_sample(class_model, labels=labels, guidance_scale=1.0), _sample(class_model, labels=labels))
    assert torch.allclose(_sample(class_model, labels=labels, guidance_scale=0.0), _sample(class_model, labels=null))
    assert not torch.allclose(got, _sample(class_model, labels=labels))


def test_text_guidance_and_negative_prompt(text_model, encoder):
    prompts = ["a sneaker", "a dress", "a bag"]
    cond = encoder.encode(prompts, max_length=CAPTION_MAX_LENGTH)

    def by_hand(negative: str):
        uncond = encoder.encode([negative] * N, max_length=CAPTION_MAX_LENGTH)

        @torch.no_grad()
        def guided(x, t):
            tt = torch.full((N,), t)
            return cfg_combine(text_model(x, tt, context=uncond), text_model(x, tt, context=cond), 4.0)

        return _by_hand(guided)

    plain = _sample(text_model, prompt=prompts, guidance_scale=4.0, text_encoder=encoder)
    assert torch.allclose(plain, by_hand(""), atol=1e-5)  # the empty prompt is the default ∅
    negative = _sample(text_model, prompt=prompts, negative_prompt="a boot", guidance_scale=4.0, text_encoder=encoder)
    assert torch.allclose(negative, by_hand("a boot"), atol=1e-5)  # the negative prompt replaces ∅
    assert not torch.allclose(plain, negative)
    # one prompt for all images equals the list of the same prompt
    one = _sample(text_model, prompt="a sneaker", guidance_scale=2.0, text_encoder=encoder)
    assert torch.allclose(one, _sample(text_model, prompt=["a sneaker"] * N, guidance_scale=2.0, text_encoder=encoder))


def test_bad_conditioning_says_what_was_expected(class_model, text_model, encoder):
    with pytest.raises(ValueError, match="text-conditioned"):
        _sample(class_model, prompt="a sneaker")
    with pytest.raises(ValueError, match="needs a condition"):
        _sample(_tiny(), guidance_scale=3.0)
    with pytest.raises(ValueError, match="needs a prompt"):
        _sample(text_model, negative_prompt="a boot", text_encoder=encoder)
    with pytest.raises(ValueError, match="pass prompt="):
        _sample(text_model, text_encoder=encoder)
    with pytest.raises(ValueError, match="n = 3 strings"):
        _sample(text_model, prompt=["a sneaker", "a bag"], text_encoder=encoder)
    with pytest.raises(ValueError, match="finite number"):
        _sample(class_model, labels=torch.tensor([1, 2, 3]), guidance_scale=float("nan"))

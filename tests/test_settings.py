"""Settings from the environment, device choice, seeding, autocast policy."""

import pytest
import torch

from course_lib.device import COMPILE_MIN_STEPS, autocast_dtype, pick_device, seed_everything, training_compile
from course_lib.settings import budget, get_settings


def test_defaults(monkeypatch):
    for var in ("COURSE_QUICK", "COURSE_DATASET", "COURSE_DATA_DIR", "COURSE_CACHE_DIR", "COURSE_DEVICE",
                "COURSE_COMPILE", "COURSE_AUTOCAST", "COURSE_FULL_ON_CPU"):
        monkeypatch.delenv(var, raising=False)
    s = get_settings()
    assert (s.quick, s.dataset, s.data_dir, s.device, s.compile) == (False, "fashion_mnist", None, None, "auto")
    assert s.autocast == "auto" and s.full_on_cpu is False
    assert s.cache_dir.name == "diffusion-course"


def test_environment_is_read(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_QUICK", "1")
    monkeypatch.setenv("COURSE_DATASET", "digits")
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    s = get_settings()
    assert s.quick and s.dataset == "digits" and s.data_dir == tmp_path and s.cache_dir == tmp_path / "c"
    assert budget(3, 300) == 3
    assert pick_device() == torch.device("cpu")
    monkeypatch.setenv("COURSE_QUICK", "0")
    assert budget(3, 300) == 300


def test_bad_settings_say_what_was_expected(monkeypatch):
    monkeypatch.setenv("COURSE_DATASET", "cifar10")
    with pytest.raises(ValueError, match="fashion_mnist, mnist, digits"):
        get_settings()
    monkeypatch.delenv("COURSE_DATASET")
    monkeypatch.setenv("COURSE_QUICK", "maybe")
    with pytest.raises(ValueError, match="COURSE_QUICK must be 0 or 1"):
        get_settings()
    monkeypatch.delenv("COURSE_QUICK")
    monkeypatch.setenv("COURSE_COMPILE", "fast")
    with pytest.raises(ValueError, match="COURSE_COMPILE must be one of auto, off, default, reduce-overhead"):
        get_settings()
    monkeypatch.delenv("COURSE_COMPILE")
    monkeypatch.setenv("COURSE_FULL_ON_CPU", "sure")
    with pytest.raises(ValueError, match="COURSE_FULL_ON_CPU must be 0 or 1"):
        get_settings()
    monkeypatch.delenv("COURSE_FULL_ON_CPU")
    with pytest.raises(ValueError, match="device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")


def test_training_compiles_only_long_runs_on_cuda(monkeypatch):
    """COURSE_COMPILE=auto: CUDA graphs on CUDA from COMPILE_MIN_STEPS steps on; never on the CPU or MPS."""
    long, short = COMPILE_MIN_STEPS, COMPILE_MIN_STEPS - 1
    monkeypatch.delenv("COURSE_COMPILE", raising=False)
    assert training_compile("cuda", long) == "reduce-overhead" and training_compile("cuda:1", short) is False
    assert training_compile("cpu", 10**6) is False and training_compile("mps", 10**6) is False
    for mode, on_cuda in (("off", False), ("default", True), ("reduce-overhead", "reduce-overhead"), ("AUTO", False)):
        monkeypatch.setenv("COURSE_COMPILE", mode)
        assert training_compile(torch.device("cuda"), short) == on_cuda
        assert training_compile("cpu", long) is False


def test_seed_everything_repeats_numbers():
    seed_everything(5)
    a = torch.randn(3)
    seed_everything(5)
    assert torch.equal(a, torch.randn(3))
    with pytest.raises(ValueError):
        seed_everything(-1)


def test_autocast_is_bf16_only_on_cuda():
    assert autocast_dtype("cpu") is None


def test_course_autocast_sets_the_precision_policy(monkeypatch):
    """auto: bf16 on CUDA only; bf16: on a CPU too (not on MPS); off: fp32 everywhere, CUDA included."""
    import course_lib.device as device_module

    monkeypatch.setenv("COURSE_AUTOCAST", "bf16")
    assert autocast_dtype("cpu") is torch.bfloat16
    assert autocast_dtype("mps") is None
    x = torch.randn(4, 8)
    with device_module.autocast("cpu"):
        assert (x @ x.T).dtype is torch.bfloat16  # the context really autocasts
    monkeypatch.setenv("COURSE_AUTOCAST", "off")
    monkeypatch.setattr(device_module, "bf16_supported", lambda device: True)  # a GPU that has bf16
    assert autocast_dtype("cuda") is None
    with device_module.autocast("cpu"):
        assert (x @ x.T).dtype is torch.float32
    monkeypatch.setenv("COURSE_AUTOCAST", "auto")
    assert autocast_dtype("cuda") is torch.bfloat16
    monkeypatch.setattr(device_module, "bf16_supported", lambda device: False)
    assert autocast_dtype("cpu") is None
    monkeypatch.setenv("COURSE_AUTOCAST", "fp16")
    with pytest.raises(ValueError, match="COURSE_AUTOCAST must be one of auto, bf16, off; got 'fp16'"):
        autocast_dtype("cpu")



def test_pick_device_names_the_gpu_by_index(monkeypatch):
    """A tensor on the GPU reports cuda:0, not cuda: pick_device says the same, so that device comparisons hold and
    caches keyed by the device's name (text encoders) do not load a model twice."""
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert pick_device() == torch.device("cuda", 0) and str(pick_device()) == "cuda:0"
    assert pick_device("cuda") == torch.device("cuda", 0)
    assert pick_device("cuda:1") == torch.device("cuda", 1)


def _strict_draws(monkeypatch):
    """torch's draws under CUDA's rule on every device: a generator fills tensors on its own device only.

    On a CPU-only machine the rule never bites (meta tensors take a CPU generator), so it is
    emulated: each draw given a generator must be asked for on that generator's device."""
    for name in ("randn", "rand", "randint"):
        real = getattr(torch, name)

        def strict(*args, real=real, name=name, **kwargs):
            gen, dev = kwargs.get("generator"), kwargs.get("device")
            if gen is not None and torch.device(dev if dev is not None else "cpu").type != gen.device.type:
                raise RuntimeError(f"torch.{name}: a {gen.device.type} generator asked to draw on {dev}")
            return real(*args, **kwargs)

        monkeypatch.setattr(torch, name, strict)


def test_a_cpu_generator_serves_tensors_on_any_device(monkeypatch):
    """Every library function that takes a learner's generator draws on the generator's device and moves the
    draws: one seeded CPU generator gives the same noise on a laptop and on a GPU (meta stands in for the GPU)."""
    from course_lib.flow import flow_matching_loss, sample_times
    from course_lib.nn.unet import UNet, UNetConfig
    from course_lib.nn.vae import reparameterize
    from course_lib.samplers import ddim_step, ddpm_step
    from course_lib.schedules import NoiseSchedule
    from course_lib.train import diffusion_loss

    _strict_draws(monkeypatch)
    with pytest.raises(RuntimeError, match="generator asked to draw"):  # the emulated rule holds
        torch.randn(2, generator=torch.Generator(), device="meta")
    meta, gen = torch.device("meta"), torch.Generator().manual_seed(0)
    schedule = NoiseSchedule.linear(num_steps=50)
    x, eps = torch.zeros(2, 1, 8, 8, device=meta), torch.zeros(2, 1, 8, 8, device=meta)
    assert ddpm_step(schedule, x, eps, 10, generator=gen).device == meta
    assert ddim_step(schedule, x, eps, 10, 5, eta=1.0, generator=gen).device == meta
    assert reparameterize(x, x, generator=gen).device == meta
    assert sample_times(3, gen, meta).device == meta
    assert sample_times(3, gen, meta, kind="uniform").device == meta
    model = UNet(UNetConfig(image_size=8, channels=(8, 16), blocks=(1, 1), attention=(False, False),
                            head_dim=8, groups=4)).to(meta)
    assert diffusion_loss(model, schedule, x, generator=gen).device == meta
    assert flow_matching_loss(model, x, generator=gen).device == meta
    # and on one device nothing changed: the same draws as torch's own
    cpu_noise = reparameterize(torch.zeros(4), torch.zeros(4), generator=torch.Generator().manual_seed(3))
    assert torch.equal(cpu_noise, torch.randn(4, generator=torch.Generator().manual_seed(3)))

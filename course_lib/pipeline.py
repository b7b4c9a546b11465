r"""A small Stable Diffusion: text → latent diffusion → VAE decoder (lesson 09).

Every piece comes from an earlier lesson; this module only wires them together the way
diffusers' ``StableDiffusionPipeline`` does:

    prompt ─ text encoder (frozen) ─ c: N×L×384 ──────────────┐
    z_T ~ N(0, I): N×4×8×8 ─ [ U-Net ε_θ(z_t, t, c), CFG, DDIM step ] × steps ─ z_0 ─ VAE decoder ─ x: N×1×32×32

The U-Net works on *scaled* latents z = s · μ_φ(x) (``VAE.encode_latents``; s the VAE's
``scaling_factor``, so z has about unit variance), and every step uses classifier-free
guidance with the negative prompt as the unconditional branch:

    ε̃ = ε_θ(z_t, t, c_neg) + w · (ε_θ(z_t, t, c) − ε_θ(z_t, t, c_neg)),   c_neg = E("") by default.

Three ways to use it:

- **text-to-image** (``pipe(prompt)``): z_T is pure noise.
- **image-to-image** (``pipe.img2img(image, prompt, strength)``): z_0 = s · μ_φ(image) is
  noised part of the way, z_{t_k} = sqrt(abar_{t_k}) z_0 + sqrt(1 − abar_{t_k}) ε, and only the
  last steps of the sampler run from there (SDEdit, Meng et al. 2022).
- **inpainting** (``pipe.inpaint(image, mask, prompt)``): the known region of the latent is
  overwritten at every step by the noised latent of the original ("inpainting by blending",
  as diffusers' legacy ``StableDiffusionInpaintPipelineLegacy``, with the same start noise at
  every step; RePaint draws fresh noise instead and adds resampling jumps), and the known
  pixels are pasted back at the end.

Latents are not images: they are *not* clamped to [−1, 1] while sampling (the lesson 04
samplers clamp x̂_0 by default, which would cut off most of a unit-variance latent). Only the
decoded images are clamped.

:func:`train_latent_text_model`, :func:`cached_pipeline` and :func:`pipeline_recipe` train the
latent U-Net on a dataset's VAE latents and cache the whole pipeline; :meth:`save` writes the
folder layout a diffusers user knows (``model_index.json``, ``unet/``, ``vae/``, ``scheduler/``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .device import check_seed, pick_device, training_compile
from .nn.unet import ARCHITECTURE, UNet, UNetConfig
from .nn.vae import VAE, VAE_ARCHITECTURE, VAEConfig
from .samplers import (
    DEFAULT_SPACING,
    SPACINGS,
    _check_eta,
    _check_sampler,
    _conditioned_eps_fn,
    sample_loop,
    sampler_timesteps,
)
from .schedules import NoiseSchedule, q_sample
from .settings import get_settings

#: Bump when the saved layout or the training recipe's code path changes: cache keys include it.
PIPELINE_FORMAT = "sd-v1"

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"

#: spacing None: the sampler's own (samplers.DEFAULT_SPACING; "leading" for DDIM, "linspace" for DPM-Solver++)
DEFAULTS = {"steps": 25, "guidance_scale": 3.0, "sampler": "ddim", "eta": 0.0, "spacing": None}


class LatentDiffusionPipeline:
    r"""Text encoder (frozen, loaded lazily) + VAE + latent U-Net + noise schedule + sampler defaults.

    vae: a :class:`~course_lib.nn.vae.VAE` whose ``scaling_factor`` is set (images
    N×C×H×W ↔ latents N×c×h×w); unet: a :class:`~course_lib.nn.unet.UNet` with
    ``in_channels = c``, ``image_size = h`` and ``context_dim`` = the text encoder's width;
    schedule: the :class:`~course_lib.schedules.NoiseSchedule` the U-Net was trained with;
    text_encoder: a loaded ``TextEncoder``, or the name ``text.load_text_encoder`` takes
    (None: ``COURSE_TEXT_ENCODER``, else the bundled all-MiniLM-L6-v2), loaded on first use;
    defaults: the sampler settings a call uses when it does not say (``steps``,
    ``guidance_scale``, ``sampler``, ``eta``, ``spacing``; see :data:`DEFAULTS`).

    Both networks are put in eval mode; they run on the U-Net's device (move them with
    :meth:`to`). Same seed → same images on a given device.
    """

    def __init__(self, vae: VAE, unet: UNet, schedule: NoiseSchedule, text_encoder=None,
                 defaults: dict | None = None):
        if not isinstance(vae, VAE):
            raise ValueError(f"vae must be a course_lib VAE, got {type(vae).__name__}")
        if not isinstance(unet, UNet):
            raise ValueError(f"unet must be a course_lib UNet, got {type(unet).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        ucfg = unet.config
        if ucfg.context_dim is None:
            raise ValueError("the U-Net must be text-conditioned: UNetConfig(context_dim=...) is None")
        latent = vae.config.latent_shape
        if (ucfg.in_channels, ucfg.image_size, ucfg.image_size) != latent:
            raise ValueError(
                f"the U-Net must work on the VAE's latents {latent} (in_channels, image_size, image_size); "
                f"got in_channels={ucfg.in_channels}, image_size={ucfg.image_size}"
            )
        if text_encoder is not None and not isinstance(text_encoder, str) and not hasattr(text_encoder, "encode"):
            raise ValueError(f"text_encoder must be a TextEncoder, a name or None, got {type(text_encoder).__name__}")
        self.vae = vae.eval()
        self.unet = unet.eval()
        self.schedule = schedule
        self._text_encoder = None if isinstance(text_encoder, str) else text_encoder
        self.text_encoder_name = text_encoder if isinstance(text_encoder, str) else _encoder_name(text_encoder)
        self.defaults = _check_defaults({**DEFAULTS, **(defaults or {})}, schedule)
        self.training: dict = {}  # filled by train_latent_text_model: losses, seconds, from_cache

    # ------------------------------------------------------------------ plumbing
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(c, h, w) of one latent: the VAE's ``latent_shape``, e.g. (4, 8, 8)."""
        return self.vae.config.latent_shape

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image, e.g. (1, 32, 32)."""
        cfg = self.vae.config
        return (cfg.in_channels, cfg.image_size, cfg.image_size)

    @property
    def text_encoder(self):
        """The frozen text encoder on the pipeline's device, loaded on first use and shared."""
        enc = self._text_encoder
        if enc is None or torch.device(enc.device) != self.device:
            from .text import load_text_encoder

            enc = self._text_encoder = load_text_encoder(self.text_encoder_name, device=self.device)
        return enc

    def to(self, device: torch.device | str) -> LatentDiffusionPipeline:
        """Move the VAE and the U-Net (the text encoder follows on its next use); returns self."""
        device = torch.device(device)
        self.vae.to(device)
        self.unet.to(device)
        return self

    def __repr__(self) -> str:
        return (f"LatentDiffusionPipeline(vae={self.vae.num_parameters():,} params, "
                f"unet={self.unet.num_parameters():,} params, {self.schedule}, "
                f"latents={self.latent_shape}, defaults={self.defaults})")

    # ------------------------------------------------------------------ checks
    def _check_image(self, image, name: str = "image") -> torch.Tensor:
        want = self.image_shape
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or tuple(image.shape[1:]) != want:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"{name} must be N×{want[0]}×{want[1]}×{want[2]} in [-1, 1], got {got}")
        if len(image) < 1:
            raise ValueError(f"{name} must hold at least one image")
        if not image.dtype.is_floating_point:
            raise ValueError(f"{name} must be a float tensor in [-1, 1], got dtype {image.dtype}")
        return image.to(self.device, torch.float32)

    def _settings(self, steps, guidance_scale, sampler, eta) -> dict:
        s = _check_defaults({
            "steps": self.defaults["steps"] if steps is None else steps,
            "guidance_scale": self.defaults["guidance_scale"] if guidance_scale is None else guidance_scale,
            "sampler": self.defaults["sampler"] if sampler is None else sampler,
            "eta": self.defaults["eta"] if eta is None else eta,
            "spacing": self.defaults["spacing"],
        }, self.schedule)
        return s

    # ------------------------------------------------------------------ the VAE
    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """z_0 = s · μ_φ(image): images N×C×H×W in [-1, 1] → scaled latents N×c×h×w."""
        return self.vae.encode_latents(self._check_image(image)).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """x = D(z / s) clamped to [-1, 1]: scaled latents N×c×h×w → images N×C×H×W."""
        return self.vae.decode_latents(latents.to(self.device)).float().clamp(-1, 1)

    # ------------------------------------------------------------------ the sampling core
    @torch.no_grad()
    def denoise(self, prompt, n: int, *, negative_prompt=None, steps=None, guidance_scale=None,
                seed: int | None = 0, sampler=None, eta=None, start: int = 0, z0: torch.Tensor | None = None,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        r"""Run the sampler in latent space → z_0, N×c×h×w (scaled latents, not clamped).

        With ts = ``sampler_timesteps(schedule, steps, spacing, sampler)`` (descending) the sampler visits
        ts[start:]. The noise ε ~ N(0, I) (N×c×h×w) is always the first draw from the seeded
        generator, as in txt2img, so the same seed gives the same ε in every mode. The start:

        - ``start = 0``: z = ε, pure noise (txt2img; also img2img at strength 1, whatever z0 is).
        - ``start > 0`` (needs ``z0``): z_{t} = sqrt(abar_t) z0 + sqrt(1 − abar_t) ε at t = ts[start].

        ``keep`` (N×1×h×w or N×c×h×w in [0, 1], needs ``z0``) marks the known latent cells: at the
        start and after every step to t', z ← keep · q(z0, t', ε) + (1 − keep) · z, with the same ε
        (and z0 itself after the last step). If start = len(ts) no step runs and z0 is returned.
        """
        s = self._settings(steps, guidance_scale, sampler, eta)
        ts = sampler_timesteps(self.schedule, s["steps"], s["spacing"], s["sampler"])
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= len(ts):
            raise ValueError(f"start must be an int in 0..{len(ts)} (the number of steps), got {start!r}")
        if (start > 0 or keep is not None) and z0 is None:
            raise ValueError("start > 0 and keep= need the clean latents z0")
        device = self.device
        shape = (n, *self.latent_shape)
        if z0 is not None:
            z0 = z0.to(device, torch.float32)
            if tuple(z0.shape) != shape:
                raise ValueError(f"z0 must have shape {shape}, got {tuple(z0.shape)}")
        ts = ts[start:]
        if not ts:
            return z0
        eps_fn = _conditioned_eps_fn(self.unet, n, None, prompt, negative_prompt, s["guidance_scale"],
                                     self.text_encoder, None, device)
        generator = torch.Generator(device=device)
        generator.manual_seed(check_seed(seed))
        noise = torch.randn(shape, generator=generator, device=device)
        z = noise if start == 0 else _noised(self.schedule, z0, ts[0], noise)

        callback = None
        if keep is not None:
            keep = keep.to(device, torch.float32)

            def blend(z_now: torch.Tensor, t: int) -> torch.Tensor:
                known = z0 if t < 0 else _noised(self.schedule, z0, t, noise)
                return keep * known + (1 - keep) * z_now

            z = blend(z, ts[0])

            def callback(i: int, t: int, z_new: torch.Tensor) -> None:
                # sample_loop goes on with this very tensor, so blend it in place.
                t_prev = ts[i + 1] if i + 1 < len(ts) else -1
                z_new.copy_(blend(z_new, t_prev))

        was_training = self.unet.training
        self.unet.eval()
        try:
            return sample_loop(eps_fn, self.schedule, z, ts, s["sampler"], s["eta"], generator,
                               clip_x0=False, callback=callback)
        finally:
            self.unet.train(was_training)

    # ------------------------------------------------------------------ the three modes
    def __call__(self, prompt, negative_prompt=None, steps: int | None = None, guidance_scale: float | None = None,
                 seed: int | None = 0, num_images: int | None = None, sampler: str | None = None,
                 eta: float | None = None, return_latents: bool = False):
        r"""Text-to-image: N×C×H×W images in [-1, 1] (e.g. N×1×32×32).

        z_T ~ N(0, I) of shape N×c×h×w (seeded), ``steps`` sampler steps with guidance
        ε̃ = ε(z, t, c_neg) + w (ε(z, t, c) − ε(z, t, c_neg)), then x = D(z_0 / s).

        prompt: a string (for all ``num_images``, default 1) or a list of N strings;
        negative_prompt: the unconditional branch c_neg (None: the empty prompt ""; a string
        or N strings); guidance_scale w (default the pipeline's); sampler "ddim" (default),
        "ddpm" or "dpm++2m"; eta for DDIM. ``return_latents``: also return z_0 (a tuple).
        """
        n = _count(prompt, num_images)
        z = self.denoise(prompt, n, negative_prompt=negative_prompt, steps=steps, guidance_scale=guidance_scale,
                         seed=seed, sampler=sampler, eta=eta)
        images = self.decode(z)
        return (images, z) if return_latents else images

    txt2img = __call__

    def img2img(self, image: torch.Tensor, prompt, strength: float = 0.6, steps: int | None = None,
                guidance_scale: float | None = None, seed: int | None = 0, negative_prompt=None,
                sampler: str | None = None, eta: float | None = None) -> torch.Tensor:
        r"""Image-to-image (SDEdit): keep the layout of ``image``, redraw it towards ``prompt``.

        image: N×C×H×W in [-1, 1]; strength ∈ [0, 1]: how much of the schedule is redone.
        Stable Diffusion's convention (diffusers' ``StableDiffusionImg2ImgPipeline.get_timesteps``):
        of the ``steps`` timesteps ts, the last k = int(steps · strength) run, starting at
        index start = steps − k:

            z_0 = s · μ_φ(image),  z_{ts[start]} = sqrt(abar) z_0 + sqrt(1 − abar) ε,  then ts[start:] → z_0'.

        strength 0 (k = 0) runs no step and returns the VAE reconstruction D(μ_φ(image)) exactly;
        strength 1 starts from ε itself, pure noise, and ignores the image: the result is
        txt2img's for the same seed (diffusers would keep sqrt(abar_{ts[0]}) z_0, a faint trace
        of the input, since "leading" timesteps stop short of T − 1). ε is the same first draw
        of the seeded generator as in txt2img. Returns N×C×H×W in [-1, 1].
        """
        strength = _check_strength(strength)
        s = self._settings(steps, guidance_scale, sampler, eta)
        z0 = self.encode(image)
        n = len(z0)
        k = min(int(s["steps"] * strength), s["steps"])
        z = self.denoise(prompt, n, negative_prompt=negative_prompt, steps=steps, guidance_scale=guidance_scale,
                         seed=seed, sampler=sampler, eta=eta, start=s["steps"] - k, z0=z0)
        return self.decode(z)

    def inpaint(self, image: torch.Tensor, mask: torch.Tensor, prompt, steps: int | None = None,
                guidance_scale: float | None = None, seed: int | None = 0, negative_prompt=None,
                sampler: str | None = None, eta: float | None = None, paste: bool = True) -> torch.Tensor:
        r"""Inpainting by blending: repaint where ``mask`` is 1, keep the rest of ``image``.

        image: N×C×H×W in [-1, 1]; mask: N×1×H×W (or 1×1×H×W for all) in [0, 1], 1 = repaint.
        The mask goes to the latent grid by max-pooling over each f×f patch (a latent cell is
        repainted if any of its pixels is), m: N×1×h×w. With z_0 = s · μ_φ(image) and the
        txt2img noise ε, the chain starts from pure noise and after every step to t':

            z_{t'} ← (1 − m) · (sqrt(abar_{t'}) z_0 + sqrt(1 − abar_{t'}) ε) + m · z_{t'}

        (z_0 itself after the last step): the model only ever sees a known region that is
        consistent with the original at the current noise level, and fills the hole to match.
        This is the blending of diffusers' legacy SD inpainting (RePaint noises the known region
        afresh at every step and adds resampling jumps), not a U-Net trained with the mask as
        input (SD-inpainting's 9 channels).

        With ``paste`` (default) the unmasked pixels are copied from ``image`` at the end,
        x = mask · x̂ + (1 − mask) · image, so they are kept *exactly*; without it they are
        kept up to the VAE's reconstruction error. Returns N×C×H×W in [-1, 1].
        """
        image = self._check_image(image)
        n, (_, H, W) = len(image), self.image_shape
        if not isinstance(mask, torch.Tensor) or mask.dim() != 4 or mask.shape[1] != 1 \
                or tuple(mask.shape[2:]) != (H, W) or mask.shape[0] not in (1, n):
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask must be N×1×{H}×{W} (the image's size, N = {n} or 1; 1 = repaint), got {got}")
        mask = mask.to(self.device, torch.float32).expand(n, 1, H, W)
        if bool(((mask < 0) | (mask > 1) | mask.isnan()).any()):
            raise ValueError("mask values must lie in [0, 1] (1 = repaint, 0 = keep)")
        f = self.vae.config.factor
        m = F.max_pool2d(mask, kernel_size=f, stride=f) if f > 1 else mask
        z0 = self.encode(image)
        z = self.denoise(prompt, n, negative_prompt=negative_prompt, steps=steps, guidance_scale=guidance_scale,
                         seed=seed, sampler=sampler, eta=eta, z0=z0, keep=1 - m)
        out = self.decode(z)
        return mask * out + (1 - mask) * image.clamp(-1, 1) if paste else out

    # ------------------------------------------------------------------ save / load
    def save(self, folder: str | Path) -> Path:
        """Write the pipeline as a folder a diffusers user recognises (atomically; replaces ``folder``)::

            model_index.json                       the components, the text encoder's name, sampler defaults
            unet/config.json, unet/diffusion_pytorch_model.safetensors
            vae/config.json,  vae/diffusion_pytorch_model.safetensors   (config holds scaling_factor)
            scheduler/scheduler_config.json        diffusers' DDIMScheduler config + the course schedule

        The text encoder is frozen and ships with the course, so only its name is stored.
        Weights are safetensors; the configs are the course's own (``UNetConfig``, ``VAEConfig``),
        so diffusers cannot load the networks, but a reader finds everything where SD keeps it.
        """
        from .diffusers_bridge import to_diffusers_config
        from .text import BUNDLED

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            for name, model, cfg in (
                ("unet", self.unet, {"_class_name": "UNet", "architecture": ARCHITECTURE,
                                     **self.unet.config.to_dict()}),
                ("vae", self.vae, {"_class_name": "VAE", "architecture": VAE_ARCHITECTURE,
                                   "scaling_factor": self.vae.scaling_factor, **self.vae.config.to_dict()}),
            ):
                (tmp / name).mkdir()
                state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
                save_file(state, tmp / name / WEIGHTS_NAME)
                _write_json(tmp / name / "config.json", cfg)
            (tmp / "scheduler").mkdir()
            spacing = self.defaults["spacing"] or DEFAULT_SPACING["ddim"]
            extra = {}
            if spacing == "logsnr":  # no diffusers spacing: DDIMScheduler gets its own default, and a note
                spacing = DEFAULT_SPACING["ddim"]
                extra["course_note"] = ("the pipeline samples on the course's 'logsnr' grid "
                                        "(course_lib.samplers.logsnr_timesteps), which DDIMScheduler cannot visit")
            _write_json(tmp / "scheduler" / "scheduler_config.json",
                        {"_class_name": "DDIMScheduler", **to_diffusers_config(self.schedule),
                         "timestep_spacing": spacing, "course_schedule": self.schedule.config(), **extra})
            encoder_name = self.text_encoder_name or get_settings().text_encoder or BUNDLED
            _write_json(tmp / "model_index.json", {
                "_class_name": "LatentDiffusionPipeline",
                "_course_lib_format": PIPELINE_FORMAT,
                "unet": ["course_lib.nn.unet", "UNet"],
                "vae": ["course_lib.nn.vae", "VAE"],
                "scheduler": ["diffusers", "DDIMScheduler"],
                "text_encoder": {"name": encoder_name, "note": "frozen; loaded with course_lib.text.load_text_encoder"},
                "defaults": self.defaults,
                "training": self.training,
            })
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str | None = None) -> LatentDiffusionPipeline:
        """Rebuild a pipeline from :meth:`save`'s folder on ``device`` (None: ``pick_device()``)."""
        folder = Path(folder)
        index_path = folder / "model_index.json"
        needed = [index_path, folder / "scheduler" / "scheduler_config.json"] + [
            folder / part / name for part in ("unet", "vae") for name in ("config.json", WEIGHTS_NAME)]
        missing = [str(p.relative_to(folder)) for p in needed if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a saved pipeline: missing {', '.join(missing)}")
        index = json.loads(index_path.read_text())
        if index.get("_class_name") != "LatentDiffusionPipeline":
            raise ValueError(f"{index_path} is not a LatentDiffusionPipeline's (class {index.get('_class_name')!r})")
        device = pick_device(device) if not isinstance(device, torch.device) else device

        def config(part: str) -> dict:
            cfg = json.loads((folder / part / "config.json").read_text())
            skip = ("architecture", "scaling_factor")
            return {k: v for k, v in cfg.items() if not k.startswith("_") and k not in skip}

        vae_info = json.loads((folder / "vae" / "config.json").read_text())
        vae = VAE(VAEConfig.from_dict(config("vae")), scaling_factor=vae_info.get("scaling_factor", 1.0))
        unet = UNet(UNetConfig.from_dict(config("unet")))
        for part, model in (("vae", vae), ("unet", unet)):
            model.load_state_dict(load_file(folder / part / WEIGHTS_NAME))
        sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        schedule = NoiseSchedule.from_config(sched["course_schedule"])
        pipe = cls(vae.to(device), unet.to(device), schedule, index.get("text_encoder", {}).get("name"),
                   index.get("defaults"))
        pipe.training = index.get("training", {})
        return pipe


# ---------------------------------------------------------------------- helpers
def _encoder_name(encoder) -> str | None:
    """What ``text.load_text_encoder`` needs to load ``encoder`` again: "bundled" for the course's own
    encoder (no machine path in a saved pipeline), else its folder or hub id (``source``), not the
    short ``name`` slug, which names a folder only on the machine that made it."""
    from .text import BUNDLED, _is_bundled

    if encoder is None:
        return None
    source = getattr(encoder, "source", None)
    if getattr(encoder, "name", None) == BUNDLED or (isinstance(source, str) and _is_bundled(Path(source))):
        return BUNDLED
    return source if isinstance(source, str) and source != "table" else getattr(encoder, "name", None)


def _noised(schedule: NoiseSchedule, z0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
    """q(z_t | z_0) with given noise at one int step t for the whole batch (t checked here, on the host, so that
    the sampling loop that calls this every step never waits for the GPU)."""
    if not 0 <= t < schedule.num_steps:
        raise ValueError(f"t must lie in 0..{schedule.num_steps - 1}, got {t}")
    t_batch = torch.full((len(z0),), t, dtype=torch.long, device=z0.device)
    return q_sample(schedule, z0, t_batch, noise, check_t=False)


def _count(prompt, num_images) -> int:
    """The batch size: ``num_images``, else the number of prompts (1 for a string)."""
    if num_images is not None:
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be a positive int, got {num_images!r}")
        return num_images
    if isinstance(prompt, str):
        return 1
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        return len(prompt)
    raise ValueError(f"prompt must be a string or a non-empty list of strings, got {type(prompt).__name__}")


def _check_strength(strength) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be a number in [0, 1] (0 = keep the image, 1 = pure noise), got {strength!r}")
    return float(strength)


def _check_defaults(d: dict, schedule: NoiseSchedule) -> dict:
    unknown = set(d) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown sampler settings {sorted(unknown)}; expected {sorted(DEFAULTS)}")
    steps, w = d["steps"], d["guidance_scale"]
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= schedule.num_steps:
        raise ValueError(f"steps must be an int in 1..{schedule.num_steps} (the schedule's T), got {steps!r}")
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise ValueError(f"guidance_scale must be a finite number, got {w!r}")
    _check_sampler(d["sampler"])
    eta = _check_eta(d["eta"])
    if eta > 0 and d["sampler"] != "ddim":
        raise ValueError(f"eta applies to sampler='ddim' only, got eta={eta} with sampler={d['sampler']!r}")
    if d["spacing"] is not None and d["spacing"] not in SPACINGS:
        raise ValueError(f"unknown spacing {d['spacing']!r}; expected one of {', '.join(map(repr, SPACINGS))} "
                         "or None (the sampler's own)")
    sampler_timesteps(schedule, steps, d["spacing"], d["sampler"])  # the grid fits: refused now, not at the first call
    return {"steps": steps, "guidance_scale": float(w), "sampler": d["sampler"], "eta": eta, "spacing": d["spacing"]}


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str))


def _weights_digest(model: torch.nn.Module) -> str:
    """A short sha256 of a model's weights: keys a cache on *these* weights, not just a config."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------- training
@torch.no_grad()
def encode_dataset(vae: VAE, images: torch.Tensor, batch_size: int = 512,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """z = s · μ_φ(x) for every image, in batches: N×C×H×W in [-1, 1] → N×c×h×w float32 (on CPU).

    The posterior *mean* (no sampled noise), as Stable Diffusion's training data; s is the
    VAE's ``scaling_factor``, so z has about unit variance.
    """
    vae.check_images(images, "images")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = next(vae.parameters()).device if device is None else torch.device(device)
    was_training = vae.training
    vae.to(device).eval()
    out = [vae.encode_latents(images[i:i + batch_size].to(device, torch.float32)).float().cpu()
           for i in range(0, len(images), batch_size)]
    vae.train(was_training)
    return torch.cat(out)


def pipeline_recipe(quick: bool | None = None):
    """The course's small Stable Diffusion: (latent U-Net config, schedule, TrainConfig, sampler defaults).

    The U-Net works on the VAE's 4×8×8 latents with cross-attention to the text tokens (384
    wide for the bundled encoder; as wide as the one ``COURSE_TEXT_ENCODER`` names); the
    schedule is SD's ``scaled_linear`` (β from 0.00085 to 0.012, T = 1000); 10% of captions
    are dropped to "" so one network serves classifier-free guidance.

    Full mode (a GPU): widths 128/256/256 over 8→4→2, two ResBlocks per level, attention at
    4×4 and 2×2; 20k steps of 128 latents. Quick mode (a 2-core CPU): widths 32/64 over 8→4,
    attention at 4×4, 200 steps of 64 latents (about half a minute on an idle 2-core CPU), 20
    DDIM steps to sample: the coarse shape follows the prompt; the code path is the same.
    """
    from .text import encoder_width
    from .train import TrainConfig, _check_quick

    quick = _check_quick(quick)
    schedule = NoiseSchedule.scaled_linear(1000)
    if quick:
        unet = UNetConfig(in_channels=4, image_size=8, channels=(32, 64), blocks=(1, 1), attention=(False, True),
                          head_dim=32, groups=8, context_dim=encoder_width())
        train = TrainConfig(steps=200, batch_size=64, lr=2e-3, warmup_steps=20, ema_decay=0.98, class_dropout=0.1)
        return unet, schedule, train, {**DEFAULTS, "steps": 20}
    unet = UNetConfig(in_channels=4, image_size=8, channels=(128, 256, 256), blocks=(2, 2, 2),
                      attention=(False, True, True), head_dim=64, groups=32, context_dim=encoder_width())
    train = TrainConfig(steps=20_000, batch_size=128, lr=2e-4, warmup_steps=500, ema_decay=0.9995, class_dropout=0.1)
    return unet, schedule, train, dict(DEFAULTS)


def train_latent_text_model(
    vae: VAE,
    unet_config: UNetConfig,
    schedule: NoiseSchedule,
    train_config,
    dataset: str | None = None,
    defaults: dict | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    retrain: bool = False,
    max_images: int | None = None,
) -> LatentDiffusionPipeline:
    """Train the text-conditioned latent U-Net on ``dataset``'s VAE latents → a pipeline (cached).

    1. z = s · μ_φ(x) for every training image (:func:`encode_dataset`), N×c×h×w;
    2. ``train.train_diffusion`` on z with the labels and the caption table
       (``text.caption_embeddings(text.dataset_captions(dataset))``): each latent is paired
       with a random phrasing of its label, ``class_dropout`` of them with "";
    3. the pipeline (EMA U-Net) is saved under ``<cache>/models/sd-<dataset>-<hash>``.

    The hash covers the pipeline format, both architectures, the VAE's config, scaling factor
    and a digest of its weights (so a retrained VAE means a retrained U-Net), the U-Net config,
    the schedule, ``train_config``, the dataset and the text encoder. A later call with the same
    settings loads that folder (``pipe.training["from_cache"]`` is True). ``pipe.training``
    holds the losses and seconds of the run. ``max_images``: encode and train on a fixed random
    subset of that many training images (quick mode: encoding all 60k costs more than training).
    """
    from .data import load_images
    from .text import BUNDLED, caption_embeddings, dataset_captions
    from .train import check_cpu_budget, config_hash, seeded_init, train_diffusion

    if not isinstance(vae, VAE):
        raise ValueError(f"vae must be a course_lib VAE, got {type(vae).__name__}")
    if not isinstance(unet_config, UNetConfig) or unet_config.context_dim is None:
        raise ValueError("unet_config must be a UNetConfig with a context_dim (the text encoder's width)")
    dataset = dataset or get_settings().dataset
    encoder = get_settings().text_encoder or BUNDLED
    defaults = _check_defaults({**DEFAULTS, **(defaults or {})}, schedule)
    key = config_hash(PIPELINE_FORMAT, ARCHITECTURE, VAE_ARCHITECTURE, vae.config.to_dict(), vae.scaling_factor,
                      _weights_digest(vae), unet_config.to_dict(), schedule.config(), train_config, dataset,
                      "text:" + encoder, max_images)
    folder = get_settings().cache_dir / "models" / f"sd-{dataset}-{key}"
    if folder.exists() and not retrain:
        pipe = LatentDiffusionPipeline.load(folder, device)
        pipe.defaults = defaults
        pipe.training["from_cache"] = True
        return pipe

    device = pick_device(device) if not isinstance(device, torch.device) else device
    check_cpu_budget(device, train_config.steps, train_config.batch_size, f"the latent U-Net sd-{dataset}-{key}")
    data = load_images(dataset, "train")
    images, labels = data.images, torch.as_tensor(data.labels)
    if max_images is not None:
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise ValueError(f"max_images must be None or a positive int, got {max_images!r}")
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:max_images]
        images, labels = images[pick], labels[pick]
    latents = encode_dataset(vae.to(device), images, device=device)
    captions = caption_embeddings(dataset_captions(dataset), device=device)
    if captions.dim != unet_config.context_dim:
        raise ValueError(f"the text encoder gives {captions.dim}-wide tokens; "
                         f"the U-Net's context_dim is {unet_config.context_dim}")
    unet = seeded_init(lambda: UNet(unet_config), train_config.seed)
    result = train_diffusion(unet, schedule, latents, train_config, labels=labels, device=device,
                             progress=progress, captions=captions, caption_dataset=dataset,
                             compile=training_compile(device, train_config.steps))  # CUDA graphs: full mode, GPU
    pipe = LatentDiffusionPipeline(vae, result.model, schedule, None, defaults)
    pipe.training = {"dataset": dataset, "train": asdict(train_config), "losses": result.losses,
                     "seconds": result.seconds, "latent_std": float(latents.std()), "from_cache": False}
    if not folder.exists() or retrain:
        pipe.save(folder)
    return pipe


def cached_pipeline(quick: bool | None = None, dataset: str | None = None, device: torch.device | str | None = None,
                    progress: bool = True, retrain: bool = False) -> LatentDiffusionPipeline:
    """The course's small Stable Diffusion, trained once and cached: lesson 09's one-liner.

    The VAE of ``train.vae_recipe(quick)`` (``train.cached_vae``, which measures its scaling
    factor), then the latent U-Net of :func:`pipeline_recipe` (``quick``) trained on its latents
    by :func:`train_latent_text_model`. ``retrain`` retrains the U-Net only.
    Quick mode trains on a fixed subset of 8192 images (``max_images``).
    """
    from .train import cached_vae, vae_recipe

    quick = get_settings().quick if quick is None else quick
    vae_config, vae_train = vae_recipe(quick)
    vae = cached_vae(vae_config, vae_train, dataset, device=device, progress=progress).model
    unet_config, schedule, train_config, defaults = pipeline_recipe(quick)
    return train_latent_text_model(vae, unet_config, schedule, train_config, dataset, defaults, device,
                                   progress, retrain, max_images=8192 if quick else None)

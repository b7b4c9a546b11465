r"""Training a noise predictor, and keeping what was trained.

The DDPM objective (Ho et al. 2020, "simple" loss): draw an image x_0, a step
t ~ U{0 … T−1} and noise ε ~ N(0, I); make x_t = sqrt(abar_t) x_0 + sqrt(1 − abar_t) ε
and ask the network to say which noise was added:

    L(θ) = E_{x_0, t, ε} ‖ ε − ε_θ(x_t, t) ‖²

The loop below is the whole recipe: AdamW, a short warm-up, gradient clipping, an
exponential moving average (EMA) of the weights for sampling, bf16 autocast on CUDA.
The data sit on the device as one tensor (these datasets are small), so there is
no DataLoader in the way.

Checkpoints are a folder: ``model.safetensors`` (weights) and ``config.json`` (what
rebuilds the model). :func:`cached_train` keys them by a hash of every setting that
changes the result, so a later lesson reuses a model an earlier one trained.

Beyond one GPU: under ``torchrun`` (see :mod:`course_lib.distributed`) the same
:func:`train_diffusion` wraps the model in DistributedDataParallel and each rank trains
on its share of the global batch; ``python -m course_lib.train_ddp`` is a ready script.

Lesson 05's VAE trains with the same loop pieces: :func:`vae_loss` (reconstruction +
β·KL), :func:`train_vae`, :func:`cached_vae` (which also measures the latent scaling
factor) and :func:`vae_recipe`; its checkpoints use the same folder format. Lesson 10's
:func:`train_controlnet` trains a ControlNet beside a frozen U-Net with the same ε-loss.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import numbers
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .data import CAPTIONS, check_labels
from .data import _check_name as _check_dataset
from .device import (
    autocast,
    compile_model,
    pick_device,
    randint,
    randn,
    restores_global_rng,
    seed_everything,
    training_compile,
)
from .distributed import is_main_process, rank_and_world
from .flow import flow_matching_loss
from .guidance import drop_condition
from .nn.blocks import check_positive_int
from .nn.controlnet import ControlledUNet
from .nn.unet import ARCHITECTURE, UNet, UNetConfig
from .nn.vae import VAE, VAE_ARCHITECTURE, VAEConfig, VAEOutput, kl_divergence, latent_scaling_factor
from .schedules import NoiseSchedule, q_sample
from .settings import get_settings
from .text import NULL_ID, caption_ids, dataset_captions, encoder_width, lookup

CHECKPOINT_FORMAT = 1


#: the training configs' whole-number fields, and the numbers that must be > 0 or ≥ 0
_INT_FIELDS = ("steps", "batch_size", "warmup_steps", "ema_start", "seed")
_POSITIVE = ("lr",)
_NON_NEGATIVE = ("weight_decay", "grad_clip", "warmup_steps", "ema_start", "ema_decay", "class_dropout", "beta")


def _check_fields(config) -> None:
    """Types and signs of a training config's fields, each named: a string or a float step count would otherwise
    fail deep inside ``range`` or AdamW (``TrainConfig(steps="100")``, ``lr="1e-3"``)."""
    name = type(config).__name__
    for key in (f.name for f in fields(config)):
        v = getattr(config, key)
        if key in _INT_FIELDS:
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"{name}.{key} must be an int, got {v!r} ({type(v).__name__})")
        elif v is None or key == "cosine_decay":
            continue
        elif isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise TypeError(f"{name}.{key} must be a finite number, got {v!r} ({type(v).__name__})")
        if key in _POSITIVE and not v > 0:
            raise ValueError(f"{name}.{key} must be > 0, got {v!r}")
        if key in _NON_NEGATIVE and v < 0:
            raise ValueError(f"{name}.{key} must be ≥ 0, got {v!r}")


@dataclass
class TrainConfig:
    """The training budget and recipe."""

    steps: int = 10_000
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_start: int = 0  # steps before the EMA starts following the weights
    class_dropout: float = 0.0  # share of labels replaced by "no class" (for guidance)
    seed: int = 0
    min_snr_gamma: float | None = None  # weigh each image's loss by min(SNR_t, γ)/SNR_t (diffusion_loss); None: 1

    def __post_init__(self):
        _check_fields(self)
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be ≥ 1, got {self.steps} and {self.batch_size}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.class_dropout <= 1.0:
            raise ValueError(f"class_dropout must lie in [0, 1], got {self.class_dropout}")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be None (no weighting) or > 0, got {self.min_snr_gamma}")


@dataclass
class TrainResult:
    model: nn.Module  # the EMA weights, in eval mode: the one to sample from
    raw_model: nn.Module  # the weights the optimiser moved last (from the cache: the EMA model, the one saved)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0
    from_cache: bool = False
    # images/s after the first steps (kernel selection, allocation, compilation) are over
    steady_images_per_second: float = 0.0


class EMA:
    r"""θ_ema ← d·θ_ema + (1 − d)·θ after each step; the average samples better than θ.

    The decay warms up as min(d, (1 + k)/(10 + k)) over the first steps k so the
    average is not dominated by the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


def _check_training_images(images, name: str = "images", pixels: bool = False) -> None:
    """The data a training run gets: a float N×C×H×W tensor, N ≥ 1, not 0..255 pixels. Read once on the host
    before training (one sync per run, none per step). ``pixels``: the data must be images in [-1, 1] (the VAE's);
    otherwise scaled VAE latents (about unit variance) pass too, so only values beyond ±20 are refused."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        got = f"shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a tensor N×C×H×W, got {got}")
    if len(images) == 0:
        raise ValueError(f"{name} is empty: expected at least one image")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be float in [-1, 1], got {images.dtype}: 0..255 pixels? use x / 127.5 − 1")
    lo, hi = float(images.min()), float(images.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or infinite values")
    limit = 1.0 + 1e-3 if pixels else 20.0
    if max(-lo, hi) > limit:
        raise ValueError(f"{name} must be in [-1, 1]{'' if pixels else ' (or scaled VAE latents)'}, got values from "
                         f"{lo:g} to {hi:g}" + (": 0..255 pixels? use x / 127.5 − 1" if lo >= 0 else ""))
    if lo >= 0 and hi <= 1 and hi > 0:
        warnings.warn(f"{name} lie in [0, 1] ({lo:g} to {hi:g}); the course's models and samplers work in [-1, 1]: "
                      "use x * 2 − 1", stacklevel=3)


def diffusion_loss(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    context=None,
    rows: slice | None = None,
    amp: bool = True,
    memory_format: torch.memory_format | None = None,
    min_snr_gamma: float | None = None,
) -> torch.Tensor:
    """‖ε − ε_θ(x_t, t[, c])‖² averaged over a batch x0 (N×C×H×W) with random t and ε.

    With ``min_snr_gamma`` γ each image's squared error is weighted by w_t = min(SNR_t, γ)/SNR_t
    (the Min-SNR strategy of Hang et al., 2023). Since x̂_0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t gives
    ‖ε − ε̂‖² = SNR_t·‖x_0 − x̂_0‖², the weighted loss is min(SNR_t, γ)·‖x_0 − x̂_0‖²: the nearly
    clean steps (SNR_t > γ), which only polish details, no longer outweigh the noisy ones, where
    the layout and the class of the image are decided. None: every w_t = 1.

    The condition c: ``labels`` (N,) for a class model, ``context`` (a TextEmbedding N×L×D)
    for a text model. ``rows`` keeps only those rows of the batch *after* t and ε are drawn
    for all N: a data-parallel rank's share, drawn from the same random numbers one
    process would use for the whole batch. ``amp``: bf16 autocast on CUDA (off: fp32
    everywhere); ``memory_format``: the layout x_t is handed to the model in.
    """
    if min_snr_gamma is not None and not (isinstance(min_snr_gamma, (int, float)) and min_snr_gamma > 0):
        raise ValueError(f"min_snr_gamma must be None (no weighting) or > 0, got {min_snr_gamma!r}")
    n = len(x0)
    t = randint(schedule.num_steps, (n,), generator, x0.device)  # drawn on the generator's device, moved
    noise = randn(x0.shape, generator, x0.device)
    if rows is not None:
        x0, t, noise = x0[rows], t[rows], noise[rows]
        labels = labels[rows] if labels is not None else None
        context = context[rows] if context is not None else None
    x_t = q_sample(schedule, x0, t, noise, check_t=False)  # t was drawn in range just above: no sync on a GPU
    if memory_format is not None:
        x_t = x_t.contiguous(memory_format=memory_format)
    with autocast(x0.device) if amp else contextlib.nullcontext():
        if context is not None:
            pred = model(x_t, t, labels, context=context)
        else:
            pred = model(x_t, t) if labels is None else model(x_t, t, labels)
    if min_snr_gamma is None:
        return F.mse_loss(pred.float(), noise)
    weight = (min_snr_gamma / schedule.gather(schedule.snr, t, noise)).clamp(max=1.0)  # min(SNR, γ)/SNR; 1 at SNR 0
    return (weight * (pred.float() - noise).pow(2)).mean()  # equal C·H·W terms per image: the mean of weighted means


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then constant."""
    return config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))


@restores_global_rng
def train_diffusion(
    model: nn.Module,
    schedule: NoiseSchedule,
    images: torch.Tensor,
    config: TrainConfig | None = None,
    labels: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    captions=None,
    caption_dataset: str | None = None,
    *,
    amp: bool = True,
    channels_last: bool = False,
    compile: bool | str = False,
    fused: bool | None = None,
    objective: str = "eps",
) -> TrainResult:
    """Train ``model`` to predict noise on ``images`` (N×C×H×W in [-1, 1]).

    With ``labels`` (N,) and a class model (``num_classes``) the model is trained
    class-conditionally; ``class_dropout`` then replaces that share of labels by the "no
    class" token. A text model (``context_dim``) is trained on captions instead: each
    image gets a random phrasing of its label (``text.caption_ids``), looked up in
    ``captions`` (the encoded ``text.dataset_captions(caption_dataset)``, row 0 the empty
    prompt), and ``class_dropout`` of them are replaced by the empty prompt, the null
    condition of classifier-free guidance. Returns a :class:`TrainResult` holding the EMA
    model (eval mode) and the loss of every step.

    Inside a torch.distributed process group (``distributed.init_distributed()`` under
    torchrun) the model is wrapped in DistributedDataParallel and ``batch_size`` is the
    *global* batch: every rank draws the same indices, t and ε as one process would from
    the seeded generator and keeps its slice, rank r rows r·B/W … (r+1)·B/W; DDP averages
    the gradients, so each step matches one process up to float summation order. The
    losses are the mean over all ranks; the EMA is updated alike on every rank, so every
    rank returns the same (unwrapped) models; only rank 0 shows progress (its share's loss).

    Speed switches (they change how fast, not what is computed, so no cache key holds them):
    ``amp`` bf16 autocast on CUDA (default on; off = fp32); ``channels_last`` NHWC layout for
    the weights and activations; ``compile`` ``torch.compile`` the model (True, or a mode such
    as "max-autotune" or "reduce-overhead", which adds CUDA graphs); when compiling fails on the
    first step the run warns and goes on uncompiled; ``fused`` the fused AdamW kernel (None: on
    CUDA). ``TrainResult.steady_images_per_second`` leaves out the first steps, where kernels
    are chosen and the model is compiled.

    The run seeds the global generators with ``config.seed`` (anything inside the model that
    draws from them repeats) and gives them back their states when it ends, so the caller's
    random stream goes on as if a cached model had been loaded instead.

    ``objective``: "eps" (predict the noise, lessons 04–09) or "flow" (predict the velocity
    ε − x_0 along straight paths, lesson 10: ``flow.flow_matching_loss``; ``schedule`` is then
    unused and may be None).
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (e.g. TrainConfig(steps=300)), got {type(config).__name__}")
    if objective not in ("eps", "flow"):
        raise ValueError(f"objective must be 'eps' or 'flow', got {objective!r}")
    if objective == "flow" and rank_and_world()[1] > 1:
        raise ValueError("objective='flow' trains in one process: data-parallel flow training is not wired up")
    if objective == "eps" and not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"the eps objective needs a NoiseSchedule, got {type(schedule).__name__}")
    if objective == "flow" and config.min_snr_gamma is not None:
        raise ValueError("min_snr_gamma weighs the eps objective by the schedule's SNR; the flow objective has none")
    _check_training_images(images)
    labels = check_labels(labels, len(images))
    model_config = getattr(model, "config", None)
    size = getattr(model_config, "image_size", None)
    if isinstance(size, int) and tuple(images.shape[-2:]) != (size, size):
        raise ValueError(f"images are {images.shape[-2]}×{images.shape[-1]}, but the model's config.image_size is "
                         f"{size}: sample() would draw {size}×{size}; build the model with image_size="
                         f"{images.shape[-1]}")
    text_model = getattr(model_config, "context_dim", None) is not None
    if text_model and (labels is None or captions is None):
        raise ValueError("a text model trains on captions: pass labels= and captions= (text.caption_embeddings)")
    if labels is not None and not text_model and getattr(model_config, "num_classes", None) is None:
        raise ValueError("labels given, but the model has no num_classes")
    rank, world = rank_and_world()
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} is the global batch: it must divide by the "
                         f"world size {world}, so every rank gets the same share")
    device = pick_device(device) if not isinstance(device, torch.device) else device
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # this rank's GPU (LOCAL_RANK)
    seed_everything(config.seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(config.seed)

    model.to(device).train()
    memory_format = torch.channels_last if channels_last else None
    if memory_format is not None:
        model.to(memory_format=memory_format)
    net, rows = model, None  # what the forward pass runs, and this rank's rows of each batch
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        share = config.batch_size // world
        rows = slice(rank * share, (rank + 1) * share)
    eager = net
    if compile:
        net = compile_model(net, compile)
    data = images.to(device, torch.float32)
    y = labels.to(device).long() if labels is not None else None
    null_label = getattr(model_config, "num_classes", None)
    table = captions.to(device) if text_model else None
    if text_model:  # checked once here, so that no step reads ids back from the GPU (a sync per step)
        n_captions = len(dataset_captions(caption_dataset))
        if len(table) < n_captions:
            raise ValueError(f"captions has {len(table)} rows, fewer than the {n_captions} of "
                             f"dataset_captions({caption_dataset!r}) it must encode")
        classes = len(CAPTIONS[_check_dataset(caption_dataset)])
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
            raise ValueError(f"labels must lie in 0..{classes - 1} (the classes of the captions), "
                             f"got values from {int(y.min())} to {int(y.max())}")
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=config.lr,
        weight_decay=config.weight_decay,
        **({"fused": True} if (device.type == "cuda" if fused is None else fused) else {}),
    )
    ema = EMA(model, config.ema_decay)

    steps = range(config.steps)
    bar = None
    if progress and rank == 0:
        from .progress import progress_bar

        steps = bar = progress_bar(steps, desc="training")
    losses: list[torch.Tensor] = []
    t0 = time.perf_counter()
    steady_from = min(50, config.steps // 4)  # the clock for steady_images_per_second starts here
    t_steady = None
    for step in steps:
        if step == steady_from and step > 0:
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # once per run: the steady clock must not count queued work
            t_steady = time.perf_counter()
        idx = torch.randint(0, len(data), (config.batch_size,), device=device, generator=gen)
        yb, context = None, None
        if y is not None and text_model:
            ids = caption_ids(y[idx], caption_dataset, gen, check=False)  # the labels were checked once, above
            if config.class_dropout > 0:
                ids = ids.masked_fill(drop_condition(ids, config.class_dropout, gen), NULL_ID)
            context = lookup(table, ids, check=False)
        elif y is not None:
            yb = y[idx]
            if config.class_dropout > 0:
                drop = drop_condition(yb, config.class_dropout, gen)
                yb = torch.where(drop, torch.full_like(yb, null_label), yb)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, config)
        def batch_loss(net, idx=idx, yb=yb, context=context):  # this step's batch
            if objective == "flow":
                x0 = data[idx] if memory_format is None else data[idx].contiguous(memory_format=memory_format)
                return flow_matching_loss(net, x0, yb, gen, context, amp=amp)
            return diffusion_loss(net, schedule, data[idx], yb, gen, context, rows, amp, memory_format,
                                  config.min_snr_gamma)

        if net is not eager and step == 0:
            try:
                state = gen.get_state()
                loss = batch_loss(net)
            except Exception as e:  # the compiler failed on this model/platform: go on without it
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                              "training on uncompiled", RuntimeWarning, stacklevel=2)
                net = eager
                gen.set_state(state)
                loss = batch_loss(net)
        else:
            loss = batch_loss(net)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        if step >= config.ema_start:
            ema.update(model)
        losses.append(loss.detach())
        if bar is not None and (step % 50 == 0 or step == config.steps - 1):
            bar.set_postfix(loss=f"{loss.item():.4f}")  # the only sync, every 50 steps
    history = torch.stack(losses).float()
    if world > 1:  # each rank's loss is over its share: the batch's loss is their mean
        torch.distributed.all_reduce(history)
        history /= world
    history = history.cpu().tolist()
    if not all(math.isfinite(v) for v in history):
        raise FloatingPointError("the loss became NaN or infinite; lower lr or check the data")
    end = time.perf_counter()  # history.cpu() above waited for the GPU
    seconds = end - t0
    steady = (config.steps - steady_from) * config.batch_size / (end - t_steady) if t_steady else 0.0
    model.eval()
    if memory_format is not None:  # hand back the usual layout: checkpoints and samplers expect it
        model.to(memory_format=torch.contiguous_format)
        ema.model.to(memory_format=torch.contiguous_format)
    return TrainResult(
        model=ema.model,
        raw_model=model,
        losses=history,
        seconds=seconds,
        images_per_second=config.steps * config.batch_size / seconds,
        steady_images_per_second=steady,
    )


# --------------------------------------------------------------------- checkpoints
def save_checkpoint(folder: str | Path, model: UNet | VAE, meta: dict | None = None) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` atomically.

    config.json holds the model's config under its kind (``"unet"`` or ``"vae"``; a VAE
    also its ``scaling_factor``) and ``meta``.
    """
    folder = Path(folder)
    if not isinstance(model, (UNet, VAE)):
        raise ValueError(f"model must be a UNet or a VAE, got {type(model).__name__}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp / "model.safetensors")
        if isinstance(model, VAE):
            info = {"format": CHECKPOINT_FORMAT, "vae": model.config.to_dict(),
                    "scaling_factor": model.scaling_factor, "meta": meta or {}}
        else:
            info = {"format": CHECKPOINT_FORMAT, "unet": model.config.to_dict(), "meta": meta or {}}
        (tmp / "config.json").write_text(json.dumps(info, indent=2))
        if folder.exists():  # another process finished first: keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_checkpoint(folder: str | Path, device: torch.device | str | None = None) -> tuple[UNet | VAE, dict]:
    """Rebuild a U-Net or a VAE from ``save_checkpoint``'s folder → (model in eval mode, meta)."""
    folder = Path(folder)
    cfg_path, weights = folder / "config.json", folder / "model.safetensors"
    if not cfg_path.exists() or not weights.exists():
        raise FileNotFoundError(f"{folder} is not a checkpoint: expected config.json and model.safetensors")
    info = json.loads(cfg_path.read_text())
    if "vae" in info:
        model = VAE(VAEConfig.from_dict(info["vae"]), scaling_factor=info.get("scaling_factor", 1.0))
    elif "unet" in info:
        model = UNet(UNetConfig.from_dict(info["unet"]))
    else:
        raise ValueError(f"{cfg_path} names no model: expected a 'unet' or a 'vae' entry")
    model.load_state_dict(load_file(weights))
    return model.to(pick_device(device) if device is None else device).eval(), info.get("meta", {})


#: Steps × batch above which a training on a CPU in full mode stops before it starts (unless COURSE_FULL_ON_CPU=1).
#: Quick mode's trainings see 1k–10k images; full mode's see 1–2.6M, which on a 2-core CPU takes a day or more
#: (the full DDPM: 15 000 steps of 128 at 9–12 s a step there, benchmarks/RESULTS.md).
CPU_FULL_MODE_IMAGES = 200_000


def check_cpu_budget(device: torch.device | str, steps: int, batch_size: int, what: str,
                     fix: str | None = None) -> None:
    """Stop a full-mode training of ``steps`` × ``batch_size`` images on a CPU before it starts.

    A learner who opened the lessons without ``COURSE_QUICK=1`` on a laptop would otherwise
    wait a day for lesson 00's first cell that trains. Quick mode, a GPU, a small budget or
    ``COURSE_FULL_ON_CPU=1`` pass through. ``fix`` replaces the advice for a notebook (a
    command line says its own flag).
    """
    settings = get_settings()
    if torch.device(device).type != "cpu" or settings.quick or settings.full_on_cpu:
        return
    if steps * batch_size <= CPU_FULL_MODE_IMAGES:
        return
    fix = fix or ("restart Jupyter with COURSE_QUICK=1 (or set os.environ['COURSE_QUICK'] = '1' and rerun the "
                  "lesson from its first cell)")
    raise RuntimeError(
        f"full mode on a CPU: {what} would train {steps:,} steps of {batch_size} images, "
        f"which takes many hours to days on a CPU. Quick mode is meant for a CPU: {fix}. "
        f"On a GPU, check `course doctor`. To train in full mode on this CPU anyway, set COURSE_FULL_ON_CPU=1."
    )


def seeded_init(build, seed: int):
    """``build()`` under torch's global generator seeded with ``seed``, the caller's generator state kept: a
    model's initial weights, the same in every run (torch's own starting seed differs from process to process)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def config_hash(*parts) -> str:
    """A short stable hash of JSON-able settings (dataclasses allowed)."""
    norm = [asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts]
    blob = json.dumps(norm, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_train(
    unet_config: UNetConfig,
    schedule: NoiseSchedule,
    train_config: TrainConfig,
    dataset: str | None = None,
    class_conditional: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
    retrain: bool = False,
) -> TrainResult:
    """Train a U-Net on ``dataset``'s train split, or load the one trained with the same
    settings before (``<cache>/models/<name>-<hash>``). The hash covers the U-Net config,
    the schedule, the training config, the dataset and whether labels were used.

    A config with ``context_dim`` trains a text model on the dataset's captions, encoded
    once by the course's text encoder (``text.caption_embeddings``); its name joins the hash.
    """
    from .data import load_images

    dataset = dataset or get_settings().dataset
    text_model = unet_config.context_dim is not None
    parts = [ARCHITECTURE, unet_config.to_dict(), schedule.config(), train_config, dataset, class_conditional]
    captions = None
    if text_model:
        from .text import caption_embeddings, dataset_captions

        captions = caption_embeddings(dataset_captions(dataset))
        parts.append("text:" + (get_settings().text_encoder or "bundled all-MiniLM-L6-v2"))
        if captions.dim != unet_config.context_dim:
            raise ValueError(
                f"the text encoder gives {captions.dim}-wide tokens; "
                f"the U-Net's context_dim is {unet_config.context_dim}"
            )
    key = config_hash(*parts)
    folder = get_settings().cache_dir / "models" / f"ddpm-{dataset}-{key}"
    if folder.exists() and not retrain:
        model, meta = load_checkpoint(folder, device)
        return TrainResult(model=model, raw_model=model, losses=meta.get("losses", []),
                           seconds=meta.get("seconds", 0.0),
                           images_per_second=meta.get("images_per_second", 0.0), from_cache=True)
    device = pick_device(device) if not isinstance(device, torch.device) else device
    check_cpu_budget(device, train_config.steps, train_config.batch_size, f"the U-Net ddpm-{dataset}-{key}")
    data = load_images(dataset, "train")
    result = train_diffusion(
        seeded_init(lambda: UNet(unet_config), train_config.seed), schedule, data.images, train_config,
        labels=data.labels if (class_conditional or text_model) else None, device=device, progress=progress,
        captions=captions, caption_dataset=dataset,
        compile=training_compile(device, train_config.steps),  # CUDA graphs for full-mode runs on a GPU
    )
    meta = {"dataset": dataset, "schedule": schedule.config(), "train": asdict(train_config),
            "class_conditional": class_conditional, "text_conditional": text_model,
            "losses": result.losses, "seconds": result.seconds,
            "images_per_second": result.images_per_second}
    if is_main_process():  # under torchrun every rank holds the same model; one writes it
        if retrain and folder.exists():
            shutil.rmtree(folder)
        save_checkpoint(folder, result.model, meta)
    return result


def conditional_recipe(
    kind: str = "text", quick: bool | None = None
) -> tuple[UNetConfig, NoiseSchedule, TrainConfig]:
    """The course's conditional DDPM (lessons 06–07): ``kind`` "text" (captions through the
    frozen text encoder, cross-attention at 8×8 and in the middle) or "class" (a label
    embedding added to the time embedding). 10% of the conditions are dropped to the null
    condition during training, so one network also predicts unconditionally, as
    classifier-free guidance needs.

    Full mode (a GPU): ddpm_recipe's U-Net (widths 32/96/320) plus the condition, 1000
    cosine steps, 15k steps of 128 images. Quick mode (a laptop CPU): ddpm_recipe's small
    U-Net plus the condition, a 250-step cosine schedule, 300 steps of 32 images (about 70 s)
    with the loss weighted by Min-SNR, γ = 1 (``diffusion_loss``): the few steps go to the noise
    levels where the class is decided. On 2026-11-26, with n = 200 samples at guidance 3, that
    raised the evaluator's class accuracy from 35–38% to 48–57% over plain 300-step training, and
    above plain 400-step training (43–47%). The shapes still follow the prompt only roughly,
    but the guidance sweep runs.
    """
    if kind not in ("text", "class"):
        raise ValueError(f"kind must be 'text' or 'class', got {kind!r}")
    unet, schedule, train = ddpm_recipe(quick)
    quick = get_settings().quick if quick is None else quick
    # the U-Net reads the text encoder's tokens: as wide as that encoder (384 for the bundled one)
    extra = {"context_dim": encoder_width()} if kind == "text" else {"num_classes": 10}
    unet = UNetConfig(**{**unet.to_dict(), **extra})
    if quick:
        train = TrainConfig(steps=300, batch_size=32, lr=2e-3, warmup_steps=20, ema_decay=0.98, class_dropout=0.1,
                            min_snr_gamma=1.0)
    else:
        train = TrainConfig(**{**asdict(train), "class_dropout": 0.1})
    return unet, schedule, train


def _check_quick(quick) -> bool:
    """A recipe's ``quick``: True, False, or None for the setting (``COURSE_QUICK``). A string such as "no" would
    otherwise be taken as True."""
    if quick is None:
        return get_settings().quick
    if not isinstance(quick, bool):
        raise TypeError(f"quick must be True, False or None (COURSE_QUICK decides), got {quick!r}")
    return quick


def ddpm_recipe(quick: bool | None = None) -> tuple[UNetConfig, NoiseSchedule, TrainConfig]:
    """The course's unconditional DDPM for 1×32×32 images: (U-Net config, schedule, budget).

    Full mode (a GPU): a 16M-parameter U-Net, narrow at 32×32 and wide at 8×8 where
    compute is cheap (widths 32/96/320), 1000 diffusion steps, 15k training steps of 128 images.
    Quick mode (a laptop CPU): a 0.5M-parameter U-Net, a 250-step cosine schedule (the
    cosine schedule keeps its shape at any T, and sampling costs one network call per
    step) and 200 training steps of 32 images, about a minute: blurry but recognisable
    shapes. The code path is the same; only the budget differs.
    """
    quick = _check_quick(quick)
    if quick:
        unet = UNetConfig(channels=(16, 32, 64), blocks=(1, 1, 1), attention=(False, False, True),
                          head_dim=32, groups=8)
        return unet, NoiseSchedule.cosine(250), TrainConfig(steps=200, batch_size=32, lr=2e-3, warmup_steps=20,
                                                            ema_decay=0.98)
    unet = UNetConfig(channels=(32, 96, 320), blocks=(1, 1, 2), attention=(False, False, True),
                      head_dim=64, groups=32)
    return unet, NoiseSchedule.cosine(1000), TrainConfig(steps=15_000, batch_size=128, lr=3e-4, warmup_steps=500,
                                                         ema_decay=0.9995)


# --------------------------------------------------------------------- the VAE (lesson 05)
@dataclass
class VAETrainConfig:
    """The VAE's training budget and recipe.

    ``beta`` weighs the KL (in nats) against the per-image *summed* squared error; see
    :func:`vae_loss`. The learning rate warms up linearly over ``warmup_steps``, then
    (with ``cosine_decay``) follows a half cosine down to 0 at the last step.
    ``ema_decay`` = 0 keeps no moving average.
    """

    steps: int = 6000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta: float = 1e-3
    warmup_steps: int = 200
    cosine_decay: bool = True
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    seed: int = 0

    def __post_init__(self):
        _check_fields(self)
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be ≥ 1, got {self.steps} and {self.batch_size}")
        if self.beta < 0:
            raise ValueError(f"beta must be ≥ 0, got {self.beta}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")


@dataclass
class VAETrainResult(TrainResult):
    """:class:`TrainResult` plus the two parts of the loss at every step."""

    recon_mse: list[float] = field(default_factory=list)  # mean squared error per pixel
    kl_per_value: list[float] = field(default_factory=list)  # KL nats per latent value
    scaling_factor: float = 1.0  # the model's (set by cached_vae from the training data)


def vae_loss(x: torch.Tensor, out: VAEOutput, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The β-VAE objective on a batch, scaled to read like a mean squared error.

    Per image i with D = C·H·W pixels and d = c·h·w latent values:

        L_i = ( ‖x_i − x̂_i‖² + β · KL_i ) / D,     KL_i = KL(q(z | x_i) ‖ N(0, I)) in nats

    and the loss is the mean of L_i over the batch. The squared error is *summed* over the
    image, so β is relative to that sum: the bracket is, up to constants, 2σ² times the
    negative ELBO of a Gaussian decoder p(x | z) = N(x̂, σ² I) with σ² = β / 2. β = 0 is a
    plain autoencoder; larger β pulls q(z | x) toward N(0, I) (smoother latents, blurrier
    images). Dividing by D only rescales (so lr and grad_clip behave as for an MSE).

    x: N×C×H×W; out: :class:`VAEOutput` → (loss, recon_mse, kl_per_value), scalars; the
    last two (mean squared error per pixel, mean KL nats per latent value) are detached.
    """
    if out.recon.shape != x.shape:
        raise ValueError(f"the reconstruction {tuple(out.recon.shape)} must have x's shape {tuple(x.shape)}")
    pixels, latents = x[0].numel(), out.mean[0].numel()
    sq_err = (out.recon.float() - x.float()).pow(2).flatten(1).sum(dim=1)  # (N,)
    kl = kl_divergence(out.mean.float(), out.logvar.float())  # (N,)
    loss = ((sq_err + beta * kl) / pixels).mean()
    return loss, sq_err.detach().mean() / pixels, kl.detach().mean() / latents


def cosine_lr_at(step: int, config: VAETrainConfig) -> float:
    """Linear warm-up to ``lr``, then a half cosine to 0 at the last step (if ``cosine_decay``)."""
    lr = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
    if not config.cosine_decay or step < config.warmup_steps:
        return lr
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@restores_global_rng
def train_vae(
    vae: VAE,
    images: torch.Tensor,
    config: VAETrainConfig | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> VAETrainResult:
    """Train ``vae`` on ``images`` (N×C×H×W in [-1, 1]) with :func:`vae_loss`.

    AdamW, warm-up (then cosine decay), gradient clipping, bf16 autocast on CUDA, the
    data held on the device, as :func:`train_diffusion`. Returns a :class:`VAETrainResult`:
    the model in eval mode (the EMA's if ``ema_decay`` > 0) and every step's loss,
    reconstruction MSE and KL per latent value.
    """
    config = VAETrainConfig() if config is None else config
    if not isinstance(config, VAETrainConfig):
        raise TypeError(f"config must be a VAETrainConfig, got {type(config).__name__}")
    if not isinstance(vae, VAE):
        raise ValueError(f"vae must be a course_lib VAE, got {type(vae).__name__}")
    _check_training_images(images, pixels=True)
    vae.check_images(images, "images")
    device = pick_device(device) if not isinstance(device, torch.device) else device
    seed_everything(config.seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(config.seed)

    vae.to(device).train()
    data = images.to(device, torch.float32)
    opt = torch.optim.AdamW(
        vae.parameters(),
        lr=config.lr,
        weight_decay=config.weight_decay,
        **({"fused": True} if device.type == "cuda" else {}),
    )
    ema = EMA(vae, config.ema_decay) if config.ema_decay > 0 else None

    steps = range(config.steps)
    bar = None
    if progress:
        from .progress import progress_bar

        steps = bar = progress_bar(steps, desc="training VAE")
    history: list[torch.Tensor] = []
    t0 = time.perf_counter()
    for step in steps:
        x = data[torch.randint(0, len(data), (config.batch_size,), device=device, generator=gen)]
        for group in opt.param_groups:
            group["lr"] = cosine_lr_at(step, config)
        with autocast(device):
            out = vae(x, generator=gen)
        loss, mse, kl = vae_loss(x, out, config.beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_(vae.parameters(), config.grad_clip)
        opt.step()
        if ema is not None:
            ema.update(vae)
        history.append(torch.stack([loss.detach(), mse, kl]))
        if bar is not None and (step % 50 == 0 or step == config.steps - 1):
            bar.set_postfix(mse=f"{mse.item():.4f}", kl=f"{kl.item():.3f}")  # the only sync, every 50 steps
    losses, mses, kls = torch.stack(history).float().cpu().T.tolist()
    if not all(math.isfinite(v) for v in losses):
        raise FloatingPointError("the VAE loss became NaN or infinite; lower lr or check the data")
    seconds = time.perf_counter() - t0
    vae.eval()
    return VAETrainResult(
        model=ema.model if ema is not None else vae,
        raw_model=vae,
        losses=losses,
        recon_mse=mses,
        kl_per_value=kls,
        seconds=seconds,
        images_per_second=config.steps * config.batch_size / seconds,
        scaling_factor=vae.scaling_factor,
    )


def cached_vae(
    vae_config: VAEConfig,
    train_config: VAETrainConfig,
    dataset: str | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    retrain: bool = False,
    scaling_images: int = 2048,
) -> VAETrainResult:
    """Train a VAE on ``dataset``'s train split, or load the one trained with the same
    settings before (``<cache>/models/vae-<dataset>-<hash>``; the hash covers the
    architecture, the VAE config, the training config and the dataset).

    After training, the latent scaling factor is measured on ``scaling_images`` training
    images (a fixed random subset) with :func:`latent_scaling_factor` and saved with the
    model, so ``result.model.encode_latents(x)`` has about unit variance.
    """
    from .data import load_images

    dataset = dataset or get_settings().dataset
    key = config_hash(VAE_ARCHITECTURE, vae_config.to_dict(), train_config, dataset)
    folder = get_settings().cache_dir / "models" / f"vae-{dataset}-{key}"
    if folder.exists() and not retrain:
        model, meta = load_checkpoint(folder, device)
        return VAETrainResult(model=model, raw_model=model, losses=meta.get("losses", []),
                              recon_mse=meta.get("recon_mse", []), kl_per_value=meta.get("kl_per_value", []),
                              seconds=meta.get("seconds", 0.0), images_per_second=meta.get("images_per_second", 0.0),
                              from_cache=True, scaling_factor=model.scaling_factor)
    check_cpu_budget(pick_device(device) if not isinstance(device, torch.device) else device,
                     train_config.steps, train_config.batch_size, f"the VAE vae-{dataset}-{key}")
    images = load_images(dataset, "train").images
    result = train_vae(seeded_init(lambda: VAE(vae_config), train_config.seed), images, train_config, device=device,
                       progress=progress)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:scaling_images]
    result.model.scaling_factor = result.scaling_factor = latent_scaling_factor(result.model, images[pick])
    meta = {"dataset": dataset, "train": asdict(train_config), "losses": result.losses,
            "recon_mse": result.recon_mse, "kl_per_value": result.kl_per_value, "seconds": result.seconds,
            "images_per_second": result.images_per_second, "scaling_images": min(scaling_images, len(images))}
    if retrain and folder.exists():
        shutil.rmtree(folder)
    save_checkpoint(folder, result.model, meta)
    return result


def vae_recipe(quick: bool | None = None, factor: int = 4) -> tuple[VAEConfig, VAETrainConfig]:
    """The course's VAE for 1×32×32 images at ``factor`` 4 (→ 8×8×4) or 2 (→ 16×16×4).

    Both use one ResBlock per level and β = 1e-3 (σ² = 5e-4 in :func:`vae_loss`'s reading:
    the KL costs little next to a reconstruction error near 25 dB).
    Full mode (a GPU): widths 32/64/128 (factor 2: 32/64), 10k steps of 128 images (about 21
    epochs of Fashion-MNIST), lr 1e-3 with a cosine decay; a few minutes under bf16.
    Quick mode (a 2-core CPU): widths 8/16/32, 250 steps of 32 images, roughly 15–20 s per
    VAE, so a lesson can train three (a β sweep). The code path is the same.
    """
    quick = _check_quick(quick)
    if factor not in (2, 4):
        raise ValueError(f"factor must be 2 or 4, got {factor}")
    widths = (8, 16, 32) if quick else (32, 64, 128)
    widths = widths if factor == 4 else widths[:2]
    vae = VAEConfig(channels=widths, blocks=1, latent_channels=4, groups=32)
    if quick:
        return vae, VAETrainConfig(steps=250, batch_size=32, lr=3e-3, beta=1e-3, warmup_steps=20)
    return vae, VAETrainConfig(steps=10_000, batch_size=128, lr=1e-3, beta=1e-3, warmup_steps=200)


def train_controlnet(controlled: ControlledUNet, schedule, images: torch.Tensor, hints: torch.Tensor,
                     steps: int = 1000, batch_size: int = 64, lr: float = 1e-4, labels: torch.Tensor | None = None,
                     device=None, seed: int = 0, progress: bool = True) -> list[float]:
    """Train the ControlNet of ``controlled`` (the U-Net stays frozen) on (image, hint) pairs with the
    ε-loss of ``train.diffusion_loss``: AdamW with a short warm-up, gradient clipping at 1, data held
    on the device. Returns the loss of every step."""
    if not isinstance(controlled, ControlledUNet):
        raise TypeError(f"controlled must be a ControlledUNet (a U-Net and its ControlNet), got "
                        f"{type(controlled).__name__}")
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    steps, batch_size = check_positive_int(steps, "steps"), check_positive_int(batch_size, "batch_size")
    _check_training_images(images)
    if not isinstance(hints, torch.Tensor) or hints.dim() != 4:
        got = f"shape {tuple(hints.shape)}" if isinstance(hints, torch.Tensor) else type(hints).__name__
        raise ValueError(f"hints must be a tensor N×c×H×W, got {got}")
    labels = check_labels(labels, len(images))
    if images.shape[0] != hints.shape[0] or hints.shape[2:] != images.shape[2:]:
        raise ValueError(f"hints must be N×c×H×W matching images {tuple(images.shape)}, got {tuple(hints.shape)}")
    device = pick_device(device) if not isinstance(device, torch.device) else device
    controlled.to(device)
    controlled.controlnet.train()
    params = [p for p in controlled.controlnet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    gen = torch.Generator(device=device).manual_seed(seed)
    data, cond = images.to(device, torch.float32), hints.to(device, torch.float32)
    y = labels.to(device).long() if labels is not None else None
    losses = []
    it = range(steps)
    if progress:
        from .progress import progress_bar

        it = progress_bar(it, desc="training ControlNet")
    for step in it:
        idx = torch.randint(0, len(data), (batch_size,), device=device, generator=gen)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20)
        loss = diffusion_loss(controlled.with_hint(cond[idx]), schedule, data[idx],
                              None if y is None else y[idx], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.detach())
    controlled.controlnet.eval()
    return torch.stack(losses).float().cpu().tolist()

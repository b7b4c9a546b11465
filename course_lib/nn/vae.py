r"""A variational autoencoder (VAE): the compressor that puts diffusion into a latent space.

    x ─ conv_in ─ [ResBlock×B ─ down] … ─ ResBlock ─ GN·SiLU·conv ─ (μ, log σ²) ─ z = μ + σ·ε
    z ─ conv_in ─ ResBlock ─ … [ResBlock×B ─ up] ─ GN·SiLU·conv ─ x̂

The encoder q_φ(z | x) = N(μ_φ(x), diag σ²_φ(x)) maps an image C×H×W to a latent
``latent_channels``×H/f×W/f, f = 2^(levels−1) (the ``factor``); the decoder maps z back
to the image. Training maximises a (β-weighted) evidence lower bound:

    L = ‖x − x̂(z)‖² + β · KL(q_φ(z | x) ‖ N(0, I)),   z = μ + σ ⊙ ε,  ε ~ N(0, I)

(see :func:`course_lib.train.vae_loss` for how β is scaled). The sample z is written as
a deterministic function of (μ, σ) plus outside noise — the *reparameterisation* — so
gradients reach the encoder through it.

Stable Diffusion's autoencoder is the same idea at 512×512×3 → 64×64×4 (f = 8); it
multiplies latents by a ``scaling_factor`` (0.18215) so they have about unit variance
before diffusion sees them. :func:`latent_scaling_factor` measures that number here.

Every piece comes from :mod:`course_lib.nn.blocks`: ResBlock (here without a time
embedding), GroupNorm, SiLU, Downsample, Upsample.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..device import randn
from .blocks import (
    Downsample,
    ResBlock,
    Upsample,
    check_dtype,
    check_float,
    check_level_tuple,
    check_positive_int,
    group_norm,
    is_int,
)

#: Bump when the module layout changes: cached VAE checkpoints are keyed by it.
VAE_ARCHITECTURE = "vae-v1"

#: log σ² is clamped to this range: σ from e^−15 ≈ 3e-7 to e^10 ≈ 2e4, so exp never overflows.
LOGVAR_RANGE = (-30.0, 20.0)


# --------------------------------------------------------------------------- the maths
def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    r"""KL( N(μ, diag e^{logvar}) ‖ N(0, I) ) per sample, in nats.

        KL = ½ Σ_j ( μ_j² + e^{logvar_j} − 1 − logvar_j )

    summed over every latent dimension j (channels × height × width).
    mean, logvar: N×… (same shape) → (N,). Zero exactly when μ = 0 and logvar = 0.
    """
    if not isinstance(mean, torch.Tensor) or not isinstance(logvar, torch.Tensor):
        raise ValueError("mean and logvar must be tensors")
    if mean.shape != logvar.shape:
        raise ValueError(f"mean and logvar must have the same shape, got {tuple(mean.shape)} and {tuple(logvar.shape)}")
    if mean.dim() < 1:
        raise ValueError("mean and logvar must have a batch dimension N×…")
    per_value = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return per_value.flatten(1).sum(dim=1)


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""A sample z ~ N(μ, σ²) written as z = μ + e^{½ logvar} · ε with ε ~ N(0, I).

    The randomness is in ε alone, so ∂z/∂μ = 1 and ∂z/∂logvar = ½ σ ε: gradients flow.
    mean, logvar: any shape (equal) → z of that shape. ``generator`` (on any
    device: its draws are moved to mean's) makes the sample reproducible.
    """
    if mean.shape != logvar.shape:
        raise ValueError(f"mean and logvar must have the same shape, got {tuple(mean.shape)} and {tuple(logvar.shape)}")
    eps = randn(mean.shape, generator, mean.device, mean.dtype)
    return mean + torch.exp(0.5 * logvar) * eps


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    r"""Peak signal-to-noise ratio per image, in dB, for images in [−1, 1].

        PSNR_i = 10 · log10( R² / MSE_i ),   MSE_i = mean over C×H×W of (x_i − y_i)²

    with R = ``data_range`` = 2 (the width of [−1, 1]). This equals the usual PSNR of the
    same images mapped to [0, 1] (R = 1): both the range and the error halve. Values are
    not clamped here. x, y: N×C×H×W (equal shapes) → (N,) float32; identical images
    give +inf. Average with ``.mean()`` for a dataset's mean per-image PSNR.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("x and y must be tensors")
    if x.shape != y.shape or x.dim() < 2:
        raise ValueError(f"x and y must be N×C×H×W of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


# --------------------------------------------------------------------------- the model
@dataclass
class VAEConfig:
    """Everything that defines a VAE's shape; ``VAE(config)`` builds it.

    Level i works at resolution image_size / 2^i with ``channels[i]`` channels and
    ``blocks[i]`` ResBlocks (encoder and decoder alike); latents are
    ``latent_channels`` × image_size/factor × image_size/factor.
    """

    in_channels: int = 1
    image_size: int = 32
    channels: tuple[int, ...] = (32, 64, 128)
    blocks: int | tuple[int, ...] = 1  # an int means that many at every level
    latent_channels: int = 4
    groups: int = 32

    def __post_init__(self):
        # lists are taken too: a config read back from JSON (to_dict, from_dict) has lists
        self.channels = check_level_tuple(self.channels, "channels", "(32, 64, 128)")
        if is_int(self.blocks):
            self.blocks = (self.blocks,) * len(self.channels)
        self.blocks = check_level_tuple(self.blocks, "blocks", "(1, 1, 1), or one int for every level")
        if len(self.blocks) != len(self.channels):
            raise ValueError(f"blocks needs one entry ≥ 1 per level ({len(self.channels)}), got {self.blocks}")
        for name in ("in_channels", "latent_channels", "image_size", "groups"):
            setattr(self, name, check_positive_int(getattr(self, name), name))
        if self.image_size % self.factor:
            raise ValueError(f"image_size {self.image_size} must be divisible by the factor 2^(levels−1) = "
                             f"{self.factor}")

    @property
    def factor(self) -> int:
        """The spatial downsampling factor f = 2^(levels − 1)."""
        return 2 ** (len(self.channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(latent_channels, image_size / f, image_size / f)."""
        s = self.image_size // self.factor
        return (self.latent_channels, s, s)

    @property
    def compression(self) -> float:
        """Values per image ÷ values per latent: C·H·W / (c·h·w)."""
        c, h, w = self.latent_shape
        return self.in_channels * self.image_size**2 / (c * h * w)

    @classmethod
    def factor4(cls, **overrides) -> VAEConfig:
        """32×32×1 → 8×8×4 (f = 4, 4× fewer values): three levels."""
        return cls(**{"channels": (32, 64, 128), **overrides})

    @classmethod
    def factor2(cls, **overrides) -> VAEConfig:
        """32×32×1 → 16×16×4 (f = 2; as many values as the image: spatial size traded for channels)."""
        return cls(**{"channels": (32, 64), **overrides})

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        return cls(**d)


@dataclass
class VAEOutput:
    """What ``VAE.forward`` returns: reconstruction N×C×H×W, the posterior's mean and
    log-variance N×c×h×w (float32) and the sampled latent z N×c×h×w."""

    recon: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor


class Encoder(nn.Module):
    """x: N×C×H×W → N×2c×H/f×W/f, the posterior's mean and log-variance stacked on channels."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.channels
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.levels = nn.ModuleList()
        prev = ch[0]
        for i, (c, b) in enumerate(zip(ch, cfg.blocks)):
            level = nn.ModuleDict()
            level["res"] = nn.Sequential(*[ResBlock(prev if j == 0 else c, c, groups=cfg.groups) for j in range(b)])
            level["down"] = Downsample(c) if i < len(ch) - 1 else nn.Identity()
            self.levels.append(level)
            prev = c
        self.mid = ResBlock(prev, prev, groups=cfg.groups)
        self.norm_out = group_norm(prev, cfg.groups)
        self.conv_out = nn.Conv2d(prev, 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.levels:
            h = level["down"](level["res"](h))
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """z: N×c×h×w → N×C×f·h×f·w, the mirror image of the encoder."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.channels
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[-1], 3, padding=1)
        self.mid = ResBlock(ch[-1], ch[-1], groups=cfg.groups)
        self.levels = nn.ModuleList()
        prev = ch[-1]
        for i in reversed(range(len(ch))):
            c, b = ch[i], cfg.blocks[i]
            level = nn.ModuleDict()
            level["res"] = nn.Sequential(*[ResBlock(prev if j == 0 else c, c, groups=cfg.groups) for j in range(b)])
            level["up"] = Upsample(c, ch[i - 1]) if i > 0 else nn.Identity()
            self.levels.append(level)
            prev = ch[i - 1] if i > 0 else c
        self.norm_out = group_norm(prev, cfg.groups)
        self.conv_out = nn.Conv2d(prev, cfg.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in self.levels:
            h = level["up"](level["res"](h))
        return self.conv_out(F.silu(self.norm_out(h)))


class VAE(nn.Module):
    """q_φ(z | x) and p_θ(x | z): images N×C×H×W ↔ latents N×c×H/f×W/f.

    ``scaling_factor`` (float, default 1) multiplies latents in :meth:`encode_latents` and
    divides them in :meth:`decode_latents`: the diffusion model sees ``scaling_factor · μ(x)``.
    It is saved with the checkpoint; :func:`latent_scaling_factor` measures it.
    """

    def __init__(self, config: VAEConfig | None = None, scaling_factor: float = 1.0, **kwargs):
        super().__init__()
        if config is None:
            config = VAEConfig(**kwargs)
        elif kwargs:
            raise ValueError("pass either a VAEConfig or keyword arguments, not both")
        self.config = config
        self.scaling_factor = scaling_factor
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    @property
    def scaling_factor(self) -> float:
        return self._scaling_factor

    @scaling_factor.setter
    def scaling_factor(self, value: float) -> None:
        # checked when set (here or later, as train.cached_vae does): decode_latents divides by it
        number = None
        if not isinstance(value, (bool, str, bytes)):
            try:
                number = float(value)  # a Python or numpy float, or a one-element tensor as 1 / z.std()
            except (TypeError, ValueError, RuntimeError):
                pass
        if number is None or not math.isfinite(number) or number <= 0:
            raise ValueError(f"scaling_factor must be a positive finite number (1 / std of the latents, "
                             f"e.g. 0.18215 for Stable Diffusion's VAE), got {value!r}")
        self._scaling_factor = number

    # ------------------------------------------------------------- checks
    def check_images(self, x: torch.Tensor, name: str = "x") -> None:
        cfg = self.config
        want = f"N×{cfg.in_channels}×H×W with H and W divisible by {cfg.factor}"
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = f"{x.dim()} dims" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be {want}, got {got}")
        if x.shape[1] != cfg.in_channels:
            raise ValueError(f"{name} must be {want}, got {x.shape[1]} channel(s) (shape {tuple(x.shape)})")
        if x.shape[2] % cfg.factor or x.shape[3] % cfg.factor:
            raise ValueError(f"{name} must be {want}, got size {x.shape[2]}×{x.shape[3]}")

    def check_precision(self, x: torch.Tensor, name: str, what: str, weight: torch.Tensor) -> None:
        """Floats of the weights' dtype (any float under autocast); shapes are checked by the callers."""
        check_float(x, name, what)
        check_dtype(x, weight, name)

    def check_latents(self, z: torch.Tensor, name: str = "z") -> None:
        c = self.config.latent_channels
        if not isinstance(z, torch.Tensor) or z.dim() != 4:
            got = f"{z.dim()} dims" if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"{name} must be latents N×{c}×h×w, got {got}")
        if z.shape[1] != c:
            raise ValueError(f"{name} must be latents N×{c}×h×w, got {z.shape[1]} channel(s) (shape {tuple(z.shape)})")

    # ------------------------------------------------------------- encode / decode
    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: N×C×H×W → (mean, logvar), each N×c×H/f×W/f float32; logvar clamped to [−30, 20]."""
        self.check_images(x)
        self.check_precision(x, "x", "images in [-1, 1]", self.encoder.conv_in.weight)
        mean, logvar = self.encoder(x).float().chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """x: N×C×H×W → latents N×c×H/f×W/f: a reparameterised sample z ~ q(z | x), or with
        ``sample=False`` the posterior mean μ(x) (deterministic)."""
        mean, logvar = self.encode_distribution(x)
        return reparameterize(mean, logvar, generator) if sample else mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: N×c×h×w → reconstruction N×C×f·h×f·w (no tanh; about [−1, 1] once trained)."""
        self.check_latents(z)
        self.check_precision(z, "z", "latents", self.decoder.conv_in.weight)
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        """x → (x̂, μ, logvar, z) with z a reparameterised sample: one training pass."""
        mean, logvar = self.encode_distribution(x)
        z = reparameterize(mean, logvar, generator)
        # μ and logvar come back float32 (the KL wants them so): a bf16 VAE's decoder takes its own dtype
        return VAEOutput(recon=self.decoder(z.to(self.decoder.conv_in.weight.dtype)), mean=mean, logvar=logvar, z=z)

    # ------------------------------------------------------------- for latent diffusion
    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """scaling_factor · μ(x): the latents a diffusion model is trained on."""
        return self.scaling_factor * self.encode(x, sample=False)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """decode(z / scaling_factor): images from latents a diffusion model produced."""
        self.check_latents(z)
        return self.decode(z / self.scaling_factor)

    # ------------------------------------------------------------- inspection
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@torch.no_grad()
def latent_scaling_factor(vae: VAE, images: torch.Tensor, batch_size: int = 512) -> float:
    r"""1 / std of the mean latents μ(x) over ``images`` (all values pooled).

        s = 1 / sqrt( Var_{x, j}[ μ_j(x) ] )

    so that s · μ(x) has unit variance, the scale diffusion's noise assumes. images:
    N×C×H×W, run on the VAE's device in batches of ``batch_size``, in eval mode.
    """
    vae.check_images(images, "images")
    if len(images) < 2:
        raise ValueError(f"need at least 2 images to measure a standard deviation, got {len(images)}")
    device = next(vae.parameters()).device
    was_training = vae.training
    vae.eval()
    total, total_sq, count = 0.0, 0.0, 0
    for i in range(0, len(images), batch_size):
        mu = vae.encode(images[i : i + batch_size].to(device, torch.float32), sample=False).double()
        total += mu.sum().item()
        total_sq += mu.pow(2).sum().item()
        count += mu.numel()
    vae.train(was_training)
    var = total_sq / count - (total / count) ** 2
    if not var > 0 or not math.isfinite(var):
        raise ValueError(f"the latents have no spread (variance {var}); is the VAE trained?")
    return 1.0 / math.sqrt(var)

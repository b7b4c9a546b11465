r"""A transformer denoiser, DiT (Peebles & Xie 2023), in place of the U-Net (lesson 10).

The image is cut into p×p patches, and each patch becomes one token:

    x: N×C×H×W ─ patchify ─ N×L×(p²C) ─ linear ─ N×L×D  (+ fixed 2-D sin-cos positions),  L = (H/p)(W/p)

Then ``depth`` transformer blocks, all at one resolution, with no down- or up-sampling and no skips.
The time step (and the class label) enter every block by *adaptive LayerNorm*. A conditioning
vector c = MLP(emb(t)) [+ E(label)] sets, per block, the shift and scale that follow each
LayerNorm and a gate on each residual branch:

    h ← h + g₁ ⊙ Attn(LN(h) ⊙ (1 + s₁) + b₁)
    h ← h + g₂ ⊙ MLP(LN(h) ⊙ (1 + s₂) + b₂),      (b₁, s₁, g₁, b₂, s₂, g₂) = Linear(SiLU(c))

The Linear producing them starts at zero ("adaLN-Zero"), so every block starts as the identity.
The last layer starts at zero too, so an untrained DiT predicts 0 everywhere. The output tokens
are turned back into an image (unpatchify), N×C×H×W, the shape of ε.

The model takes and returns what the U-Net does, ``model(x, t, labels)``, and has a ``config``
with ``in_channels``, ``image_size`` and ``num_classes``. So ``train.train_diffusion``,
``samplers.sample`` and the flow-matching code (``flow``) use it unchanged. Class labels follow the
U-Net's convention: ``num_classes`` is the "no class" label used for guidance.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import check_class_labels, check_dtype, check_float, check_positive_int, timestep_embedding

#: Bump when the architecture changes in a way that invalidates saved weights.
DIT_ARCHITECTURE = "dit-v1"


@dataclass
class DiTConfig:
    in_channels: int = 1
    image_size: int = 32
    patch_size: int = 4
    width: int = 256
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int | None = None

    def __post_init__(self):
        for name in ("in_channels", "image_size", "patch_size", "width", "depth", "heads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be divisible by patch_size {self.patch_size}")
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(f"width {self.width} must split into {self.heads} heads of an even size")
        if self.width % 4:
            raise ValueError(f"width must be divisible by 4 for the 2-D positional embedding, got {self.width}")
        self.num_classes = check_positive_int(self.num_classes, "num_classes", none_ok=True)
        r = self.mlp_ratio
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not math.isfinite(r) or int(self.width * r) < 1:
            raise ValueError(f"mlp_ratio must be a positive number (the MLP's hidden width ÷ width, e.g. 4.0) "
                             f"with int(width · mlp_ratio) ≥ 1, got {r!r}")

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict:
        return asdict(self)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """N×C×H×W → N×L×(p·p·C): row-major patches, each flattened as (row, col, channel)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"patchify takes images N×C×H×W, got {got}")
    n, c, h, w = x.shape
    if isinstance(p, bool) or not isinstance(p, int) or p < 1 or h % p or w % p:
        raise ValueError(f"the patch side p must be a positive int that divides H and W = {h}×{w}, got {p!r}")
    x = x.reshape(n, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: torch.Tensor, p: int, c: int, h: int, w: int) -> torch.Tensor:
    """The inverse of :func:`patchify`: N×L×(p·p·C) → N×C×H×W, L = (H/p)·(W/p)."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3:
        got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"unpatchify takes tokens N×L×(p·p·C), got {got}")
    for name, v in (("p", p), ("c", c), ("h", h), ("w", w)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"unpatchify's {name} must be a positive int, got {v!r}")
    if h % p or w % p:
        raise ValueError(f"the patch side p must divide H and W = {h}×{w}, got {p}")
    n, length, width = tokens.shape
    want_length, want_width = (h // p) * (w // p), p * p * c
    if length != want_length or width != want_width:
        raise ValueError(
            f"tokens must be N×{want_length}×{want_width} to make {c}×{h}×{w} images from {p}×{p} patches: "
            f"L = (H/p)·(W/p) = {want_length} tokens of p·p·C = {want_width} values; got N×{length}×{width}"
        )
    x = tokens.reshape(n, h // p, w // p, p, p, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(n, c, h, w)


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed positions for a grid×grid token map, (grid², dim): half the channels encode the row,
    half the column, each with the sinusoids of :func:`timestep_embedding`."""
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return torch.cat([timestep_embedding(rows.flatten(), dim // 2, 100.0),
                      timestep_embedding(cols.flatten(), dim // 2, 100.0)], dim=1)


def modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """h ⊙ (1 + scale) + shift, with one (shift, scale) per sample: h N×L×D, shift/scale N×D."""
    return h * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Self-attention and an MLP, each behind an adaLN-modulated LayerNorm and a gate (all zero at start)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def attention(self, h: torch.Tensor) -> torch.Tensor:
        n, L, d = h.shape
        q, k, v = self.qkv(h).reshape(n, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / sqrt(d_head)) v, per head
        return self.proj(out.transpose(1, 2).reshape(n, L, d))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b1, s1, g1, b2, s2, g2 = self.ada(c).chunk(6, dim=1)
        h = h + g1[:, None] * self.attention(modulate(self.norm1(h), b1, s1))
        return h + g2[:, None] * self.mlp(modulate(self.norm2(h), b2, s2))


class DiT(nn.Module):
    """ε_θ(x, t[, label]) as a transformer over patches; see the module docstring."""

    def __init__(self, config: DiTConfig | None = None):
        super().__init__()
        cfg = self.config = config or DiTConfig()
        p, d = cfg.patch_size, cfg.width
        self.embed = nn.Linear(p * p * cfg.in_channels, d)
        self.register_buffer("pos", sincos_2d(cfg.image_size // p, d), persistent=False)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        # one extra row: the "no class" label of classifier-free guidance
        self.class_emb = nn.Embedding(cfg.num_classes + 1, d) if cfg.num_classes is not None else None
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.out = nn.Linear(d, p * p * cfg.in_channels)
        for layer in (self.ada_out[1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def num_parameters(self) -> int:
        return sum(q.numel() for q in self.parameters())

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1:] != (cfg.in_channels, cfg.image_size,
                                                                               cfg.image_size):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be N×{cfg.in_channels}×{cfg.image_size}×{cfg.image_size}, got {got}")
        check_float(x)
        check_dtype(x, self.embed.weight)
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(len(x)) if t.dim() == 0 else t
        if t.shape != (len(x),):
            raise ValueError(f"t must have shape ({len(x)},), got {tuple(t.shape)}")
        if labels is not None:
            if self.class_emb is None:
                raise ValueError("this DiT has no num_classes, so it takes no labels")
            labels = check_class_labels(labels, len(x), cfg.num_classes, x.device)  # the U-Net's rules
        c = self.time_mlp(timestep_embedding(t, cfg.width).to(x.dtype))
        if self.class_emb is not None:
            if labels is None:
                labels = torch.full((len(x),), cfg.num_classes, dtype=torch.long, device=x.device)
            c = c + self.class_emb(labels)
        h = self.embed(patchify(x, cfg.patch_size)) + self.pos.to(x.dtype)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.ada_out(c).chunk(2, dim=1)
        tokens = self.out(modulate(self.norm_out(h), shift, scale))
        return unpatchify(tokens, cfg.patch_size, cfg.in_channels, cfg.image_size, cfg.image_size)


def flops_per_image(config: DiTConfig, attention: bool = True) -> float:
    """2 × the multiply-adds of one forward pass through every matrix product (norms, softmax and
    element-wise work left out).

    Per block: QKV and output projection 4·L·D², MLP 2·r·L·D², adaLN 6·D², and with ``attention``
    the scores and the mix 2·L²·D. Once: patch embedding and output L·p²C·D each, the time MLP 2·D²
    and the final adaLN 2·D².
    """
    L, D, r = config.tokens, config.width, config.mlp_ratio
    per_block = 4 * L * D * D + 2 * r * L * D * D + 6 * D * D + (2 * L * L * D if attention else 0)
    once = 2 * L * config.patch_size**2 * config.in_channels * D + 2 * D * D + 2 * D * D
    return 2 * (config.depth * per_block + once)


__all__ = ["DIT_ARCHITECTURE", "DiT", "DiTConfig", "flops_per_image", "patchify", "sincos_2d", "unpatchify"]

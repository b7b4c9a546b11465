r"""The building blocks of the course U-Net.

Every block maps N×C×H×W feature maps to N×C'×H'×W'. The time step reaches the
blocks as an embedding vector (N×D) made by :func:`timestep_embedding` and a small MLP.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    r"""Sinusoidal embedding of integer time steps (Transformer positions, used by DDPM).

    For i = 0 … dim/2 − 1 with frequency  ω_i = max_period^(−i / (dim/2)):

        emb(t) = [cos(ω_0 t), …, cos(ω_{d/2−1} t), sin(ω_0 t), …, sin(ω_{d/2−1} t)]

    t: (N,) integers or floats; returns N×dim float32. Low i turn fast with t, high i slowly,
    so nearby steps get similar vectors and far steps different ones.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"embedding dim must be an even number ≥ 2, got {dim}")
    t = torch.as_tensor(t)
    if t.dim() != 1:
        raise ValueError(f"t must have shape (N,), got {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


#: Fewest channels a GroupNorm group may hold. With one channel per group GroupNorm becomes
#: a per-channel normalisation that subtracts each channel's mean, and so erases the
#: per-channel time bias a ResBlock adds just before its second norm: the block would ignore t.
MIN_GROUP_CHANNELS = 4


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with gcd(channels, groups) groups, halved until each holds ≥ 4 channels.

    64 channels → 16 groups of 4; 320 → 32 groups of 10; 16 → 4 groups of 4; 20 → 4 of 5.
    """
    g = math.gcd(channels, groups)
    while g > 1 and channels // g < MIN_GROUP_CHANNELS and g % 2 == 0:
        g //= 2
    return nn.GroupNorm(g, channels, eps=1e-6)


class ResBlock(nn.Module):
    r"""h = conv(SiLU(GN(x))) + W_t·SiLU(emb);  out = skip(x) + conv(dropout(SiLU(GN(h)))).

    The time embedding is added as a per-channel bias after the first convolution.
    ``skip`` is the identity when channels stay the same, else a 1×1 convolution.
    x: N×C_in×H×W, emb: N×D → N×C_out×H×W.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0, groups: int = 32):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    r"""Multi-head self-attention over the H·W positions, with a residual connection.

    q, k, v = W_qkv·GN(x);  out = x + W_o · softmax(q kᵀ / √d) v, per head of width d.
    x: N×C×H×W → N×C×H×W. Cost grows with (H·W)², so the U-Net uses it at low resolution.
    """

    def __init__(self, channels: int, head_dim: int = 64, groups: int = 32):
        super().__init__()
        if channels % head_dim and head_dim < channels:
            raise ValueError(f"channels ({channels}) must be a multiple of head_dim ({head_dim})")
        self.heads = max(1, channels // head_dim)
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # N×HW×C
        q, k, v = self.qkv(tokens).view(n, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v)  # N×heads×HW×d
        attn = attn.transpose(1, 2).reshape(n, h * w, c)
        return x + self.out(attn).transpose(1, 2).reshape(n, c, h, w)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3×3 convolution: N×C×H×W → N×C×H/2×W/2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W (nearest neighbour) then a 3×3 convolution: N×C×H×W → N×C'×2H×2W.

    C' = ``out_channels`` (default C). The U-Net uses C' = the next level's width, so the
    convolution at the larger resolution is as narrow as that level: much cheaper.
    """

    def __init__(self, channels: int, out_channels: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))

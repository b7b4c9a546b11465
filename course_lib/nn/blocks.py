r"""The building blocks of the course U-Net.

Every block maps N×C×H×W feature maps to N×C'×H'×W'. The time step reaches the
blocks as an embedding vector (N×D) made by :func:`timestep_embedding` and a small MLP;
a text prompt reaches them as per-token states (N×L×D_ctx) through :class:`CrossAttention`
(lesson 06), whose attention maps :func:`record_attention` collects for plotting.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import check_labels


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


# --------------------------------------------------------------------------- shared input checks
# The models (U-Net, VAE, DiT, ControlNet) and the blocks below say the same thing about the same
# mistake. Every check reads only types, shapes and dtypes, never values on a GPU: no host–device
# sync, and torch.compile traces them as plain Python.


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` ("cpu", "cuda", …), on torch 2.4 … 2.13.

    Under autocast a float32 input meets float32 weights and runs in bf16: dtypes then need not
    match, so :func:`check_dtype` stays quiet."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # an older torch: no device argument
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


def check_float(x: torch.Tensor, name: str = "x", what: str = "images or latents") -> None:
    """A ValueError unless ``x`` holds floats: uint8 pixels or int tensors would reach a convolution raw."""
    if not x.is_floating_point():
        hint = (": scale uint8 pixels to [-1, 1] first, x.float() / 127.5 - 1" if x.dtype == torch.uint8
                else f": use {name}.float()")
        raise ValueError(f"{name} must be a float tensor ({what}), got {x.dtype}{hint}")


_CONVERT = {torch.float32: ".float()", torch.float64: ".double()", torch.bfloat16: ".bfloat16()",
            torch.float16: ".half()"}


def check_dtype(x: torch.Tensor, weight: torch.Tensor, name: str = "x", owner: str = "the model's") -> None:
    """A ValueError unless ``x`` has the dtype of ``weight`` (a layer its value first meets), or autocast is on.

    torch's own message ("mat1 and mat2 must have the same dtype", "Input type (double) and bias
    type (float)") names neither the argument nor the fix."""
    if x.dtype != weight.dtype and not autocast_enabled(x.device.type):
        fix = f"{name}{_CONVERT.get(weight.dtype, f'.to({weight.dtype})')}"
        raise ValueError(f"{name} must be {weight.dtype} like {owner} weights, got {x.dtype}: use {fix}")


def check_class_labels(labels, n: int, num_classes: int, device: torch.device) -> torch.Tensor:
    """Class labels as an int64 (n,) tensor on ``device``, or a ValueError that says what was expected.

    Labels lie in 0..num_classes, ``num_classes`` being the "no class" label of classifier-free
    guidance. Shape and dtype as :func:`course_lib.data.check_labels` (floats are refused: 1.6 would
    silently be class 1). The range is checked where it costs nothing: labels already on a GPU are left
    to the embedding, since reading them back would stall the GPU at every sampling step."""
    labels = check_labels(labels, n)
    if labels.device.type == "cpu" and labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi > num_classes:
            raise ValueError(f"labels must lie in 0..{num_classes} ({num_classes} = no class), got {lo}..{hi}")
    return labels.to(device)


def is_int(value) -> bool:
    """An int (a numpy integer too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(value, name: str, none_ok: bool = False):
    """``value`` as an int ≥ 1 (or None when ``none_ok``), else a ValueError naming ``name``."""
    if value is None and none_ok:
        return None
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be {'None or ' if none_ok else ''}a positive int, got {value!r}")
    return int(value)


def check_level_tuple(value, name: str, example: str, kind: str = "positive ints") -> tuple:
    """A config's per-level tuple (a list too: configs come back from JSON with lists), else a ValueError.

    ``kind``: "positive ints" or "bools"."""
    ok = isinstance(value, (tuple, list)) and len(value) > 0
    if ok and kind == "bools":
        ok = all(isinstance(v, (bool, np.bool_)) or (is_int(v) and v in (0, 1)) for v in value)
    elif ok:
        ok = all(is_int(v) and v >= 1 for v in value)
    if not ok:
        raise ValueError(f"{name} must be a tuple of {kind}, one per level, e.g. {example}; got {value!r}")
    return tuple(bool(v) for v in value) if kind == "bools" else tuple(int(v) for v in value)


def check_feature_map(x, channels: int, block: str, weight: torch.Tensor | None = None) -> None:
    """A ValueError that names the expected shape unless x is a float N×channels×H×W tensor
    (with ``weight``: of that weight's dtype, unless autocast is on).

    Only shapes and dtypes are read (never values), so the check costs nothing on a GPU, and a
    learner who wires a block wrongly reads which block wanted what, not a GroupNorm or conv
    error from deep inside torch.
    """
    if (not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != channels
            or not x.is_floating_point()):
        raise ValueError(f"{block} takes x as a float N×{channels}×H×W tensor, got {_describe(x)}")
    if weight is not None:
        check_dtype(x, weight, "x", f"{block}'s")


class ResBlock(nn.Module):
    r"""h = conv(SiLU(GN(x))) + W_t·SiLU(emb);  out = skip(x) + conv(dropout(SiLU(GN(h)))).

    The time embedding is added as a per-channel bias after the first convolution.
    ``skip`` is the identity when channels stay the same, else a 1×1 convolution.
    x: N×C_in×H×W, emb: N×D → N×C_out×H×W.

    With ``emb_dim=None`` the block has no time input (no ``emb`` layer) and is called as
    ``block(x)``: the plain residual block of the VAE (lesson 05).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None = None, dropout: float = 0.0,
                 groups: int = 32):
        super().__init__()
        self.in_ch = in_ch
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch) if emb_dim is not None else None
        self.norm2 = group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        check_feature_map(x, self.in_ch, "this ResBlock", self.conv1.weight)
        if self.emb is not None and (not isinstance(emb, torch.Tensor) or emb.dim() != 2
                                     or emb.shape != (x.shape[0], self.emb.in_features)):
            got = "None" if emb is None else _describe(emb)
            raise ValueError(f"this ResBlock takes a time embedding emb of shape N×{self.emb.in_features} "
                             f"with N = {x.shape[0]} (x's batch), got {got}")
        if self.emb is not None:
            check_dtype(emb, self.emb.weight, "emb", "this ResBlock's")
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb is not None:
            h = h + self.emb(F.silu(emb))[:, :, None, None]
        elif emb is not None:
            raise ValueError("this ResBlock was built with emb_dim=None, so it takes no emb")
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
        self.channels = channels
        self.heads = max(1, channels // head_dim)
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.channels, "this SelfAttention", self.qkv.weight)
        n, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # N×HW×C
        q, k, v = self.qkv(tokens).view(n, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v)  # N×heads×HW×d
        attn = attn.transpose(1, 2).reshape(n, h * w, c)
        return x + self.out(attn).transpose(1, 2).reshape(n, c, h, w)


class CrossAttention(nn.Module):
    r"""Multi-head attention from image positions to text tokens, with a residual connection.

    Queries come from the image, keys and values from the prompt's token states S (the rows
    are positions and tokens, the weights act on the right, as in lesson 06):

        Q = GN(x) W_q   (HW×C),   K = S W_k,  V = S W_v   (L×C, projected from context_dim),
        P = softmax(Q Kᵀ / √d + B)   (HW×L, per head of width d),   out = x + (P V) W_o + b_o

    with B = 0 where ``mask`` is True (a real token) and −∞ where it is False (padding), so
    every row of P sums to 1 over the real tokens. Row p of P says which words image position
    p reads from; lesson 06 plots these rows as heat maps over the image.

    x: N×C×H×W, context: N×L×context_dim, mask: N×L bool (None: every token is real)
    → N×C×H×W, or (out, P) with P N×heads×HW×L when ``return_attention=True``.

    Choices:

    - W_o starts at zero, so the block starts as the identity (as Stable Diffusion's
      ``proj_out`` and ControlNet's zero convolutions): a new text-conditioned U-Net starts
      as a plain one and learns how much to listen to the text, and cross-attention can be
      added to a trained U-Net without changing what it predicts. Only W_o gets a gradient on
      the very first step (the others sit behind it); after one update all of them do.
      P itself is not zero at the start, so its maps can be plotted from the start.
    - W_q, W_k, W_v have no bias (as in Stable Diffusion): a key bias adds the same q·b to
      every score of a row, which the softmax ignores, and a value bias adds the same vector
      to every output, which W_o's bias already can.
    - A prompt whose tokens are all masked would make a row of −∞ and a NaN softmax. Real
      prompts never are (the empty prompt encodes to [CLS][SEP]), so for such a row the first
      token is kept visible instead: no NaN, and no check that would stall a GPU.
    """

    def __init__(self, channels: int, context_dim: int, head_dim: int = 64, groups: int = 32):
        super().__init__()
        if channels % head_dim and head_dim < channels:
            raise ValueError(f"channels ({channels}) must be a multiple of head_dim ({head_dim})")
        if context_dim < 1:
            raise ValueError(f"context_dim must be ≥ 1, got {context_dim}")
        self.channels, self.context_dim = channels, context_dim
        self.heads = max(1, channels // head_dim)
        self.norm = group_norm(channels, groups)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(context_dim, channels, bias=False)
        self.to_v = nn.Linear(context_dim, channels, bias=False)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        #: Set by :func:`record_attention`: called with P (N×heads×HW×L) at every forward.
        self.attention_sink: Callable[[torch.Tensor], None] | None = None

    def check_inputs(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must be N×{self.channels}×H×W, got {_describe(x)}")
        n = x.shape[0]
        if not isinstance(context, torch.Tensor) or context.dim() != 3:
            raise ValueError(f"context must be N×L×{self.context_dim} token states, got {_describe(context)}")
        if context.shape[0] != n:
            raise ValueError(f"context must hold one prompt per image: batch {n}, got {context.shape[0]}")
        if context.shape[2] != self.context_dim:
            raise ValueError(
                f"context must be N×L×{self.context_dim} (this layer's context_dim), "
                f"got width {context.shape[2]}"
            )
        if context.shape[1] < 1:
            raise ValueError("context must hold at least one token (L ≥ 1), got L = 0")
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                raise ValueError(f"mask must be a bool tensor N×L (True = real token), got {_describe(mask)}")
            if mask.shape != context.shape[:2]:
                raise ValueError(
                    f"mask must be N×L = {tuple(context.shape[:2])} to match context, got {tuple(mask.shape)}"
                )

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None,
                return_attention: bool = False):
        self.check_inputs(x, context, mask)
        n, c, h, w = x.shape
        heads, d = self.heads, c // self.heads
        context = context.to(device=x.device, dtype=self.to_k.weight.dtype)
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # N×HW×C
        q = self.to_q(tokens).view(n, h * w, heads, d).transpose(1, 2)  # N×heads×HW×d
        k = self.to_k(context).view(n, -1, heads, d).transpose(1, 2)  # N×heads×L×d
        v = self.to_v(context).view(n, -1, heads, d).transpose(1, 2)  # N×heads×L×d

        visible = None  # N×1×1×L, True = attend
        if mask is not None:
            mask = mask.to(x.device)
            empty = ~mask.any(dim=1)  # prompts with no real token: keep their first token
            visible = torch.cat([mask[:, :1] | empty[:, None], mask[:, 1:]], dim=1)[:, None, None, :]

        probs = None
        if return_attention or self.attention_sink is not None:
            # The same attention, written out, so that P can be returned.
            scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # N×heads×HW×L
            if visible is not None:
                scores = scores.masked_fill(~visible, float("-inf"))
            probs = scores.softmax(dim=-1)
            attn = probs.to(v.dtype) @ v
            if self.attention_sink is not None:
                self.attention_sink(probs)
        else:
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)  # N×heads×HW×d
        attn = attn.transpose(1, 2).reshape(n, h * w, c)
        out = x + self.out(attn).transpose(1, 2).reshape(n, c, h, w)
        return (out, probs) if return_attention else out


@contextlib.contextmanager
def record_attention(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    r"""Collect the attention maps of every :class:`CrossAttention` inside ``model``.

    ::

        with record_attention(unet) as maps:
            unet(x, t, context=emb.tokens, context_mask=emb.mask)
        maps["mid_xattn"]          # N×heads×HW×L: row p = how image position p spreads over the tokens

    Yields a dict layer name (as in ``model.named_modules()``) → P, detached, filled by the
    forward passes run inside the ``with`` block (each pass overwrites the previous one's maps,
    so after a sampling loop it holds the last step's). While recording, the layers compute P
    explicitly instead of calling the fused kernel: slower, and more memory.
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, CrossAttention)}
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no CrossAttention layers to record "
            "(a U-Net has them only when built with context_dim)"
        )
    maps: dict[str, torch.Tensor] = {}

    def sink(name: str) -> Callable[[torch.Tensor], None]:
        def store(probs: torch.Tensor) -> None:
            maps[name] = probs.detach()
        return store

    for name, layer in layers.items():
        if layer.attention_sink is not None:
            raise RuntimeError(f"attention of {name!r} is already being recorded (nested record_attention)")
        layer.attention_sink = sink(name)
    try:
        yield maps
    finally:
        for layer in layers.values():
            layer.attention_sink = None


def token_heatmaps(maps: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    r"""Average recorded attention maps into one heat map per token: N×L×size×size.

        A[n, l] = mean over layers and heads of upsample(P_layer[n, head, :, l] as H×W → size×size)

    Every layer's H·W positions must form a square (the course's U-Nets work on square
    images). A[n, l] shows where in the image token l of prompt n was read.
    """
    if not maps:
        raise ValueError("maps is empty: record a forward pass with record_attention first")
    total = None
    for name, probs in maps.items():
        if probs.dim() != 4:
            raise ValueError(f"maps[{name!r}] must be N×heads×HW×L, got {tuple(probs.shape)}")
        n, _, hw, length = probs.shape
        side = math.isqrt(hw)
        if side * side != hw:
            raise ValueError(f"maps[{name!r}] has {hw} positions, not a square H×W")
        m = probs.float().mean(dim=1).transpose(1, 2).reshape(n, length, side, side)
        m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
        total = m if total is None else total + m
    return total / len(maps)


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dim()}-dim {x.dtype} tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3×3 convolution: N×C×H×W → N×C×H/2×W/2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.conv.in_channels, "this Downsample", self.conv.weight)
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
        check_feature_map(x, self.conv.in_channels, "this Upsample", self.conv.weight)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))

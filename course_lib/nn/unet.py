r"""The course U-Net: a noise predictor ε_θ(x_t, t [, class] [, text]) for 32×32 images.

    x_t ─ conv_in ─ [ResBlock×B (+attn)] ─ down ─ … ─ middle (Res, Attn, Res) ─ … ─ up ─ [ResBlock×B] ─ conv_out ─ ε̂
                         │  skip: concatenated on the way up  ▲

Level i works at resolution image_size / 2^i with ``channels[i]`` channels. Each encoder
ResBlock leaves a skip tensor; the decoder block of the same level concatenates it.
Going up, the upsampler's convolution also narrows to the next level's width, so no
wide convolution ever runs at a high resolution (where most of the compute would go).
Attention is used only where ``attention[i]`` is true (low resolution: cost ∝ (H·W)²).
The time step enters every ResBlock through an embedding; a class label, when the
model has ``num_classes``, is one more embedding added to it (label ``num_classes`` is
the "no class" token used by classifier-free guidance).

With ``context_dim`` set (lesson 06) the model also reads a prompt: N×L×context_dim token
states from a frozen text encoder and their N×L padding mask. A :class:`CrossAttention`
follows every self-attention (the levels where ``attention[i]`` is true, and the middle),
as in Stable Diffusion's transformer blocks: image positions there ask the prompt's tokens
what to draw. Class labels and a text context can be used alone or together; a label is
the simplest context, one learned vector for the whole image.
:func:`record_attention` collects the cross-attention maps of one forward pass.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (
    CrossAttention,
    Downsample,
    ResBlock,
    SelfAttention,
    Upsample,
    check_class_labels,
    check_dtype,
    check_float,
    check_level_tuple,
    check_positive_int,
    group_norm,
    is_int,
    record_attention,
    timestep_embedding,
    token_heatmaps,
)

__all__ = ["ARCHITECTURE", "UNet", "UNetConfig", "record_attention", "token_heatmaps"]


#: Bump when the module layout changes: cached checkpoints are keyed by it.
#: (Cross-attention did not change it: it adds layers only when context_dim is set, and
#: context_dim is part of the config, so it is part of every cache key that uses it.)
ARCHITECTURE = "unet-v3"  # v3: GroupNorm groups hold ≥ 4 channels, so t reaches every block


@dataclass
class UNetConfig:
    """Everything that defines a U-Net's shape; ``UNet(config)`` builds it."""

    in_channels: int = 1
    image_size: int = 32
    channels: tuple[int, ...] = (64, 128, 256)
    blocks: tuple[int, ...] = (1, 2, 2)  # ResBlocks per level, encoder and decoder alike
    attention: tuple[bool, ...] = (False, False, True)
    head_dim: int = 64
    groups: int = 32
    dropout: float = 0.0
    num_classes: int | None = None
    out_channels: int | None = None  # defaults to in_channels (ε has the image's shape)
    context_dim: int | None = None  # width D of the text tokens; None: no cross-attention
    extra: dict = field(default_factory=dict)  # room for later lessons' options

    def __post_init__(self):
        # lists are taken too: a config read back from JSON (to_dict, from_dict) has lists
        self.channels = check_level_tuple(self.channels, "channels", "(32, 64, 128)")
        levels = len(self.channels)
        if is_int(self.blocks):
            self.blocks = (self.blocks,) * levels
        self.blocks = check_level_tuple(self.blocks, "blocks", "(1, 2, 2), or one int for every level")
        self.attention = check_level_tuple(self.attention, "attention", "(False, False, True)", kind="bools")
        if len(self.blocks) != levels or len(self.attention) != levels:
            raise ValueError(
                f"blocks and attention need one entry per level ({levels}); "
                f"got {len(self.blocks)} and {len(self.attention)}"
            )
        for name in ("in_channels", "image_size", "head_dim", "groups"):
            setattr(self, name, check_positive_int(getattr(self, name), name))
        self.out_channels = check_positive_int(self.out_channels, "out_channels", none_ok=True)
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2^(levels−1) = {2 ** (levels - 1)}"
            )
        if self.num_classes is not None and (not is_int(self.num_classes) or self.num_classes < 1):
            raise ValueError(f"num_classes must be None or a positive int (≥ 1), got {self.num_classes!r}")
        if self.num_classes is not None:
            self.num_classes = int(self.num_classes)
        if self.context_dim is not None and (not is_int(self.context_dim) or self.context_dim < 1):
            raise ValueError(f"context_dim must be None or ≥ 1 (the text encoder's width), got {self.context_dim!r}")
        if self.context_dim is not None:
            self.context_dim = int(self.context_dim)

    @property
    def emb_dim(self) -> int:
        return 4 * self.channels[0]

    def to_dict(self) -> dict:
        d = json.loads(json.dumps(asdict(self)))
        # Left out when unset, so configs from before cross-attention keep their dict, and with
        # it the hash that keys their cached checkpoints.
        if d["context_dim"] is None:
            del d["context_dim"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        return cls(**d)


class UNet(nn.Module):
    """ε_θ(x_t, t, labels, context, context_mask) → N×C×H×W.

    x: N×C×H×W, t: (N,) int64, labels: (N,) int64 or None, context: N×L×context_dim
    (or a ``TextEmbedding``, whose mask is then used), context_mask: N×L bool or None.
    """

    def __init__(self, config: UNetConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = UNetConfig(**kwargs)
        elif kwargs:
            raise ValueError("pass either a UNetConfig or keyword arguments, not both")
        self.config = cfg = config
        ch, emb = cfg.channels, cfg.emb_dim

        def res(i, o):
            return ResBlock(i, o, emb, cfg.dropout, cfg.groups)

        def attn(c):
            return SelfAttention(c, cfg.head_dim, cfg.groups)

        def xattn(c):
            return CrossAttention(c, cfg.context_dim, cfg.head_dim, cfg.groups)

        # Cross-attention follows each self-attention. The "xattn" entries exist only with a
        # context_dim, so configs without one keep exactly their old parameters and names.
        def with_cross_attention(level, i, b):
            if cfg.context_dim is not None and cfg.attention[i]:
                level["xattn"] = nn.ModuleList([xattn(ch[i]) for _ in range(b)])

        self.time_mlp = nn.Sequential(nn.Linear(ch[0], emb), nn.SiLU(), nn.Linear(emb, emb))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, emb) if cfg.num_classes else None
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)

        # Encoder: level i = ResBlocks (+ attention), then a Downsample except at the bottom.
        self.down = nn.ModuleList()
        prev = ch[0]
        for i, (c, b) in enumerate(zip(ch, cfg.blocks)):
            level = nn.ModuleDict()
            level["res"] = nn.ModuleList([res(prev if j == 0 else c, c) for j in range(b)])
            level["attn"] = nn.ModuleList([attn(c) if cfg.attention[i] else nn.Identity() for _ in range(b)])
            with_cross_attention(level, i, b)
            level["down"] = Downsample(c) if i < len(ch) - 1 else nn.Identity()
            self.down.append(level)
            prev = c

        self.mid_res1, self.mid_attn, self.mid_res2 = res(prev, prev), attn(prev), res(prev, prev)
        self.mid_xattn = xattn(prev) if cfg.context_dim is not None else None

        # Decoder: mirror image; each ResBlock takes [h, skip] concatenated.
        self.up = nn.ModuleList()
        for i in reversed(range(len(ch))):
            c, b = ch[i], cfg.blocks[i]
            level = nn.ModuleDict()
            level["res"] = nn.ModuleList([res((prev if j == 0 else c) + c, c) for j in range(b)])
            level["attn"] = nn.ModuleList([attn(c) if cfg.attention[i] else nn.Identity() for _ in range(b)])
            with_cross_attention(level, i, b)
            level["up"] = Upsample(c, ch[i - 1]) if i > 0 else nn.Identity()
            self.up.append(level)
            prev = ch[i - 1] if i > 0 else c

        self.norm_out = group_norm(ch[0], cfg.groups)
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels or cfg.in_channels, 3, padding=1)
        # Start as a zero predictor: training begins from a stable, harmless output.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def check_inputs(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None,
                     context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None):
        cfg = self.config
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = f"{x.dim()} dims" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be N×{cfg.in_channels}×H×W, got {got}")
        if x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must have {cfg.in_channels} channel(s), got {x.shape[1]}")
        check_float(x)
        check_dtype(x, self.conv_in.weight)
        if x.shape[2] % 2 ** (len(cfg.channels) - 1) or x.shape[3] % 2 ** (len(cfg.channels) - 1):
            raise ValueError(
                f"H and W must be divisible by {2 ** (len(cfg.channels) - 1)}, got {tuple(x.shape[2:])}"
            )
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(len(x))
        if t.shape != (len(x),):
            raise ValueError(f"t must have shape ({len(x)},), got {tuple(t.shape)}")
        if labels is not None:
            if self.class_emb is None:
                raise ValueError("this U-Net has no num_classes, so it takes no labels")
            labels = check_class_labels(labels, len(x), cfg.num_classes, x.device)
        context, context_mask = self.check_context(len(x), context, context_mask)
        return t, labels, context, context_mask

    def check_context(self, n: int, context, context_mask):
        """The context as (N×L×D tensor, N×L bool mask or None), or a ValueError saying what was expected."""
        d = self.config.context_dim
        if hasattr(context, "tokens") and hasattr(context, "mask"):  # a text.TextEmbedding
            if context_mask is not None:
                raise ValueError("pass a TextEmbedding alone (it carries its own mask), or tokens and context_mask")
            context, context_mask = context.tokens, context.mask
        if d is None:
            if context is not None or context_mask is not None:
                raise ValueError("this U-Net has no context_dim, so it takes no context "
                                 "(build it with UNetConfig(context_dim=D) for text conditioning)")
            return None, None
        if context is None:
            raise ValueError(
                f"this U-Net was built with context_dim={d}: pass context (N×L×{d} token states); "
                "for an unconditional prediction pass the encoded empty prompt"
            )
        if not isinstance(context, torch.Tensor) or context.dim() != 3:
            got = f"{context.dim()} dims" if isinstance(context, torch.Tensor) else type(context).__name__
            raise ValueError(f"context must be N×L×{d}, got {got}")
        if context.shape[0] != n:
            raise ValueError(f"context must hold one prompt per image: {n}, got {context.shape[0]}")
        if context.shape[2] != d:
            raise ValueError(f"context must be N×L×{d} (the model's context_dim), got width {context.shape[2]}")
        if context_mask is not None and (
            not isinstance(context_mask, torch.Tensor) or context_mask.dtype != torch.bool
            or context_mask.shape != context.shape[:2]
        ):
            got = (f"{context_mask.dtype} {tuple(context_mask.shape)}" if isinstance(context_mask, torch.Tensor)
                   else type(context_mask).__name__)
            raise ValueError(f"context_mask must be a bool tensor N×L = {tuple(context.shape[:2])} "
                             f"(True = real token), got {got}")
        return context, context_mask

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                control: tuple[list[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """``control``: (one residual per skip, one for the middle), added to the encoder's outputs
        before the decoder reads them: how a ControlNet (``nn.controlnet``) steers a frozen U-Net."""
        t, labels, context, mask = self.check_inputs(x, t, labels, context, context_mask)
        h, skips, emb = self.encode(x, t, labels, context, mask)
        if control is not None:
            residuals, mid = control
            if len(residuals) != len(skips):
                raise ValueError(f"control must hold {len(skips)} skip residuals, got {len(residuals)}")
            skips = [s + r for s, r in zip(skips, residuals)]
            h = h + mid
        return self.decode(h, skips, emb, context, mask)

    def embed_time(self, t: torch.Tensor, labels: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """The vector every ResBlock reads: MLP(sinusoidal(t)) [+ E(label), "no class" when None]."""
        emb = self.time_mlp(timestep_embedding(t, self.config.channels[0]).to(dtype))
        if self.class_emb is not None:
            if labels is None:  # unconditional call: the "no class" token
                labels = torch.full(t.shape, self.config.num_classes, dtype=torch.long, device=t.device)
            emb = emb + self.class_emb(labels)
        return emb

    def _block(self, level, j, h, emb, context, mask):
        """ResBlock j of a level, then its self-attention, then its cross-attention."""
        h = level["attn"][j](level["res"][j](h, emb))
        return level["xattn"][j](h, context, mask) if "xattn" in level else h

    def encode(self, x, t, labels=None, context=None, mask=None, hint: torch.Tensor | None = None):
        """The encoder and the middle, on checked inputs: (h, skips, emb).

        ``hint``: features added after ``conv_in`` (a ControlNet's encoded condition)."""
        emb = self.embed_time(t, labels, x.dtype)
        h = self.conv_in(x)
        if hint is not None:
            h = h + hint
        skips = []
        for level in self.down:
            for j in range(len(level["res"])):
                h = self._block(level, j, h, emb, context, mask)
                skips.append(h)
            h = level["down"](h)
        h = self.mid_attn(self.mid_res1(h, emb))
        if self.mid_xattn is not None:
            h = self.mid_xattn(h, context, mask)
        return self.mid_res2(h, emb), skips, emb

    def decode(self, h, skips, emb, context=None, mask=None) -> torch.Tensor:
        """The decoder: each level's ResBlocks take [h, skip] (the skips used last-in, first-out)."""
        skips = list(skips)
        for level in self.up:
            for j in range(len(level["res"])):
                h = self._block(level, j, torch.cat([h, skips.pop()], dim=1), emb, context, mask)
            h = level["up"](h)
        return self.conv_out(F.silu(self.norm_out(h)))

    # ------------------------------------------------------------- inspection
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def parameters_by_level(self) -> dict[str, int]:
        """Parameter counts: 'stem' (time/class embedding, conv_in, conv_out), 'level i'
        (encoder + decoder blocks of level i with their attention and cross-attention, its
        down/upsampler) and 'middle'."""
        count = lambda *mods: sum(p.numel() for m in mods for p in m.parameters())  # noqa: E731
        out = {"stem": count(self.time_mlp, self.conv_in, self.norm_out, self.conv_out)}
        if self.class_emb is not None:
            out["stem"] += count(self.class_emb)
        n = len(self.config.channels)
        for i in range(n):
            out[f"level {i}"] = count(self.down[i], self.up[n - 1 - i])
        out["middle"] = count(self.mid_res1, self.mid_attn, self.mid_res2)
        if self.mid_xattn is not None:
            out["middle"] += count(self.mid_xattn)
        return out

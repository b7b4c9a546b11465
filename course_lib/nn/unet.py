r"""The course U-Net: a noise predictor ε_θ(x_t, t [, class]) for 32×32 images.

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
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Downsample, ResBlock, SelfAttention, Upsample, group_norm, timestep_embedding


#: Bump when the module layout changes: cached checkpoints are keyed by it.
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
    extra: dict = field(default_factory=dict)  # room for later lessons' options

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        if isinstance(self.blocks, int):
            self.blocks = (self.blocks,) * len(self.channels)
        self.blocks = tuple(int(b) for b in self.blocks)
        self.attention = tuple(bool(a) for a in self.attention)
        levels = len(self.channels)
        if levels < 1 or any(c < 1 for c in self.channels):
            raise ValueError(f"channels must be a non-empty tuple of positive widths, got {self.channels}")
        if len(self.blocks) != levels or len(self.attention) != levels:
            raise ValueError(
                f"blocks and attention need one entry per level ({levels}); "
                f"got {len(self.blocks)} and {len(self.attention)}"
            )
        if any(b < 1 for b in self.blocks):
            raise ValueError(f"every level needs at least one ResBlock, got blocks={self.blocks}")
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2^(levels−1) = {2 ** (levels - 1)}"
            )
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be None or ≥ 1, got {self.num_classes}")

    @property
    def emb_dim(self) -> int:
        return 4 * self.channels[0]

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        return cls(**d)


class UNet(nn.Module):
    """ε_θ(x_t, t, labels): N×C×H×W, (N,) int64 [, (N,) int64] → N×C×H×W."""

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
            level["down"] = Downsample(c) if i < len(ch) - 1 else nn.Identity()
            self.down.append(level)
            prev = c

        self.mid_res1, self.mid_attn, self.mid_res2 = res(prev, prev), attn(prev), res(prev, prev)

        # Decoder: mirror image; each ResBlock takes [h, skip] concatenated.
        self.up = nn.ModuleList()
        for i in reversed(range(len(ch))):
            c, b = ch[i], cfg.blocks[i]
            level = nn.ModuleDict()
            level["res"] = nn.ModuleList([res((prev if j == 0 else c) + c, c) for j in range(b)])
            level["attn"] = nn.ModuleList([attn(c) if cfg.attention[i] else nn.Identity() for _ in range(b)])
            level["up"] = Upsample(c, ch[i - 1]) if i > 0 else nn.Identity()
            self.up.append(level)
            prev = ch[i - 1] if i > 0 else c

        self.norm_out = group_norm(ch[0], cfg.groups)
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels or cfg.in_channels, 3, padding=1)
        # Start as a zero predictor: training begins from a stable, harmless output.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def check_inputs(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None):
        cfg = self.config
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = f"{x.dim()} dims" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be N×{cfg.in_channels}×H×W, got {got}")
        if x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must have {cfg.in_channels} channel(s), got {x.shape[1]}")
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
            labels = torch.as_tensor(labels)
            if labels.shape != (len(x),):
                raise ValueError(f"labels must have shape ({len(x)},), got {tuple(labels.shape)}")
            # the range is checked where it costs nothing: labels already on a GPU are left to the
            # embedding, since reading them back would stall the GPU at every sampling step
            if labels.device.type == "cpu" and labels.numel() and (
                int(labels.min()) < 0 or int(labels.max()) > cfg.num_classes
            ):
                raise ValueError(f"labels must lie in 0..{cfg.num_classes} ({cfg.num_classes} = no class)")
            labels = labels.to(x.device).long()
        return t, labels

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        t, labels = self.check_inputs(x, t, labels)
        emb = self.time_mlp(timestep_embedding(t, self.config.channels[0]).to(x.dtype))
        if self.class_emb is not None:
            if labels is None:  # unconditional call: the "no class" token
                labels = torch.full(t.shape, self.config.num_classes, dtype=torch.long, device=t.device)
            emb = emb + self.class_emb(labels)

        h = self.conv_in(x)
        skips = []
        for level in self.down:
            for res, attn in zip(level["res"], level["attn"]):
                h = attn(res(h, emb))
                skips.append(h)
            h = level["down"](h)

        h = self.mid_res2(self.mid_attn(self.mid_res1(h, emb)), emb)

        for level in self.up:
            for res, attn in zip(level["res"], level["attn"]):
                h = attn(res(torch.cat([h, skips.pop()], dim=1), emb))
            h = level["up"](h)

        return self.conv_out(F.silu(self.norm_out(h)))

    # ------------------------------------------------------------- inspection
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def parameters_by_level(self) -> dict[str, int]:
        """Parameter counts: 'stem' (time/class embedding, conv_in, conv_out), 'level i'
        (encoder + decoder blocks of level i, its down/upsampler) and 'middle'."""
        count = lambda *mods: sum(p.numel() for m in mods for p in m.parameters())  # noqa: E731
        out = {"stem": count(self.time_mlp, self.conv_in, self.norm_out, self.conv_out)}
        if self.class_emb is not None:
            out["stem"] += count(self.class_emb)
        n = len(self.config.channels)
        for i in range(n):
            out[f"level {i}"] = count(self.down[i], self.up[n - 1 - i])
        out["middle"] = count(self.mid_res1, self.mid_attn, self.mid_res2)
        return out

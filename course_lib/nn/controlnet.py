r"""ControlNet (Zhang et al. 2023): steer a frozen, trained U-Net with a spatial condition (lesson 10).

A *trainable copy* of the U-Net's encoder and middle reads the noisy image together with the
condition, here an edge map. Its features flow back into the frozen U-Net through 1×1
convolutions that start at zero:

    hint  = H(edges)                                  (a small conv net, last layer zero-initialised)
    (ĥ, ŝ₁ … ŝ_K) = Encoder_copy(x_t, t, c; + hint)   (the copy starts with the U-Net's own weights)
    ε̂ = Decoder(h + Z_mid(ĥ), s_k + Z_k(ŝ_k))        (Z: zero-initialised 1×1 convs; the U-Net frozen)

At step 0 every Z is zero, so ε̂ is exactly the frozen U-Net's prediction. Training starts from a
model that already works, and the gradient reaches the copy through the Z's, which begin to open
after the first step. Only the copy, H and the Z's train.

``sobel_edges`` makes the condition from images, and ``edge_overlap`` measures how well samples
follow it. Training is in ``train.train_controlnet`` (models never reach back up to the training code).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import check_positive_int
from .unet import UNet


def zero_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ControlNet(nn.Module):
    """The trainable side: a copy of ``unet``'s encoder and middle, the hint encoder and the zero convs."""

    def __init__(self, unet: UNet, hint_channels: int = 1, hint_width: int = 16):
        super().__init__()
        if not isinstance(unet, UNet):
            raise ValueError(f"ControlNet copies a course UNet, got {type(unet).__name__}")
        hint_channels = check_positive_int(hint_channels, "hint_channels (channels of the condition image)")
        hint_width = check_positive_int(hint_width, "hint_width")
        self.copy = copy.deepcopy(unet).requires_grad_(True)
        for name in ("up", "norm_out", "conv_out"):  # the copy needs no decoder
            delattr(self.copy, name)
        c0 = unet.config.channels[0]
        self.hint = nn.Sequential(
            nn.Conv2d(hint_channels, hint_width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hint_width, hint_width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hint_width, c0, 3, padding=1),
        )
        nn.init.zeros_(self.hint[-1].weight)
        nn.init.zeros_(self.hint[-1].bias)
        cfg = unet.config
        skip_channels = [c for c, b in zip(cfg.channels, cfg.blocks) for _ in range(b)]
        self.zero_skips = nn.ModuleList(zero_conv(c) for c in skip_channels)
        self.zero_mid = zero_conv(cfg.channels[-1])
        self.hint_channels = hint_channels

    def forward(self, x, t, hint, labels=None, context=None, context_mask=None):
        """(one residual per skip of the U-Net, one for its middle), for ``UNet.forward(control=...)``."""
        if not isinstance(hint, torch.Tensor) or hint.dim() != 4 or hint.shape[0] != x.shape[0] \
                or hint.shape[1] != self.hint_channels or hint.shape[2:] != x.shape[2:]:
            got = tuple(hint.shape) if isinstance(hint, torch.Tensor) else type(hint).__name__
            raise ValueError(f"hint must be N×{self.hint_channels}×H×W like x {tuple(x.shape)}, got {got}")
        t, labels, context, mask = self.copy.check_inputs(x, t, labels, context, context_mask)
        h, skips, _ = self.copy.encode(x, t, labels, context, mask, hint=self.hint(hint.to(x.device, x.dtype)))
        return [z(s) for z, s in zip(self.zero_skips, skips)], self.zero_mid(h)


class ControlledUNet(nn.Module):
    """The frozen U-Net steered by a ControlNet: ε̂(x, t, hint[, labels, context]).

    The U-Net's weights are frozen (``requires_grad_(False)``); only ``controlnet`` trains.
    ``config`` is the U-Net's, so the samplers read the image shape from it.
    """

    def __init__(self, unet: UNet, controlnet: ControlNet | None = None):
        super().__init__()
        self.unet = unet.requires_grad_(False).eval()
        self.controlnet = controlnet if controlnet is not None else ControlNet(unet)
        self.config = unet.config

    def forward(self, x, t, hint, labels=None, context=None, context_mask=None):
        control = self.controlnet(x, t, hint, labels, context, context_mask)
        return self.unet(x, t, labels, context, context_mask, control=control)

    def with_hint(self, hint: torch.Tensor) -> HintBound:
        """This model with ``hint`` (N×c×H×W) bound: ``model(x, t[, labels, context])`` like a plain U-Net,
        so the course's samplers and the training loss run it unchanged. Sample N images in one batch
        (``sample(..., batch_size=N)``): row i of every batch is steered by ``hint[i]``."""
        return HintBound(self, hint)


class HintBound(nn.Module):
    """A :class:`ControlledUNet` with its hints fixed: ε̂(x, t[, labels, context]) for the samplers and the loss."""

    def __init__(self, controlled: ControlledUNet, hint: torch.Tensor):
        super().__init__()
        if not isinstance(hint, torch.Tensor) or hint.dim() != 4:
            got = tuple(hint.shape) if isinstance(hint, torch.Tensor) else type(hint).__name__
            raise ValueError(f"hint must be a tensor N×c×H×W, got {got}")
        self.controlled, self.hint = controlled, hint
        self.config = controlled.config

    def forward(self, x, t, labels=None, context=None, context_mask=None):
        return self.controlled(x, t, self.hint, labels, context, context_mask)


def sobel_edges(images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Edge maps of N×1×H×W images in [-1, 1]: 1 where the Sobel gradient magnitude exceeds
    ``threshold / 2``, else −1. Shape N×1×H×W, values in {−1, 1}.

    The filters are scaled so that a full black-to-white step (−1 to 1, a jump of 2) reads 1, so
    an edge is a step of more than ``threshold`` in pixel value: the default 0.5 is a quarter of
    the range, a magnitude of 0.25 (lesson 10's formula)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 1:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be N×1×H×W, got {got}")
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=images.device) / 8
    k = torch.stack([kx, kx.T])[:, None]  # 2×1×3×3: d/dx and d/dy
    g = F.conv2d(F.pad(images.float(), (1, 1, 1, 1), mode="replicate"), k)
    mag = g.pow(2).sum(dim=1, keepdim=True).sqrt()
    return torch.where(mag > threshold / 2, 1.0, -1.0)  # the range [-1, 1] spans 2


def edge_overlap(edges_a: torch.Tensor, edges_b: torch.Tensor) -> torch.Tensor:
    """Per image, the F1 overlap of two edge maps (values > 0 are edges): 2|A∩B| / (|A| + |B|), (N,).
    1 when they coincide, 0 when they share no edge pixel; two empty maps count as 1."""
    if edges_a.shape != edges_b.shape:
        raise ValueError(f"edge maps must have the same shape, got {tuple(edges_a.shape)} and {tuple(edges_b.shape)}")
    a, b = (edges_a > 0).flatten(1).float(), (edges_b > 0).flatten(1).float()
    inter, total = (a * b).sum(1), a.sum(1) + b.sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))

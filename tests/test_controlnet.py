"""ControlNet (lesson 10): the zero start, where gradients go, edge maps, and a toy that follows its edges."""

from __future__ import annotations

import pytest
import torch

from course_lib.nn.controlnet import ControlledUNet, ControlNet, edge_overlap, sobel_edges
from course_lib.nn.unet import UNet, UNetConfig
from course_lib.samplers import sample
from course_lib.schedules import NoiseSchedule
from course_lib.train import TrainConfig, train_controlnet, train_diffusion

CFG = UNetConfig(image_size=16, channels=(8, 16), blocks=(1, 1), attention=(False, True), head_dim=8, groups=4,
                 num_classes=3)


def _trained_looking_unet(seed=0):
    torch.manual_seed(seed)
    unet = UNet(CFG)
    with torch.no_grad():  # a U-Net whose output depends on its input (conv_out starts at zero)
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet


def test_at_step_zero_the_controlled_unet_is_exactly_the_frozen_unet():
    unet = _trained_looking_unet()
    controlled = ControlledUNet(unet)
    x, t, labels = torch.randn(3, 1, 16, 16), torch.tensor([5, 50, 95]), torch.tensor([0, 1, 3])
    hint = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(controlled(x, t, hint, labels), unet(x, t, labels))


def test_only_the_controlnet_trains_and_the_zero_convs_open_first():
    unet = _trained_looking_unet()
    controlled = ControlledUNet(unet)
    assert not any(p.requires_grad for p in controlled.unet.parameters())
    x, t, hint = torch.randn(4, 1, 16, 16), torch.tensor([10, 20, 30, 40]), torch.randn(4, 1, 16, 16)
    controlled(x, t, hint).pow(2).mean().backward()
    cn = controlled.controlnet
    assert all(p.grad is None for p in controlled.unet.parameters())
    assert all(z.weight.grad.abs().sum() > 0 for z in cn.zero_skips) and cn.zero_mid.weight.grad.abs().sum() > 0
    # behind zero convs, the copy gets no gradient on the first step
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in cn.copy.parameters())
    torch.optim.SGD(cn.parameters(), lr=0.1).step()
    with torch.no_grad():
        assert not torch.allclose(controlled(x, t, hint), unet(x, t))


def test_the_copy_starts_from_the_unets_weights():
    unet = _trained_looking_unet()
    cn = ControlNet(unet)
    for name, p in cn.copy.named_parameters():
        assert torch.equal(p, dict(unet.named_parameters())[name])
    assert not hasattr(cn.copy, "up")


def test_edges_and_their_overlap():
    img = -torch.ones(1, 1, 8, 8)
    img[..., 4:] = 1.0  # a vertical step between columns 3 and 4
    e = sobel_edges(img)
    cols = (e[0, 0] > 0).any(dim=0).nonzero().flatten().tolist()
    assert cols == [3, 4] and (e[0, 0, :, 3] > 0).all()
    assert edge_overlap(e, e).item() == 1.0
    assert edge_overlap(e, -torch.ones_like(e)).item() == 0.0
    shifted = torch.roll(e, 1, dims=3)  # columns 4, 5: one of two shared
    assert edge_overlap(e, shifted).item() == pytest.approx(0.5)


def test_with_hint_binds_the_hint_for_samplers_and_the_loss():
    controlled = ControlledUNet(_trained_looking_unet())
    with torch.no_grad():
        cn = controlled.controlnet  # open the hint encoder's zero layer and one zero conv: the hint now matters
        for p in [*cn.hint[-1].parameters(), *cn.zero_mid.parameters()]:
            p.add_(0.1)
    x, t, labels = torch.randn(3, 1, 16, 16), torch.tensor([5, 50, 95]), torch.tensor([0, 1, 3])
    hint = torch.randn(3, 1, 16, 16)
    bound = controlled.with_hint(hint)
    assert bound.config is controlled.config  # the samplers read the image shape from it
    with torch.no_grad():
        assert torch.equal(bound(x, t, labels), controlled(x, t, hint, labels))
        assert not torch.equal(bound(x, t, labels), controlled.with_hint(-hint)(x, t, labels))
    with pytest.raises(ValueError, match="hint must be N×1×H×W"):  # a batch the hints do not match
        bound(torch.randn(2, 1, 16, 16), torch.tensor([1, 2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="hint must be a tensor N×c×H×W"):
        controlled.with_hint(torch.randn(1, 16, 16))


def test_bad_input_is_refused():
    controlled = ControlledUNet(_trained_looking_unet())
    with pytest.raises(ValueError, match="hint must be N×1×H×W"):
        controlled(torch.randn(2, 1, 16, 16), torch.tensor([1, 2]), torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="copies a course UNet"):
        ControlNet(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="images must be N×1×H×W"):
        sobel_edges(torch.randn(2, 3, 8, 8))


def test_a_trained_controlnet_makes_samples_follow_the_edges():
    """Squares anywhere in a 16×16 frame: the plain model puts them at random; with the edge map of a
    given square as the hint, the samples' edges overlap the hint's much more."""
    g = torch.Generator().manual_seed(0)
    n = 512
    x = -torch.ones(n, 1, 16, 16)
    for i, (r, c) in enumerate(torch.randint(0, 11, (n, 2), generator=g).tolist()):
        x[i, :, r : r + 6, c : c + 6] = 1.0
    cfg = UNetConfig(image_size=16, channels=(8, 16), blocks=(1, 1), attention=(False, False), groups=4)
    schedule = NoiseSchedule.cosine(100)
    torch.manual_seed(0)
    base = train_diffusion(UNet(cfg), schedule, x, TrainConfig(steps=150, batch_size=32, lr=3e-3, warmup_steps=10,
                                                               ema_decay=0.9), device="cpu", progress=False).model
    controlled = ControlledUNet(base)
    edges = sobel_edges(x)
    losses = train_controlnet(controlled, schedule, x, edges, steps=150, batch_size=32, lr=2e-3, device="cpu",
                              progress=False)
    assert sum(losses[-25:]) < sum(losses[:25])
    hints = edges[:16]
    plain = sample(base, schedule, 16, sampler="ddim", steps=20, progress=False, seed=1)
    ctrl = sample(controlled.with_hint(hints), schedule, 16, sampler="ddim", steps=20, progress=False, seed=1,
                  batch_size=16)
    follow = edge_overlap(sobel_edges(ctrl), hints).mean().item()
    chance = edge_overlap(sobel_edges(plain), hints).mean().item()
    print(f"edge overlap: {follow:.2f} with the ControlNet, {chance:.2f} without")
    assert follow > chance + 0.15, (follow, chance)



def test_dtypes_labels_and_sizes_are_checked_as_by_the_unet():
    controlled = ControlledUNet(_trained_looking_unet())
    x, t, hint = torch.randn(2, 1, 16, 16), torch.tensor([1, 2]), torch.randn(2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"x must be torch.float32 like the model's weights, got torch.float64"):
        controlled(x.double(), t, hint)
    with pytest.raises(ValueError, match=r"x must be a float tensor \(images or latents\), got torch.uint8"):
        controlled((x.abs() * 10).to(torch.uint8), t, hint)
    with pytest.raises(ValueError, match="labels must be integer class indices, got torch.float32"):
        controlled(x, t, hint, torch.tensor([1.6, 2.9]))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert controlled(x, t, hint, torch.tensor([0, 3])).shape == x.shape
    with pytest.raises(ValueError, match=r"hint_channels \(channels of the condition image\) must be a positive int, "
                                         r"got 0"):
        ControlNet(_trained_looking_unet(), hint_channels=0)
    with pytest.raises(ValueError, match="hint_width must be a positive int, got 2.5"):
        ControlNet(_trained_looking_unet(), hint_width=2.5)

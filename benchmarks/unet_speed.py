"""Training-step time: the course U-Net vs diffusers' UNet2DModel at a matched parameter count.

Both models take one AdamW step on the same batch (ε-prediction MSE), under the same
precision policy (fp32 on CPU, bf16 autocast on CUDA), in one interleaved run: course,
diffusers, course, diffusers, … so that a busy machine slows both alike. Reports the
median seconds per step of each and the speed-up.

    python benchmarks/unet_speed.py                 # CPU, batch 128, 32×32, 5 rounds
    python benchmarks/unet_speed.py --device cuda --rounds 50

Both U-Nets are 3 levels (32×32, 16×16, 8×8) with attention only at 8×8. diffusers' is its
usual layout (64, 128, 256), two ResBlocks per level going down, three coming up. The
course's puts its parameters where the pixels are few: 32 channels and 1 ResBlock at 32×32,
320 channels and 2 ResBlocks at 8×8, one skip per ResBlock (none from conv_in and the
downsamplers), and upsamplers that narrow to the next level's width. Same parameter budget
(±10%), far fewer multiply-adds at high resolution.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import replace

import torch

from course_lib.device import autocast
from course_lib.nn.unet import UNet, UNetConfig

COURSE = UNetConfig(channels=(32, 96, 320), blocks=(1, 1, 2), attention=(False, False, True), head_dim=64)


def diffusers_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=32, in_channels=1, out_channels=1, block_out_channels=(64, 128, 256), layers_per_block=2,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=64,
    )


def count(m) -> int:
    return sum(p.numel() for p in m.parameters())


def step_fn(model, forward, device, batch):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 1, 32, 32, generator=g).to(device)
    noise = torch.randn(batch, 1, 32, 32, generator=g).to(device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)

    def step():
        with autocast(device):
            loss = (forward(model, x, t).float() - noise).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def with_layout(cfg: UNetConfig, pairs: list[str]) -> UNetConfig:
    """``cfg`` with each FIELD=VALUE applied: a tuple field takes comma-separated values (booleans as 0/1),
    e.g. ``channels=32,96,256,320 blocks=1,1,1,1 attention=0,0,1,1``."""
    changes = {}
    for pair in pairs:
        field, _, text = pair.partition("=")
        if not text or not hasattr(cfg, field):
            raise SystemExit(f"--unet takes FIELD=VALUE with a UNetConfig field, got {pair!r}")
        current = getattr(cfg, field)
        if isinstance(current, tuple):
            kind = bool if current and isinstance(current[0], bool) else int
            changes[field] = tuple(kind(int(v)) for v in text.split(","))
        else:
            changes[field] = type(current)(text)
    return replace(cfg, **changes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--unet", nargs="+", default=[], metavar="FIELD=VALUE", help="another layout for the course "
                    "U-Net, e.g. channels=32,96,256,320 blocks=1,1,1,1 attention=0,0,1,1")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    layout = with_layout(COURSE, args.unet)
    ours, theirs = UNet(layout).to(device), diffusers_unet().to(device)
    n_ours, n_theirs = count(ours), count(theirs)
    assert abs(n_ours / n_theirs - 1) <= 0.10, f"parameter counts differ by more than 10%: {n_ours} vs {n_theirs}"
    steps = {
        "course": step_fn(ours, lambda m, x, t: m(x, t), device, args.batch),
        "diffusers": step_fn(theirs, lambda m, x, t: m(x, t).sample, device, args.batch),
    }
    for s in steps.values():  # warm-up (allocator, kernels)
        s()
    times = {k: [] for k in steps}
    for _ in range(args.rounds):
        for name, s in steps.items():
            t0 = time.perf_counter()
            s()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    print(f"device: {device} ({where}); torch {torch.__version__}; batch {args.batch}; "
          f"{args.rounds} interleaved rounds; course U-Net channels {layout.channels}, blocks {layout.blocks}, "
          f"attention {layout.attention}")
    print("| model | parameters | median s/step | images/s |")
    print("| --- | --- | --- | --- |")
    for name, n in (("course UNet", n_ours), ("diffusers UNet2DModel", n_theirs)):
        m = med["course" if name.startswith("course") else "diffusers"]
        print(f"| {name} | {n / 1e6:.2f}M | {m:.3f} | {args.batch / m:.1f} |")
    print(f"speed-up (diffusers / course): {med['diffusers'] / med['course']:.2f}×")


if __name__ == "__main__":
    main()

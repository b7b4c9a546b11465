"""VAE reconstruction quality (test PSNR) at factors 4 and 2, and U-Net step time on pixels vs latents.

Trains the course's full VAE recipe (``vae_recipe(quick=False, factor)``) on each dataset's
train split, or loads it from the cache (``<cache>/models/vae-<dataset>-<hash>``), then on
the test split reports the mean per-image PSNR of decode(μ(x)) (reconstructions clamped to
[-1, 1]; PSNR = 10·log10(4 / MSE) for images in [-1, 1]), the KL per latent value (nats),
the latent scaling factor (1 / std of μ over 2048 training images), the training seconds
and the device. MNIST is included when its train split is on disk (``COURSE_DATA_DIR`` or
the cache); otherwise it is skipped, saying so.

Then one training step (forward + backward + AdamW, batch 128) of the course U-Net at the
full DDPM widths (32, 96, 320) on pixels (1×32×32) and on factor-4 latents (4×8×8),
interleaved, median of ``--rounds``: why latent diffusion is cheaper.

    python benchmarks/vae_quality.py --device cuda              # the full recipe on a GPU
    python benchmarks/vae_quality.py --steps 300 --batch-size 32 --test-images 2000   # a CPU taste
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from course_lib.data import load_images
from course_lib.device import autocast, pick_device
from course_lib.nn.unet import UNet, UNetConfig
from course_lib.nn.vae import kl_divergence, psnr
from course_lib.settings import get_settings
from course_lib.train import cached_vae, ddpm_recipe, vae_recipe

MNIST_TRAIN = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")


def mnist_train_present() -> bool:
    """True when MNIST's train files are on disk, so loading them downloads nothing."""
    s = get_settings()
    places = [s.cache_dir / "data" / "mnist"] + ([s.data_dir / "mnist"] if s.data_dir else [])
    return any(all((p / f).is_file() for f in MNIST_TRAIN) for p in places)


@torch.no_grad()
def evaluate(vae, images: torch.Tensor, device: torch.device, batch_size: int = 500) -> tuple[float, float]:
    """(mean per-image PSNR of decode(μ(x)) clamped to [-1, 1], mean KL nats per latent value)."""
    vae.to(device).eval()
    psnrs, kls = [], []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        with autocast(device):
            mean, logvar = vae.encode_distribution(x)
            recon = vae.decode(mean).float().clamp(-1, 1)
        psnrs.append(psnr(recon, x).cpu())
        kls.append((kl_divergence(mean, logvar) / mean[0].numel()).cpu())
    return torch.cat(psnrs).mean().item(), torch.cat(kls).mean().item()


def unet_step_times(device: torch.device, batch: int, rounds: int) -> dict[str, tuple[float, int, int]]:
    """{input: (median seconds per training step, FLOPs per step, values per image)} for the
    full-width course U-Net on pixels and on latents."""
    base, _, _ = ddpm_recipe(quick=False)
    shapes = {"pixels 1×32×32": (1, 32), "latents 4×8×8": (4, 8)}
    steps = {}
    for name, (c, s) in shapes.items():
        torch.manual_seed(0)
        model = UNet(UNetConfig(**{**base.to_dict(), "in_channels": c, "image_size": s})).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(batch, c, s, s, device=device)
        t = torch.randint(0, 1000, (batch,), device=device)

        def step(model=model, opt=opt, x=x, t=t):
            with autocast(device):
                loss = (model(x, t).float() - x).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()

        with FlopCounterMode(display=False) as counter:  # the warm-up step, counted
            step()
        steps[name] = (step, counter.get_total_flops(), s * s * c)
    times = {name: [] for name in steps}
    for _ in range(rounds):  # interleaved, so a busy machine slows both alike
        for name, (step, _, _) in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(times[name]), steps[name][1], steps[name][2]) for name in steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's training steps")
    ap.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    ap.add_argument("--quick", action="store_true", help="the quick recipe instead of the full one")
    ap.add_argument("--factors", type=int, nargs="+", default=[4, 2])
    ap.add_argument("--datasets", nargs="+", default=["fashion_mnist", "mnist"])
    ap.add_argument("--test-images", type=int, default=10_000, help="test images to evaluate (default all)")
    ap.add_argument("--rounds", type=int, default=5, help="U-Net timing rounds (0 skips the timing)")
    ap.add_argument("--retrain", action="store_true", help="train even when the cache has the model")
    args = ap.parse_args()
    device = pick_device(args.device)
    command = "python benchmarks/vae_quality.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    rows, notes = [], []
    for dataset in args.datasets:
        if dataset == "mnist" and not mnist_train_present():
            notes.append("MNIST skipped: its train split is not on disk (put train-images-idx3-ubyte.gz and "
                         "train-labels-idx1-ubyte.gz in $COURSE_DATA_DIR/mnist/ or the cache).")
            continue
        test = load_images(dataset, "test").images[: args.test_images]
        for factor in args.factors:
            vae_cfg, train_cfg = vae_recipe(quick=args.quick, factor=factor)
            if args.steps is not None:
                train_cfg = replace(train_cfg, steps=args.steps, warmup_steps=min(train_cfg.warmup_steps, args.steps))
            if args.batch_size is not None:
                train_cfg = replace(train_cfg, batch_size=args.batch_size)
            res = cached_vae(vae_cfg, train_cfg, dataset=dataset, device=device, retrain=args.retrain)
            t0 = time.perf_counter()
            p, kl = evaluate(res.model, test, device)
            c, h, w = vae_cfg.latent_shape
            rows.append(
                f"| {dataset} | {factor} ({c}×{h}×{w}) | {vae_cfg.channels} | {res.model.num_parameters() / 1e6:.2f}M "
                f"| {train_cfg.steps}×{train_cfg.batch_size} | {train_cfg.beta:g} | **{p:.2f}** | {kl:.3f} "
                f"| {res.scaling_factor:.3f} | {res.seconds:.0f}{' (cached)' if res.from_cache else ''} |"
            )
            print(f"{dataset} factor {factor}: PSNR {p:.2f} dB on {len(test)} test images "
                  f"(eval {time.perf_counter() - t0:.0f} s)", flush=True)

    print(f"\n`{command}`\n")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print("| dataset | factor (latent) | widths | parameters | steps×batch | β | test PSNR dB | KL/value nats "
          "| scaling factor | train s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    for note in notes:
        print(f"\n{note}")

    if args.rounds > 0:
        times = unet_step_times(device, 128, args.rounds)
        (tp, fp, vp), (tl, fl, vl) = times["pixels 1×32×32"], times["latents 4×8×8"]
        print(f"\nU-Net (32, 96, 320) training step (forward + backward + AdamW), batch 128, "
              f"median of {args.rounds}:\n")
        print("| input | values per image | GFLOP per step | s/step | images/s |")
        print("| --- | --- | --- | --- | --- |")
        for name, (sec, flops, values) in times.items():
            print(f"| {name} | {values} | {flops / 1e9:.0f} | {sec:.3f} | {128 / sec:.0f} |")
        print(f"\nLatents: {vp / vl:.0f}× fewer values, {(32 / 8) ** 2:.0f}× less area per feature map, "
              f"{fp / fl:.1f}× fewer FLOPs, {tp / tl:.1f}× faster per step.")


if __name__ == "__main__":
    main()

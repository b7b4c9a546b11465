"""Train the course's DDPM on several GPUs: ``torchrun --nproc_per_node=2 -m course_lib.train_ddp``.

Nothing in the training code changes: :func:`~course_lib.distributed.init_distributed`
joins the process group torchrun sets up, :func:`~course_lib.train.train_diffusion` sees
it and splits each (global) batch across the ranks, and rank 0 writes the checkpoint,
which :func:`~course_lib.train.load_checkpoint` reads like any other. Run with plain
``python -m course_lib.train_ddp`` it trains as one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from .data import load_images
from .device import pick_device, training_compile
from .distributed import cleanup_distributed, init_distributed
from .nn.unet import UNet
from .settings import get_settings
from .train import check_cpu_budget, ddpm_recipe, save_checkpoint, seeded_init, train_diffusion


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchrun --nproc_per_node=N -m course_lib.train_ddp",
                                description="Train ddpm_recipe() with DistributedDataParallel; rank 0 saves it.")
    p.add_argument("--out", type=Path, default=None,
                   help="checkpoint folder (default: checkpoints/ddpm-<dataset>-ddp)")
    p.add_argument("--dataset", default=None, help="fashion_mnist, mnist or digits (default: COURSE_DATASET)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="the GLOBAL batch, split evenly across the processes (default: the recipe's)")
    p.add_argument("--quick", action="store_true",
                   help="the quick-mode recipe (small U-Net, short budget); without it, the full recipe, which on a "
                   "CPU is refused (it would take days)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    dataset = args.dataset or settings.dataset
    out = args.out or Path("checkpoints") / f"ddpm-{dataset}-ddp"
    if out.exists() and not args.overwrite:  # fail before training, not after
        print(f"{out} exists; pass --overwrite or another --out", file=sys.stderr)
        return 2
    try:
        info = init_distributed(device=settings.device)  # COURSE_DEVICE=cpu trains on the CPU on a GPU machine too
    except ValueError as e:
        print(f"train_ddp: {e}", file=sys.stderr)
        return 2
    try:
        unet_config, schedule, config = ddpm_recipe(quick=args.quick or None)
        changes = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size}.items() if v is not None}
        config = dataclasses.replace(config, **changes)
        device = info.device or pick_device()
        # the mistakes every rank would make alike: said once, by rank 0, before anything is loaded or trained
        problem = None
        if config.batch_size % info.world_size:
            problem = (f"the global batch {config.batch_size} must divide by the {info.world_size} processes (each "
                       "takes an equal share): pass --batch-size as a multiple of --nproc_per_node")
        elif not args.quick:
            try:
                check_cpu_budget(device, config.steps, config.batch_size, "train_ddp's full recipe",
                                 fix="pass --quick (or set COURSE_QUICK=1)")
            except RuntimeError as e:
                problem = str(e)
        if problem:
            if info.is_main:
                print(f"train_ddp: {problem}", file=sys.stderr)
            return 2
        if info.is_main:
            print(f"training on {info.world_size} process(es), {device}; global batch "
                  f"{config.batch_size} = {info.world_size} × {config.batch_size // info.world_size}")
        # the same initial weights in every run (DDP then copies rank 0's to the others)
        model = seeded_init(lambda: UNet(unet_config), config.seed)
        # one process: compiled as cached_train would (CUDA graphs on a GPU for a long run); several: only when
        # COURSE_COMPILE asks, since compiling across DDP's gradient buckets has not been measured here
        compile = training_compile(device, config.steps)
        if info.world_size > 1 and settings.compile == "auto":
            compile = False
        result = train_diffusion(model, schedule, load_images(dataset, "train").images, config,
                                 device=device, progress=info.is_main, compile=compile)
        if info.is_main:
            if out.exists():
                shutil.rmtree(out)
            meta = {"dataset": dataset, "schedule": schedule.config(), "train": dataclasses.asdict(config),
                    "world_size": info.world_size, "losses": result.losses, "seconds": result.seconds,
                    "images_per_second": result.images_per_second}
            save_checkpoint(out, result.model, meta)
            print(f"final loss {sum(result.losses[-20:]) / len(result.losses[-20:]):.4f}; "
                  f"{result.images_per_second:.0f} images/s; saved {out}")
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
from .distributed import cleanup_distributed, init_distributed
from .nn.unet import UNet
from .settings import get_settings
from .train import ddpm_recipe, save_checkpoint, train_diffusion


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchrun --nproc_per_node=N -m course_lib.train_ddp",
                                description="Train ddpm_recipe() with DistributedDataParallel; rank 0 saves it.")
    p.add_argument("--out", type=Path, default=None,
                   help="checkpoint folder (default: checkpoints/ddpm-<dataset>-ddp)")
    p.add_argument("--dataset", default=None, help="fashion_mnist, mnist or digits (default: COURSE_DATASET)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="the GLOBAL batch, split evenly across the processes (default: the recipe's)")
    p.add_argument("--quick", action="store_true", help="the quick-mode recipe (small U-Net, short budget)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dataset = args.dataset or get_settings().dataset
    out = args.out or Path("checkpoints") / f"ddpm-{dataset}-ddp"
    if out.exists() and not args.overwrite:  # fail before training, not after
        print(f"{out} exists; pass --overwrite or another --out", file=sys.stderr)
        return 2
    info = init_distributed()
    try:
        unet_config, schedule, config = ddpm_recipe(quick=args.quick or None)
        changes = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size}.items() if v is not None}
        config = dataclasses.replace(config, **changes)
        if info.is_main:
            print(f"training on {info.world_size} process(es), {info.device or 'auto'}; global batch "
                  f"{config.batch_size} = {info.world_size} × {config.batch_size // max(1, info.world_size)}")
        result = train_diffusion(UNet(unet_config), schedule, load_images(dataset, "train").images, config,
                                 device=info.device, progress=info.is_main)
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

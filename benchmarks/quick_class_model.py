"""Lesson 06's class model at quick mode's budget: does it follow its labels?

    COURSE_QUICK=1 python benchmarks/quick_class_model.py                 # 150 and 300 steps of 32
    COURSE_QUICK=1 python benchmarks/quick_class_model.py --steps 300 --per-class 10

Trains ``conditional_recipe("class")`` (quick mode: the 0.5M U-Net with a label table, 10% of labels
dropped, Min-SNR γ = 1) for each step count, in a fresh cache folder so nothing is reused, then
samples ``per-class`` images of every class (DDIM, 20 steps, seed 0) at each guidance scale and
reports the course evaluator's class accuracy and FD beside its real-vs-real floor. Lesson 06 quotes
the result to say why it trains the text model, not the class model, in quick mode.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[150, 300], help="training steps to try")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 3.0], help="guidance scales")
    ap.add_argument("--per-class", type=int, default=5, help="samples per class")
    args = ap.parse_args(argv)

    from course_lib.settings import get_settings

    usual = get_settings().cache_dir
    cache = Path(tempfile.mkdtemp(prefix="course-class-cache-"))
    if (usual / "evaluator").is_dir():  # the judge is shared; the models are trained here
        (cache / "evaluator").symlink_to(usual / "evaluator", target_is_directory=True)
    os.environ["COURSE_CACHE_DIR"] = str(cache)

    import torch

    from course_lib.metrics import load_evaluator
    from course_lib.samplers import sample
    from course_lib.train import cached_train, conditional_recipe

    unet_config, schedule, train_config = conditional_recipe("class")
    judge = load_evaluator()
    labels = torch.arange(10).repeat_interleave(args.per_class)
    print(f"quick mode {get_settings().quick}; class model {unet_config.channels}, T = {schedule.num_steps}; "
          f"{len(labels)} samples per row ({args.per_class} per class), DDIM 20 steps, seed 0\n")
    print("| training steps of 32 | train s | s | accuracy | FD | real floor |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for steps in args.steps:
        config = dataclasses.replace(train_config, steps=steps, batch_size=32)
        start = time.perf_counter()
        model = cached_train(unet_config, schedule, config, progress=False).model.eval()
        seconds = time.perf_counter() - start
        for s in args.scales:
            images = sample(model, schedule, len(labels), labels=labels, guidance_scale=s, sampler="ddim",
                            steps=20, seed=0, progress=False)
            report = judge.evaluate(images, labels)
            print(f"| {steps} | {seconds:.0f} | {s:g} | {report.accuracy:.0%} | {report.fd:.1f} | "
                  f"{report.fd_floor:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The timestep grids on a trained network that a CPU can afford: does the exact-ε̂ ranking survive a model's errors?

    COURSE_FULL_ON_CPU=1 python benchmarks/grids_cpu_model.py     # about 30 min on a 2-core CPU (the model is cached)
    COURSE_FULL_ON_CPU=1 python benchmarks/grids_cpu_model.py --train-steps 60 --n 100    # a smoke run

(COURSE_FULL_ON_CPU=1: the training guard refuses budgets past quick mode's on a CPU unless asked; this one is
meant for a CPU.)

benchmarks/solver_error.py ranks the grids with an exact ε̂: there DPM-Solver++ 20 lands 14× closer to the ODE's
solution on the "logsnr" grid than on "trailing". A trained network adds its own errors, which the grids meet at
different noise levels. This trains lesson 04's quick U-Net (0.5M parameters) on lesson 04's full-mode schedule
(cosine, T = 1000) for a CPU budget, then samples the same start noise with each deterministic sampler and grid,
judged by the course evaluator (FD beside the real-vs-real floor at the same n). A far rougher model than the
full-mode one (FD several times its floor), so it says how the grids rank on *a* trained network, not on lesson 04's.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from course_lib.metrics import load_evaluator
from course_lib.samplers import sample
from course_lib.schedules import NoiseSchedule
from course_lib.train import cached_train, ddpm_recipe

# (sampler, steps, spacing): DDIM 50 on its default grid is the reference of lesson 08's target
ROWS = [
    ("ddim", 50, "leading"), ("ddim", 100, "leading"), ("ddim", 50, "trailing"), ("ddim", 50, "logsnr"),
    ("dpm++2m", 20, "linspace"), ("dpm++2m", 20, "trailing"), ("dpm++2m", 20, "logsnr"),
    ("dpm++2m", 10, "trailing"), ("dpm++2m", 10, "logsnr"), ("dpm++2m", 50, "logsnr"),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-steps", type=int, default=6000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n", type=int, default=1000, help="samples per row (the FD's n)")
    ap.add_argument("--seed", type=int, default=0, help="the start noise's seed")
    ap.add_argument("--train-seed", type=int, default=0, help="the training's seed (initial weights, batches)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    unet_cfg, _, quick_tc = ddpm_recipe(quick=True)
    schedule = NoiseSchedule.cosine(1000)  # full mode's schedule, with the quick U-Net
    tc = replace(quick_tc, steps=args.train_steps, batch_size=args.batch_size, warmup_steps=100, ema_decay=0.999,
                 seed=args.train_seed)
    res = cached_train(unet_cfg, schedule, tc, progress=False)
    model = res.model.eval()
    t_train = time.perf_counter() - t0
    judge = load_evaluator(progress=False)
    rows = []
    for sampler, steps, spacing in ROWS:
        t1 = time.perf_counter()
        images = sample(model, schedule, args.n, seed=args.seed, sampler=sampler, steps=steps, spacing=spacing,
                        progress=False, batch_size=250)
        secs = time.perf_counter() - t1
        rep = judge.evaluate(images)
        rows.append((sampler, steps, spacing, rep.fd, rep.fd_floor, rep.recognised, secs))
        print(f"  {sampler} {steps} {spacing}: FD {rep.fd:.2f} ({secs:.0f} s)", flush=True)
    ref = next(r[3] for r in rows if r[:3] == ("ddim", 50, "leading"))
    print(f"\nlesson 04's quick U-Net ({model.num_parameters() / 1e6:.2f}M parameters), cosine schedule T = 1000, "
          f"{tc.steps} steps of {tc.batch_size} ({'from the cache' if res.from_cache else f'{t_train:.0f} s'}); "
          f"{args.n} samples per row from the same noise (seed {args.seed}), x̂_0 clamped\n")
    print("| sampler | steps | grid | FD | FD / floor | × DDIM-50 leading | recognised (p > 0.9) | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for sampler, steps, spacing, fd, floor, rec, secs in rows:
        name = {"ddim": "DDIM η = 0", "dpm++2m": "DPM-Solver++ 2M"}[sampler]
        print(f"| {name} | {steps} | {spacing} | {fd:.2f} | {fd / floor:.2f} | {fd / ref:.2f} | {rec:.1%} "
              f"| {secs:.0f} |")
    print(f"\ncommand: `COURSE_FULL_ON_CPU=1 python benchmarks/grids_cpu_model.py --train-steps {args.train_steps} "
          f"--batch-size {args.batch_size} --n {args.n} --seed {args.seed} --train-seed {args.train_seed}`; "
          f"{time.perf_counter() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

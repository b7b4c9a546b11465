"""Lesson 08's quality–steps table: every sampler on the course's model, course and diffusers side by side.

For each row: sample n images from the same seed, time it, and score them with the course evaluator
(Fréchet distance beside the real-vs-real floor at the same n). Prints a Markdown table for
benchmarks/RESULTS.md.

    python benchmarks/sampler_table.py            # full mode: the 1000-step model, 1000 images per row (a GPU)
    python benchmarks/sampler_table.py --quick    # a CPU smoke run: the quick model, a few rows, 32 images

The model comes from the cache (``cached_train(*ddpm_recipe())``; trained first if missing: about 40 s in
quick mode, much longer in full mode), as does the evaluator. Seconds per 1000 images include the
model's calls and the sampler's arithmetic, not the evaluator; on CUDA the clock waits for the GPU.

For comparison, the DDIM paper's Table 1 (CIFAR-10, FID): DDIM (η = 0) 13.36 / 6.84 / 4.67 / 4.16 at
10 / 20 / 50 / 100 steps, 4.04 with all 1000 steps; η = 1 (DDPM's posterior variance, the course's DDPM step)
41.07 / 18.36 / 8.01 / 5.78, and 4.73 with all 1000 steps (DDPM with the larger variance β_t: 3.17 at 1000 steps).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

CLIP = "DPM++ 2M, λ clip"
LARGE = "DDPM, σ² = β_t"
DPM_LAMBDA_MIN = -5.1  # samplers.DPM_LAMBDA_MIN, written out so that the rows need no import
# (label, library, sampler, steps (None = all T), eta, spacing[, keyword arguments of sample or sample_with_diffusers])
FULL_ROWS = (
    [("DDPM", "course", "ddpm", None, 0.0, "leading")]
    + [("DDIM η=0", "course", "ddim", s, 0.0, "leading") for s in (10, 20, 50, 100)]
    + [("DDIM η=1", "course", "ddim", s, 1.0, "leading") for s in (10, 20, 50, 100)]
    + [("DPM++ 2M", "course", "dpm++2m", s, 0.0, "trailing") for s in (10, 20)]
    + [("DDPM", "course", "ddpm", s, 0.0, "leading") for s in (20, 50)]
    # every step count again through diffusers' schedulers
    + [("DDIM η=0", "diffusers", "ddim", s, 0.0, "leading") for s in (10, 20, 50, 100)]
    + [("DDIM η=1", "diffusers", "ddim", s, 1.0, "leading") for s in (10, 20, 50, 100)]
    + [("DPM++ 2M", "diffusers", "dpm++2m", s, 0.0, "trailing") for s in (10, 20)]
    + [("DDPM", "diffusers", "ddpm", s, 0.0, "leading") for s in (20, 50, None)]
    # trailing spacing starts at t = T − 1, where the cosine schedule's σ/α ≈ 2·10⁴ makes the first x̂_0 a
    # clamped guess; the λ clip (off by default, as in diffusers) skips the top steps: these rows show what it does
    + [(CLIP, "course", "dpm++2m", s, 0.0, "trailing", {"lambda_min": DPM_LAMBDA_MIN}) for s in (10, 20)]
    + [(CLIP, "diffusers", "dpm++2m", s, 0.0, "trailing", {"lambda_min_clipped": DPM_LAMBDA_MIN}) for s in (10, 20)]
    + [("DDIM η=0", "course", "ddim", s, 0.0, "trailing") for s in (10, 20, 50)]
    # DPM-Solver++ started lower: its "leading" grid begins at t = N·⌊T/(N+1)⌋ (940 for 20 steps), where the cosine
    # schedule's σ/α is 11, not 2·10⁴ as at T − 1. Measured on lesson 04's DDPM: far worse (FD 23.7 against 8.29 at
    # 20 steps), which is why sample() defaults to "linspace" for DPM-Solver++ (cheap rows: 10 and 20 network calls)
    + [("DPM++ 2M", "course", "dpm++2m", s, 0.0, "leading") for s in (10, 20)]
    + [("DPM++ 2M", "diffusers", "dpm++2m", s, 0.0, "leading") for s in (10, 20)]
    # DDPM with Ho et al.'s other variance, σ² = β_t: the DDIM paper's best FID at 1000 steps, its worst at few
    + [(LARGE, "course", "ddpm", s, 0.0, "leading", {"variance": "large"}) for s in (10, 20, 50, None)]
    + [(LARGE, "diffusers", "ddpm", None, 0.0, "leading", {"variance_type": "fixed_large"})]
    # even steps in λ below σ/α = 80, after one jump from t = T − 1 (samplers.logsnr_timesteps): on the exact
    # Gaussian oracle DPM-Solver++ 20 lands 14× closer to the ODE's solution there than on "trailing"
    # (benchmarks/solver_error.py); diffusers gets the same list through set_timesteps(timesteps=...)
    + [("DPM++ 2M", "course", "dpm++2m", s, 0.0, "logsnr") for s in (10, 20)]
    + [("DPM++ 2M", "diffusers", "dpm++2m", s, 0.0, "logsnr") for s in (10, 20)]
    + [("DDIM η=0", "course", "ddim", s, 0.0, "logsnr") for s in (20, 50)]
)
QUICK_ROWS = [
    ("DDPM", "course", "ddpm", None, 0.0, "leading"),
    ("DDIM η=0", "course", "ddim", 10, 0.0, "leading"),
    ("DDIM η=0", "course", "ddim", 20, 0.0, "leading"),
    ("DPM++ 2M", "course", "dpm++2m", 10, 0.0, "trailing"),
    ("DDIM η=0", "diffusers", "ddim", 20, 0.0, "leading"),
    ("DPM++ 2M", "diffusers", "dpm++2m", 10, 0.0, "trailing"),
    ("DPM++ 2M", "course", "dpm++2m", 10, 0.0, "leading"),
    ("DPM++ 2M", "diffusers", "dpm++2m", 10, 0.0, "leading"),
    (CLIP, "course", "dpm++2m", 10, 0.0, "trailing", {"lambda_min": DPM_LAMBDA_MIN}),
    (LARGE, "course", "ddpm", 20, 0.0, "leading", {"variance": "large"}),
    ("DPM++ 2M", "course", "dpm++2m", 10, 0.0, "logsnr"),
]

# The course's samplers clamp x̂_0 to [-1, 1]; the same in diffusers' options (DPM-Solver's dynamic
# thresholding with a maximum of 1 is exactly that clamp; for DDIM, sample_with_diffusers also passes
# use_clipped_model_output=True, as the course's ddim_step recomputes ε̂ from the clamped x̂_0).
CLAMP_X0 = {
    "ddim": {"clip_sample": True},
    "ddpm": {"clip_sample": True},
    "dpm++2m": {"thresholding": True, "sample_max_value": 1.0},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small CPU smoke run (sets COURSE_QUICK=1)")
    parser.add_argument("--n", type=int, default=None, help="images per row (default 1000, quick 32)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        os.environ["COURSE_QUICK"] = "1"

    import torch

    from course_lib.device import pick_device
    from course_lib.diffusers_bridge import sample_with_diffusers
    from course_lib.metrics import load_evaluator
    from course_lib.samplers import DPM_LAMBDA_MIN as LIBRARY_LAMBDA_MIN
    from course_lib.samplers import sample
    from course_lib.settings import get_settings
    from course_lib.train import cached_train, ddpm_recipe

    if DPM_LAMBDA_MIN != LIBRARY_LAMBDA_MIN:
        raise SystemExit(f"the λ clip rows use {DPM_LAMBDA_MIN}, the library {LIBRARY_LAMBDA_MIN}: update FULL_ROWS")
    quick = get_settings().quick
    n = args.n or (32 if quick else 1000)
    rows = QUICK_ROWS if quick else FULL_ROWS
    device = pick_device()
    unet_config, schedule, train_config = ddpm_recipe()
    trained = cached_train(unet_config, schedule, train_config, device=device)
    model = trained.model.to(device).eval()
    judge = load_evaluator()
    T = schedule.num_steps

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # warm-up: first calls pay for kernel selection and allocation
    sample(
        model, schedule, min(n, args.batch_size), sampler="ddim", steps=2, progress=False, batch_size=args.batch_size
    )
    sync()

    results = []
    for label, library, sampler, steps, eta, spacing, *extra in rows:
        steps = T if steps is None else steps
        kw = extra[0] if extra else {}
        start = time.perf_counter()
        if library == "course":
            images = sample(
                model,
                schedule,
                n,
                seed=args.seed,
                sampler=sampler,
                steps=steps,
                eta=eta,
                spacing=spacing,
                progress=False,
                batch_size=args.batch_size,
                **kw,
            )
        else:
            images = sample_with_diffusers(
                model,
                schedule,
                sampler,
                n,
                steps,
                seed=args.seed,
                eta=eta,
                spacing=spacing,
                batch_size=args.batch_size,
                **CLAMP_X0[sampler],
                **kw,
            )
        sync()
        seconds = time.perf_counter() - start
        report = judge.evaluate(images)
        results.append(
            (label, library, steps, spacing, report.fd, report.fd_floor, report.recognised, seconds / n * 1000)
        )
        print(f"  {label} ({library}) {steps} steps: FD {report.fd:.2f} in {seconds:.1f} s", file=sys.stderr)

    dev = torch.cuda.get_device_name() if device.type == "cuda" else str(device)
    print(
        f"\nSampler table ({'quick' if quick else 'full'} mode, T = {T}, {n} images per row, seed {args.seed}, "
        f"{dev}); FD floor (real vs real, n = {n}): {results[0][5]:.2f}; the model: {len(trained.losses)} steps "
        f"of {train_config.batch_size}, {'from the cache, ' if trained.from_cache else ''}trained in "
        f"{trained.seconds:.0f} s ({trained.images_per_second:.0f} images/s); the evaluator recognises "
        f"{report.recognised_real:.1%} of real test images (p > 0.9)\n"
    )
    print("| sampler | library | steps | spacing | FD | FD / floor | recognised (p > 0.9) | s per 1000 images |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for label, library, steps, spacing, fd, fd_floor, recognised, s1000 in results:
        print(
            f"| {label} | {library} | {steps} | {spacing} | {fd:.2f} | {fd / fd_floor:.2f} | {recognised:.1%} "
            f"| {s1000:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

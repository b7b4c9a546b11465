"""Each sampler's own error, apart from any network's: the exact ε̂ of a Gaussian fit of the dataset.

    python benchmarks/solver_error.py                   # cosine schedule, T = 1000 (lesson 04's), 256 samples
    python benchmarks/solver_error.py --schedule linear

The data are N(μ, Σ) with the training images' mean and covariance (course_lib.oracle.GaussianData), so
ε̂ is exact and the probability-flow ODE has a closed-form solution. Every deterministic sampler starts
from the same x_T at t = T − 1; the table gives the RMS distance (per pixel, images in [-1, 1]) between
where it lands and where the ODE lands, and that distance over DDIM-50's on its default ("leading")
grid, the sampler lesson 08's target compares DPM-Solver++ 20 with. No clamping of x̂_0: the Gaussian's
samples leave [-1, 1]. Prints a Markdown table; takes a minute or two on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from course_lib.data import load_images
from course_lib.oracle import GaussianData
from course_lib.samplers import DPM_LAMBDA_MIN, sample_loop, sampler_timesteps
from course_lib.schedules import NoiseSchedule

# (sampler, grid, steps): DDIM on DDIM's grids, DPM-Solver++ on its own (dpm_timesteps) and on the λ clip
ROWS = (
    [("ddim", spacing, n) for spacing in ("leading", "trailing", "logsnr") for n in (10, 20, 50, 100)]
    + [("dpm++2m", spacing, n) for spacing in ("linspace", "trailing", "trailing, λ clip", "logsnr")
       for n in (10, 20, 50)]
    + [("ddim", "every step", None)]
)


def grid(schedule: NoiseSchedule, sampler: str, spacing: str, steps: int | None) -> list[int]:
    """The timesteps ``sampler`` visits (DPM-Solver++ on its own grids, as ``sample`` does); None = every step."""
    if spacing == "trailing, λ clip":
        return sampler_timesteps(schedule, steps, "trailing", sampler, DPM_LAMBDA_MIN)
    return sampler_timesteps(schedule, steps, "leading" if steps is None else spacing, sampler)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schedule", default="cosine", help="cosine (lesson 04's), linear or scaled_linear")
    ap.add_argument("--T", type=int, default=1000, help="training steps of the schedule")
    ap.add_argument("--n", type=int, default=256, help="samples (the RMS is over all their pixels)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = load_images(split="train")
    gauss = GaussianData.fit(data.images)
    schedule = NoiseSchedule.from_name(args.schedule, num_steps=args.T)
    g = torch.Generator().manual_seed(args.seed)
    x_T = torch.randn(args.n, *data.images.shape[1:], generator=g, dtype=torch.float64)
    exact = gauss.ode_solution(schedule, x_T, schedule.num_steps - 1)
    eps_fn = gauss.eps_fn(schedule)
    results = []
    for sampler, spacing, steps in ROWS:
        ts = grid(schedule, sampler, spacing, steps)
        out = sample_loop(eps_fn, schedule, x_T, ts, sampler)
        rms = ((out - exact) ** 2).mean().sqrt().item()
        results.append((sampler, spacing, len(ts), ts[0], ts[-1], rms))
    ref = next(r[-1] for r in results if r[:3] == ("ddim", "leading", 50))
    below = (gauss.variances < float(1 - schedule.alphas_cumprod[49])).sum().item()
    print(f"dataset {data.name}, {len(data.images)} training images; Gaussian fit: {below} of "
          f"{gauss.variances.numel()} variances below 1 − abar_49 (the noise level where 20 uniform steps end); "
          f"schedule {args.schedule}, T = {schedule.num_steps}; {args.n} samples from one x_T, seed {args.seed}\n")
    print("| sampler | grid | model calls | first t … last t | RMS to the exact ODE solution | × DDIM-50 leading |")
    print("| --- | --- | --- | --- | --- | --- |")
    for sampler, spacing, n, first, last, rms in results:
        name = {"ddim": "DDIM η = 0", "dpm++2m": "DPM-Solver++ 2M"}[sampler]
        print(f"| {name} | {spacing} | {n} | {first} … {last} | {rms:.4f} | {rms / ref:.2f} |")
    print(f"\ncommand: `python benchmarks/solver_error.py --schedule {args.schedule} --T {args.T} --n {args.n} "
          f"--seed {args.seed}`; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

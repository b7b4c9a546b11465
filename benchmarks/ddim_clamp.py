"""Guided DDIM in pixel space with three treatments of x̂_0: the clamp experiment in RESULTS.md.

    COURSE_QUICK=1 python benchmarks/ddim_clamp.py            # the quick text model (trained once, cached)
    python benchmarks/ddim_clamp.py --n 1000 --scales 1 3 5   # the full-mode model (a GPU)

Variants of the DDIM step (η = 0), all from the same start noise:
- "clamp, raw eps": x̂_0 clamped to [-1, 1], the network's ε̂ kept for the direction (diffusers'
  DDIMScheduler default with clip_sample=True; the course's ddim_step before the fix);
- "clamp, eps from x0": ε̂ recomputed from the clamped x̂_0 (guided-diffusion; the course's ddim_step now);
- "no clamp".
Prints a Markdown table: the evaluator's class accuracy and FD per guidance scale and variant.
"""

from __future__ import annotations

import argparse
import math

import torch

from course_lib.data import CAPTIONS
from course_lib.metrics import load_evaluator
from course_lib.samplers import _conditioned_eps_fn, timesteps
from course_lib.train import cached_train, conditional_recipe

VARIANTS = ("clamp, raw eps", "clamp, eps from x0", "no clamp")


@torch.no_grad()
def ddim(eps_fn, schedule, x, steps: int, variant: str) -> torch.Tensor:
    abar = schedule.alphas_cumprod.double()
    ts = timesteps(schedule, steps).tolist()
    for i, t in enumerate(ts):
        a = float(abar[t])
        a_prev = float(abar[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        eps = eps_fn(x, t)
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        if variant != "no clamp":
            x0 = x0.clamp(-1, 1)
        if variant == "clamp, eps from x0":
            eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    return x.clamp(-1, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="samples per row (a multiple of 10)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 3.0, 5.0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg, schedule, tc = conditional_recipe("text")
    model = cached_train(cfg, schedule, tc, progress=False).model.eval()
    device = next(model.parameters()).device
    judge = load_evaluator(device=device)
    labels = torch.arange(10).repeat_interleave(args.n // 10)
    prompts = [CAPTIONS["fashion_mnist"][i][0] for i in labels.tolist()]
    print("| s | " + " | ".join(VARIANTS) + " |\n| --- |" + " --- |" * len(VARIANTS))
    for s in args.scales:
        eps_fn = _conditioned_eps_fn(model, len(prompts), None, prompts, None, s, None, None, device)
        cells = []
        for variant in VARIANTS:
            g = torch.Generator(device=device).manual_seed(args.seed)
            x_T = torch.randn(len(prompts), 1, 32, 32, generator=g, device=device)
            r = judge.evaluate(ddim(eps_fn, schedule, x_T, args.steps, variant), labels)
            cells.append(f"{r.accuracy:.1%} / FD {r.fd:.0f}")
        print(f"| {s:g} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

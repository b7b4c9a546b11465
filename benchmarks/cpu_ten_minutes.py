"""Lessons 06–07 side by side on a CPU: ten minutes of class-conditional training, two recipes, one judge.

Two recipes train on the same data (the course's 32×32 train split in [-1, 1], batch 128) for the
same wall-clock budget, then each samples 20 images per class with 50 DDIM steps (η = 0, x̂_0
clamped to [-1, 1], the same x_T for both) and the course evaluator classifies them:

- **baseline** ("a public course's" class-conditioned recipe): diffusers ``UNet2DModel`` with
  widths (32, 64, 64), attention at 16×16 and 8×8, 2 ResBlocks per level (diffusers' default), a
  4-wide ``nn.Embedding(10, 4)`` label embedding broadcast to 4 extra input channels, the cosine
  schedule with T = 1000 (``NoiseSchedule.cosine(1000)``, diffusers' ``squaredcos_cap_v2``), plain
  Adam at lr 1e-3, ε-MSE, fp32, no warm-up, no clipping, no EMA. It has no "no class" label, so it
  samples without guidance (plain conditional sampling, i.e. guidance scale 1).
- **course**: ``conditional_recipe("class", quick=True)``: the quick-mode U-Net (widths 16/32/64,
  or ``--course-widths``) with the label embedding added to the time embedding, the 250-step cosine
  schedule, and its TrainConfig (AdamW lr 2e-3, 20 warm-up steps, gradient clipping at 1, EMA 0.98,
  10% of labels dropped to "no class", and since 2026-11-26 evening the Min-SNR loss weighting with
  γ = 1) at batch 128 and with ``steps`` replaced by the time budget.
  Samples from the EMA weights with classifier-free guidance at each ``--scales`` value.

The time budget is enforced by a small training loop built from course_lib.train's own pieces
(``diffusion_loss``, ``lr_at``, ``EMA``, ``guidance.drop_condition``; the same order of operations
as ``train_diffusion``), which checks the clock before every step: a recipe trains until the sum of
its step times reaches ``--minutes`` (so it may overshoot by at most one step). The two recipes
train interleaved, ``--slice`` seconds each in turn, so that other load on a shared machine slows
both alike. Before the clock starts, each model runs one untimed forward + backward on a throwaway
copy (allocator and kernel set-up). Only training counts towards the budget; sampling and judging are timed separately.
Both draw their batches from the same seeded index stream (one recipe's batches are a prefix of
the other's); t, ε and the label drop come from a second stream.

Judge: ``load_evaluator(dataset)`` (trained once and cached; about a minute or three the first
time). Reported per sample set: class accuracy on the 200 samples, and their Fréchet distance in
the evaluator's feature space beside the real floor at n = 200 (``Evaluator.evaluate``). "Real" is
the evaluator's accuracy on 200 held-out test images, 20 per class (a seeded draw). With 200
images an accuracy has a standard error of about 2–3 points. Picking the best guidance scale on
the same 200 samples flatters the course recipe slightly.

    python benchmarks/cpu_ten_minutes.py                          # fashion_mnist, 10 min per recipe, all cores
    python benchmarks/cpu_ten_minutes.py --dataset mnist
    python benchmarks/cpu_ten_minutes.py --minutes 0.3 --threads 1 --per-class 4   # a smoke run

Total time ≈ 2 × minutes of training + sampling (the baseline's 50 steps × 200 images take a few
minutes on 2 cores; the course model's are cheaper, twice per scale ≠ 1) + judging.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import replace

import torch
from torch import nn

from course_lib.data import load_images
from course_lib.guidance import drop_condition
from course_lib.metrics import load_evaluator
from course_lib.nn.unet import UNet, UNetConfig
from course_lib.samplers import sample, sample_loop, timesteps
from course_lib.schedules import NoiseSchedule
from course_lib.train import EMA, TrainConfig, conditional_recipe, diffusion_loss, lr_at

NUM_CLASSES = 10
BATCH = 128


# ------------------------------------------------------------------------------- the baseline
class BaselineUNet(nn.Module):
    """ε_θ(x, t, y): diffusers' UNet2DModel reading [x; emb(y) broadcast over H×W] (1 + 4 channels)."""

    def __init__(self, emb_dim: int = 4):
        super().__init__()
        from diffusers import UNet2DModel

        self.class_emb = nn.Embedding(NUM_CLASSES, emb_dim)
        self.net = UNet2DModel(
            sample_size=32, in_channels=1 + emb_dim, out_channels=1, block_out_channels=(32, 64, 64),
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        c = self.class_emb(labels).view(n, -1, 1, 1).expand(n, -1, h, w)
        return self.net(torch.cat([x, c], dim=1), t).sample


# ------------------------------------------------------------------------------- training
class TimedTrainer:
    """One recipe's training, run in slices of wall-clock time; each step as in train_diffusion."""

    def __init__(self, name, model, schedule, config: TrainConfig, data, labels, optimizer,
                 use_recipe_extras: bool, seed: int):
        self.name, self.model, self.schedule, self.config = name, model.train(), schedule, config
        self.data, self.labels, self.opt = data, labels, optimizer
        self.extras = use_recipe_extras  # warm-up, clipping, EMA, label drop (the course's loop)
        self.ema = EMA(model, config.ema_decay) if use_recipe_extras else None
        self.idx_gen = torch.Generator().manual_seed(seed)  # same batches for both recipes
        self.gen = torch.Generator().manual_seed(seed + 1)  # t, ε, label drop
        self.steps, self.seconds, self.losses = 0, 0.0, []

    def run(self, budget_s: float, slice_s: float) -> None:
        """Train until ``slice_s`` more seconds or the whole ``budget_s`` have been used."""
        stop = min(budget_s, self.seconds + slice_s)
        cfg = self.config
        while self.seconds < stop:
            t0 = time.perf_counter()
            idx = torch.randint(0, len(self.data), (cfg.batch_size,), generator=self.idx_gen)
            yb = self.labels[idx]
            if self.extras:
                if cfg.class_dropout > 0:
                    drop = drop_condition(yb, cfg.class_dropout, self.gen)
                    yb = torch.where(drop, torch.full_like(yb, NUM_CLASSES), yb)
                for group in self.opt.param_groups:
                    group["lr"] = lr_at(self.steps, cfg)
            loss = diffusion_loss(self.model, self.schedule, self.data[idx], yb, self.gen,
                                  min_snr_gamma=cfg.min_snr_gamma)  # the recipe's loss weighting, if any
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.extras and cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.opt.step()
            if self.ema is not None and self.steps >= cfg.ema_start:
                self.ema.update(self.model)
            self.losses.append(float(loss.detach()))
            if not math.isfinite(self.losses[-1]):
                raise FloatingPointError(f"{self.name}: the loss became {self.losses[-1]} at step {self.steps}")
            self.steps += 1
            self.seconds += time.perf_counter() - t0

    def warm_up(self) -> None:
        """One untimed forward + backward on a throwaway copy (allocator, kernel set-up); no state changes."""
        m = copy.deepcopy(self.model).train()
        g = torch.Generator().manual_seed(12345)
        idx = torch.randint(0, len(self.data), (self.config.batch_size,), generator=g)
        diffusion_loss(m, self.schedule, self.data[idx], self.labels[idx], g).backward()

    @property
    def sampling_model(self) -> nn.Module:
        return (self.ema.model if self.ema is not None else self.model).eval()

    @property
    def images_per_second(self) -> float:
        return self.steps * self.config.batch_size / max(self.seconds, 1e-9)

    def recent_loss(self, k: int = 50) -> float:
        tail = self.losses[-k:]
        return sum(tail) / len(tail) if tail else float("nan")


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------- sampling
@torch.no_grad()
def sample_baseline(model, schedule, labels, x_T, steps):
    model.eval()

    def eps_fn(x, t):
        return model(x, torch.full((len(x),), t, dtype=torch.long), labels).float()

    ts = timesteps(schedule, steps)
    return sample_loop(eps_fn, schedule, x_T.clone(), ts, sampler="ddim", eta=0.0, clip_x0=True).clamp(-1, 1)


def balanced_real(dataset: str, per_class: int, seed: int):
    """``per_class`` held-out test images of each class (a seeded draw) and their labels."""
    test = load_images(dataset, "test")
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    pick = torch.cat([order[test.labels[order] == c][:per_class] for c in range(NUM_CLASSES)])
    return test.images[pick], test.labels[pick]


def parse_widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"widths must be comma-separated ints like 16,32,64, got {text!r}") from None
    if len(widths) != 3 or min(widths) < 8:
        raise argparse.ArgumentTypeError(f"give three widths ≥ 8 (one per level), got {text!r}")
    return widths


def load_avg() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=("fashion_mnist", "mnist"), default="fashion_mnist")
    ap.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget per recipe")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    ap.add_argument("--slice", type=float, default=30.0, help="seconds each recipe trains before the other's turn")
    ap.add_argument("--course-widths", type=parse_widths, default=None,
                    help="the course U-Net's widths, e.g. 32,64,128 (default: quick mode's 16,32,64)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 3.0, 5.0], help="guidance scales (course)")
    ap.add_argument("--per-class", type=int, default=20, help="samples (and real images) per class")
    ap.add_argument("--sample-steps", type=int, default=50, help="DDIM steps")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.minutes <= 0 or args.threads < 1 or args.slice <= 0 or args.per_class < 1:
        ap.error("--minutes, --threads, --slice and --per-class must be positive")

    torch.set_num_threads(args.threads)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    load_start = load_avg()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t_all = time.perf_counter()
    budget = args.minutes * 60.0

    # The judge first: on a fresh cache it trains (minutes), and that must not overlap the budget.
    log(f"loading the evaluator for {args.dataset} …")
    judge = load_evaluator(args.dataset, device="cpu")
    real_x, real_y = balanced_real(args.dataset, args.per_class, args.seed)
    real_acc = judge.accuracy(real_x, real_y)
    train = load_images(args.dataset, "train")
    data, labels = train.images.float().contiguous(), train.labels.long()

    # baseline
    torch.manual_seed(args.seed)
    base_model = BaselineUNet()
    base_schedule = NoiseSchedule.cosine(1000)
    base_cfg = TrainConfig(steps=10**9, batch_size=BATCH, lr=1e-3, warmup_steps=0, grad_clip=0.0,
                           class_dropout=0.0, seed=args.seed)
    base = TimedTrainer("baseline", base_model, base_schedule, base_cfg, data, labels,
                        torch.optim.Adam(base_model.parameters(), lr=1e-3), False, args.seed)

    # course
    unet_cfg, course_schedule, course_cfg = conditional_recipe("class", quick=True)
    if args.course_widths:
        unet_cfg = UNetConfig(**{**unet_cfg.to_dict(), "channels": args.course_widths})
    course_cfg = replace(course_cfg, steps=10**9, batch_size=BATCH, seed=args.seed)
    torch.manual_seed(args.seed)
    course_model = UNet(unet_cfg)
    course_opt = torch.optim.AdamW(course_model.parameters(), lr=course_cfg.lr, weight_decay=course_cfg.weight_decay)
    course = TimedTrainer("course", course_model, course_schedule, course_cfg, data, labels,
                          course_opt, True, args.seed)

    trainers = [base, course]
    for tr in trainers:
        tr.warm_up()
    loads = []
    log(f"training both for {args.minutes:g} min each, interleaved in {args.slice:g} s slices, "
        f"{args.threads} thread(s) …")
    while any(tr.seconds < budget for tr in trainers):
        for tr in trainers:
            if tr.seconds < budget:
                loads.append(os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"))
                tr.run(budget, args.slice)
                log(f"  {tr.name:8} step {tr.steps:5d}  {tr.seconds:7.1f}/{budget:.0f} s  "
                    f"loss(last 50) {tr.recent_loss():.4f}")

    # sampling: the same x_T and labels for every sample set
    labels_s = torch.arange(NUM_CLASSES).repeat_interleave(args.per_class)
    n = len(labels_s)
    x_T = torch.randn((n, 1, 32, 32), generator=torch.Generator().manual_seed(args.seed + 2))
    results = {}  # (recipe, scale) -> (accuracy, report, seconds)

    def judge_set(key, images, seconds):
        report = judge.evaluate(images, labels_s, seed=args.seed)
        results[key] = (report.accuracy, report, seconds)
        log(f"  {key[0]} scale {key[1]}: accuracy {report.accuracy:.1%}, FD {report.fd:.2f} "
            f"(floor {report.fd_floor:.2f}), {seconds:.0f} s")

    log(f"sampling {n} images per set, {args.sample_steps} DDIM steps …")
    t0 = time.perf_counter()
    imgs = sample_baseline(base.sampling_model, base_schedule, labels_s, x_T, args.sample_steps)
    judge_set(("baseline", None), imgs, time.perf_counter() - t0)
    for s in args.scales:
        t0 = time.perf_counter()
        imgs = sample(course.sampling_model, course_schedule, n, labels=labels_s, guidance_scale=s, sampler="ddim",
                      steps=args.sample_steps, eta=0.0, x_T=x_T, progress=False, device="cpu")
        judge_set(("course", s), imgs, time.perf_counter() - t0)

    # report
    load_end = load_avg()
    total = time.perf_counter() - t_all
    scale_cols = [f"acc. s={s:g}" for s in args.scales]
    best_s, (best_acc, best_rep, _) = max(
        ((s, results[("course", s)]) for s in args.scales), key=lambda kv: kv[1][0]
    )
    course_name = f"course `conditional_recipe(\"class\", quick=True)` {unet_cfg.channels}, AdamW + EMA, T=250" + (
        f", Min-SNR γ={course_cfg.min_snr_gamma:g}" if course_cfg.min_snr_gamma else "")
    base_name = "baseline: diffusers UNet2DModel (32, 64, 64) + 4-ch class emb, Adam 1e-3, T=1000"
    print()
    print(f"dataset {args.dataset}; {args.minutes:g} min of training per recipe (interleaved {args.slice:g} s "
          f"slices), batch {BATCH}; {n} samples per set ({args.per_class}/class), {args.sample_steps} DDIM steps "
          f"(η=0, x̂0 clamped), same x_T; judge: course evaluator (test accuracy "
          f"{judge.test_accuracy:.1%} on all {args.dataset} test images)")
    print()
    print("| recipe | parameters | steps in budget | train s | images/s | loss (last 50) | "
          + " | ".join(scale_cols) + " | best | real (held-out, same n) |")
    print("| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in scale_cols) + " | --- | --- |")
    base_acc = results[("baseline", None)][0]
    base_cells = [f"{base_acc:.1%} (no guidance)" if s == 1.0 else "—" for s in args.scales]
    if 1.0 not in args.scales:
        base_cells[0] = f"{base_acc:.1%} (no guidance)"
    print(f"| {base_name} | {count(base.model) / 1e6:.2f}M | {base.steps} | {base.seconds:.0f} | "
          f"{base.images_per_second:.1f} | {base.recent_loss():.4f} | " + " | ".join(base_cells)
          + f" | {base_acc:.1%} | {real_acc:.1%} |")
    course_cells = [f"{results[('course', s)][0]:.1%}" for s in args.scales]
    print(f"| {course_name} | {count(course.model) / 1e6:.2f}M | {course.steps} | {course.seconds:.0f} | "
          f"{course.images_per_second:.1f} | {course.recent_loss():.4f} | " + " | ".join(course_cells)
          + f" | {best_acc:.1%} (s={best_s:g}) | {real_acc:.1%} |")
    print()
    print(f"| sample set | accuracy | FD (n={n}) | FD floor (real, n={n}) | recognised (p>0.9) | sampling s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (_recipe, s), (acc, rep, secs) in results.items():
        label = "baseline, no guidance" if s is None else f"course, guidance {s:g}"
        print(f"| {label} | {acc:.1%} | {rep.fd:.2f} | {rep.fd_floor:.2f} | {rep.recognised:.1%} | {secs:.0f} |")
    print(f"| real held-out test images ({args.per_class}/class) | {real_acc:.1%} | "
          f"{judge.fd_to_reference(judge.features(real_x)):.2f} (vs test set it is drawn from) | — | — | — |")
    print()
    verdict = "met" if best_acc >= real_acc else "not met"
    print(f"target (course samples recognised as often as real held-out images): {verdict} "
          f"({best_acc:.1%} at s={best_s:g} vs {real_acc:.1%} real; ±~{100 * math.sqrt(0.25 / n):.0f} points "
          f"standard error at n={n})")
    print()
    print(f"command: `{command}`")
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs visible, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}; started {started}")
    mean_load = sum(loads) / len(loads) if loads else float("nan")
    print(f"load average (1/5/15 min): start {load_start}, end {load_end}; mean 1-min load at slice "
          f"switches {mean_load:.2f}; total wall time {total / 60:.1f} min")


if __name__ == "__main__":
    main()

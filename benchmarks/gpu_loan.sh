#!/usr/bin/env bash
# The GPU figures the open issues still wait for, as jobs for one short loan of a GPU machine.
#
# On the CPU machine, once per checkout: `bash benchmarks/gpu_kit.sh` (builds .gpu/). Then one device call,
# carrying ".gpu", runs from the repository root:
#
#   bash benchmarks/gpu_loan.sh ddpm gputests        # jobs in the order given; results under $OUT
#
# Jobs, most important first, with their time on an H100 (a loan gives about 11 minutes of run time):
#   fdcheck   lesson 04's full recipe trained once more, then DDPM with all 1000 steps (both variances) judged on
#             5 sets of 1000 samples, the mean FD beside the 25-draw floor: the verdict on issue "Foundation"'s
#             "FD ≤ 2× the floor" that one set of 1000 (±0.9 in FD) cannot give (RESULTS.md, "The FD floor, drawn
#             25 times"); on the same sets DDIM 50 (leading, trailing, logsnr) and DPM-Solver++ 20 (linspace,
#             trailing, logsnr, and diffusers' with Karras sigmas) and 10 (logsnr): issue "Lesson 08"'s "DPM++ 20 no
#             worse than DDIM 50", set-averaged; about 10 min
#   ddpm      lesson 04's full recipe (15k steps of 128, CUDA graphs), judged with the posterior variance and
#             with σ² = β_t, then lesson 08's whole sampler table on it (issues "Foundation" and "Lesson 08");
#             about 8.5 min
#   fdtry     lesson 04's recipe trained twice more, once with dropout 0.1 in every ResBlock (Ho et al.'s CIFAR-10
#             setting) and once with the Min-SNR weighting (γ = 5), each judged as the ddpm job judges it (issue
#             "Foundation": FD ≤ 2× the floor; two trainings of today's recipe gave 2.11× and 2.38×, and 25k steps
#             no better than 15k, RESULTS.md "Sixth GPU loan"); about 8.5 min
#   gputests  python -m pytest -m gpu tests/test_gpu.py (issue "Speed on a GPU"); about 2 min
#   text      the full text recipe (15k steps, CUDA graphs), the guidance sweep and held-out prompts from four
#             seeds (issue "Lessons 06–07"); about 6 min
#   latent    lesson 09's full recipe: VAE 10k steps, latent U-Net 20k steps, then its figures (issue
#             "Lesson 09"); about 9 min
#   big       the DDPM at batch 512 for 5000 steps (lr 6e-4, EMA 0.999, warm-up 200): the same images seen in a
#             third of the time, if the quality holds (issue "Speed on a GPU", the whole course under 20
#             minutes); about 5 min
#   layout    lesson 04's recipe on a 4-level U-Net, channels (32, 96, 256, 320), one ResBlock per level, attention
#             at 8×8 and 4×4: 15.3M parameters (diffusers' model: 15.7M) at 3.96 training GFLOP per image against
#             7.19 for today's layout and 12.87 for diffusers'. FD as lesson 04 judges it, then the race against
#             diffusers, eager and with CUDA graphs on both sides (issue "Speed on a GPU": the 2× target is
#             FLOP-bound at 1.69× today; and issue "Foundation" if its FD holds); about 6 min
#   quick     every lesson (or $LESSONS) in quick mode on the GPU, each in a fresh kernel, their printed output to
#             $OUT/quick.txt: lessons 05-10 have never run on a GPU, and this finds device mix-ups (a CUDA tensor
#             handed to numpy, CPU and CUDA tensors in one operation) in minutes, before a full-mode run spends a
#             loan on them. Needs .gpu-enc (below); about 3 min
#   lessons   lessons ${LESSONS:-05} in full mode, each in a fresh kernel (benchmarks/lesson_runtimes.py; the cache
#             in /tmp is kept between lessons, jobs and calls), their printed output to $OUT/lessons.txt (every
#             notebook must run in full mode on a GPU; the course map's full-mode column). Estimated from the
#             trainings' measured times: 05 about 6 min, 06 with 07 about 5 min, 08 about 2.5 min (6.5 without lesson
#             04's DDPM cached), 09 about 6 min (9 without 05's VAE), 10 about 6 min; each group in a call of its own.
#             quick and lessons need the text encoder from .gpu-enc (gpu_kit.sh), carried in a second call on the
#             warm machine (ignored paths stay there between calls; the machine goes back after 30 s idle)
#   smoke     every stage of gpu_suite.py on tiny budgets (a check of the code paths, seconds)
# A 15-minute loan, as two calls back to back (the second within the 30 s the machine stays warm):
#   call 1, carry [".gpu"]:      bash benchmarks/gpu_loan.sh fdcheck               (about 10 min with the start)
#   call 2, no carry:            bash benchmarks/gpu_loan.sh gputests              (about 2.5 min)
# Each job's --budget is a wall-clock limit in seconds (gpu_suite.py stops starting stages past it); set
# BUDGET to change it. Everything a job prints goes to $OUT/log.txt too.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_loan_out}
mkdir -p "$OUT"
[ -d .gpu/whl ] || { echo "no .gpu/ here: build it with benchmarks/gpu_kit.sh and carry it" >&2; exit 2; }
# GPU_LOAN_NO_INSTALL=1: the packages are there already (a dry run of the jobs on the CPU machine)
if [ -z "${GPU_LOAN_NO_INSTALL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/whl/*.whl || exit 2
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 COURSE_DATASET=fashion_mnist
# the cache starts as the kit's (the evaluator) and stays in /tmp: models trained by one job or call serve the next
# while the machine is warm, and a dry run here leaves the kit as it was
[ -d /tmp/course-cache ] || cp -r .gpu/cache /tmp/course-cache || exit 2
# a kit built before the fix kept the files one folder above where the loader looks
if ls .gpu/data/*.gz >/dev/null 2>&1; then mkdir -p .gpu/data/fashion_mnist && mv .gpu/data/*.gz .gpu/data/fashion_mnist/; fi
export COURSE_DATA_DIR=$PWD/.gpu/data COURSE_CACHE_DIR=/tmp/course-cache
python3 - <<'PY' 2>&1 | tee -a "$OUT/log.txt" || exit 2
import platform, torch, diffusers, nbclient, course_lib  # noqa: F401  (the kit is complete)
from course_lib.metrics import load_evaluator
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"{name}, torch {torch.__version__}, Python {platform.python_version()}, diffusers {diffusers.__version__}")
print(f"evaluator from the kit: test accuracy {load_evaluator('fashion_mnist', 'cpu', progress=False).test_accuracy:.1%}")
PY

suite() { python3 benchmarks/gpu_suite.py --prompts .gpu/prompts.safetensors "$@"; }
for job in "$@"; do
  echo "== $job ($(date -u +%H:%M:%S))" | tee -a "$OUT/log.txt"
  case $job in
    ddpm) suite --out "$OUT/ddpm" --budget "${BUDGET:-560}" --stages ddpm samplers --compile reduce-overhead \
      --fd-sets "${FD_SETS:-1}" ;;
    fdcheck) suite --out "$OUT/fdcheck" --budget 60 --stages ddpm --compile reduce-overhead --fd-sets 5 \
      --fast-samplers ;;
    fdtry) suite --out "$OUT/dropout" --budget 60 --stages ddpm --compile reduce-overhead --unet dropout=0.1
      suite --out "$OUT/minsnr" --budget 60 --stages ddpm --compile reduce-overhead --min-snr-gamma 5 ;;
    gputests) python3 -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_gpu.py ;;
    text) suite --out "$OUT/text" --budget "${BUDGET:-420}" --stages text --text-steps 15000 \
      --compile reduce-overhead ;;
    latent) suite --out "$OUT/latent" --budget "${BUDGET:-560}" --stages vae latent --vae-steps 10000 \
      --latent-steps 20000 --compile reduce-overhead ;;
    big) suite --out "$OUT/big" --budget "${BUDGET:-330}" --stages ddpm --ddpm-steps 5000 --compile reduce-overhead \
      --ddpm-set batch_size=512 lr=6e-4 ema_decay=0.999 warmup_steps=200 ;;
    layout) suite --out "$OUT/layout" --budget "${BUDGET:-420}" --stages ddpm speed graphs --compile reduce-overhead \
      --unet channels=32,96,256,320 blocks=1,1,1,1 attention=0,0,1,1 ;;
    lessons|quick)
      if [ ! -e /tmp/course-encoder/model.safetensors ]; then
        [ -e .gpu-enc/encoder/model.fp16.safetensors ] || { echo "lessons: carry .gpu-enc (gpu_kit.sh)"; continue; }
        cp -r .gpu-enc/encoder /tmp/course-encoder && python3 -c "
from safetensors.torch import load_file, save_file
w = load_file('/tmp/course-encoder/model.fp16.safetensors')
save_file({k: v.float() if v.is_floating_point() else v for k, v in w.items()}, '/tmp/course-encoder/model.safetensors')"
        rm /tmp/course-encoder/model.fp16.safetensors
      fi
      # shellcheck disable=SC2086  # LESSONS is a list
      if [ "$job" = quick ]; then
        COURSE_TEXT_ENCODER=/tmp/course-encoder COURSE_QUICK=1 python3 benchmarks/lesson_runtimes.py --quick \
          --keep-cache --outputs "$OUT/quick.txt" ${LESSONS:-}
      else
        COURSE_TEXT_ENCODER=/tmp/course-encoder python3 benchmarks/lesson_runtimes.py --keep-cache \
          --outputs "$OUT/lessons.txt" ${LESSONS:-05}
      fi ;;
    smoke) suite --out "$OUT/smoke" --budget 120 --smoke --stages ddpm text samplers ;;
    *) echo "unknown job $job (fdcheck, ddpm, fdtry, gputests, text, latent, big, layout, quick, lessons, smoke)" ;;
  esac 2>&1 | tee -a "$OUT/log.txt"
done

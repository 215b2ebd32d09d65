#!/usr/bin/env bash
# Everything issue 22 asks of a GPU, in one call of a GPU machine (at most 9 minutes), prepared here.
#
#   benchmarks/gpu_session.sh prepare   # here, with the network to the package registries: fills .gpu/
#   benchmarks/gpu_session.sh run       # there (the device tool's `run`, carrying .gpu): figures into $OUT
#
# The GPU machine has torch, timm, onnx and pytest but not albumentations (nor what it needs) or
# tomli-w, no Fashion-MNIST and no network: `prepare` downloads those wheels for its Python 3.12,
# writes the first 8,192 training images of Fashion-MNIST as idx files and copies Lite0's weights
# (`make weights`), all into .gpu/, which git ignores and the device tool carries (64 MiB at most).
# `run` installs the wheels, runs benchmarks/speed_gpu.py (fit against a bare loop, eager and
# compiled; the GPU's busy share with 0/4/8/15 workers; predict flat/product/routed against a bare
# inference loop; peak memory) and the CUDA tests (tests/gpu: AMP, EMA, channels_last, torchrun
# with NCCL), and leaves gpu.json and both logs in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS="albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
        typing-inspection==0.4.5 simsimd==6.5.16 stringzilla==5.3.2 tomli-w==1.2.0"

prepare() {
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    mkdir -p .gpu/wheels .gpu/fashion-mnist
    for wheel in $WHEELS; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform any -d .gpu/wheels "$wheel" || exit 1
    done
    ${PY:-.venv/bin/python} - <<'EOF' || exit 1
import gzip
from pathlib import Path

from hierclf.data.builtin import FASHION_MNIST_DIR, read_fashion_mnist

images, labels, _ = read_fashion_mnist("train", FASHION_MNIST_DIR)
count = 8192
for name, array in (("train-images-idx3-ubyte.gz", images[:count]), ("train-labels-idx1-ubyte.gz", labels[:count])):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(side).to_bytes(4, "big") for side in array.shape)
    with gzip.open(Path(".gpu/fashion-mnist") / name, "wb") as handle:
        handle.write(header + array.astype("uint8").tobytes())
EOF
    if [ -f weights/efficientnet-lite0.safetensors ]; then cp weights/efficientnet-lite0.safetensors .gpu/; fi
    du -sh .gpu
}

run() {
    OUT=${OUT:-gpu-out}
    mkdir -p "$OUT"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/wheels/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    weights=.gpu/efficientnet-lite0.safetensors; [ -f "$weights" ] || weights=none
    (cd benchmarks && timeout 420 python3 -W ignore speed_gpu.py --source ../.gpu/fashion-mnist \
        --weights "$(readlink -f ../$weights 2>/dev/null || echo none)" --out "$OUT/gpu.json") 2>&1 | tee "$OUT/speed_gpu.log"
    timeout 100 python3 -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tee "$OUT/tests_gpu.log"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Issue 19's GPU checks as one short device run: the fast paths' CUDA tests, then the GPU rows of
# benchmarks/README.md (bf16 sampling of var-d16/d30 at batch 64, scalear vs VAR on the same weights, depth
# inference at 480x640, SAR3D / G3PT seconds per object, torch.compile of the tokenizer).
#
#   bash benchmarks/gpu_checks.sh prepare [VAR_CHECKOUT]   # here: fills .gpu/ (git-ignored), seconds
#   bash benchmarks/gpu_checks.sh run                      # there: at most 9.5 min (each step has a limit)
#
# The device image has torch, numpy, scipy, lightning, safetensors, h5py, scikit-image and pytest but no package
# index and none of kornia, kornia-rs, trimesh and jsonargparse: `prepare` downloads their wheels for the image's
# Python (GPU_PYTHON, default 3.12) at the versions of this environment, builds scalear's wheel, copies a VAR
# checkout (for bench_vs_var.py) and computes the procedural chair's SDF grid (open3d, absent there). With the
# device tool: run(command="OUT=$OUT bash benchmarks/gpu_checks.sh run", carry=[".gpu"], timeout_s=600).
# `run` installs the wheels without dependencies, then writes each step's output to $OUT/<step>.txt (default
# /tmp/gpu_checks) and its tail to stdout; a step that fails or runs past its limit does not stop the others.
# `DRY=1 bash benchmarks/gpu_checks.sh run` prints the steps' commands instead (tests/test_benchmarks.py parses them).
set -uo pipefail
cd "$(dirname "$0")/.."

prepare() {
    set -e
    local py=${GPU_PYTHON:-3.12} wheels=.gpu/wheels
    rm -rf "$wheels" && mkdir -p "$wheels"
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    python -m pip wheel -q --no-deps -w "$wheels" .
    local pins
    pins=$(python - <<'EOF'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in
               ("kornia", "kornia-rs", "trimesh", "jsonargparse", "docstring-parser", "typeshed-client")))
EOF
)
    # shellcheck disable=SC2086
    python -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$wheels" $pins
    if [ -n "${1:-}" ]; then  # without it, the vs_var step fails (the others run)
        rm -rf .gpu/VAR && mkdir -p .gpu/VAR && cp -r "$1"/models "$1"/dist.py .gpu/VAR/
    fi
    python - <<'EOF'
import sys
import numpy as np
sys.path.insert(0, "benchmarks")
from _common import procedural_sdf_grid
np.save(".gpu/chair_64.npy", procedural_sdf_grid(64))
EOF
    du -sh .gpu
}

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a time limit, output to $OUT/NAME.txt (DRY=1: print it)
    local name=$1 limit=$2
    shift 2
    if [ -n "${DRY:-}" ]; then
        echo "$*"
        return
    fi
    echo "== $name: $*"
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    echo "exit $? after $((SECONDS - start)) s" >> "$OUT/$name.txt"
    tail -n 30 "$OUT/$name.txt"
}

run() {
    OUT=${OUT:-/tmp/gpu_checks}
    local py=${PYTHON:-python3} common=(--device cuda --repeats 3 --min-time 0)
    if [ -z "${DRY:-}" ]; then  # at most 8 files come back from $OUT: device.txt and one per step
        mkdir -p "$OUT"
        { "$py" -m pip install -q --no-index --no-deps .gpu/wheels/*.whl 2>&1
          nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
          "$py" -c "import torch, scalear; print('torch', torch.__version__, '| scalear from', scalear.__file__)"
        } 2>&1 | tee "$OUT/device.txt"
    fi
    step tests 90 "$py" -P -m pytest -q -p no:cacheprovider -n 0 tests/test_sampling_fast.py  # -P: the installed scalear
    step sampling 150 "$py" benchmarks/bench_sampling.py --sizes var-d16,var-d30 --schedule 256 --batch 64 \
        --dtype bf16 --cuda-graphs "${common[@]}"
    step vs_var 75 "$py" benchmarks/bench_vs_var.py --var-checkout .gpu/VAR --depth 16 --batch 16 "${common[@]}"
    step depth 75 "$py" benchmarks/bench_depth.py --presets tiny,small,base --depthart-presets tiny,small --batch 8 \
        --dtype bf16 "${common[@]}"
    step sar3d 45 "$py" benchmarks/bench_sar3d.py --sdf-grid .gpu/chair_64.npy --dtype bf16 "${common[@]}"
    step g3pt 45 "$py" benchmarks/bench_g3pt.py --sdf-grid .gpu/chair_64.npy --dtype bf16 "${common[@]}"
    step compile 90 "$py" benchmarks/bench_tokenizer.py --presets var-f16 --batch 16 --compile --dtype bf16 \
        "${common[@]}"
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    run) run ;;
    *) echo "usage: $0 prepare [VAR_CHECKOUT] | run" >&2; exit 2 ;;
esac

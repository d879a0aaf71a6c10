#!/usr/bin/env bash
# Train the cpu-brain recipe on OASIS-TRT-20's training subjects (1-12) and evaluate it on the
# 6 validation pairs (subjects 13-15) at full resolution, next to the unregistered (affine-only)
# starting point. Needs ../shared/data/oasis-trt-20; about 10 minutes on 2 CPU cores.
# Usage: bash benchmarks/cpu_recipe_oasis.sh [OUT_DIR]   (default: runs/cpu-brain-oasis)
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/oasis-trt-20/dataset.json
out=${1:-runs/cpu-brain-oasis}
if [ ! -f "$data" ]; then echo "skipped: $data not found (the benchmark needs ../shared/data)"; exit 0; fi
mkdir -p "$out"
echo "== machine: $(nproc) CPU cores, $(python -c 'import torch; print("torch", torch.__version__)')"
echo "== train (wall time below)"
time eoir train --dataset "$data" --out "$out/run" --recipe cpu-brain --overwrite
echo "== evaluate the trained model (best.pt)"
eoir evaluate --dataset "$data" --model "$out/run/best.pt" --out "$out/model.csv" --overwrite
echo "== evaluate the starting point (no registration: the data are affinely pre-aligned)"
eoir evaluate --dataset "$data" --model none --out "$out/affine.csv" --overwrite

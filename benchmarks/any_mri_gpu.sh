#!/usr/bin/env bash
# One lent GPU's session for the any-MRI model (issue 16) and the GPU training-speed row (issue 15),
# as a single device command:
#   1. the GPU synthesis test (pairs drawn on the GPU match the CPU's draws);
#   2. benchmarks/train_speed.py on the GPU: width 32 at full resolution, float32 and bf16;
#   3. benchmarks/train_brain_gpu.py --recipe synth-brain: the SYNTH table's runs side by side
#      (from brain-mri's weights with NCC on one-contrast pairs, the same from scratch, and from
#      brain-mri with labels and the known field alone), constant learning rate, stopped at the
#      deadline; slim checkpoints, logs and metrics packed into OUT/any-runs.tar.gz.
#
# Usage, on the lent machine (the label maps copied to .data/, nibabel and isal wheels in .whl/,
# both named in the device tool's carry):
#   bash benchmarks/any_mri_gpu.sh OUT_DIR [MINUTES_OF_TRAINING]
# Evaluate the checkpoints on a CPU afterwards: benchmarks/synth_probe.py, benchmarks/any_mri.py,
# eoir evaluate on the OASIS validation pairs.
set -uo pipefail
out=${1:?usage: any_mri_gpu.sh OUT_DIR [MINUTES_OF_TRAINING]}
minutes=${2:-7}
mkdir -p "$out"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# the runs draw pairs in CPU workers (train_brain_gpu.py's SYNTH table); the GPU path
# (data.synth_on_device) is checked all the same
python3 -m pytest -q -p no:cacheprovider tests/synth/test_synth.py -k gpu 2>&1 | tail -4

timeout 120 python3 benchmarks/train_speed.py --device cuda --widths 32 --sizes full --steps 8 \
    2>&1 | tee "$out/train_speed_gpu.txt"

python3 benchmarks/train_brain_gpu.py --recipe synth-brain --dataset .data/synthseg-label-maps \
    --out runs/any-gpu --steps 100000 --minutes "$minutes" --threads 2 \
    --set optim.schedule=constant \
    --pack "$out/any-runs.tar.gz" 2>&1 | tee "$out/train.txt"
for log in runs/any-gpu/*.log; do tail -n 3 "$log"; done

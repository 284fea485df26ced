#!/usr/bin/env bash
# Issue 18's GPU figures in one run (prepared on 2 CPU cores; not yet run: no GPU was lent to issue 18).
#
# On the lent machine (Python 3.12, torch with CUDA; no MONAI, nibabel, ignite): carry the wheels and the
# benchmark scan, then run this script. Here, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       monai==1.6.1 nibabel==5.4.2 pytorch-ignite==0.5.5 fire==0.7.1 termcolor==3.3.0
#   (SimpleITK, highdicom and pydicom are imported only for DICOM / MetaImage inputs: not needed for the NIfTI scan)
#   python benchmarks/inference.py --scans real --repeats 1 --baseline-repeats 1   # writes benchmarks/.work/*.nii.gz
# Device tool: command "bash tools/gpu_issue18.sh", carry [".whl", "benchmarks/.work/LIDC-IDRI-0001.nii.gz"].
#
# Writes under $OUT: gpu_tests.log, inference_gpu.json (LIDC-IDRI-0001 end to end, ours in float16 autocast and
# in float32, and the stock MONAI pipeline), training_gpu.json (the bundle's trainer and the raw step, bf16 /
# channels-last), crossval_budget_gpu.json (the five-fold recipe's step measured on the GPU), nvidia-smi.txt,
# run.log. Each step has its own time limit so that one slow step leaves the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?output folder}
LIMIT=${LIMIT:-540}  # seconds for the whole script (the device tool allows 600 per command)
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of the script's steps here
start=$(date +%s)
log() { echo "[$(( $(date +%s) - start )) s] $*" | tee -a "$OUT/run.log"; }
left() { echo $(( LIMIT - ($(date +%s) - start) )); }
export PYTHONUNBUFFERED=1

if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { log "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch, monai; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'monai', monai.__version__)" \
    2>&1 | tee -a "$OUT/run.log"

log "GPU tests (the half-precision and CUDA paths that skip on CPU)"
timeout 90 python3 -m pytest -q -m gpu -p no:cacheprovider tests > "$OUT/gpu_tests.log" 2>&1
log "gpu tests exit $?"

log "whole-scan inference, LIDC-IDRI-0001: ours (float16 autocast, default) and ours in float32, stock MONAI"
timeout $(( $(left) / 2 )) python3 benchmarks/inference.py --scans real --device $DEVICE --repeats 3 --baseline-repeats 1 \
    --no-same-overlap --float32 --json "$OUT/inference_gpu.json" \
    >> "$OUT/run.log" 2>&1
log "inference exit $?"

log "training throughput (trainer rows and raw step, bf16 / channels-last)"
timeout $(( $(left) * 2 / 3 )) python3 benchmarks/training.py --device $DEVICE --workers 0 8 --iterations 20 \
    --json "$OUT/training_gpu.json" >> "$OUT/run.log" 2>&1
log "training exit $?"

log "the five-fold recipe's step on the GPU (64^3, init_filters 16 and 32)"
for f in 16 32; do
    timeout $(( $(left) / 2 )) python3 benchmarks/crossval_budget.py --device $DEVICE --batch 8 --iterations 10 \
        --warmup 3 --init-filters $f --json "$OUT/crossval_budget_gpu_if$f.json" >> "$OUT/run.log" 2>&1
    log "crossval_budget init_filters $f exit $?"
done
log "done"

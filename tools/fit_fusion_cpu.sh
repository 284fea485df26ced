#!/usr/bin/env bash
# The released fusion (bundle/models/malignancy_fusion.json) from the released weights, on 2 CPU cores (~15 min):
# `evaluating` on each of the five patient folds of the LIDC-IDRI VOIs (prepare-vois --folds 5 --seed 0) writes
# the network's outputs and the predicted mask's measurements (per_nodule.csv, m_* columns); then
#   * malignancy: Platt scaling of the network's logit on held-out fold 4 (the only fold these weights did not
#     train on, so the only out-of-sample predictions to calibrate on; out of group: five groups of its patients);
#   * attributes: a multinomial model per LIDC attribute on the measurements, fitted on folds 0-3 (measurements
#     only, no network output) and checked on fold 4 by the last `evaluating` run.
#
#   WORK=runs/eval_released [CKPT=bundle/models/model.pt] [SHARED=../shared/data] bash tools/fit_fusion_cpu.sh
#
# Writes $WORK/f{0..4}/ (evaluating), $WORK/malignancy_fusion.json and its report, and $WORK/fused_f4/ (fold 4
# evaluated with the fusion beside the weights: the figures of the model card).
set -euo pipefail
cd "$(dirname "$0")/.."

S=${SHARED:-../shared/data}
W=${WORK:?scratch folder, e.g. runs/eval_released}
CKPT=${CKPT:-bundle/models/model.pt}
log() { echo "[$(date +%H:%M:%S)] $*"; }
mkdir -p "$W/network" "$W/fused"
cp "$CKPT" "$W/network/model.pt"  # no fusion beside this copy: evaluating reports the network's own outputs
evaluate() {  # fold, weights, output folder
    python -m monai.bundle run evaluating --meta_file bundle/configs/metadata.json \
        --config_file "['bundle/configs/train.yaml','bundle/configs/train_scans.yaml','bundle/configs/evaluate.yaml']" \
        --logging_file bundle/configs/logging.conf --dataset_dir "$W/vois_f$1" --ckpt_file "$2" --output_dir "$3" \
        > "$3.log" 2>&1
}
for k in 0 1 2 3 4; do
    [ -f "$W/vois_f$k/datalist.json" ] || lung-nodule-mtl prepare-vois --vois "$S/lidc_vois" --out "$W/vois_f$k" \
        --folds 5 --val-fold "$k" > "$W/prep_f$k.log" 2>&1
    if [ ! -f "$W/f$k/per_nodule.csv" ]; then log "evaluating fold $k"; evaluate "$k" "$W/network/model.pt" "$W/f$k"; fi
done
log "fitting the fusion"
lung-nodule-mtl fit-malignancy --tables "$W/f4/per_nodule.csv" --features calibrate \
    --attribute-features all-measured --attribute-tables "$W"/f{0,1,2,3}/per_nodule.csv \
    --description "malignancy: Platt scaling on the weights' held-out fold 4; attributes: measurements, folds 0-3" \
    --weights "$W/network/model.pt" \
    --out "$W/malignancy_fusion.json" --report "$W/malignancy_fusion_report.json" | tee "$W/fit.txt"
cp "$W/network/model.pt" "$W/fused/model.pt"
cp "$W/malignancy_fusion.json" "$W/fused/malignancy_fusion.json"
log "fold 4 with the fusion"
evaluate 4 "$W/fused/model.pt" "$W/fused_f4"
python - "$W/fused_f4/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
for key in ("malignancy", "malignancy_network"):
    r = m[key]
    print(f"{key}: AUC {r['auc']:.3f} (diameter {r['diameter_baseline_auc']:.3f}), Brier {r['calibration']['brier']:.3f}"
          f" (diameter-only logistic, in sample: {r['diameter_logistic']['calibration']['brier']:.3f}), "
          f"size-matched {r['size_matched']['auc']:.3f} ({r['size_matched']['n_pairs']} pairs)")
for name, r in m["attributes"].items():
    n = m.get("attributes_network", {}).get(name, {})
    print(f"{name}: exact fused {r['accuracy']:.3f}, network {n.get('accuracy', float('nan')):.3f}, "
          f"majority {r['majority_accuracy']:.3f}; within one {r['within_one']:.3f} / {n.get('within_one', float('nan')):.3f}")
PY

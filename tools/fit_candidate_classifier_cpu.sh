#!/usr/bin/env bash
# The candidate classifier of README "Blob proposals and a candidate classifier" (none is shipped) for the released
# weights, on 2 CPU cores (~10-20 min): 12 synthetic whole scans (seed 1000) and the TotalSegmentator example CT as hosts, 6 real
# LIDC-IDRI nodules of the training folds 0-3 pasted into each (insert-nodules, seed 21; 110 nodules in all with the
# hosts' own), then fit-candidate-classifier on them. Never the development or test scans of
# tools/eval_detection_cpu.sh (other seeds; fold 4 is never pasted here).
#
#   WORK=runs/clf [CKPT=bundle/models/model.pt] [SHARED=../shared/data] bash tools/fit_candidate_classifier_cpu.sh
#
# Writes $WORK/fit/candidate_classifier.json and candidate_classifier_fit.json (leave-one-scan-out AUCs beside the
# detection head's). FEATURES=geometry: the scorer on scale-free geometry and the head only. DROP_SHIFTED=example_ct:
# without the features whose domain AUC (the example CT's non-nodule candidates against the synthetic hosts') lies
# outside [0.35, 0.65] (README's variant C). Then: CLF=$WORK/fit/candidate_classifier.json WORK=runs/eval LABEL=clf \
# SKIP_VOI=1 bash tools/eval_detection_cpu.sh (the development scans choose its detection_threshold).
set -euo pipefail
cd "$(dirname "$0")/.."

S=${SHARED:-../shared/data}
W=${WORK:?scratch folder, e.g. runs/clf}
CKPT=${CKPT:-bundle/models/model.pt}
mkdir -p "$W"
log() { echo "[$(date +%H:%M:%S)] $*"; }

[ -f "$W/lidc_vois/datalist.json" ] || lung-nodule-mtl prepare-vois --vois "$S/lidc_vois" --out "$W/lidc_vois" \
    --folds 5 --val-fold 4 > "$W/prep_vois.log" 2>&1
log "training hosts"
[ -f "$W/train_hosts/annotations.csv" ] || lung-nodule-mtl synth --out "$W/train_hosts" --cases 12 --seed 1000 \
    --mode scans --folds 2 --test-fraction 0 > "$W/synth.log" 2>&1
[ -f "$W/train/annotations.csv" ] || lung-nodule-mtl insert-nodules --hosts "$W/train_hosts/images" \
    "$S/totalsegmentator_example/example_ct.nii.gz" --nodules "$W/lidc_vois/datalist.json" --folds 0 1 2 3 \
    --per-scan 6 --seed 21 --host-nodules "$W/train_hosts/annotations.csv" --out "$W/train" > "$W/insert.log" 2>&1
log "fit"
lung-nodule-mtl fit-candidate-classifier --scans "$W/train/images" --annotations "$W/train/annotations.csv" \
    --checkpoint "$CKPT" --out "$W/fit" --device cpu --features ${FEATURES:-all} \
    ${DROP_SHIFTED:+--drop-shifted $DROP_SHIFTED} | tee "$W/fit.txt"
log done

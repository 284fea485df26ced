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
# outside [0.35, 0.65] (README's variant C). EXTRA_HOSTS="a.nii.gz b.nii.gz": more host scans (e.g. real CTs from
# benchmarks/real_scans_pypi.py), EXTRA_NODULES=their lesions (LUNA16 columns; pasted nodules keep clear of
# them, and they are annotated), EXCLUDED=findings neither nodule nor negative (fit --excluded; e.g. a mass). Then: CLF=$WORK/fit/candidate_classifier.json WORK=runs/eval LABEL=clf \
# SKIP_VOI=1 bash tools/eval_detection_cpu.sh (the development scans choose its detection_threshold).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/tables.sh
. tools/tables.sh

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
HOST_NODULES=$W/train_hosts/annotations.csv
FIT_NODULES=$W/train/annotations.csv
if [ -n "${EXTRA_NODULES:-}${EXCLUDED:-}" ]; then  # pasted nodules keep clear of the extra hosts' lesions, excluded too
    HOST_NODULES=$W/host_nodules.csv
    # shellcheck disable=SC2086
    merge_luna16 "$HOST_NODULES" "$W/train_hosts/annotations.csv" ${EXTRA_NODULES:-} ${EXCLUDED:-}
fi
# shellcheck disable=SC2086
[ -f "$W/train/annotations.csv" ] || lung-nodule-mtl insert-nodules --hosts "$W/train_hosts/images" \
    "$S/totalsegmentator_example/example_ct.nii.gz" ${EXTRA_HOSTS:-} --nodules "$W/lidc_vois/datalist.json" \
    --folds 0 1 2 3 --per-scan 6 --seed 21 --host-nodules "$HOST_NODULES" --out "$W/train" > "$W/insert.log" 2>&1
if [ -n "${EXCLUDED:-}" ]; then  # the excluded findings are not positives of the fit (insert-nodules annotated them)
    FIT_NODULES=$W/fit_annotations.csv
    python - "$W/train/annotations.csv" "$EXCLUDED" "$FIT_NODULES" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
excl = [r for r in csv.DictReader(open(sys.argv[2], newline=""))]
def near(r, e):
    return r["seriesuid"] == e["seriesuid"] and sum((float(r[k]) - float(e[k])) ** 2 for k in ("coordX", "coordY", "coordZ")) < 1.0
kept = [r for r in rows if not any(near(r, e) for e in excl)]
with open(sys.argv[3], "w", newline="") as f:
    w = csv.DictWriter(f, list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(kept)
print(f"{len(rows) - len(kept)} excluded finding(s) left out of the fit's nodules", file=sys.stderr)
PY
fi
log "fit"
lung-nodule-mtl fit-candidate-classifier --scans "$W/train/images" --annotations "$FIT_NODULES" \
    ${EXCLUDED:+--excluded "$EXCLUDED"} --checkpoint "$CKPT" --out "$W/fit" --device cpu --features ${FEATURES:-all} \
    ${DROP_SHIFTED:+--drop-shifted $DROP_SHIFTED} | tee "$W/fit.txt"
log done

#!/usr/bin/env bash
# The figures README "Detection on whole scans" reports for a set of weights, in one run on 2 CPU cores (~15 min):
# FROC (LUNA16's rules, 1000 bootstrap samples over scans) on the development scans (6 synthetic hosts, seed 3033,
# with 18 nodules of training folds 0-3 pasted in), the synthetic + real test scans (8 hosts, seed 2026, 24 nodules
# of held-out fold 4) and LIDC-IDRI-0001 with 4 fold-4 nodules pasted in (its LUNA16 excluded findings ignored),
# every predict at --threshold 0 --max-nodules 50; the held-out fold-4 VOIs (`evaluating`: Dice, malignancy AUC
# beside the diameter); and predict on LIDC-IDRI-0001's DICOM series at the bundle's operating point. The sets are
# made once under $WORK and reused for every checkpoint.
#
#   WORK=runs/eval LABEL=0.5.0 [CKPT=bundle/models/model.pt] [SHARED=../shared/data] bash tools/eval_detection_cpu.sh
#
# CLF=path/candidate_classifier.json: predict with that candidate classifier (fit-candidate-classifier; CLF=none: the
# detection head alone, whatever lies beside the weights); LIDC-IDRI-0001 at the operating point is then predicted
# at the threshold the development scans chose in this run. SKIP_VOI=1: no VOI evaluation (same weights).
# REAL=folder of benchmarks/real_scans_pypi.py prepare: also its real scans (pyradiomics' two, TotalSegmentator's
# chest CT) at the same operating point as LIDC-IDRI-0001 (lesion rank, mask Dice, false positives). SETS_ONLY=1: make the sets and stop.
#
# Writes $WORK/<LABEL>/{dev,test_syn,test_lidc0001}_froc.json, voi_eval/metrics.json, lidc0001_default/ and
# summary.txt (one line per figure).
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/tables.sh
. tools/tables.sh

S=${SHARED:-../shared/data}
W=${WORK:?scratch folder, e.g. runs/eval}
L=${LABEL:?a name for these weights, e.g. 0.5.0}
CKPT=${CKPT:-bundle/models/model.pt}
CLF_ARGS=()
[ -n "${CLF:-}" ] && CLF_ARGS=(--candidate-classifier "$CLF")
R=$W/$L
mkdir -p "$R"
log() { echo "[$(date +%H:%M:%S)] $*"; }

log "sets under $W"
[ -f "$W/lidc_vois/datalist.json" ] || lung-nodule-mtl prepare-vois --vois "$S/lidc_vois" --out "$W/lidc_vois" \
    --folds 5 --val-fold 4 > "$W/prep_vois.log" 2>&1 || exit 1
lidc0001_tables "$S" "$W"
make_set() {  # name, synth seed or "" for LIDC-IDRI-0001, cases, insert seed, per-scan, folds...
    local name=$1 seed=$2 cases=$3 iseed=$4 per=$5
    shift 5
    [ -f "$W/$name/annotations.csv" ] && return 0
    if [ -n "$seed" ]; then
        lung-nodule-mtl synth --out "$W/${name}_hosts" --cases "$cases" --seed "$seed" --mode scans --folds 2 \
            --test-fraction 0 > "$W/$name.log" 2>&1 || return 1
        lung-nodule-mtl insert-nodules --hosts "$W/${name}_hosts/images" --nodules "$W/lidc_vois/datalist.json" \
            --folds "$@" --per-scan "$per" --out "$W/$name" --host-nodules "$W/${name}_hosts/annotations.csv" \
            --seed "$iseed" >> "$W/$name.log" 2>&1
    else
        lung-nodule-mtl insert-nodules --hosts "$S/lidc_idri/LIDC-IDRI-0001" --nodules "$W/lidc_vois/datalist.json" \
            --folds "$@" --per-scan "$per" --out "$W/$name" --host-nodules "$W/lidc0001_annotations.csv" \
            --seed "$iseed" > "$W/$name.log" 2>&1
    fi
}
make_set dev 3033 6 12 3 0 1 2 3 || exit 1
make_set test_syn 2026 8 11 3 4 || exit 1
make_set test_lidc0001 "" 1 7 4 4 || exit 1
[ -n "${SETS_ONLY:-}" ] && { log "sets made"; exit 0; }

for set in dev test_syn test_lidc0001; do
    log "predict $set ($L)"
    # the bundle's test-time mirroring (TTA=--no-tta for one pass): the likelier candidates' detection probability
    # is the mean over the 8 mirror images (bundle 0.6.1)
    lung-nodule-mtl predict -i "$W/$set/images" -o "$R/pred_$set" --checkpoint "$CKPT" --threshold 0 \
        --max-nodules 50 ${TTA:---tta} "${CLF_ARGS[@]}" --no-progress > "$R/pred_$set.log" 2>&1 || exit 1
    excluded=()
    [ "$set" = test_lidc0001 ] && excluded=(--excluded "$W/lidc0001_annotations_excluded.csv")
    point=()  # the development scans choose the operating point (bundle detection_threshold), nothing else does
    [ "$set" = dev ] && point=(--operating-point 2)
    lung-nodule-mtl evaluate-froc --predictions "$R/pred_$set" --annotations "$W/$set/annotations.csv" \
        "${excluded[@]}" "${point[@]}" --cases-from-predictions-dir --bootstrap 1000 --out "$R/${set}_froc.json" \
        > "$R/${set}_froc.txt"
done
if [ -z "${SKIP_VOI:-}" ]; then
log "VOI evaluation, fold 4"
python -m monai.bundle run evaluating --meta_file bundle/configs/metadata.json \
    --config_file "['bundle/configs/train.yaml','bundle/configs/train_scans.yaml','bundle/configs/evaluate.yaml']" \
    --dataset_dir "$W/lidc_vois" --val_fold 4 --ckpt_file "$CKPT" --output_dir "$R/voi_eval" \
    --bundle_root "$R/bundle_root" > "$R/voi_eval.log" 2>&1 || exit 1
fi
log "LIDC-IDRI-0001 (DICOM) at the operating point"
POINT=()
[ -n "${CLF:-}" ] && POINT=(--threshold "$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["operating_point"]["threshold"])' "$R/dev_froc.json")")
lung-nodule-mtl predict -i "$S/lidc_idri/LIDC-IDRI-0001" -o "$R/lidc0001_default" --checkpoint "$CKPT" --no-dicom \
    "${CLF_ARGS[@]}" "${POINT[@]}" --no-progress > "$R/lidc0001_default.log" 2>&1 || exit 1

if [ -n "${REAL:-}" ]; then  # more real scans (benchmarks/real_scans_pypi.py prepare --out $REAL)
    log "real scans from PyPI"
    lung-nodule-mtl predict -i "$REAL/images" -o "$R/pred_real" --checkpoint "$CKPT" --threshold 0 --max-nodules 50 \
        "${CLF_ARGS[@]}" --no-progress > "$R/pred_real.log" 2>&1 || exit 1
    point=$(python -c 'import json,sys,pathlib; print(json.loads(next(pathlib.Path(sys.argv[1]).glob("*.json")).read_text())["settings"]["detection_threshold"])' "$R/lidc0001_default")
    python benchmarks/real_scans_pypi.py report --data "$REAL" --predictions "$R/pred_real" \
        --threshold "$point" --json "$R/real_report.json" > "$R/real_report.txt" || exit 1
fi

python - "$R" <<'PY'
import json, sys
from pathlib import Path

r = Path(sys.argv[1])
lines = []
for s in ("dev", "test_syn", "test_lidc0001"):
    f = json.loads((r / f"{s}_froc.json").read_text())
    b = f.get("bootstrap", {}).get("cpm", {})
    sens = "/".join(f"{f['sensitivity'][k]:.3f}" for k in ("1", "2", "4"))
    lines.append(f"{s}: CPM {f['cpm']:.3f} [{b.get('ci_low', float('nan')):.3f}, {b.get('ci_high', float('nan')):.3f}]"
                 f", sensitivity @1/2/4 FP {sens}, {f['n_detected']}/{f['n_annotations']} detected")
    if "operating_point" in f:
        p = f["operating_point"]
        lines.append(f"dev operating point (<= 2 FP/scan): threshold {p['threshold']}, sensitivity "
                     f"{p['sensitivity']:.3f} at {p['fps_per_scan']:.2f} FP/scan (set detection_threshold from it)")
if (r / "voi_eval" / "metrics.json").is_file():
    m = json.loads((r / "voi_eval" / "metrics.json").read_text())
    seg, mal = m.get("segmentation", {}).get("dice", {}), m.get("malignancy", {})
    lines.append(f"fold-4 VOIs ({m['n_nodules']}): Dice {seg}; malignancy {json.dumps({k: v for k, v in mal.items() if 'auc' in k})}")
n = json.loads(next((r / "lidc0001_default").glob("*.json")).read_text())
nod = n.get("nodules", [])
lines.append(f"LIDC-IDRI-0001 at the operating point: {len(nod)} nodules, detection probabilities "
             + ", ".join(f"{x.get('detection_probability', float('nan')):.3f}" for x in nod))
if (r / "real_report.txt").is_file():
    lines += (r / "real_report.txt").read_text().splitlines()
(r / "summary.txt").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log done

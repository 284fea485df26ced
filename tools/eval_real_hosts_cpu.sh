#!/usr/bin/env bash
# Detection on real lungs with several insertion seeds (README "Pasted nodules hidden in the chest wall"): 4 held-out
# fold-4 LIDC-IDRI nodules pasted (corrected insertion) into each of three real CTs -- LIDC-IDRI-0001 (its own nodule
# annotated, LUNA16's excluded findings ignored), pyradiomics' lung1 (its nodule annotated) and TotalSegmentator's
# chest CT angiogram -- once per seed; each scorer predicts every set at --threshold 0 --max-nodules 50; FROC per seed
# and, at each scorer's operating point, nodules found and false positives (~7 min per seed and scorer, 2 CPU cores).
#
#   WORK=runs/realhosts REAL=runs/real [SEEDS="101 102 103"] [SHARED=../shared/data] bash tools/eval_real_hosts_cpu.sh
#
# REAL: the folder of `python benchmarks/real_scans_pypi.py prepare --out REAL`. The scorers are the bundle's default
# (the shipped candidate classifier, at detection_threshold_classifier) and the detection head alone
# (--candidate-classifier none, at detection_threshold_head). Writes $WORK/s<seed>/{pred_*,froc_*.json} and
# $WORK/summary.txt. A seed's sets and predictions already there are reused.
#
# Other weights: CKPT=path/model.pt (predict --checkpoint; the candidate classifier and the fusion are those beside
# it, none where there are none: "default" is then the head too), SCORERS="head" (default "default head"), and the
# operating points TH_DEFAULT / TH_HEAD (default: the bundle config's) for the summary's counts.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/tables.sh
. tools/tables.sh

S=${SHARED:-../shared/data}
W=${WORK:?scratch folder, e.g. runs/realhosts}
REAL=${REAL:?folder of benchmarks/real_scans_pypi.py prepare}
SEEDS=${SEEDS:-101 102 103}
SCORERS=${SCORERS:-default head}
CKPT_ARGS=()
[ -n "${CKPT:-}" ] && CKPT_ARGS=(--checkpoint "$CKPT")
mkdir -p "$W"
log() { echo "[$(date +%H:%M:%S)] $*"; }

[ -f "$W/lidc_vois/datalist.json" ] || lung-nodule-mtl prepare-vois --vois "$S/lidc_vois" --out "$W/lidc_vois" \
    --folds 5 --val-fold 4 > "$W/prep_vois.log" 2>&1 || exit 1
lidc0001_tables "$S" "$W"
merge_luna16 "$W/host_nodules.csv" "$W/lidc0001_annotations.csv" "$REAL/annotations.csv"
for seed in $SEEDS; do
    D=$W/s$seed
    [ -f "$D/annotations.csv" ] || lung-nodule-mtl insert-nodules --hosts "$S/lidc_idri/LIDC-IDRI-0001" \
        "$REAL/images/PYRAD-lung1.nii.gz" "$REAL/images/TSEG-chest.nii.gz" --nodules "$W/lidc_vois/datalist.json" \
        --folds 4 --per-scan 4 --seed "$seed" --host-nodules "$W/host_nodules.csv" --out "$D" > "$D.log" 2>&1 || exit 1
    for v in $SCORERS; do
        clf=()
        [ "$v" = head ] && clf=(--candidate-classifier none)
        log "seed $seed: predict ($v)"
        [ -f "$D/pred_$v/summary.csv" ] || lung-nodule-mtl predict -i "$D/images" -o "$D/pred_$v" --threshold 0 \
            --max-nodules 50 "${clf[@]}" "${CKPT_ARGS[@]}" --no-progress > "$D/pred_$v.log" 2>&1 || exit 1
        lung-nodule-mtl evaluate-froc --predictions "$D/pred_$v" --annotations "$D/annotations.csv" \
            --excluded "$W/lidc0001_annotations_excluded.csv" --cases-from-predictions-dir \
            --out "$D/froc_$v.json" > "$D/froc_$v.txt" || exit 1
    done
done

SCORERS="$SCORERS" python - "$W" $SEEDS <<'PY' | tee "$W/summary.txt"
import json, os, sys
from pathlib import Path

import numpy as np

from lung_nodule_mtl.data.nodule_table import read_nodule_table
from monai.bundle import ConfigParser

from lung_nodule_mtl.inference.bundle import SCAN_CONFIGS, find_bundle
from lung_nodule_mtl.metrics.froc import PREDICTIONS_SUMMARY, match_candidates, prediction_dir_cases

w, seeds = Path(sys.argv[1]), sys.argv[2:]
parser = ConfigParser()  # the raw values: the shipped classifier lies beside the weights, so it is the default
parser.read_config([str(find_bundle() / "configs" / name) for name in SCAN_CONFIGS])
threshold = {"default": float(os.environ.get("TH_DEFAULT") or parser["detection_threshold_classifier"]),
             "head": float(os.environ.get("TH_HEAD") or parser["detection_threshold_head"])}
excluded = read_nodule_table(w / "lidc0001_annotations_excluded.csv")
for v in os.environ["SCORERS"].split():
    cpms, found, total, fps, scans = [], 0, 0, 0, 0
    for seed in seeds:
        d = w / f"s{seed}"
        refs = read_nodule_table(d / "annotations.csv")
        preds = read_nodule_table(d / f"pred_{v}" / PREDICTIONS_SUMMARY)
        cpms.append(json.loads((d / f"froc_{v}.json").read_text())["cpm"])
        for case in prediction_dir_cases(d / f"pred_{v}"):
            m = match_candidates(preds.get(case, []), refs.get(case, []), excluded.get(case, []))
            found += int(np.sum(m.tp_scores >= threshold[v]))
            total += len(refs.get(case, []))
            fps += int(np.sum(m.fp_scores >= threshold[v]))
            scans += 1
    print(f"{v}: CPM per seed {', '.join(f'{c:.3f}' for c in cpms)} (mean {np.mean(cpms):.3f}); at its operating point "
          f"{threshold[v]:g}: {found} of {total} nodules found, {fps} false positives on {scans} scans "
          f"({fps / scans:.2f} per scan)")
PY

#!/usr/bin/env bash
# Step 3 of the released weights (bundle 0.5.0), as it ran on 2 CPU cores (about 45 min): the bundle's weights
# (0.4.0) predict on 8 of their own synthetic training scans (seeds 1000-1003) and the TotalSegmentator example CT;
# their false positives scored >= 0.5 (mine-negatives) become hard negatives (train_scans.yaml scan_negatives) of a
# 5-epoch fine-tune (655 LIDC-IDRI crops + 300 scan windows + 300 VOI windows per epoch, lr 5e-4), then the
# held-out fold 4 is evaluated. LIDC-IDRI fold 4 and LIDC-IDRI-0001 stay out of training.
#
#   WORK=runs/step3 [SHARED=../shared/data] bash tools/mine_and_finetune_cpu.sh
#
# The recipe's numbers can be changed (defaults: step 3 as it ran): INIT (weights that mine and are fine-tuned,
# bundle/models/model.pt), EPOCHS (5), WINDOWS (scan windows per epoch, 300), VOI_WINDOWS (300), LR (5e-4),
# BUDGET (time budget in s, 3000), EXTRA (further bundle overrides appended to the training command, e.g.
# EXTRA="--window_fractions#anywhere 0.35 --anywhere_shift_mm 24").
#
# Writes $WORK/run/models/model_final.pt, $WORK/negatives.csv, $WORK/train.log, $WORK/voi_eval/metrics.json.
set -uo pipefail
cd "$(dirname "$0")/.."

S=${SHARED:-../shared/data}
C=$(realpath -m "${WORK:?scratch folder, e.g. runs/step3}")
export WORK=$C  # absolute: the datalist and the host links name files in other folders
E=$C/eval
INIT=${INIT:-bundle/models/model.pt}
EPOCHS=${EPOCHS:-5}
WINDOWS=${WINDOWS:-300}
VOI_WINDOWS=${VOI_WINDOWS:-300}
LR=${LR:-0.0005}
BUDGET=${BUDGET:-3000}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
mkdir -p "$C"
log() { echo "[$(date +%H:%M:%S)] $*"; }
log prepare-vois
[ -f $C/lidc_vois/datalist.json ] || lung-nodule-mtl prepare-vois --vois $S/lidc_vois --out $C/lidc_vois --folds 5 --val-fold 4 > $C/prep_vois.log 2>&1 || exit 1
log synthetic training hosts
python - <<'PY' || exit 1
import csv, json, os
from lung_nodule_mtl.data import load_datalist, write_datalist
from lung_nodule_mtl.data.synthetic import synthesize_dataset
C = os.environ["WORK"]
os.makedirs(f"{C}/hosts", exist_ok=True)
items, rows = [], []
for seed in range(1000, 1004):
    folder = f"{C}/synthetic_scans/seed{seed}"
    if not os.path.exists(f"{folder}/datalist.json"):
        synthesize_dataset(folder, cases=2, seed=seed, mode="scans", n_folds=2, test_fraction=0.0, scan_shape=(256, 256, 160))
    d = f"{folder}/datalist.json"
    for s in ("training", "validation"):
        if s not in json.load(open(d)):
            continue
        for i in load_datalist(d, s):
            stem = os.path.basename(i["image"]).split(".")[0]
            uid = f"{stem}-s{seed}"
            link = f"{C}/hosts/{uid}.nii.gz"
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(i["image"]), link)
            items.append(dict(i, image=link, patient_id=f"{i['patient_id']}-s{seed}", seriesuid=uid))
            x, y, z = i["center_world_mm"]
            rows.append((uid, -x, -y, z, i["diameter_mm"]))
write_datalist({"training": items}, f"{C}/scans_datalist.json")
with open(f"{C}/hosts_annotations.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]); w.writerows(rows)
print(len(items), "nodules,", len({r[0] for r in rows}), "scans")
PY
ln -sf "$(realpath $S/totalsegmentator_example/example_ct.nii.gz)" $C/hosts/example_ct.nii.gz
log mining predict
[ -f $C/mine_pred/summary.csv ] || lung-nodule-mtl predict -i $C/hosts -o $C/mine_pred --checkpoint "$INIT" --threshold 0 --max-nodules 50 > $C/mine_pred.log 2>&1 || exit 1
lung-nodule-mtl evaluate-froc --predictions $C/mine_pred --annotations $C/hosts_annotations.csv --cases-from-predictions-dir | tail -3
lung-nodule-mtl mine-negatives --predictions $C/mine_pred --annotations $C/hosts_annotations.csv --out $C/negatives.csv --min-probability 0.5 || exit 1
log "training: $EPOCHS epochs x (655 crops + $WINDOWS scan windows + $VOI_WINDOWS VOI windows), lr $LR, from $INIT"
python -m monai.bundle run training --meta_file bundle/configs/metadata.json \
    --config_file "['bundle/configs/train.yaml','bundle/configs/train_scans.yaml']" \
    --logging_file bundle/configs/logging.conf --bundle_root $C/run \
    --dataset_dir $C/lidc_vois --scan_datalist $C/scans_datalist.json \
    --host_images "['$S/totalsegmentator_example/example_ct.nii.gz']" --scan_negatives $C/negatives.csv \
    --epochs "$EPOCHS" --scan_windows_per_epoch "$WINDOWS" --voi_windows_per_epoch "$VOI_WINDOWS" --batch_size 8 \
    --num_workers 1 --val_interval 100000 --resume False --time_budget_s "$BUDGET" --init_weights "$INIT" \
    --learning_rate "$LR" --validate#dataset#cache_rate 0 "${EXTRA_ARGS[@]}" > $C/train.log 2>&1
status=$?
log "training exit $status"
[ "$status" -eq 0 ] || { echo "training failed: see $C/train.log" >&2; exit 1; }
log VOI eval
python -m monai.bundle run evaluating --meta_file bundle/configs/metadata.json \
    --config_file "['bundle/configs/train.yaml','bundle/configs/train_scans.yaml','bundle/configs/evaluate.yaml']" \
    --dataset_dir $C/lidc_vois --val_fold 4 --ckpt_file $C/run/models/model_final.pt --output_dir $C/voi_eval \
    --bundle_root $E/br > $C/voi_eval.log 2>&1
log done

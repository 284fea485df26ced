# shellcheck shell=bash
# LUNA16-table steps the evaluation and fitting tools share; source it (`. tools/tables.sh`).

# lidc0001_tables SHARED OUT_DIR: LUNA16's annotation and excluded rows of LIDC-IDRI-0001 (../shared/data/luna16),
# its case id as seriesuid, as OUT_DIR/lidc0001_annotations.csv and lidc0001_annotations_excluded.csv (kept if there).
lidc0001_tables() {
    local shared=$1 out=$2 table
    local series=1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192
    for table in annotations annotations_excluded; do
        [ -f "$out/lidc0001_$table.csv" ] || { head -1 "$shared/luna16/$table.csv"
            grep "^$series," "$shared/luna16/$table.csv" | sed "s/^$series,/LIDC-IDRI-0001,/"; } > "$out/lidc0001_$table.csv"
    done
}

# merge_luna16 OUT IN...: the rows of LUNA16-style tables in one, only the LUNA16 columns (others, e.g. volume_mm3
# of real_scans_pypi.py's tables, dropped).
merge_luna16() {
    python - "$@" <<'PY'
import csv, sys
cols = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
rows = [{k: r[k] for k in cols} for path in sys.argv[2:] for r in csv.DictReader(open(path, newline=""))]
with open(sys.argv[1], "w", newline="") as f:
    w = csv.DictWriter(f, cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
PY
}

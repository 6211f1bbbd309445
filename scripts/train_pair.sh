#!/usr/bin/env bash
# FDRL and its baseline under one identical recipe, launched side by side from the same experiment (same data,
# splits, seed, epochs, augmentation; only model_name differs: configs/<name>.yaml vs <name>_baseline.yaml).
#   CONFIG=fer2013 DATA=/path/to/fer2013 OUTDIR=runs/fer2013_pair EPOCHS=40 \
#     EXTRA="--set data.test_split=publictest" bash scripts/train_pair.sh
# RESUME=1 continues both runs from their last.pt.
set -euo pipefail
CONFIG=${CONFIG:-fer2013}
DATA=${DATA:?set DATA to the data set root}
OUTDIR=${OUTDIR:-runs/${CONFIG}_pair}
EPOCHS=${EPOCHS:-40}
EXTRA=${EXTRA:-}
RESUME=${RESUME:+--resume}
mkdir -p "$OUTDIR"
common=(--set "data.root=$DATA" --set "train.epochs=$EPOCHS" --set report.tsne_max_samples=1500)
for variant in fdrl baseline; do
  cfg="configs/${CONFIG}.yaml"
  [[ $variant == baseline ]] && cfg="configs/${CONFIG}_baseline.yaml"
  # shellcheck disable=SC2086
  python -m fdrl.cli train --config "$cfg" "${common[@]}" $EXTRA --out "$OUTDIR/$variant" $RESUME \
    >> "$OUTDIR/$variant.log" 2>&1 &
done
wait
grep -h "^done" "$OUTDIR"/fdrl.log "$OUTDIR"/baseline.log

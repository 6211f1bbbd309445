#!/usr/bin/env bash
# FDRL and its baseline under one identical recipe, launched side by side from the same experiment (same data,
# splits, seed, epochs, augmentation, trunk; only the head differs: fdrl train --recipe NAME vs the same --baseline).
#   RECIPE=fer2013 DATA=/path/to/fer2013 OUTDIR=runs/fer2013_pair EPOCHS=40 \
#     EXTRA="--set data.test_split=publictest" bash scripts/train_pair.sh
# RESUME=1 continues both runs from their last.pt.
set -euo pipefail
RECIPE=${RECIPE:-${CONFIG:-fer2013}}  # a packaged recipe (fdrl recipes); CONFIG= works too
DATA=${DATA:?set DATA to the data set root}
OUTDIR=${OUTDIR:-runs/${RECIPE}_pair}
EPOCHS=${EPOCHS:-40}
EXTRA=${EXTRA:-}
RESUME=${RESUME:+--resume}
mkdir -p "$OUTDIR"
common=(--set "data.root=$DATA" --set "train.epochs=$EPOCHS" --set report.tsne_max_samples=1500)
for variant in fdrl baseline; do
  twin=""
  [[ $variant == baseline ]] && twin=--baseline
  # shellcheck disable=SC2086
  python -m fdrl.cli train --recipe "$RECIPE" $twin "${common[@]}" $EXTRA --out "$OUTDIR/$variant" $RESUME \
    >> "$OUTDIR/$variant.log" 2>&1 &
done
wait
grep -h "^done" "$OUTDIR"/fdrl.log "$OUTDIR"/baseline.log

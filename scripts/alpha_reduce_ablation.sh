#!/usr/bin/env bash
# Why model.alpha_reduce=mean when training from scratch: the same short recipe on the synthetic set for the
# baseline, FDRL with alpha = L1 norm (the paper, balance literal and normalized, and pure cross-entropy through
# the FDRL head), and FDRL with alpha = mean. Prints the validation accuracy after each epoch.
#   EPOCHS=4 OUT=runs/alpha_ablation bash scripts/alpha_reduce_ablation.sh
set -euo pipefail
EPOCHS=${EPOCHS:-4}
OUT=${OUT:-runs/alpha_ablation}
run() {
  local name=$1; shift
  python -m fdrl.cli demo --out "$OUT/$name" --set "train.epochs=$EPOCHS" --set report.plots=false "$@" \
    > "$OUT/$name.log" 2>&1
  printf '%-34s' "$name"
  grep -oE "^epoch=[0-9]+|val_accuracy=[0-9.]+" "$OUT/$name.log" | paste -sd' ' | sed 's/epoch=/  e/g; s/val_accuracy=/ /g'
}
mkdir -p "$OUT"
run baseline --set model_name=baseline_resnet18
run fdrl_l1_literal --set model.alpha_reduce=l1
run fdrl_l1_normalized --set model.alpha_reduce=l1 --set loss.balance_target=normalized
run fdrl_l1_cross_entropy_only --set model.alpha_reduce=l1 --set loss.lambda_balance=0 \
  --set loss.lambda_compactness=0 --set loss.lambda_distribution=0
run fdrl_mean_literal --set model.alpha_reduce=mean
run fdrl_mean_normalized --set model.alpha_reduce=mean --set loss.balance_target=normalized

#!/usr/bin/env bash
# The embedded default, end to end on 2 CPU cores in a few minutes:
# synthetic skeletons -> SkeletonCLR pretraining -> linear evaluation -> top-1.
#   bash tools/demo.sh            (EPOCHS=10 by default; each run gets its own work_dir)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
EPOCHS=${EPOCHS:-10}
RUN=work_dir/demo/$(date +%Y%m%d-%H%M%S)
if [ ! -f data/synthetic/train_position.npy ]; then
  $PY tools/gen_synthetic.py --out-folder data/synthetic
fi
$PY main.py pretrain_skeletonclr --config config/demo/pretext_skeletonclr.yaml \
    --work_dir "$RUN/pretext" --num_epoch "$EPOCHS" --save_interval "$EPOCHS"
$PY main.py linear_evaluation --config config/demo/linear_eval_skeletonclr.yaml \
    --work_dir "$RUN/linear_eval" --weights "$RUN/pretext/epoch${EPOCHS}_model.pt"
echo "SkeletonCLR on the synthetic demo set, linear evaluation: $(grep 'Best top1' "$RUN/linear_eval/log.txt" | tail -1 | sed 's/.*Best top1: //')"
echo "logs and checkpoints: $RUN"

#!/usr/bin/env bash
# The embedded default, end to end on 2 CPU cores in about 5 minutes:
# synthetic skeletons -> SkeletonCLR pretraining -> linear evaluation -> top-1.
#   bash tools/demo.sh
# Environment: EPOCHS (10), DATA (data/synthetic), RUN (work_dir/demo/<time>), PYTHON (python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
EPOCHS=${EPOCHS:-10}
DATA=${DATA:-data/synthetic}
RUN=${RUN:-work_dir/demo/$(date +%Y%m%d-%H%M%S)}
if [ ! -f "$DATA/train_position.npy" ]; then
  $PY tools/gen_synthetic.py --out-folder "$DATA"
fi
FEED="data_path=$DATA/train_position.npy,label_path=$DATA/train_label.pkl"
TEST="data_path=$DATA/val_position.npy,label_path=$DATA/val_label.pkl"
$PY main.py pretrain_skeletonclr --config config/demo/pretrain_skeletonclr.yaml \
    --work_dir "$RUN/pretext" --num_epoch "$EPOCHS" --save_interval "$EPOCHS" --train_feeder_args "$FEED"
$PY main.py linear_evaluation --config config/demo/linear_eval_skeletonclr.yaml \
    --work_dir "$RUN/linear_eval" --weights "$RUN/pretext/epoch${EPOCHS}_model.pt" \
    --train_feeder_args "$FEED" --test_feeder_args "$TEST"
echo "SkeletonCLR on the synthetic demo set, linear evaluation: $(grep 'Best top1' "$RUN/linear_eval/log.txt" | tail -1 | sed 's/.*Best top1: //')"
echo "logs and checkpoints: $RUN"

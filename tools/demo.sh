#!/usr/bin/env bash
# The embedded default, end to end on 2 CPU cores in about 5 minutes:
# synthetic skeletons -> SkeletonCLR pretraining -> linear probe -> its verdict (the same probe on the
# untrained encoder the pretraining started from, and the ridge floor) -> one line.
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
# the small-data probe (config/base/protocol/linear_eval_small.yaml); it ends with the verdict: the same probe
# on the untrained encoder the pretraining started from (same init and seed, cached) and the ridge floor
$PY main.py linear_evaluation --config config/demo/linear_eval_skeletonclr.yaml --work_dir "$RUN/linear_eval" \
    --weights "$RUN/pretext/epoch${EPOCHS}_model.pt" --train_feeder_args "$FEED" --test_feeder_args "$TEST"
$PY - "$RUN" "$EPOCHS" <<'EOF2'
import json, sys
run, epochs = sys.argv[1], sys.argv[2]
result = json.load(open(f'{run}/linear_eval/result.json'))
v = result['verdict']
gain = v['gain_over_untrained']
print(f"SkeletonCLR on the synthetic demo set ({epochs} pretraining epochs), linear probe on standardised features: "
      f"top-1 {result['top1_last']:.1f}% at the last epoch; the same probe on the untrained encoder it started from "
      f"({v['untrained_init']}) {v['untrained_top1']:.1f}%; ridge floor {v['floor_top1']:.1f}%; chance "
      f"{100 / result['num_class']:.1f}%: pretraining {'added' if gain > 0 else 'lost'} {abs(gain):.1f} points")
EOF2
echo "logs and checkpoints: $RUN"

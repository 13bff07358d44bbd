#!/usr/bin/env bash
# The checks and measurements that need a GPU, as one short script (a few minutes on one H100):
#   bash tools/gpu_check.sh [out_dir] [all|mica]
# 1. the GPU-only tests (channels-last ST-GCN vs reference on CUDA, bf16, device-resident pretraining, the
#    captured training steps);
# 2. the benchmark matrix of the README "Speed" table (JSON per row in out_dir) and the top kernels;
# 3. MICA and SkeleMixCLR at batch 128, 64 frames (issue 44): samples/s and peak memory (CUDA and resident)
#    in fp32 and bf16, eager and captured as CUDA graphs, and with checkpoint_blocks (the memory switch).
# "mica" runs the tests of the captured steps and part 3 only (a few minutes less).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-work_dir/gpu_check}
PART=${2:-all}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
B="$PY tools/benchmark.py --warmup 5 --iters 20 --num-samples 2048"
MIXED="config/ntu60/xsub/pretrain_skelemixclr.yaml config/ntu60/xsub.yaml"
mica_rows() {
  $PY -m pytest -q tests/test_train_step.py 2>&1 | tail -3 | tee "$OUT/tests_train_step.txt"
  for amp in none bf16; do
    $B --config $MIXED --frames 64 --batch-size 128 --amp $amp --json "$OUT/mica_skelemixclr_${amp}_b128.json" | tee -a "$OUT/bench.txt"
    $B --config $MIXED --frames 64 --batch-size 128 --amp $amp --cuda-graph --json "$OUT/mica_skelemixclr_${amp}_b128_cuda_graph.json" | tee -a "$OUT/bench.txt"
  done
  $B --config $MIXED --frames 64 --batch-size 128 --model-args checkpoint_blocks=true --json "$OUT/mica_skelemixclr_none_b128_checkpoint.json" | tee -a "$OUT/bench.txt"
}
if [ "$PART" = mica ]; then mica_rows; exit 0; fi
$PY -m pytest -q tests/test_cuda.py tests/test_st_gcn.py 2>&1 | tail -3 | tee "$OUT/tests.txt"
CONFIGS="config/ntu60/xsub/pretrain_skeletonclr.yaml config/ntu60/xsub/pretrain_aimclr.yaml config/ntu60/xsub/pretrain_msmclr.yaml config/ntu60/xsub.yaml"
for impl in reference fast; do
  $B --config $CONFIGS --batch-size 128 --implementation $impl --json "$OUT/fp32_$impl.json" | tee -a "$OUT/bench.txt"
  $B --config $CONFIGS --batch-size 128 --implementation $impl --amp bf16 --json "$OUT/bf16_$impl.json" | tee -a "$OUT/bench.txt"
done
$B --config config/ntu60/xsub/pretrain_skeletonclr.yaml --batch-size 512 --amp bf16 --json "$OUT/bf16_fast_b512.json" | tee -a "$OUT/bench.txt"
for amp in none bf16; do
  $B --config config/ntu60/xsub/pretrain_skeletonclr.yaml config/ntu60/xsub/pretrain_aimclr.yaml config/ntu60/xsub/pretrain_msmclr.yaml --batch-size 128 --amp $amp --cuda-graph --json "$OUT/${amp}_cuda_graph.json" | tee -a "$OUT/bench.txt"
done
mica_rows
$B --config config/ntu60/xsub/pretrain_skeletonclr.yaml --batch-size 128 --amp bf16 --compile default --json "$OUT/bf16_fast_compile.json" | tee -a "$OUT/bench.txt"
$B --config config/ntu60/xsub/linear_eval_skeletonclr.yaml --batch-size 1024 --mode inference --amp bf16 --json "$OUT/inference.json" | tee -a "$OUT/bench.txt"
$B --config config/ntu60/xsub/pretrain_skeletonclr.yaml --batch-size 128 --amp bf16 --iters 5 --profile 15 | tee "$OUT/profile.txt"

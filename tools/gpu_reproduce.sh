#!/usr/bin/env bash
# The NW-UCLA runs a CPU cannot afford, side by side on one GPU (every row x seed its own processes):
#   bash tools/gpu_reproduce.sh [jobs]          # default 12 runs at a time
# 1. the 100-epoch plan with the shipped small-data recipes (README "Results"; goal of "every seed learns");
# 2. the SkeleMixCLR and MICA-on-SkeleMixCLR rows of the 6- and 20-epoch plans, with their 64-frame
#    untrained row (about 2 and 2.5 minutes an epoch on 2 CPU cores, docs/METHODS.md "Cost on NW-UCLA").
# Data first: python tools/ucla_gendata.py --data-path <all_sqe>  (data/ucla), and
#   python tools/ucla_gendata.py --data-path <all_sqe> --preprocess mica --out-folder data/mica64  (64 frames).
# Finished runs are skipped, so a stopped script resumes; then `python tools/reproduce.py readme`.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
JOBS=${1:-12}
$PY tools/reproduce.py run config/reproduce/ucla.yaml --jobs "$JOBS" --keep-going
for plan in ucla_short ucla_e20; do
  $PY tools/reproduce.py run config/reproduce/$plan.yaml --rows SkeleMixCLR "MICA on SkeleMixCLR" \
    "untrained ST-GCN, 64 frames" --jobs "$JOBS" --keep-going
done

#!/usr/bin/env bash
# One short GPU check (issue 15): at most about 8 minutes on a fresh GPU machine.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine (CUDA)
#   bash benchmarks/gpu_check.sh --device cpu    # the same steps on CPU, tiny step counts (a dry run of the script)
#
# 1. installs what is missing (sb3_distill and its mujoco extra for HalfCheetah-v5; torch is never installed:
#    the machine's own CUDA build is used);
# 2. runs the test suite's fast CUDA-marked tests (`pytest -m cuda`; on CPU they are skipped, and the fast
#    tests of the compiled and fused gradient step run instead);
# 3. measures on the device, side by side in one process (benchmarks/throughput.py, alternating chunks):
#    Atari-size ensembles (84x84x4 frames, M=3 Nature-CNN teachers + student1, batch 32) and RealTimeDistillDQN
#    (Nature-CNN teacher + Net3) against SB3's DQN, then PIEKDSAC K=3 on HalfCheetah-v5 against SAC.
# Results go to benchmarks/results/gpu_check/ (or $OUT/gpu_check when $OUT is set) and the log to its check.log.
set -uo pipefail

DEVICE=cuda
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --device=*) DEVICE="${1#*=}"; shift ;;
        *) echo "usage: $0 [--device cuda|cpu]" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
RESULTS=${OUT:+$OUT/gpu_check}
RESULTS=${RESULTS:-benchmarks/results/gpu_check}
mkdir -p "$RESULTS"
LOG="$RESULTS/check.log"
START=$(date +%s)
log() { echo "[gpu_check $(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
# Each step gets a time limit, so that the whole check stays under 8 minutes (on CPU, a dry run on a possibly
# loaded machine: three times as long)
SCALE=1
[ "$DEVICE" = cpu ] && SCALE=3
run() { local limit=$(( $1 * SCALE )); shift; log "\$ $*"; timeout "$limit" "$@" 2>&1 | tee -a "$LOG"; local rc=${PIPESTATUS[0]}; log "exit $rc"; return 0; }

log "device=$DEVICE python=$PYTHON"
run 120 "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
if [ "$DEVICE" != cpu ] && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    log "CUDA is not available to $PYTHON: nothing to measure on $DEVICE"; exit 1
fi

# 1. Install what is missing (offline machines: whatever cannot be installed is reported and its step fails)
if ! "$PYTHON" -c "import sb3_distill, pytest" 2>/dev/null; then
    run 90 "$PYTHON" -m pip install -q -e ".[tests]" || true
fi
if ! "$PYTHON" -c "import mujoco" 2>/dev/null; then
    run 45 "$PYTHON" -m pip install -q "gymnasium[mujoco]" || true
fi

if [ "$DEVICE" = cpu ]; then
    # Tiny step counts: this only checks that every step of the script runs
    ATARI="--steps 32 --chunk 16 --learning-starts 32 --repeats 1 --atari-buffer-size 200"
    SAC="--steps 20 --chunk 10 --learning-starts 20 --repeats 1 --distill-interval 1000000 --sac-batch-size 32"
    TESTS=(tests/test_gradient_step.py -k "not matches_eager")
else
    ATARI="--steps 500 --chunk 250 --learning-starts 300 --repeats 2 --atari-compile"
    SAC="--steps 500 --chunk 250 --learning-starts 300 --repeats 3 --distill-interval 1000000"
    TESTS=(tests/ -m cuda)
fi

# 2. The fast CUDA-marked tests (on CPU: the gradient-step tests)
run 150 "$PYTHON" -m pytest -q -n 0 -p no:cacheprovider "${TESTS[@]}"

# 3. Throughput on the device
run 200 "$PYTHON" benchmarks/throughput.py --suite atari --device "$DEVICE" --batch-size 32 $ATARI --output "$RESULTS"
run 90 "$PYTHON" benchmarks/throughput.py --suite sac --sac-env HalfCheetah-v5 --device "$DEVICE" $SAC --output "$RESULTS"
log "done in $(( $(date +%s) - START ))s; results in $RESULTS"

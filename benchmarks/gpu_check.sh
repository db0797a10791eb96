#!/usr/bin/env bash
# Every GPU figure of the project in one command, on your CUDA machine (the MFU figures are
# against an H100/H200's bf16 peak):
#   benchmarks/gpu_check.sh OUTDIR
# writes OUTDIR/gpu_check.json (every figure, updated atomically after each measurement),
# OUTDIR/gpu_check.log (everything printed) and OUTDIR/summary.md (the table for the docs).
# With the project's requirements installed it needs nothing else (Fashion-MNIST is downloaded).
# Offline mode, for a GPU machine without network: benchmarks/gpu_fetch.sh, run where PyPI
# answers, puts the wheels such a machine lacks and Fashion-MNIST into .gpu/; copy it beside the
# project there (GPU_CHECK_OFFLINE names another dir).
# Each step runs under its own timeout, cut to what is left of GPU_CHECK_DEADLINE (seconds,
# default 465); a step that fails or times out is marked so, and the next one runs.
# GPU_CHECK_TINY=1: every step with small sizes on the CPU (benchmarks/gpu_rehearsal.sh).
# GPU_CHECK_PYTHON: the interpreter (default python3).
set -u
OUT=${1:?usage: benchmarks/gpu_check.sh OUTDIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${GPU_CHECK_PYTHON:-python3}
TINY=${GPU_CHECK_TINY:-0}
if [ "$TINY" = 1 ]; then DEF_DEADLINE=1500; else DEF_DEADLINE=465; fi
DEADLINE=${GPU_CHECK_DEADLINE:-$DEF_DEADLINE}
export GPU_CHECK_OFFLINE=${GPU_CHECK_OFFLINE:-$ROOT/.gpu}
export GPU_CHECK_WORK=${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
export GPU_CHECK_TINY=$TINY PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1
export MLFLOW_TRACKING_URI=sqlite:///$GPU_CHECK_WORK/mlflow.db
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
TEE=$!
START=$(date +%s)
echo "gpu_check: $(date -Is) out=$OUT work=$GPU_CHECK_WORK tiny=$TINY deadline=${DEADLINE}s python=$PY"

# The offline wheels, first on the path.
SITE=$GPU_CHECK_WORK/site
if ls "$GPU_CHECK_OFFLINE"/wheels/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$GPU_CHECK_OFFLINE"/wheels/*.whl \
    || echo "gpu_check: installing the wheels failed; the steps that import them will fail"
else
  echo "gpu_check: no offline wheels in $GPU_CHECK_OFFLINE/wheels: the installed packages are used"
fi
export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
CHECK=(timeout -k 5 60 "$PY" benchmarks/gpu_check.py)   # bookkeeping: never hangs the run
"${CHECK[@]}" mark --out "$OUT" --key install --rc 0 --seconds $(( $(date +%s) - START )) \
  --note "$(ls "$GPU_CHECK_OFFLINE"/wheels/*.whl 2>/dev/null | wc -l) wheels into $SITE"

if [ "$TINY" != 1 ] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  echo "gpu_check: torch sees no CUDA GPU here; GPU_CHECK_TINY=1 runs the CPU rehearsal instead"
  "${CHECK[@]}" mark --out "$OUT" --key env --status "failed: no CUDA GPU" --note "$(nvidia-smi -L 2>&1 | head -3)"
  exit 2
fi

# step KEY LIMIT MIN CMD...: CMD under min(LIMIT, time left); skipped when under MIN is left
step() {
  local key=$1 limit=$2 min=$3; shift 3
  local left=$(( DEADLINE - ($(date +%s) - START) ))
  local t=$(( limit < left ? limit : left ))
  if (( t < min )); then
    echo "=== $key: skipped, ${left}s left of ${DEADLINE}s"
    "${CHECK[@]}" mark --out "$OUT" --key "$key" --status skipped --timeout "$t" \
      --note "${left}s left of the ${DEADLINE}s deadline"
    return
  fi
  echo "=== $key (timeout ${t}s, $(( $(date +%s) - START ))s elapsed) ==="
  local t0=$(date +%s)
  timeout -k 10 "$t" "$@"
  local rc=$?
  "${CHECK[@]}" mark --out "$OUT" --key "$key" --rc "$rc" --seconds $(( $(date +%s) - t0 )) \
    --timeout "$t"
}
G=("$PY" benchmarks/gpu_check.py)
if [ "$TINY" = 1 ]; then
  B16=(--batch-sizes 4,8 --steps 2 --rounds 2); TI4=(--batch-sizes 16,64 --steps 2 --rounds 2)
  L16=(--variant Ti/16 --img-size 32 --batch-sizes 4,8 --steps 1 --rounds 1)
  B16C=(--batch-sizes 4 --steps 2 --rounds 1); TI4C=(--batch-sizes 16 --steps 2 --rounds 1)
  DATA=(--batches 5); FITS_T=300; FM_MAX=60; COMPILE_T=300
else
  B16=(--batch-sizes 64,128,256 --steps 10 --rounds 3); TI4=(--batch-sizes 256,1024 --steps 20 --rounds 3)
  L16=(--variant L/16 --img-size 224 --batch-sizes 32,64 --steps 2 --rounds 1)
  B16C=(--batch-sizes 128 --steps 10 --rounds 3); TI4C=(--batch-sizes 1024 --steps 20 --rounds 3)
  DATA=(--batches 40); FITS_T=120; FM_MAX=240; COMPILE_T=90
fi
step env 60 10 "${G[@]}" env --out "$OUT"
step bench_b16 75 20 "${G[@]}" bench --out "$OUT" --key bench_b16 -- \
  --variant-name finetune_b16 --no-data "${B16[@]}"
step bench_ti4 60 20 "${G[@]}" bench --out "$OUT" --key bench_ti4 -- \
  --variant-name scratch_ti4 --no-data "${TI4[@]}"
# ViT-L/16's peak memory (and images/s) at two batches, against benchmarks/train_memory.py's count
step bench_l16 60 25 "${G[@]}" bench --out "$OUT" --key bench_l16 -- --no-data "${L16[@]}"
step data 60 20 "${G[@]}" data --out "$OUT" --variant scratch_ti4 --workers 16 "${DATA[@]}"
step tests 150 30 "${G[@]}" tests --out "$OUT"
step fsdp 60 20 "${G[@]}" fsdp --out "$OUT"
step fits "$FITS_T" 30 "${G[@]}" fits --out "$OUT"
# Fashion-MNIST takes what is left, up to FM_MAX (GPU_CHECK_FMNIST_S), keeping RESERVE
# (GPU_CHECK_COMPILE_RESERVE) seconds for the compiled benches after it
if [ "$TINY" = 1 ]; then RESERVE=20; else RESERVE=90; fi
RESERVE=${GPU_CHECK_COMPILE_RESERVE:-$RESERVE}
FM_MAX=${GPU_CHECK_FMNIST_S:-$FM_MAX}
left=$(( DEADLINE - ($(date +%s) - START) - RESERVE ))
budget=$(( left < FM_MAX ? left : FM_MAX ))
step fmnist $(( budget + 30 )) 40 "${G[@]}" fmnist --out "$OUT" --budget "$budget" --workers 16
step bench_b16_compile "$COMPILE_T" 30 "${G[@]}" bench --out "$OUT" --key bench_b16_compile -- \
  --variant-name finetune_b16 --no-data --compile "${B16C[@]}"
step bench_ti4_compile "$COMPILE_T" 30 "${G[@]}" bench --out "$OUT" --key bench_ti4_compile -- \
  --variant-name scratch_ti4 --no-data --compile "${TI4C[@]}"
"${CHECK[@]}" summary --out "$OUT" --wall $(( $(date +%s) - START ))
RC=$?   # 1 when a step did not end ok
echo "gpu_check: done in $(( $(date +%s) - START ))s: $OUT/gpu_check.json, $OUT/summary.md"
exec >&- 2>&-   # let tee write the log's last lines before the command returns
wait "$TEE" 2>/dev/null || sleep 1
exit $RC

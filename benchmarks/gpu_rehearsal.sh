#!/usr/bin/env bash
# The GPU check rehearsed on a CPU, in its offline mode, as a GPU machine without network runs it:
#   benchmarks/gpu_rehearsal.sh [OUTDIR]        (default /tmp/gpu_rehearsal)
# 1. a CPython 3.12 venv holding exactly benchmarks/gpu_image.txt (the image's packages the check
#    relies on; torch 2.11 as there), made once in $GPU_REHEARSAL_VENV (default /tmp/gpu312) and
#    remade when that file changes; the project itself is not installed in it;
# 2. benchmarks/gpu_fetch.sh: the pinned wheels and Fashion-MNIST in .gpu/, and their size;
# 3. benchmarks/gpu_check.sh in tiny mode (GPU_CHECK_TINY=1: small sizes, CPU) with that venv's
#    python and the wheels installed as on the GPU machine (pip --target, PYTHONPATH);
# 4. fails unless every step ended ok and wrote its figures.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${1:-/tmp/gpu_rehearsal}
VENV=${GPU_REHEARSAL_VENV:-/tmp/gpu312}
T0=$(date +%s)
PY312=$(command -v python3.12 2>/dev/null || true)
if [ -z "$PY312" ] || ! "$PY312" -V >/dev/null 2>&1; then
  PY312=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)
fi
[ -n "$PY312" ] || { echo "gpu_rehearsal: no python3.12 here" >&2; exit 2; }
STAMP=$(sha256sum benchmarks/gpu_image.txt | cut -c1-16)
if [ "$(cat "$VENV/.gpu_image" 2>/dev/null)" != "$STAMP" ]; then
  echo "gpu_rehearsal: building $VENV from benchmarks/gpu_image.txt with $PY312 (a few minutes)"
  "$PY312" -m venv --clear "$VENV"
  # the machine's pip config may cap torch below what the image has; the file pins it anyway
  PIP_CONSTRAINT= "$VENV/bin/pip" install -q -r benchmarks/gpu_image.txt \
    2> >(grep -v "is ignored: it is neither" >&2)
  echo "$STAMP" > "$VENV/.gpu_image"
fi
PYTHON="$VENV/bin/python" bash benchmarks/gpu_fetch.sh
rm -rf "$OUT"
env -u PYTHONPATH -u VIRTUAL_ENV GPU_CHECK_TINY=1 GPU_CHECK_PYTHON="$VENV/bin/python" \
  bash benchmarks/gpu_check.sh "$OUT" || echo "gpu_rehearsal: gpu_check.sh exited $?"
"$VENV/bin/python" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
doc = json.loads((out / "gpu_check.json").read_text())
bad = {k: v.get("status") for k, v in doc["steps"].items() if v.get("status") != "ok"}
fits = {k: v for k, v in doc["steps"].get("fits", {}).items() if isinstance(v, dict)}
fits["fsdp"], fits["fmnist"] = doc["steps"].get("fsdp", {}), doc["steps"].get("fmnist", {}).get("fit", {})
bad.update({f"{k} (MLflow)": v["mlflow_outage"] for k, v in fits.items() if v.get("mlflow_outage")})
need = {"env": "versions", "bench_b16": "batches", "bench_ti4": "batches", "bench_l16": "batches",
        "data": "images_per_s",
        "tests": "counts", "fsdp": "reload_agrees", "fits": "scratch_bf16", "fmnist": "test_acc",
        "bench_b16_compile": "batches", "bench_ti4_compile": "batches"}
missing = [f"{k}.{f}" for k, f in need.items() if f not in doc["steps"].get(k, {})]
assert (out / "summary.md").is_file() and (out / "gpu_check.log").is_file()
if bad or missing:
    sys.exit(f"gpu_rehearsal: FAILED: steps not ok {bad}, figures missing {missing}")
print(f"gpu_rehearsal: every step ok, {len(doc['steps'])} steps, check wall {doc['wall_s']} s")
EOF
echo "gpu_rehearsal: passed in $(( $(date +%s) - T0 )) s (output in $OUT)"

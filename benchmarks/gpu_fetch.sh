#!/usr/bin/env bash
# The GPU check's offline mode, for a GPU machine without network: what it needs there, fetched
# here (where PyPI answers) into .gpu/, a folder git ignores
# (its own .gitignore says '*'):
#   .gpu/wheels/   exactly the wheels of benchmarks/gpu_wheels.lock, for CPython 3.12 manylinux
#                  x86_64 (pip download --no-deps; a wheel not in the lock is removed)
#   .gpu/fmnist/fashion_mnist/   the four Fashion-MNIST .gz files, found or fetched by the
#                  project's own tools/ensure_data.py and md5-checked by its loader
# Then prints the size of what goes to the GPU machine: the working tree plus .gpu.
#   usage: benchmarks/gpu_fetch.sh            (PYTHON=... to choose the interpreter that runs pip)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEST=.gpu
mkdir -p "$DEST/wheels" "$DEST/fmnist"
echo '*' > "$DEST/.gitignore"   # ignores .gpu itself, without touching the tracked .gitignore

# Pins from the lock, lower-cased with '-' for '_' (wheel file names use '_').
mapfile -t PINS < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' benchmarks/gpu_wheels.lock | grep -v '^$')
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64 manylinux_2_34_x86_64 manylinux_2_24_x86_64; do
  PLATFORMS+=(--platform "$p")
done
wheel_of() {  # the wheel file in .gpu/wheels for NAME==VERSION, if any
  local name=${1%%==*} version=${1##*==}
  name=$(echo "$name" | tr 'A-Z-' 'a-z_')
  find "$DEST/wheels" -maxdepth 1 -iname "${name}-${version}-*.whl" | head -1
}
missing=()
for pin in "${PINS[@]}"; do
  [ -n "$(wheel_of "$pin")" ] || missing+=("$pin")
done
if ((${#missing[@]})); then
  echo "downloading ${#missing[@]} wheel(s): ${missing[*]}"
  PIP_CONSTRAINT= "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --abi abi3 --abi none "${PLATFORMS[@]}" \
    -d "$DEST/wheels" "${missing[@]}" 2> >(grep -v "is ignored: it is neither" >&2)
fi
# exactly the lock: every pin has one wheel, and nothing else is there
keep=()
for pin in "${PINS[@]}"; do
  w=$(wheel_of "$pin")
  [ -n "$w" ] || { echo "gpu_fetch: no wheel for $pin in $DEST/wheels" >&2; exit 1; }
  keep+=("$(basename "$w")")
done
for w in "$DEST"/wheels/*.whl; do
  b=$(basename "$w")
  printf '%s\n' "${keep[@]}" | grep -qxF "$b" || { echo "removing $b (not in the lock)"; rm -f "$w"; }
done

# Fashion-MNIST: found (/usr/share/datasets/fashion-mnist, or already here), else the Debian
# package, else downloaded md5-checked (tools/ensure_data.py); then copied into .gpu/fmnist,
# where gpu_check.py reads it with the loader's md5 checks and no system fallback.
# (the project's code from this checkout: the interpreter need not have it installed)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" tools/ensure_data.py fashion_mnist --raw "$DEST/fmnist"
"$PY" - "$DEST/fmnist" <<'EOF'
import shutil, sys
from pathlib import Path
from pipeline.data import sources
raw = Path(sys.argv[1])
for spec in sources.FILES["fashion_mnist"]:
    dst = raw / "fashion_mnist" / spec.filename
    if not dst.is_file():
        src = next(d / spec.filename for d in sources.SYSTEM_DIRS["fashion_mnist"]
                   if (d / spec.filename).is_file())
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
sources.SYSTEM_DIRS = {}  # only the copies count
ds = sources.load_raw("fashion_mnist", raw, download=False)  # md5 of each file checked
print(f"Fashion-MNIST in {raw}/fashion_mnist: {len(ds.train_images)} train, "
      f"{len(ds.test_images)} test images, md5 ok")
EOF

# What goes to the GPU machine: tracked + untracked-not-ignored files, plus .gpu
tree=$(git ls-files -z -co --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null \
       | awk '{s+=$1} END {print s+0}')
wheels=$(du -sb "$DEST/wheels" | cut -f1)
data=$(du -sb "$DEST/fmnist" | cut -f1)
total=$((tree + wheels + data))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b/1048576}'; }
echo "to copy: working tree $(mib "$tree") + wheels $(mib "$wheels") (${#PINS[@]}) + Fashion-MNIST $(mib "$data") = $(mib "$total")"

#!/usr/bin/env bash
# The GPU check: one prepared script for a machine with an NVIDIA GPU, JAX and
# PyTorch, but no TensorFlow and no network (this project's lent GPU machines).
#
#   1. the backend-dependent unit tests on JAX, then on PyTorch, on the GPU;
#   2. the full reference protocol (50 epochs, batches of 512 in order, the
#      test ELBO after every epoch) through the project's own command line,
#      `KERAS_BACKEND=jax python -m vae_keras train`, execution_environment "auto";
#   3. the plain Keras port of the same protocol (../shared/tools/plain_port_gpu.py
#      keras-jax --spe 117) as the baseline, in the same call;
#   4. a summary: wall time, per-epoch time and final test ELBO of each.
#
# Usage, from the repository root:  bash benchmarks/gpu_check.sh [OUT_DIR]
# Keras, namex and optree travel as wheels in .whl/, fetched beforehand where pip works:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0
# PLAIN_PORT names the baseline script (default: .gpu/plain_port_gpu.py, then
# ../shared/tools/plain_port_gpu.py). EPOCHS, TRAIN_SIZE and UNIT_TESTS=0 make
# a short trial run on a CPU; leave them unset on the GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-runs/gpu_check}}
EPOCHS=${EPOCHS:-50}
mkdir -p "$OUT_DIR"
: > "$OUT_DIR/walls.txt"
export PYTHONUNBUFFERED=1 VAE_KERAS_QUICK=1

if [ -d .whl ] && ! python3 -c "import keras" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/vae_keras_site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/vae_keras_site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PLAIN_PORT=${PLAIN_PORT:-$( [ -f .gpu/plain_port_gpu.py ] && echo .gpu/plain_port_gpu.py || echo ../shared/tools/plain_port_gpu.py )}
extra=()
[ -n "${TRAIN_SIZE:-}" ] && extra=(--train-size "$TRAIN_SIZE")

section() { printf '\n===== %s =====\n' "$*"; }
now() { date +%s.%N; }

section "machine"
export TF_CPP_MIN_LOG_LEVEL=3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
python3 - <<'PY'
import importlib, platform
print("python", platform.python_version())
for name in ("keras", "jax", "torch", "numpy"):
    try:
        print(name, importlib.import_module(name).__version__)
    except ImportError:
        print(name, "not installed")
try:
    import tensorflow
    print("tensorflow", tensorflow.__version__)
except ImportError:
    print("tensorflow not installed")
PY

status=0
for backend in $( [ "${UNIT_TESTS:-1}" = 0 ] || echo jax torch ); do
    section "unit tests, KERAS_BACKEND=$backend"
    start=$(now)
    KERAS_BACKEND=$backend VAE_KERAS_BACKEND_CHILD=1 python3 -m pytest -q -p no:cacheprovider -o addopts= -m "not slow_off_tensorflow" \
        tests/test_layers.py tests/test_losses.py tests/test_metrics.py tests/test_models.py tests/test_training.py tests/test_pretrained.py tests/test_conditional.py \
        2>&1 | tail -n 15 || status=1
    echo "unit tests on $backend: $(python3 -c "print(round($(now) - $start, 1))") s"
done

section "vae_keras: the reference protocol, KERAS_BACKEND=jax python -m vae_keras train (auto)"
start=$(now)
KERAS_BACKEND=jax python3 -m vae_keras train --epochs "$EPOCHS" "${extra[@]}" --verbose 2 --overwrite \
    --output-dir "$OUT_DIR/vae_keras_jax" 2>&1 | tee "$OUT_DIR/vae_keras_jax.log" | grep -v "^[0-9]*/[0-9]* - " || status=1
echo "WALL vae_keras_jax $(python3 -c "print(round($(now) - $start, 1))")" | tee -a "$OUT_DIR/walls.txt"

section "baseline: plain Keras port on JAX, one compiled call per epoch (--spe 117)"
if [ -f "$PLAIN_PORT" ]; then
    start=$(now)
    KERAS_BACKEND=jax python3 "$PLAIN_PORT" keras-jax --data data --epochs "$EPOCHS" --spe 117 --budget-s 400 \
        "${extra[@]}" 2>&1 | tee "$OUT_DIR/plain_port_jax.log" | grep -E "^(Epoch : (1|2|10|50) |RESULT)" || status=1
    echo "WALL plain_port_jax $(python3 -c "print(round($(now) - $start, 1))")" | tee -a "$OUT_DIR/walls.txt"
else
    echo "plain port not found at $PLAIN_PORT: copy ../shared/tools/plain_port_gpu.py to .gpu/"
fi

section "summary"
python3 - "$OUT_DIR" <<'PY'
import csv, json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
walls = dict(line.split()[1:3] for line in (out / "walls.txt").read_text().splitlines() if line.startswith("WALL"))
rows = []
history = out / "vae_keras_jax" / "history.csv"
if history.is_file():
    epochs = list(csv.DictReader(history.open()))
    seconds = [float(r["epoch_seconds"]) for r in epochs]
    took = [l.split()[2] for l in (out / "vae_keras_jax.log").read_text().splitlines() if l.startswith("Training took")]
    rows.append(("vae_keras, JAX, auto", walls.get("vae_keras_jax"), took[-1] if took else "?", seconds[0],
                 statistics.median(seconds[1:] or seconds), float(epochs[-1]["val_elbo"]), len(epochs)))
log = out / "plain_port_jax.log"
results = [l for l in log.read_text().splitlines() if l.startswith("RESULT ")] if log.is_file() else []
if results:
    r = json.loads(results[-1][len("RESULT "):])
    rows.append(("plain port, JAX, spe 117", walls.get("plain_port_jax"), r["wall_s"], r["first_epoch_s"],
                 r["median_epoch_s"], r["test_elbo"][-1], r["epochs"]))
# "training s": compilation, every epoch and every test evaluation, timed inside
# the program (vae_keras: "Training took"; the plain port: its wall_s).
print("| run | whole process s | training s | first epoch s | median epoch s | final test ELBO | epochs |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name, wall, training, first, median, elbo, n in rows:
    print(f"| {name} | {wall} | {training} | {first:.3f} | {median:.3f} | {elbo:.2f} | {n} |")
if len(rows) == 2:
    print(f"plain port / vae_keras: median epoch {rows[1][4] / rows[0][4]:.2f}x, "
          f"training {float(rows[1][2]) / float(rows[0][2]):.2f}x, whole process {float(rows[1][1]) / float(rows[0][1]):.2f}x "
          "(above 1: vae_keras is faster)")
PY
exit $status

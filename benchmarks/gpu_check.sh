#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one run, with every figure in one file.
#
#   bash benchmarks/gpu_check.sh [--dry-run]
#
# Steps, in order (each one's status, seconds and figures go to $OUT/gpu_check.txt, its full output
# to $OUT/gpu_check.log; a failing step is recorded and the next one still runs):
#   1. the machine: GPU, driver, torch and onnxruntime versions and providers
#   2. the gpu-marked tests (pytest -m gpu)
#   3. the `fast` preset beside the airbench94_muon anchor on the same GPU, in one run (the ratio)
#   4. the `best` preset to the end
#   5. an export of that run (flip TTA in the graph), verified against PyTorch
#   6. that file through onnxruntime's CUDA provider (evaluate and bench), strict: no silent CPU
#
# Environment:
#   CIFAR10_DATA      folder holding cifar-10-batches-py/ (required)
#   AIRBENCH_ANCHOR   the airbench94_muon port to run beside `fast` (step 3 runs ours alone without it)
#   ORT_GPU_WHEEL     an onnxruntime-gpu wheel to install first (for step 6 where only the CPU build is there)
#   OUT               where the results go (default ./gpu-check)
#   PYTHON            the interpreter that has torch (default python3)
#   INSTALL=0         use the cifar10kit already installed for $PYTHON instead of installing this tree
#
# --dry-run: one epoch on a tiny slice of the data, on whatever device is there. It checks the script
# end to end on a CPU machine (the test suite runs it); its figures mean nothing.
set -uo pipefail

DRY=0
[[ ${1:-} == --dry-run ]] && DRY=1
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-gpu-check}
DATA=${CIFAR10_DATA:?set CIFAR10_DATA to the folder holding cifar-10-batches-py/}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
REPORT=$OUT/gpu_check.txt
LOG=$OUT/gpu_check.log
: >"$REPORT"
: >"$LOG"
trap 'rm -rf "$WORK"' EXIT

say() { echo "$*" | tee -a "$REPORT"; }

# step NAME COMMAND...: run it with its output in the log; record status and seconds in the report.
step() {
  local name=$1 t0 rc ms
  shift
  t0=$(date +%s%N)
  echo "=== $name: $*" >>"$LOG"
  "$@" >>"$LOG" 2>&1
  rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  say "$(printf '%-10s %s  %d.%d s' "$name" "$([[ $rc == 0 ]] && echo ok || echo "FAILED (exit $rc)")" \
    $((ms / 1000)) $((ms % 1000 / 100)))"
  return $rc
}

# ---------------------------------------------------------------------------------------------
# 0. set-up: install this tree (no dependencies: the GPU image has torch, numpy, pillow, onnx)

if [[ ${INSTALL:-1} == 1 ]]; then
  export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
  step install "$PY" -m pip install -q --no-deps --no-index --no-build-isolation --target "$WORK/site" . || exit 1
  if [[ -n ${ORT_GPU_WHEEL:-} ]]; then
    # Ahead of the image's CPU-only onnxruntime on the path, so `import onnxruntime` gets the GPU build.
    step ort-gpu "$PY" -m pip install -q --no-deps --no-index --target "$WORK/ort" "$ORT_GPU_WHEEL" &&
      export PYTHONPATH=$WORK/ort:$PYTHONPATH
  fi
fi
CLI=("$PY" -m cifar10kit)
if ((DRY)); then
  FAST=(--epochs 1) BEST=(--epochs 1 --subset 500 --batch-size 250) VERIFY=(--verify-n 64) BENCH=(--repeats 5 --batch-size 8)
else
  FAST=() BEST=() VERIFY=() BENCH=(--repeats 50)
fi

# ---------------------------------------------------------------------------------------------
# 1. the machine

say "gpu_check $(date -u +%FT%TZ)$( ((DRY)) && echo ' (dry run: tiny epochs, figures meaningless)')"
"$PY" - "$WORK/cuda" <<'PY' 2>&1 | tee -a "$REPORT"
import sys, torch, onnxruntime as ort
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU only)"
print(f"gpu: {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); onnxruntime {ort.__version__} "
      f"providers {ort.get_available_providers()}")
open(sys.argv[1], "w").write(str(int(torch.cuda.is_available())))
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader |
  sed 's/^/nvidia-smi: /' | tee -a "$REPORT"
CUDA=$(cat "$WORK/cuda" 2>/dev/null || echo 0)

# ---------------------------------------------------------------------------------------------
# 2. the gpu-marked tests

step gpu-tests "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
grep -E '^[0-9]+ (passed|skipped|failed|deselected)|passed|skipped' "$LOG" | tail -1 | sed 's/^/  pytest: /' | tee -a "$REPORT"

# ---------------------------------------------------------------------------------------------
# 3. fast beside the anchor, one run

ANCHOR_ARGS=()
[[ -n ${AIRBENCH_ANCHOR:-} ]] && ANCHOR_ARGS=(--anchor "$AIRBENCH_ANCHOR")
step fast "$PY" benchmarks/train_speed.py --preset fast --data-dir "$DATA" "${FAST[@]}" "${ANCHOR_ARGS[@]}" \
  --json "$WORK/fast.json"
[[ -s $WORK/fast.json ]] && "$PY" - "$WORK/fast.json" <<'PY' | tee -a "$REPORT"
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  ours ({r['preset']}): accuracy {r['mean_acc']:.4f}, training {r['mean_train_seconds']:.1f} s on {r['device']}")
if r.get("anchor"):
    a = r["anchor"]
    print(f"  anchor airbench94_muon: accuracy {a['final_acc']:.4f}, training {a['train_seconds']:.1f} s; "
          f"time ratio ours/anchor {r['mean_train_seconds'] / a['train_seconds']:.2f}")
PY

# ---------------------------------------------------------------------------------------------
# 4-5. best to the end, exported

if step best "${CLI[@]}" train --preset best --data-dir "$DATA" --out "$WORK" --name best "${BEST[@]}"; then
  "$PY" - "$WORK/best/summary.json" <<'PY' | tee -a "$REPORT"
import json, sys
s = json.load(open(sys.argv[1]))
print(f"  best: {s['arch']}, {s['epochs']} epochs, {s['train_seconds']:.1f} s training; "
      f"test accuracy {s['test_acc']:.4f} (TTA {s['tta']}), {s['test_acc_no_tta']:.4f} without")
PY
  step export "${CLI[@]}" export "$WORK/best" -o "$WORK/best.onnx" --tta flip --data-dir "$DATA" "${VERIFY[@]}"
fi

# ---------------------------------------------------------------------------------------------
# 6. onnxruntime on the CUDA provider (strict: a fallback to the CPU fails this step)

if [[ -s $WORK/best.onnx ]]; then
  PROVIDER=cuda
  ((CUDA)) || PROVIDER=cpu
  ((CUDA)) || say "  no CUDA here: the onnxruntime steps run on the CPU provider"
  step evaluate "${CLI[@]}" evaluate --model "$WORK/best.onnx" --provider "$PROVIDER" --data-dir "$DATA" --json \
    && grep '^{' "$LOG" | tail -1 | "$PY" -c '
import json, sys
r = json.loads(sys.stdin.read())
print("  onnxruntime evaluate: accuracy %.4f, ECE %.4f on %s" % (r["accuracy"], r["ece"], r["provider"]))' |
    tee -a "$REPORT"
  step bench "${CLI[@]}" bench --model "$WORK/best.onnx" --provider "$PROVIDER" "${BENCH[@]}" --json \
    && grep '^{' "$LOG" | tail -1 | sed 's/^/  bench: /' | tee -a "$REPORT"
fi

say "done; full output in $LOG"
grep -q FAILED "$REPORT" && exit 1
exit 0

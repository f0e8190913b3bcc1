#!/usr/bin/env bash
# The benchmark on one GPU machine, in one call (see bench/README.md, "GPU run"):
#   carry: .whl (py3.12 wheels: diffusers, datasets, dill, multiprocess[, pyarrow]) and the folder with the
#   guide's scripts (.bench_anchor/ or bench/.anchor/, made by run_benchmark.py --export-anchor).
# Writes under $OUT: env.txt, results_sd15.json, results_sdxl.json, log_sd15.txt, log_sdxl.txt, ops.json, log_ops.txt,
# runlogs.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bench-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
BUDGET=${BENCH_BUDGET_S:-560}  # the call's limit is 600 s; stop starting work that cannot finish
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed" | tee "$OUT/env.txt"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
ANCHOR=${ANCHOR:-}
for d in .bench_anchor bench/.anchor; do
  [ -z "$ANCHOR" ] && [ -f "$d/train_text_to_image_lora.py" ] && ANCHOR="$d/train_text_to_image_lora.py"
done
ANCHOR_ARGS=()
[ -n "$ANCHOR" ] && ANCHOR_ARGS=(--anchor-script "$ANCHOR")
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  python3 - <<'PY'
import importlib
for m in ("torch", "diffusers", "datasets", "pyarrow", "fsspec", "huggingface_hub", "transformers", "peft",
          "accelerate", "torchvision", "tensorboard", "dill", "multiprocess", "xxhash", "pandas"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"), getattr(mod, "__file__", ""))
    except Exception as e:
        print(m, "FAILED", e.__class__.__name__, e)
PY
  echo "anchor: ${ANCHOR:-none}"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

W=${BENCH_WORK:-/tmp/lora-bench}
# A dry run on a CPU machine: BENCH_DEVICE=cpu BENCH_SD15_CONFIGS=tiny-sd15-64-b1 BENCH_SDXL_CONFIGS=tiny-sdxl-64-b1 \
#   BENCH_SD15_STEPS=6 BENCH_SDXL_STEPS=6 BENCH_WARMUP=2 ANCHOR=/tmp/anchor/train_text_to_image_lora.py OUT=/tmp/o bash bench/device_run.sh
run() {  # name, configs, steps, warm-up steps
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 60 ]; then echo "skipping $1: only ${left}s left" | tee -a "$OUT/env.txt"; return; fi
  timeout --signal=INT "$left" python3 bench/run_benchmark.py "${ANCHOR_ARGS[@]}" --device "$DEVICE" --configs "$2" \
    --steps "$3" --warmup "$4" --work-dir "$W" --out "$OUT/results_$1.json" 2>&1 | tee "$OUT/log_$1.txt"
  rm -rf "$W/models"  # 4 GB (SD1.5) / 14 GB (SDXL) of random weights
}
DEVICE=${BENCH_DEVICE:-cuda}
run sd15 "${BENCH_SD15_CONFIGS:-sd15-512-b1,sd15-512-b4}" "${BENCH_SD15_STEPS:-40}" "${BENCH_WARMUP:-10}"
run sdxl "${BENCH_SDXL_CONFIGS:-sdxl-1024-b1-gc}" "${BENCH_SDXL_STEPS:-30}" "${BENCH_WARMUP:-10}"
# What one step dispatches on the GPU itself (cross-device copies and syncs are real there): full SD1.5 @64 px
left=$((BUDGET - SECONDS))
if [ "$left" -ge 90 ]; then
  timeout --signal=INT "$left" python3 bench/run_benchmark.py --ops "${ANCHOR_ARGS[@]}" --device "$DEVICE" \
    --configs "${BENCH_OPS_CONFIGS:-sd15-64-b1}" --ops-sides "${BENCH_OPS_SIDES:-ours,script}" --work-dir "$W" \
    --out "$OUT/ops.json" 2>&1 | tee "$OUT/log_ops.txt"
else
  echo "skipping --ops: only ${left}s left" | tee -a "$OUT/env.txt"
fi
for f in "$W"/runs/*/log.txt; do
  [ -f "$f" ] && { echo "=== $f"; tail -n 40 "$f"; }
done > "$OUT/runlogs.txt" 2>&1
echo "done in ${SECONDS}s"

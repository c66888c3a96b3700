#!/usr/bin/env bash
# Issue 12's GPU matrix in one go, within about 10 minutes of an H100/H200: random-sd15 at 512 px batch 8 and
# random-sdxl at 1024 px batch 4, bf16, latents and text cached, lorakit against the bare diffusers + peft loop,
# then with gradient checkpointing, torch.compile and both; the lowvram-8gb preset's SDXL peak. Most important
# first: each case runs in its own process under its own time limit, and once the budget is spent the rest are
# skipped (each is logged as skipped), so a cut-short run still returns the main numbers.
#
# Run from the repository root: `bash benchmarks/gpu_suite.sh`. Writes to $OUT (default ./gpu-results):
#   results.jsonl  one JSON line per case: {"case": ..., the fields of train_step.py --json} or {"case", "error"}
#   suite.log      the GPU, every case's command and printed table, and any error
# SUITE_BUDGET_S (default 540) is the wall-clock budget; PYTHON (default python3) the interpreter.
#
# The GPU machine needs lorakit's dependencies. Where one is missing (the device image has torch, transformers,
# peft, accelerate, safetensors, pillow, typer, rich, but not diffusers, pydantic, tomli-w, ImageHash, bitsandbytes),
# put the wheels in .whl/ (see the device README: pip download --no-deps --only-binary=:all: --python-version 3.12
# … diffusers pydantic pydantic-core annotated-types typing-inspection tomli-w ImageHash PyWavelets; bitsandbytes
# only if it fits): this script installs .whl/*.whl into /tmp/site first. Without bitsandbytes the lowvram-8gb case
# runs with AdamW instead of AdamW8bit (its optimizer state is a few hundred MB more; the log says so).

set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
PY=${PYTHON:-python3}
BUDGET=${SUITE_BUDGET_S:-540}
mkdir -p "$OUT" /tmp/gpu-suite
LOG=$OUT/suite.log
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
: >"$LOG"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 || { echo "wheel install failed (see $LOG)"; exit 1; }
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi

# Fail in seconds, not after the first model load.
"$PY" - >>"$LOG" 2>&1 <<'EOF' || { echo "preflight failed:"; tail -5 "$LOG"; exit 1; }
import importlib.util, sys
need = ["torch", "diffusers", "transformers", "peft", "accelerate", "pydantic", "tomli_w", "imagehash", "typer",
        "rich", "safetensors", "PIL"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)} (carry them as wheels in .whl/)")
import torch
if not torch.cuda.is_available():
    sys.exit("no CUDA device: this suite is for a GPU machine (benchmarks/train_step.py runs on a CPU)")
import lorakit.api  # noqa: F401
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, "
      f"bitsandbytes {'yes' if importlib.util.find_spec('bitsandbytes') else 'no'}")
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >>"$LOG" 2>&1
LOWVRAM_SET=()
"$PY" -c "import bitsandbytes" >/dev/null 2>&1 || LOWVRAM_SET=(--set train.optimizer_type=AdamW)

SD15=(--model random-sd15 --resolution 512 --batch 8 --precision bf16 --cache on)
SDXL=(--model random-sdxl --resolution 1024 --batch 4 --precision bf16 --cache on)
EAGER=(--steps 25 --warmup 5)
COMPILED=(--steps 30 --warmup 10)  # the first steps compile the blocks (forward and backward)
started=$SECONDS

# run_case NAME LIMIT_S ARGS...: one benchmark process; its JSON line (or its error) is appended to results.jsonl.
run_case() {
  local name=$1 limit=$2 left
  shift 2
  left=$((BUDGET - (SECONDS - started)))
  if [ "$left" -lt 45 ]; then
    echo "== $name: skipped (suite budget spent)" | tee -a "$LOG"
    echo "{\"case\": \"$name\", \"error\": \"skipped: suite budget spent\"}" >>"$RESULTS"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s): train_step.py $*" | tee -a "$LOG"
  rm -f "/tmp/gpu-suite/$name.json"
  local t0=$SECONDS rc=0
  timeout "$limit" "$PY" benchmarks/train_step.py --json "/tmp/gpu-suite/$name.json" "$@" >>"$LOG" 2>&1 || rc=$?
  echo "   $name: exit $rc after $((SECONDS - t0))s" | tee -a "$LOG"
  "$PY" - "$name" "/tmp/gpu-suite/$name.json" "$rc" >>"$RESULTS" <<'EOF'
import json, sys
from pathlib import Path
name, path, rc = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
why = f"exit {rc}" + (" (time limit)" if rc == 124 else "")
record = json.loads(path.read_text()) if path.exists() else {"error": why}
print(json.dumps({"case": name, **record}))
EOF
}

run_case sd15-b8 150 "${SD15[@]}" "${EAGER[@]}" --rounds 2
run_case sdxl-b4 150 "${SDXL[@]}" "${EAGER[@]}" --rounds 1
run_case sdxl-lowvram-8gb 90 --model random-sdxl --resolution 1024 --cache on --preset lowvram-8gb --steps 10 \
  --warmup 3 --rounds 1 "${LOWVRAM_SET[@]}"
run_case sd15-b8-ckpt 90 "${SD15[@]}" "${EAGER[@]}" --rounds 1 --checkpointing
run_case sdxl-b4-ckpt 120 "${SDXL[@]}" "${EAGER[@]}" --rounds 1 --checkpointing
run_case sd15-b8-compile 180 "${SD15[@]}" "${COMPILED[@]}" --rounds 1 --compile
run_case sdxl-b4-compile 240 "${SDXL[@]}" "${COMPILED[@]}" --rounds 1 --compile
run_case sd15-b8-compile-ckpt 150 "${SD15[@]}" "${COMPILED[@]}" --rounds 1 --compile --checkpointing
run_case sdxl-b4-compile-ckpt 200 "${SDXL[@]}" "${COMPILED[@]}" --rounds 1 --compile --checkpointing
run_case sdxl-b4-fp8 90 "${SDXL[@]}" "${EAGER[@]}" --rounds 1 --fp8
run_case sd15-b8-channels-last 90 "${SD15[@]}" "${EAGER[@]}" --rounds 1 --channels-last

echo "suite done in $((SECONDS - started))s; results in $RESULTS" | tee -a "$LOG"
grep -E "^(== |   |loop|bare|lorakit|device)" "$LOG" | tail -80

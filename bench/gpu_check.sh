#!/usr/bin/env bash
# Every GPU check of the project in one run, under 8 minutes on one H200; the results go to stdout as markdown
# (date, GPU, torch) to paste into docs/performance.md.
#
#   bash bench/gpu_check.sh                      # from anywhere: it runs in the repository root
#   GPU_CHECK_LOGS=$OUT/logs bash bench/gpu_check.sh | tee $OUT/gpu_check.md
#
# Steps, in order of value (each timed; each bounded so that the whole run ends within GPU_CHECK_BUDGET seconds,
# default 470; a step that fails or runs out of time is reported and the next one still runs; the exit status is
# the first failing step's):
#   1. bench/train_speed.py --official: the official text-slider loop (bench/official_loop.py) and our trainer on
#      the same full-size SD1.5 and SDXL UNets at 512 px, in one process: ours with the official schedule (DDIM 50,
#      one point per trajectory) and with the equally faithful one (DDIM 10, 4 points per trajectory, what
#      `--schedule-steps 10 --timesteps-per-trajectory 4` runs). Speed-ups are ratios of the measured s/it.
#   2. the CUDA-only tests: tests/test_cuda_graphs.py tests/test_offload.py.
#   3. bench/apply_overhead.py: fp16, 512 px (64×64 latents), batch 2, 5 and 50 sliders, hooks and merged.
#   4. bench/graph_check.py: CUDA-graph replays vs ordinary calls, SD1.5 and SDXL.
# Progress goes to stderr; each step's full output also to $GPU_CHECK_LOGS/<n>.log when that is set.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=.venv/bin/python
BUDGET=${GPU_CHECK_BUDGET:-470}
LOGS=${GPU_CHECK_LOGS:-}
DEADLINE=$((SECONDS + BUDGET))
# Lines the vendored ComfyUI (the SDXL UNet's code) and ldm print on import.
NOISE='^(Total VRAM|Set vram state|Device: |VAE dtype|Using pytorch cross attention|No module .xformers.)'
first_failure=0
step_number=0

if [[ -n "$LOGS" ]]; then mkdir -p "$LOGS"; fi

step() {  # step TITLE SECONDS COMMAND...: run it, time it, print its output (markdown tables as such)
  local title=$1 limit=$2
  shift 2
  step_number=$((step_number + 1))
  local left=$((DEADLINE - SECONDS))
  if ((left < limit)); then limit=$left; fi
  echo "### $step_number. $title"
  echo
  if ((limit < 15)); then
    echo "Skipped: the run's ${BUDGET} s budget is spent."
    echo
    echo "[gpu_check] $step_number. $title: skipped (budget spent)" >&2
    if ((first_failure == 0)); then first_failure=124; fi
    return 0
  fi
  echo "[gpu_check] $step_number. $title (limit ${limit} s) ..." >&2
  local log rc=0 began=$SECONDS
  log=$(mktemp)
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 || rc=$?
  local took=$((SECONDS - began))
  echo "\`$*\`: ${took} s, exit ${rc}$( ((rc == 124 || rc == 137)) && echo " (stopped at its ${limit} s limit)")"
  echo
  if grep -q '^|' "$log"; then
    grep '^|' "$log"
    echo
  fi
  echo '```text'
  grep -v '^|' "$log" | grep -Ev "$NOISE" || true
  echo '```'
  echo
  if [[ -n "$LOGS" ]]; then cp "$log" "$LOGS/$step_number.log"; fi
  rm -f "$log"
  echo "[gpu_check] $step_number. $title: ${took} s, exit $rc" >&2
  if ((rc != 0 && first_failure == 0)); then first_failure=$rc; fi
}

gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || true)
versions=$("$PY" -c 'import sys, torch
cuda = torch.version.cuda or "none"
cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "none"
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"torch {torch.__version__} (CUDA {cuda}, cuDNN {cudnn}), Python {sys.version.split()[0]}; torch sees: {name}")')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo "unknown")
if [[ "$commit" != unknown && -n "$(git status --porcelain 2>/dev/null)" ]]; then commit="$commit + uncommitted changes"; fi

echo "## GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- GPU: ${gpu:-unknown (no nvidia-smi)}"
echo "- $versions"
echo "- host: $(nproc) CPUs; commit $commit; \`bash bench/gpu_check.sh\`"
echo

step "Training speed: official loop and ours, side by side (SD1.5, 512 px)" 150 \
  "$PY" bench/train_speed.py --device cuda --official --models sd15 --resolution 512 \
  --iterations 16 --official-iterations 8 --extra-schedule 10:4 --markdown
step "Training speed: official loop and ours, side by side (SDXL, 1024 px, gradient checkpointing)" 170 \
  "$PY" bench/train_speed.py --device cuda --official --models sdxl --resolution 1024 --gradient-checkpointing \
  --iterations 8 --official-iterations 4 --markdown
step "CUDA-only tests" 90 \
  "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py tests/test_offload.py
step "Applied sliders: UNet forward overhead (fp16, 512 px, batch 2)" 90 \
  "$PY" bench/apply_overhead.py --device cuda --dtype fp16 --latent 64 --batch 2 --counts 5,50
step "CUDA-graph replays vs ordinary calls" 150 \
  "$PY" bench/graph_check.py --models sd15,sdxl

echo "Total: $SECONDS s."
exit "$first_failure"

#!/usr/bin/env bash
# The GPU session's checks, in one run on the `device` machine (docs/validation.md, GPU section):
# real forward passes of random-weight Llama models, then `llmsim calibrate-hardware`, each under
# its own time limit so a slow step cannot eat the other's time. Writes into $OUT (or ./gpu-out).
# Packages the machine lacks (simpy, pydantic) come as wheels in .whl/ (see the device notes).
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
MODELS=${MODELS:-llama-2-7b,llama-3.1-8b}
FORWARD_MODELS=${FORWARD_MODELS:-$MODELS}
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit,memory.total --format=csv
  python3 -c "import torch, inspect; from torch.nn.attention import varlen as v; a=torch.nn.attention
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())
print('varlen block_table:', 'block_table' in inspect.signature(v.varlen_attn).parameters)
print('flash impls:', getattr(a, 'list_flash_attention_impls', lambda: 'n/a')())"; } 2>&1 | tee "$OUT/gpu.txt"
start=$(date +%s)
[ -n "${SKIP_FORWARD:-}" ] || timeout "${FORWARD_S:-150}" python3 benchmarks/forward_pass_check.py measure --models "$FORWARD_MODELS" --out "$OUT/forward.csv" 2>&1 | tee "$OUT/forward.log"
echo "forward pass check: $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu.txt"
start=$(date +%s)
timeout "${CALIBRATE_S:-240}" python3 -m llmsim calibrate-hardware --models "$MODELS" --tp 1 --out "$OUT/nvidia-h200.yaml" ${QUICK:+--quick} 2>&1 | tee "$OUT/calibrate.log"
echo "calibrate-hardware: $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu.txt"

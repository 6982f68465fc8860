#!/usr/bin/env bash
# GPU smoke test: a 2-rank QLoRA sweep of a small model, then throughput and peak memory per trial.
# Needs a CUDA GPU and bitsandbytes; runs offline on the embedded SmolLM2 unless MODEL is set.
#   bash benchmarks/gpu_smoke.sh                      # smollm2-135m in 4-bit, ranks 8 and 64
#   MODEL=Qwen/Qwen2.5-0.5B-Instruct bash benchmarks/gpu_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
MODEL=${MODEL:-smollm2-135m}
OUT=${OUT:-outputs/gpu_smoke}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 2)" \
  || { echo "gpu_smoke: no CUDA GPU visible to torch" >&2; exit 2; }
"$PY" -c "import bitsandbytes" 2>/dev/null || "$PY" -m pip install -q bitsandbytes
"$PY" -m lorarank run --model "$MODEL" --load-in-4bit \
  --ranks 8 64 --max-steps 30 model.dtype=auto train.eval_every=15 --output-dir "$OUT" --no-progress
"$PY" - "$OUT" <<'PYEOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for f in sorted(out.glob("rank_*/run_data.json")):
    r = json.loads(f.read_text())
    print(f"{r['name']}: {r['status']}, {r['trainable_params']:,} trainable, {r['tokens_per_second']:.0f} tok/s, "
          f"peak CUDA memory {r['peak_memory_bytes'] / 2**20:.0f} MiB, eval loss {r['final_eval_loss']:.4f} "
          f"on {r['environment']['device']}")
PYEOF

#!/usr/bin/env bash
# One GPU session's checks, run by the `device` tool with carry [.whl, .gpu] (bench/gpu_prepare.sh makes
# them): make bench's measurements on the GPU (the packed sweep at K=8), then one training step and one
# evaluation batch of every experiment at scale=paper (bench/paper_step.py). Output goes to $OUT.
# The GPU image has torch, transformers, Lightning and PEFT of its own (their versions are printed);
# `make bench` itself is not run there, since its `make setup` needs the registries.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; command -v java || echo "no java";
  python3 -c "import sys, torch, transformers, pytorch_lightning, peft, datasets, hydra; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'lightning', pytorch_lightning.__version__, 'peft', peft.__version__, 'datasets', datasets.__version__, 'hydra', hydra.__version__)"; } 2>&1 | tee "$OUT/environment.txt"
# The embedded SmolLM2's weights (98 MB GGUF, 538 MB converted) cannot travel: its converted folder is
# rebuilt here from its config and tokenizer with random weights of the same shapes (the same time
# and memory per step; generation runs to its token limit either way: bench sets min_new_tokens).
export PREFIXLAB_CACHE=/tmp/prefixlab-cache
python3 - <<'PY'
import os, shutil, torch
from transformers import AutoConfig, AutoModelForCausalLM
target = os.path.join(os.environ["PREFIXLAB_CACHE"], "models", "smollm2-135m-instruct")
shutil.copytree(".gpu/smollm2", target)
AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(target), dtype=torch.float32).save_pretrained(target)
PY
sections=${1:-bench,paper}  # bench/gpu_check.sh [bench|paper|bench,paper]
[[ $sections == *bench* ]] && timeout ${BENCH_TIMEOUT:-250} python3 bench/bench.py --out "$OUT" --packed-k 8 2>&1 | grep -v -i warning | tail -30
[[ $sections == *paper* ]] && timeout 200 python3 bench/paper_step.py --model-dir .gpu/gpt2-medium --random-init --data e2e=.gpu/data/e2e \
  --data dart=.gpu/data/dart --out "$OUT" --budget-s 150 2>&1 | grep -v -i warning | grep -v "^{" | tail -40

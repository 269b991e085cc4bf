#!/usr/bin/env bash
# GPU smoke test of the training paths: SFT under DeepSpeed ZeRO-2 and GRPO with vLLM generation,
# on small real models, on the bundled sample distilled by a real teacher through the vllm: backend.
# Needs a CUDA GPU, network access to the Hub (or the models in the HF cache) and
#   pip install -e '.[train,vllm]'
# Prints each step's wall time and the training reports. Without a GPU it says so and exits 0.
#
#   bash bench/gpu_smoke.sh [WORKDIR]            # default runs/gpu-smoke
set -euo pipefail
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_smoke: no CUDA GPU here; nothing to do"; exit 0
fi
W=${1:-runs/gpu-smoke}
TEACHER=${TEACHER:-vllm:Qwen/Qwen2.5-VL-3B-Instruct}
VISION=${VISION:-OpenGVLab/InternVL3-1B-hf}        # its InternViT tower (transformers-native)
LLM=${LLM:-Qwen/Qwen2.5-0.5B-Instruct}
unset HF_HUB_OFFLINE
mkdir -p "$W"
nvidia-smi -L
step() { local name=$1; shift; local t0=$SECONDS; echo "== $name: $*"; "$@"; echo "== $name: $((SECONDS - t0)) s"; }

step ingest   r1v-data ingest builtin:sample --store "$W/store" --json
step distil   r1v-data generate --store "$W/store" --teacher "$TEACHER" --max-tokens 2048 --n 2 --json
step filter   r1v-data filter --store "$W/store" --min-score 2 --json
step mix      r1v-data mix --store "$W/store" --out "$W/mix" --kind sft --kind rl --overwrite --json
step assemble r1v-train assemble --vision "$VISION" --llm "$LLM" --out "$W/model-0" --json
step preflight r1v-data preflight "$W/mix" --model "$W/model-0" --max-length 4096 --image-tokens 256 || true
# ZeRO-2 through the deepspeed launcher (one GPU); the projector first, as the paper does
step sft      deepspeed --no_local_rank --num_gpus 1 "$(command -v r1v-train)" sft --model "$W/model-0" --data "$W/mix" \
                --output-dir "$W/model-1" --set deepspeed=zero2 --set max_length=4096 --set logging_steps=1 \
                --set per_device_train_batch_size=2 --set gradient_accumulation_steps=4 --max-steps 20 --json
step sft-all  deepspeed --no_local_rank --num_gpus 1 "$(command -v r1v-train)" sft --model "$W/model-1" --data "$W/mix" \
                --output-dir "$W/model-2" --set deepspeed=zero3 --set freeze=all --set learning_rate=2e-5 \
                --set max_length=4096 --set logging_steps=1 --max-steps 10 --json
# GRPO with colocated vLLM generation, r1v's accuracy and <think> rewards
step grpo     r1v-train grpo --model "$W/model-2" --data "$W/mix" --output-dir "$W/grpo" \
                --set use_vllm=true --set deepspeed=null --set num_generations=4 --set max_completion_length=512 \
                --set per_device_train_batch_size=4 --set logging_steps=1 --max-steps 5 --json
step evaluate r1v-data generate --store "$W/store" --teacher "hf:$W/grpo" --temperature 0 --max-tokens 512 --json

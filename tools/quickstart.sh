#!/usr/bin/env bash
# The main job: install dependencies, build Release, list the Vulkan devices, check every
# kernel against its CPU reference, and generate text with SnapKV from a GGUF model.
#   tools/quickstart.sh [MODEL.gguf [PROMPT]]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh -DSNAPVK_BUILD_TESTS=OFF -DSNAPVK_BUILD_BENCH=OFF
./build/snapvk devices
./build/snapvk selftest

model=${1:-../shared/models/stories260K.gguf}
prompt=${2:-"Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big red ball."}
if [ -f "$model" ]; then
  echo
  echo "== $model, full KV cache"
  ./build/snapvk run -m "$model" -p "$prompt" -n 64 --temp 0
  echo
  echo "== $model, SnapKV (budget 24 entries per head, window 8)"
  ./build/snapvk run -m "$model" -p "$prompt" -n 64 --temp 0 --kv-policy snapkv --kv-budget 24 --kv-window 8
else
  echo "no model at $model: give one as tools/quickstart.sh MODEL.gguf [PROMPT]"
fi

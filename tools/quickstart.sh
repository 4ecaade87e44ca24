#!/usr/bin/env bash
# The main job: install dependencies, build Release, list the Vulkan devices, check every
# kernel against its CPU reference, and profile SnapKV's memory savings per context length on
# the built-in synthetic model (about a minute on a CPU; writes profile-out/ with an HTML report).
# Given a GGUF model, it also generates text from it with and without SnapKV.
#   tools/quickstart.sh [MODEL.gguf [PROMPT]]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh -DSNAPVK_BUILD_TESTS=OFF -DSNAPVK_BUILD_BENCH=OFF
./build/snapvk devices
./build/snapvk selftest
echo
./build/snapvk profile --out profile-out
echo "report: profile-out/profile.html (and profile.csv, profile.json, profile.svg)"

if [ $# -ge 1 ]; then
  model=$1
  prompt=${2:-"Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big red ball."}
  echo
  echo "== $model, full KV cache"
  ./build/snapvk run -m "$model" -p "$prompt" -n 64 --temp 0
  echo
  echo "== $model, SnapKV (budget 24 entries per head, window 8)"
  ./build/snapvk run -m "$model" -p "$prompt" -n 64 --temp 0 --kv-policy snapkv --kv-budget 24 --kv-window 8
fi

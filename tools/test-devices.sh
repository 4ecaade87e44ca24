#!/usr/bin/env bash
# The GPU-kernel, model and SnapKV tests on devices unlike the default one (docs/reliability.md):
# lavapipe at subgroup size 4 (LP_NATIVE_VECTOR_WIDTH=128) and 16 (=512, where the CPU has
# AVX-512; the suite itself ran at 8), and every device as the least capable one Vulkan allows
# (SNAPVK_DEVICE_LIMITS=minimum: optional features hidden, limits at the specification's
# minimum), with the validation layer on. Usage: tools/test-devices.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
TESTS="$BUILD/tests/snapvk_tests"
# Every kernel against its CPU reference, and SnapKV's selection against the CPU's.
KERNELS='*Kernel*:*Kernels*:SnapkvStories.*'
# Under minimum limits, whole models too (every architecture and weight type, the real ones),
# sessions and generation: what a user of such a device runs.
MODELS="$KERNELS:Stories.*:Synth/*:SynthStories.*:SmolLM2.GreedyTokensMatchTheFloat64Reference*"
MODELS="$MODELS:Gemma3Real.EveryRowsLogits*:SessionTest.*:GenerateTest.*"
lavapipe=$(vulkaninfo --summary 2>/dev/null | grep -c "driverName *= *llvmpipe" || true)
run() {  # NAME, then environment assignments
  local name=$1
  shift
  echo "-- $name"
  env SNAPVK_VALIDATION=1 "$@" "$TESTS" --gtest_brief=1 --gtest_filter="$FILTER"
}
if [ "$lavapipe" != 0 ]; then
  FILTER=$KERNELS run "subgroup size 4" LP_NATIVE_VECTOR_WIDTH=128
  if grep -q avx512f /proc/cpuinfo; then
    FILTER=$KERNELS run "subgroup size 16" LP_NATIVE_VECTOR_WIDTH=512
  else
    echo "-- subgroup size 16: skipped (this CPU has no AVX-512)"
  fi
else
  echo "-- other subgroup sizes: skipped (not lavapipe; the device's own size ran in the suite)"
fi
FILTER=$MODELS run "minimum limits and features" SNAPVK_DEVICE_LIMITS=minimum

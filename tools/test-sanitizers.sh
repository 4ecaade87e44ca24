#!/usr/bin/env bash
# Builds the library, the CLI, the tests and the libFuzzer targets with clang, AddressSanitizer
# and UndefinedBehaviorSanitizer into build-san, runs the test suite there (any report
# fails the test that caused it: no recovery, leaks checked at exit), then tools/fuzz.sh.
# The Vulkan driver and layers are not instrumented; tools/lsan.supp names what they keep
# allocated at exit. The CLI, run by tests as a subprocess, unloads the driver before the leak
# check, which then cannot tell the driver's leftovers from ours: so the driver library
# (lavapipe's, or $SNAPVK_SAN_PRELOAD) is preloaded and stays mapped.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
source tools/ccache.sh
# Line tables are all the debug information a sanitizer's stack trace needs, and compile much
# faster than full -g.
CC=clang CXX=clang++ cmake -S . -B build-san -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSNAPVK_SANITIZE=ON -DSNAPVK_FUZZ=ON \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG" \
  -DSNAPVK_BUILD_TESTS=ON -DSNAPVK_BUILD_BENCH=OFF "${CCACHE_FLAGS[@]}" >/dev/null
cmake --build build-san -j"$(nproc)"
# lavapipe's JIT-compiled shaders allocate and free millions of small over-aligned blocks on its
# worker threads; with ASan's default 256 MB quarantine one SmolLM2 test grows to 14.5 GB of RSS
# (2 such tests under ctest -j2 were OOM-killed on a 24 GiB machine), with 16 MB to 1.7 GB.
# A freed block of ours still sits in quarantine for the next 16 MB of frees.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1:check_initialization_order=1:quarantine_size_mb=16
export LSAN_OPTIONS=suppressions=$PWD/tools/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
preload=${SNAPVK_SAN_PRELOAD:-}
for lib in /usr/lib/x86_64-linux-gnu/libvulkan_lvp.so /usr/lib/aarch64-linux-gnu/libvulkan_lvp.so; do
  [ -z "$preload" ] && [ -f "$lib" ] && preload=$lib
done
# Every test but the real-model fidelity ones and the kernels past the loop limit (labels
# "fidelity" and "loop-limit", tests/test_properties.cmake): their time is lavapipe's work (no
# sanitizer sees it) and long CPU reference loops, and cheaper tests run the same host code here.
echo "== test suite under AddressSanitizer + UndefinedBehaviorSanitizer"
(cd build-san && LD_PRELOAD=$preload ctest --output-on-failure -j"$(nproc)" --timeout 1800 -LE "fidelity|loop-limit")
echo "== fuzzing"
tools/fuzz.sh build-san

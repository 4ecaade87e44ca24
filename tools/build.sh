#!/usr/bin/env bash
# Configures and builds snapvk (Release by default) into ./build. Extra arguments go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_TYPE=${BUILD_TYPE:-Release}
source tools/ccache.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE="$BUILD_TYPE" "${CCACHE_FLAGS[@]}" "$@" >/dev/null
cmake --build build -j"$(nproc)"

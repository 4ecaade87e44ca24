#!/usr/bin/env bash
# The main job: install dependencies, build Release, list the Vulkan devices and check every
# kernel against its CPU reference on the chosen one.
#   tools/quickstart.sh                    # device list + kernel self-check
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh -DSNAPVK_BUILD_TESTS=OFF -DSNAPVK_BUILD_BENCH=OFF
./build/snapvk devices
./build/snapvk selftest

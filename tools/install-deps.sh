#!/usr/bin/env bash
# Installs what snapvk needs to build and run, from Debian 12 packages only (run as root).
# Packages already present are left alone; apt-get update runs only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libvulkan-dev glslc spirv-tools
  libspdlog-dev libcli11-dev nlohmann-json3-dev libcpp-httplib-dev  # the server: snapvk serve
  libgtest-dev libbenchmark-dev
  mesa-vulkan-drivers vulkan-validationlayers vulkan-tools
  clang libclang-rt-14-dev llvm  # sanitizer build and libFuzzer (tools/test-sanitizers.sh)
  ccache  # rebuilds of unchanged sources are taken from its cache (tools/build.sh, test-sanitizers.sh)
  python3-venv  # the venv of the openai client test (below)
  nginx-light   # the load-balancer test of several serve processes (Serve.NginxRoutes*)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "snapvk: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The official openai Python client, pinned, in a venv of its own: tests/openai_client.py
# (ctest serve_openai_client) drives `snapvk serve` with it. The C++ tests need no Python.
OPENAI_VERSION=1.59.9
venv="${SNAPVK_VENV:-$HOME/.cache/snapvk/venv}"
if ! "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
  echo "snapvk: installing openai==$OPENAI_VERSION in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "openai==$OPENAI_VERSION"
fi

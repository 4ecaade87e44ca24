#!/usr/bin/env bash
# Installs snapvk from a build tree into a temporary prefix and builds examples/ out of tree
# against it: with CMake (find_package, libsnapvk.so and libsnapvk.a) and with pkg-config (plain
# cc/c++ command lines, shared and static), then runs every build on stories260K with SnapKV.
#   tools/test-install.sh [BUILD_DIR]      (default: build; run by ctest as install_and_examples)
# $SNAPVK_TEST_MODELS overrides the model directory (default ../shared/models beside the checkout).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
models=${SNAPVK_TEST_MODELS:-$src/../shared/models}
model=$models/stories260K.gguf
if [ ! -f "$model" ]; then
  echo "test-install: no model at $model: the examples need stories260K.gguf (set SNAPVK_TEST_MODELS)" >&2
  exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/snapvk-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
jobs=$(nproc 2>/dev/null || echo 2)
fail() { echo "test-install: FAILED: $*" >&2; exit 1; }
quiet() { "$@" >"$tmp/step.log" 2>&1 || { cat "$tmp/step.log" >&2; fail "$*"; }; }

echo "== cmake --install $build --prefix $prefix"
quiet cmake --install "$build" --prefix "$prefix"
(cd "$prefix" && find . \( -type f -o -type l \) | sort | sed 's/^\.\//   /')
pcdir=$(dirname "$(find "$prefix" -name snapvk.pc | head -n1)")
[ -f "$pcdir/snapvk.pc" ] || fail "no snapvk.pc installed"
libdir=$(cd "$pcdir/.." && pwd)
"$prefix/bin/snapvk" --version

# 1, 2: CMake, find_package(snapvk), shared and static
for kind in shared static; do
  static=OFF
  [ "$kind" = static ] && static=ON
  echo "== CMake find_package(snapvk), $kind"
  quiet cmake -S "$src/examples" -B "$tmp/cmake-$kind" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
    -DSNAPVK_EXAMPLES_STATIC=$static
  quiet cmake --build "$tmp/cmake-$kind" -j"$jobs"
done

# 3, 4: pkg-config with plain compiler command lines
export PKG_CONFIG_PATH=$pcdir
echo "== pkg-config: cflags '$(pkg-config --cflags snapvk)' libs '$(pkg-config --libs snapvk)'"
echo "   static libs '$(pkg-config --static --libs snapvk)'"
mkdir -p "$tmp/pc-shared" "$tmp/pc-static"
rpath=-Wl,-rpath,$(realpath "$(pkg-config --variable=libdir snapvk)")
quiet cc -std=c99 -Wall -Wextra -pedantic -Werror -O2 "$src/examples/minimal.c" $(pkg-config --cflags snapvk) \
  -o "$tmp/pc-shared/minimal" $(pkg-config --libs snapvk) "$rpath"
quiet c++ -std=c++17 -Wall -Wextra -pedantic -Werror -O2 "$src/examples/chat.cpp" $(pkg-config --cflags snapvk) \
  -o "$tmp/pc-shared/chat" $(pkg-config --libs snapvk) "$rpath"
# Static: the archive itself (a -lsnapvk would find the .so first), then its private dependencies.
static_deps=$(pkg-config --static --libs snapvk | sed 's/\(^\| \)-lsnapvk\( \|$\)/ /')
quiet cc -std=c99 -Wall -Wextra -pedantic -Werror -O2 -DSNAPVK_STATIC "$src/examples/minimal.c" \
  $(pkg-config --cflags snapvk) -o "$tmp/pc-static/minimal" "$libdir/libsnapvk.a" $static_deps
quiet c++ -std=c++17 -Wall -Wextra -pedantic -Werror -O2 -DSNAPVK_STATIC "$src/examples/chat.cpp" \
  $(pkg-config --cflags snapvk) -o "$tmp/pc-static/chat" "$libdir/libsnapvk.a" $static_deps

# Shared builds load the installed libsnapvk.so; static ones do not need it.
# (ldd's output is kept first: grep -q closing the pipe early would fail it under pipefail)
for kind in cmake-shared pc-shared cmake-static pc-static; do
  for exe in minimal chat; do
    deps=$(ldd "$tmp/$kind/$exe")
    case $kind in
      *shared) grep -q "libsnapvk.so.1 => $libdir/" <<<"$deps" || fail "$kind/$exe does not load $libdir/libsnapvk.so" ;;
      *static) ! grep -q libsnapvk <<<"$deps" || fail "$kind/$exe is not linked statically" ;;
    esac
  done
done

# Run them all: text out, and a compressed KV cache (ratio > 1).
two_turns="Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big red ball. She wanted to play with it, but it was too high. Lily asked her mom to help her.
Then her mom said"
for kind in cmake-shared cmake-static pc-shared pc-static; do
  echo "== $kind/minimal $model"
  "$tmp/$kind/minimal" "$model" >"$tmp/out.txt" 2>"$tmp/err.txt" || { cat "$tmp/out.txt" "$tmp/err.txt"; fail "$kind/minimal"; }
  sed 's/^/   /' "$tmp/out.txt" "$tmp/err.txt"
  ratio=$(sed -n 's/.*ratio \([0-9.]*\)x.*/\1/p' "$tmp/err.txt")
  awk -v r="$ratio" 'BEGIN { exit !(r > 1) }' || fail "$kind/minimal: KV ratio '$ratio' is not above 1"
  [ "$(wc -w <"$tmp/out.txt")" -gt 60 ] || fail "$kind/minimal generated no text"

  echo "== two lines piped into $kind/chat --kv-policy snapkv --kv-budget 48 --kv-window 8 --temp 0"
  printf '%s\n' "$two_turns" | "$tmp/$kind/chat" -m "$model" --kv-policy snapkv --kv-budget 48 --kv-window 8 \
    --temp 0 -c 512 -n 48 >"$tmp/chat.txt" 2>"$tmp/chat-err.txt" || { cat "$tmp/chat.txt" "$tmp/chat-err.txt"; fail "$kind/chat"; }
  sed 's/^/   /' "$tmp/chat.txt"
  [ "$(grep -c '^\[kv snapkv: ' "$tmp/chat.txt")" -eq 2 ] || fail "$kind/chat: expected two turns with KV statistics"
  grep '^\[kv snapkv: ' "$tmp/chat.txt" | sed -n 's/.*ratio \([0-9.]*\)x.*/\1/p' |
    awk '{ if (!($1 > 1)) bad = 1 } END { exit bad }' || fail "$kind/chat: KV ratio not above 1 after a turn"
  cmp -s "$tmp/chat.txt" "$tmp/chat-first.txt" 2>/dev/null || [ ! -f "$tmp/chat-first.txt" ] ||
    fail "$kind/chat: greedy output differs from the first build's"
  [ -f "$tmp/chat-first.txt" ] || cp "$tmp/chat.txt" "$tmp/chat-first.txt"
done
echo "test-install: OK (CMake shared/static and pkg-config shared/static builds of examples/ run with SnapKV)"

#!/usr/bin/env bash
# sandbox_bench — builds bench/sandbox_bench.c against a build directory's host
# library and prints median start-up and round-trip times of the sandbox.
# Usage: bench/sandbox_bench.sh [build-dir]   (default: build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
cmake --build "$build" --target rlm-sandbox rlm_static >/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cc -std=c11 -O2 -D_GNU_SOURCE -I"$root/src" -I"$root/include" \
  -o "$out/sandbox_bench" "$root/bench/sandbox_bench.c" "$build/librlm.a" \
  $(pkg-config --cflags --libs jansson libcurl) -lpthread -lm
"$out/sandbox_bench" "$build/rlm-sandbox"

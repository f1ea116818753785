#!/usr/bin/env bash
# helpers_bench — builds bench/helpers_bench.c against a build directory's
# host library, runs it, then times the same grep in /usr/bin/python3
# (re.finditer with incremental line numbers) and SQLite FTS5 index builds.
# Usage: bench/helpers_bench.sh [build-dir] [MB]   (RLM_BENCH_1GB=1 adds 1 GB)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
mb=${2:-400}
cmake --build "$build" --target rlm_static >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -std=c11 -O2 -D_GNU_SOURCE -I"$root/src" -I"$root/include" -o "$work/helpers_bench" \
  "$root/bench/helpers_bench.c" "$build/librlm.a" \
  $(pkg-config --libs jansson libcurl libpcre2-8 sqlite3 libcrypto) -lpthread -lm
"$work/helpers_bench" "$work" "$mb"
/usr/bin/python3 "$root/bench/helpers_bench.py" "$work/corpus-$mb.txt"

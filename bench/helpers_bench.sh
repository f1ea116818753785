#!/usr/bin/env bash
# helpers_bench — builds bench/helpers_bench.c against a build directory's
# host library, runs it, then times the same grep in /usr/bin/python3
# (re.finditer loops giving what grep_run gives) and SQLite FTS5 index
# builds; last, grep() against the equivalent loop inside the sandbox of the
# real `rlm ask` (helpers_bench.py --sandbox: 400 MB, warm and cold medians).
# Usage: bench/helpers_bench.sh [build-dir] [MB]   (RLM_BENCH_1GB=1 adds 1 GB;
#        RLM_BENCH_SANDBOX_RUNS=N sets the sandbox runs, 0 skips them)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
mb=${2:-400}
runs=${RLM_BENCH_SANDBOX_RUNS:-10}
cmake --build "$build" --target rlm_static >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -std=c11 -O2 -D_GNU_SOURCE -I"$root/src" -I"$root/src/shared" -I"$root/src/child" -I"$root/src/input" -I"$root/include" -o "$work/helpers_bench" \
  "$root/bench/helpers_bench.c" "$root/src/child/grep.c" "$build/librlm.a" \
  $(pkg-config --libs jansson libcurl libpcre2-8 sqlite3 libcrypto) -lpthread -lm
"$work/helpers_bench" "$work" "$mb"
/usr/bin/python3 "$root/bench/helpers_bench.py" "$work/corpus-$mb.txt"
if [ "$runs" -gt 0 ]; then
  cmake --build "$build" --target rlm rlm-sandbox fakelm >/dev/null
  /usr/bin/python3 "$root/bench/helpers_bench.py" --sandbox "$build" --runs "$runs"
fi

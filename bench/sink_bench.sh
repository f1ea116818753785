#!/usr/bin/env bash
# sink_bench — builds bench/sink_bench.c against a build directory's library
# and runs it on the demo's trace (made by `rlm demo --trace`, with the log
# off): the CPU the run log spends turning events into lines and
# compressing them, before (json_dumps + zlib) and now (trace_json_line +
# zstd). Usage: bench/sink_bench.sh [build-dir] [passes]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
passes=${2:-9}
cmake --build "$build" --target rlm_static rlm rlm-sandbox fakelm >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -std=c11 -O2 -D_GNU_SOURCE -I"$root/src" -I"$root/src/shared" -I"$root/include" -o "$work/sink_bench" \
  "$root/bench/sink_bench.c" "$build/librlm.a" \
  $(pkg-config --libs jansson libcurl libpcre2-8 sqlite3 libcrypto libzstd zlib) -lpthread -lm
XDG_DATA_HOME="$work" RLM_LOG=0 "$build/rlm" demo --trace "$work/demo.jsonl" >/dev/null 2>&1
"$work/sink_bench" "$work/demo.jsonl" "$passes"

#!/usr/bin/env bash
# lm_bench.sh — the LM dispatcher's throughput against fakelm: 1,000 requests
# at 200 ms fake latency, concurrency 64 (override with N, CONCURRENCY,
# LATENCY_MS; PROMPT_BYTES pads each prompt to that size). Target: wall time
# within 1.3x of ceil(N/C) x latency. Also prints the CPU time and how much
# peak memory the batch added (e.g. N=4300 PROMPT_BYTES=10000: the memory of
# a 430K-line OOLONG batch in the dispatcher alone).
# Exits 0 when every request succeeded and the target was met.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${RLM_BUILD_DIR:-$ROOT/build}"
N="${N:-1000}"
CONCURRENCY="${CONCURRENCY:-64}"
LATENCY_MS="${LATENCY_MS:-200}"
PROMPT_BYTES="${PROMPT_BYTES:-0}"

cmake --build "$BUILD" --target fakelm >/dev/null
# Built from the model wing (src/lm/) and the leaves it uses, directly, so it runs
# whatever state the rest of the tree is in.
cc -O2 -std=c11 -D_GNU_SOURCE -I"$ROOT/src" -I"$ROOT/src/shared" -I"$ROOT/src/lm" -I"$ROOT/include" "$ROOT/bench/lm_bench.c" \
   "$ROOT"/src/lm/*.c "$ROOT/src/shared/util.c" "$ROOT/src/shared/utf8.c" "$ROOT/src/shared/frame.c" "$ROOT/src/shared/tokens.c" \
   $(pkg-config --cflags --libs libcurl jansson) -lpthread -lm \
   -o "$BUILD/lm_bench"

WORK="$(mktemp -d)"
FAKELM_PID=""
cleanup() {
    if [[ -n "$FAKELM_PID" ]]; then kill "$FAKELM_PID" 2>/dev/null || true; wait "$FAKELM_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/script.json" <<'JSON'
{"rules": [{"match": "^question (\\d+)", "reply": "answer $1"}]}
JSON
"$BUILD/fakelm" --script "$WORK/script.json" --port 0 --port-file "$WORK/port" \
    --latency-ms "$LATENCY_MS" >/dev/null &
FAKELM_PID=$!
for _ in $(seq 1 500); do [[ -s "$WORK/port" ]] && break; sleep 0.01; done
[[ -s "$WORK/port" ]] || { echo "lm_bench: fakelm did not start" >&2; exit 1; }
PORT="$(cat "$WORK/port")"

echo "lm_bench: $N requests, concurrency $CONCURRENCY, fake latency ${LATENCY_MS} ms"
status=0
"$BUILD/lm_bench" "http://127.0.0.1:$PORT/v1" "$N" "$CONCURRENCY" "$LATENCY_MS" "$PROMPT_BYTES" || status=$?
if command -v curl >/dev/null; then
    echo "server counters: $(curl -s "http://127.0.0.1:$PORT/counters")"
fi
exit $status

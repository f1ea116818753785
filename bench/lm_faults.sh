#!/usr/bin/env bash
# lm_faults.sh — the LM layer under faults, against fakelm:
#  1. N (2,000) sub-calls at 200 ms fake latency, concurrency 64, fault-free
#     and with 10% answered 429 + Retry-After: 1 s; prints the median wall
#     time of RUNS (3) runs each and their ratio (target < 1.5).
#  2. CPU use of the LM layer at 500 requests/s (paced by its own rate limit,
#     fake latency 0, 5 s): median percent of one core (target < 5%).
# Exits 0 when every call was answered correctly and both targets were met.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${RLM_BUILD_DIR:-$ROOT/build}"
N="${N:-2000}"
CONCURRENCY="${CONCURRENCY:-64}"
RUNS="${RUNS:-3}"
RATE="${RATE:-500}"

cmake --build "$BUILD" --target fakelm >/dev/null
# Built from the model wing (src/lm/) and the leaves it uses, directly, so it runs
# whatever state the rest of the tree is in.
cc -O2 -std=c11 -D_GNU_SOURCE -I"$ROOT/src" -I"$ROOT/src/shared" -I"$ROOT/src/lm" -I"$ROOT/include" "$ROOT/bench/lm_faults.c" \
   "$ROOT"/src/lm/*.c "$ROOT/src/shared/util.c" "$ROOT/src/shared/utf8.c" "$ROOT/src/shared/frame.c" "$ROOT/src/shared/tokens.c" \
   $(pkg-config --cflags --libs libcurl jansson) -lpthread -lm \
   -o "$BUILD/lm_faults"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME LATENCY_MS FAULTS_JSON -> sets PORT
start() {
    cat > "$WORK/$1.json" <<JSON
{"latency_ms": $2, $3 "rules": [{"match": "^question (\\\\d+)\$", "reply": "answer \$1"}]}
JSON
    "$BUILD/fakelm" --script "$WORK/$1.json" --port 0 --port-file "$WORK/$1.port" >/dev/null 2>"$WORK/$1.err" &
    PIDS+=($!)
    for _ in $(seq 1 500); do [[ -s "$WORK/$1.port" ]] && break; sleep 0.01; done
    [[ -s "$WORK/$1.port" ]] || { echo "lm_faults: fakelm did not start: $(cat "$WORK/$1.err")" >&2; exit 1; }
    PORT="$(cat "$WORK/$1.port")"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { grep "^$1=" | cut -d= -f2; }

status=0
run_many() { # NAME PORT RPM STREAM -> prints wall times, one per run
    for _ in $(seq 1 "$RUNS"); do
        curl -s -X POST "http://127.0.0.1:$2/reset" >/dev/null
        out="$("$BUILD/lm_faults" "http://127.0.0.1:$2/v1" "$N" "$CONCURRENCY" "$3" "$4")" || status=1
        echo "$out" > "$WORK/$1.last"
        echo "$out" | field "$5"
    done
}

start clean 200 ""
CLEAN_PORT=$PORT
start faulty 200 '"faults": {"rate": 0.1, "kinds": ["429"], "retry_after": "1", "seed": 1},'
FAULTY_PORT=$PORT

echo "lm_faults: $N calls, concurrency $CONCURRENCY, fake latency 200 ms, median of $RUNS runs"
clean=$(run_many clean "$CLEAN_PORT" 0 0 wall | median)
faulty=$(run_many faulty "$FAULTY_PORT" 0 0 wall | median)
retries=$(field retries < "$WORK/faulty.last")
echo "  fault-free          ${clean} s"
echo "  10% 429 (RA 1 s)    ${faulty} s  (retries in last run: $retries; server: $(curl -s "http://127.0.0.1:$FAULTY_PORT/counters" | grep -o '"429":[0-9]*'))"
ratio=$(awk -v a="$faulty" -v b="$clean" 'BEGIN {printf "%.3f", a / b}')
echo "  ratio               ${ratio}  (target < 1.5)"
awk -v r="$ratio" 'BEGIN {exit !(r < 1.5)}' || status=1

start fast 0 ""
FAST_PORT=$PORT
CPU_N=$((RATE * 5))
echo "lm_faults: LM layer CPU at $RATE requests/s ($CPU_N calls paced by requests_per_minute=$((RATE * 60)))"
for stream in 0 1; do
    cpu=$(for _ in $(seq 1 "$RUNS"); do
              "$BUILD/lm_faults" "http://127.0.0.1:$FAST_PORT/v1" "$CPU_N" 64 "$((RATE * 60))" "$stream" | field cpu_percent
          done | median) || status=1
    echo "  stream=$stream             ${cpu}% of one core  (target < 5%)"
    awk -v c="$cpu" 'BEGIN {exit !(c < 5)}' || status=1
done
exit $status

#!/usr/bin/env bash
# run.sh — builds the libFuzzer harnesses (clang -fsanitize=fuzzer,address,undefined,
# straight from the sources) and runs each for SECONDS (default 20) on the seed
# corpus from tests/data. Usage: fuzz/run.sh [SECONDS] [harness...]
# Exits non-zero on the first crash, leak or sanitizer report (the crashing
# input is left in fuzz/out/). Needs clang and Debian's libclang-rt-dev.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_EACH="${1:-20}"
shift || true
HARNESSES=("$@")
[ ${#HARNESSES[@]} -gt 0 ] || HARNESSES=(fuzz_sse fuzz_openai fuzz_anthropic fuzz_reply fuzz_frame fuzz_snapshot fuzz_chat)
CC="${FUZZ_CC:-clang}"
OUT="$ROOT/fuzz/out"
mkdir -p "$OUT"

# The pure parsers and the leaves they use: no curl, no threads. The model's
# wire (lm_wire and the providers, SSE), its replies (reply.c), the
# sandbox child's frames (frame.c), and what rlm serve and rlm mcp read from
# their clients (cli/serve/chat.c, mcp_proto.c).
SOURCES=("$ROOT/src/lm/lm_wire.c" "$ROOT/src/lm/sse.c" "$ROOT/src/lm/lm_openai.c"
         "$ROOT/src/lm/lm_anthropic.c" "$ROOT/src/reply.c" "$ROOT/src/shared/frame.c"
         "$ROOT/src/shared/utf8.c" "$ROOT/src/shared/util.c" "$ROOT/cli/serve/chat.c"
         "$ROOT/cli/serve/long_strings.c" "$ROOT/cli/serve/mcp_proto.c")

for h in "${HARNESSES[@]}"; do
    echo "fuzz: building $h"
    if [ "$h" = fuzz_snapshot ]; then
        # The snapshot decoder builds Python objects: an embedded interpreter
        # (CPython itself is not instrumented). It leaks by design at exit.
        "$CC" -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
            -fno-sanitize-recover=undefined -I"$ROOT/src/child" -I"$ROOT/src/shared" "$ROOT/fuzz/$h.c" \
            "$ROOT/src/child/repl_snapshot.c" "$ROOT/src/shared/sandbox_policy.c" \
            $(pkg-config --cflags --libs python3-embed) -o "$OUT/$h"
    else
        "$CC" -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
            -I"$ROOT/src" -I"$ROOT/src/shared" -I"$ROOT/src/sandbox" -I"$ROOT/src/lm" -I"$ROOT/include" \
            -I"$ROOT/cli/serve" "$ROOT/fuzz/$h.c" "${SOURCES[@]}" \
            $(pkg-config --cflags --libs jansson) -o "$OUT/$h"
    fi
    corpus="$OUT/corpus-$h"
    mkdir -p "$corpus"
    case "$h" in
        fuzz_sse) cp "$ROOT"/tests/data/sse/*.sse "$corpus"/ ;;
        fuzz_openai) cp "$ROOT"/tests/data/openai/* "$corpus"/ ;;
        fuzz_anthropic) cp "$ROOT"/tests/data/anthropic/* "$corpus"/ ;;
        fuzz_reply) python3 - "$ROOT/tests/data/corpus" "$corpus" <<'PY' ;;
import glob, json, os, sys
# The model replies of the reference-style corpus: every rule's "reply".
for path in glob.glob(os.path.join(sys.argv[1], "*.json")):
    for i, rule in enumerate(json.load(open(path)).get("rules", [])):
        if isinstance(rule.get("reply"), str):
            name = "%s-%d" % (os.path.basename(path)[:-5], i)
            with open(os.path.join(sys.argv[2], name), "w") as f:
                f.write(rule["reply"])
PY
        fuzz_frame) python3 "$ROOT/fuzz/frame_seeds.py" "$corpus" ;;
        fuzz_snapshot) python3 "$ROOT/fuzz/snapshot_seeds.py" "$corpus" ;;
        fuzz_chat) python3 "$ROOT/fuzz/chat_seeds.py" "$corpus" ;;
    esac
    echo "fuzz: running $h for ${SECONDS_EACH}s"
    leaks=1
    [ "$h" = fuzz_snapshot ] && leaks=0 # CPython's caches outlive each input and the exit
    (cd "$OUT" && ASAN_OPTIONS="detect_leaks=$leaks${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
        "./$h" -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=2048 \
        -detect_leaks=$leaks -print_final_stats=1 "$corpus" 2>&1 | tail -n 12)
    # libFuzzer exits non-zero on a finding; pipefail carries it here.
done
echo "fuzz: no findings"

/* fuzz_sse — libFuzzer harness for the SSE parser and both providers' stream
 * assembly: the input is split at a position taken from its first byte, fed
 * in two reads to small limits, and every event goes to both assemblers. */
#include "lm_anthropic.h"
#include "lm_openai.h"
#include "sse.h"

#include <stdint.h>
#include <string.h>

typedef struct sinks {
    lm_stream openai, anthropic;
} sinks;

static int on_event(void *ctx, const sse_event *ev)
{
    sinks *s = ctx;
    openai_stream_event(&s->openai, ev->data, ev->data_len);
    anthropic_stream_event(&s->anthropic, ev->type, ev->data, ev->data_len);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t split = data[0] % size;
    sinks s;
    lm_stream_init(&s.openai, 4096);
    lm_stream_init(&s.anthropic, 4096);
    sse_parser p;
    sse_parser_init(&p, 512, 2048, on_event, &s);
    if (sse_feed(&p, (const char *)data + 1, split) == 0)
        sse_feed(&p, (const char *)data + 1 + split, size - 1 - split);
    lm_response r;
    memset(&r, 0, sizeof r);
    lm_stream_finish(&s.openai, &r);
    lm_response_clear(&r);
    lm_stream_finish(&s.anthropic, &r);
    lm_response_clear(&r);
    sse_parser_free(&p);
    lm_stream_free(&s.openai);
    lm_stream_free(&s.anthropic);
    return 0;
}

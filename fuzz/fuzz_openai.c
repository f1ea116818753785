/* fuzz_openai — libFuzzer harness for the OpenAI mapping: any bytes as a
 * chat completion body, as an error body, and as one stream chunk. */
#include "lm_openai.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    lm_response r;
    memset(&r, 0, sizeof r);
    openai_parse_response(body, size, &r);
    lm_response_clear(&r);
    free(lm_http_error_message(size ? data[0] * 2L + 300 : 500, body, size));
    lm_stream s;
    lm_stream_init(&s, 4096);
    openai_stream_event(&s, body, size);
    lm_stream_finish(&s, &r);
    lm_response_clear(&r);
    lm_stream_free(&s);
    return 0;
}

/* fuzz_anthropic — libFuzzer harness for the Anthropic mapping: any bytes as
 * a Messages body, as an error body, and as one stream event; plus a request
 * built from the bytes as message text. */
#include "lm_anthropic.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    lm_response r;
    memset(&r, 0, sizeof r);
    anthropic_parse_response(body, size, &r);
    lm_response_clear(&r);
    free(anthropic_error_message(529, body, size));
    lm_stream s;
    lm_stream_init(&s, 4096);
    anthropic_stream_event(&s, "message", body, size);
    lm_stream_finish(&s, &r);
    lm_response_clear(&r);
    lm_stream_free(&s);

    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    lm_message msgs[3] = {{"system", text}, {"user", text}, {"user", text}};
    lm_request req = {.model = text, .messages = msgs, .n_messages = 3};
    lm_wire_options wire = {.stream = 1, .reasoning_effort = size & 1 ? "high" : NULL};
    free(anthropic_request_body(&req, &wire));
    free(text);
    return 0;
}

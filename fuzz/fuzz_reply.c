/* fuzz_reply — libFuzzer harness for reply_parse, the parser of the root
 * model's text (untrusted: the model has read the input, which may carry
 * planted instructions): any bytes as a reply. What it returns must hold
 * together: every block a string, a final answer's text exactly when it
 * names a kind, each string within the reply's length. */
#include "reply.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reply r;
    if (reply_parse((const char *)data, size, &r) != 0)
        return 0; /* out of memory: nothing to check */
    for (size_t i = 0; i < r.n_blocks; i++)
        if (!r.blocks[i] || strlen(r.blocks[i]) > size)
            abort();
    if ((r.final_kind == REPLY_FINAL_NONE) != (r.final_text == NULL))
        abort();
    if (r.final_text && strlen(r.final_text) > size)
        abort();
    reply_clear(&r);
    return 0;
}

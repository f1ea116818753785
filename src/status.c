/* status — the public API's leaves: the version, the names of the status
 * codes and the string free. Its own file so that the engine, which names
 * statuses in the trace, depends on this leaf and not on the facade (rlm.c)
 * that calls it. */
#include "rlm.h"

#include <stdlib.h>

const char *rlm_version(void)
{
    return RLM_VERSION;
}

const char *rlm_status_name(rlm_status status)
{
    switch (status) {
    case RLM_OK: return "ok";
    case RLM_NO_ANSWER: return "no answer";
    case RLM_ERR_USAGE: return "usage error";
    case RLM_ERR_INPUT: return "input error";
    case RLM_ERR_MODEL: return "model error";
    case RLM_ERR_SANDBOX: return "sandbox error";
    case RLM_ERR_NOMEM: return "out of memory";
    case RLM_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

void rlm_string_free(char *s)
{
    free(s);
}

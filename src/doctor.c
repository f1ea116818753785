/* doctor — rlm_doctor: placeholder being written (issue 3). */
#include <stdlib.h>
#include <string.h>

#include "rlm.h"

rlm_status rlm_doctor(const rlm_config *cfg, char **report)
{
    (void)cfg;
    *report = strdup("{\"ok\": false, \"layers\": []}");
    return RLM_ERR_SANDBOX;
}

/* spread — least-outstanding-requests over an endpoint's base URLs, with
 * draining of the URLs that fail and the probe schedule that brings them
 * back (spread.h). */
#include "spread.h"

#include <stdlib.h>

int spread_init(spread *s, size_t n)
{
    s->n = n;
    s->rotor = 0;
    s->urls = calloc(n ? n : 1, sizeof *s->urls);
    if (!s->urls)
        return -1;
    for (size_t i = 0; i < n; i++)
        s->urls[i].backoff = SPREAD_PROBE_FIRST;
    return 0;
}

void spread_free(spread *s)
{
    free(s->urls);
    s->urls = NULL;
    s->n = 0;
}

size_t spread_live(const spread *s)
{
    size_t live = 0;
    for (size_t i = 0; i < s->n; i++)
        live += !s->urls[i].drained;
    return live;
}

size_t spread_pick(spread *s, size_t avoid)
{
    size_t live = spread_live(s);
    int skip_avoid = avoid < s->n && live > (s->urls[avoid].drained ? 0u : 1u);
    size_t best = s->n;
    for (size_t k = 0; k < s->n; k++) {
        size_t i = (s->rotor + k) % s->n;
        const spread_url *u = &s->urls[i];
        if ((live > 0 && u->drained) || (skip_avoid && i == avoid))
            continue;
        if (best == s->n || u->outstanding < s->urls[best].outstanding)
            best = i;
    }
    if (best == s->n)
        best = avoid < s->n ? avoid : 0;
    s->rotor = (s->rotor + 1) % (s->n ? s->n : 1);
    s->urls[best].outstanding++;
    s->urls[best].requests++;
    return best;
}

/* Drains URL i and says when to probe it, unless a probe is already on
 * its way (one chain of probes per URL). */
static int drain(spread_url *u, double *probe_in)
{
    u->drained = 1;
    if (u->probing)
        return 0;
    u->probing = 1;
    *probe_in = u->backoff;
    return 1;
}

int spread_end(spread *s, size_t i, spread_signal sig, double *probe_in)
{
    if (i >= s->n)
        return 0;
    spread_url *u = &s->urls[i];
    if (u->outstanding > 0)
        u->outstanding--;
    switch (sig) {
    case SPREAD_ALIVE:
        u->failures = 0;
        u->drained = 0;
        u->backoff = SPREAD_PROBE_FIRST;
        return 0;
    case SPREAD_NEUTRAL:
        return 0;
    case SPREAD_FAILED:
        if (++u->failures < SPREAD_FAILURES_TO_DRAIN)
            return 0;
        return drain(u, probe_in);
    case SPREAD_UNREACHABLE:
        u->failures++;
        return drain(u, probe_in);
    }
    return 0;
}

int spread_probed(spread *s, size_t i, int alive, double *probe_in)
{
    if (i >= s->n)
        return 0;
    spread_url *u = &s->urls[i];
    if (!u->drained || alive) {
        /* alive, or a request's answer brought it back first */
        u->probing = 0;
        u->drained = 0;
        u->failures = 0;
        u->backoff = SPREAD_PROBE_FIRST;
        return 0;
    }
    u->backoff = u->backoff * 2 < SPREAD_PROBE_MAX ? u->backoff * 2 : SPREAD_PROBE_MAX;
    *probe_in = u->backoff;
    return 1;
}

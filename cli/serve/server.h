/* server — the HTTP side of `rlm serve` (libmicrohttpd): the routes
 * (POST /v1/chat/completions, GET /v1/models, /health, /metrics), bearer
 * keys, the body cap, admission through the runner (429 with Retry-After
 * past the queue), non-streaming and streaming replies, and a watchdog
 * that cuts connections too slow to send their request and cancels the run
 * of a client that went away. docs/serve.md is the user's guide.
 *
 * Ownership: server_start borrows everything in serve_config for the
 * server's life; server_stop frees the server. */
#ifndef RLM_SERVE_SERVER_H
#define RLM_SERVE_SERVER_H

#include <stddef.h>

#include "keys.h"
#include "metrics.h"
#include "rlm.h"
#include "runner.h"

typedef struct serve_config {
    const char *listen;        /* a numeric IPv4 or IPv6 address */
    int port;                  /* 0: any free port (server_port says which) */
    size_t max_body;           /* bytes of a request body at most */
    int max_connections;       /* open connections at most; more are closed at once */
    double idle_timeout;       /* seconds a connection may say nothing */
    double read_timeout;       /* seconds a connection has to deliver a whole request */
    const keys *keys;          /* accepted bearer keys; none: no authentication */
    rlm_pool *pool;            /* dispatchers, zygotes, named inputs */
    const rlm_config *base;    /* every run's config before the request's own budgets */
    runner *runner;
    metrics *metrics;
    int access_log;            /* one line per request on stderr */
} serve_config;

typedef struct server server;

/* Starts listening. NULL with err (the address is taken, not an address). */
server *server_start(const serve_config *cfg, char *err, size_t errlen);

/* The port listened on. */
int server_port(const server *s);

/* From now on /health answers 503 "draining" and new runs are refused with
 * 503; the runner's drain does the rest. */
void server_begin_drain(server *s);

/* Stops listening, closes every connection (their runs must have ended:
 * drain the runner first) and frees the server. NULL is a no-op. */
void server_stop(server *s);

#endif

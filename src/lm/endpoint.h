/* endpoint — where model requests go, and the provider table. A base URL is
 * parsed once, here, with libcurl's URL API (scheme, host, port, path
 * checked; a provider's pasted ".../chat/completions" or ".../messages"
 * recognised), and every part of rlm that needs to know something about a
 * URL or a provider asks this module: the options check, the dispatcher
 * building its request URLs, the provider of a name, of a host (exact host
 * names only) or of a model name, and whether a key given for one URL may be
 * sent to another (same scheme, host and port). The table lists every wire
 * format rlm speaks (lm_wire.h's lm_provider; one row each, the first the
 * default).
 *
 * Ownership: results go into caller-provided structs and buffers; nothing
 * allocated here outlives a call; providers are static rows, never freed.
 * Pure but for libcurl's parser. */
#ifndef RLM_ENDPOINT_H
#define RLM_ENDPOINT_H

#include "lm_wire.h"

#include <stddef.h>

/* Longest base URL accepted, and most URLs in one comma-separated list. */
#define ENDPOINT_URL_MAX 2048
#define ENDPOINT_MAX_URLS 16

typedef struct endpoint_url {
    char base[ENDPOINT_URL_MAX];   /* scheme://host[:port]/path[?query]: lower-case scheme
                                    * and host, no trailing '/', no pasted endpoint path */
    char origin[ENDPOINT_URL_MAX]; /* scheme://host:port, the port always written out */
    char host[256];                /* lower case */
    int pasted_path;               /* 1: the text ended in /chat/completions or /messages,
                                    * which is dropped from base */
} endpoint_url;

/* Parses one base URL: http or https, a host, a port from 1 to 65535, no line
 * breaks. 0, or -1 with err saying what is wrong (without naming the option:
 * the caller knows which flag or variable held it). */
int endpoint_parse(const char *text, endpoint_url *out, char *err, size_t errlen);

/* Parses a comma-separated list of 1 to max URLs into out[]. 0 with *n set,
 * or -1 with err naming the bad item. */
int endpoint_parse_list(const char *list, endpoint_url *out, size_t max, size_t *n, char *err,
                        size_t errlen);

/* The full URL of a request: base with the provider's path ("/chat/completions"
 * or "/messages") appended to its path, any query kept. 0, or -1 with err. */
int endpoint_request_url(const endpoint_url *u, const lm_provider *p, char *out, size_t outlen,
                         char *err, size_t errlen);

/* The same with any path under the base ("/models"). */
int endpoint_url_with(const endpoint_url *u, const char *path, char *out, size_t outlen, char *err,
                      size_t errlen);

/* The default provider: OpenAI's chat completions, which any host not in the
 * table is taken to speak. */
const lm_provider *endpoint_default_provider(void);

/* The provider of a name ("openai", "anthropic"); NULL for NULL, "" or another. */
const lm_provider *endpoint_provider_named(const char *name);

/* The provider a host stands for: exactly its row's host ("api.anthropic.com",
 * "api.openai.com") after lower-casing; NULL for any other host, look-alikes
 * such as "api.anthropic.com.example" included. */
const lm_provider *endpoint_host_provider(const char *host);

/* The provider a model name implies ("claude-..." is Anthropic's); NULL when
 * none does. */
const lm_provider *endpoint_model_provider(const char *model);

/* The names of the table, for messages: "openai or anthropic". Truncated to
 * outlen like snprintf. */
void endpoint_provider_names(char *out, size_t outlen);

/* 1 when every URL of the list `urls` has the origin (scheme, host, port) of
 * some URL of the list `allowed`: a key given for `allowed` may then be sent
 * to `urls`. 0 otherwise, and whenever either list does not parse. */
int endpoint_list_within(const char *urls, const char *allowed);

#endif

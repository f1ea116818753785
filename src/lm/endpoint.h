/* endpoint — where model requests go. A base URL is parsed once, here, with
 * libcurl's URL API (scheme, host, port, path checked; a pasted
 * ".../chat/completions" or ".../messages" recognised), and every part of rlm
 * that needs to know something about a URL asks this module: the options
 * check, the dispatcher building its request URLs, the provider a host
 * stands for (exact host names only), the provider a model name implies,
 * each provider's default URL, and whether a key given for one URL may be
 * sent to another (same scheme, host and port).
 *
 * Ownership: results go into caller-provided structs and buffers; nothing
 * allocated here outlives a call. Pure but for libcurl's parser. */
#ifndef RLM_ENDPOINT_H
#define RLM_ENDPOINT_H

#include <stddef.h>

typedef enum endpoint_provider {
    ENDPOINT_UNKNOWN = -1,
    ENDPOINT_OPENAI = 0,      /* chat completions: OpenAI and every compatible server */
    ENDPOINT_ANTHROPIC = 1,   /* Anthropic Messages */
} endpoint_provider;

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
int endpoint_request_url(const endpoint_url *u, endpoint_provider p, char *out, size_t outlen,
                         char *err, size_t errlen);

/* The same with any path under the base ("/models"). */
int endpoint_url_with(const endpoint_url *u, const char *path, char *out, size_t outlen, char *err,
                      size_t errlen);

/* The provider a host stands for: exactly "api.anthropic.com" or
 * "api.openai.com" (after lower-casing); ENDPOINT_UNKNOWN for any other host,
 * look-alikes such as "api.anthropic.com.example" included. */
endpoint_provider endpoint_host_provider(const char *host);

/* The provider a model name implies: "claude-..." is Anthropic's;
 * ENDPOINT_UNKNOWN otherwise. */
endpoint_provider endpoint_model_provider(const char *model);

/* "openai" / "anthropic" and back (NULL, "" or another name: UNKNOWN). */
const char *endpoint_provider_name(endpoint_provider p);
endpoint_provider endpoint_provider_of_name(const char *name);

/* The provider's own API: "https://api.openai.com/v1", "https://api.anthropic.com/v1". */
const char *endpoint_default_url(endpoint_provider p);

/* 1 when every URL of the list `urls` has the origin (scheme, host, port) of
 * some URL of the list `allowed`: a key given for `allowed` may then be sent
 * to `urls`. 0 otherwise, and whenever either list does not parse. */
int endpoint_list_within(const char *urls, const char *allowed);

#endif

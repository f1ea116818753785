/* endpoint — base URLs parsed with libcurl's URL API, the provider table
 * (by name, host or model name), and which URLs a key may be sent to. */
#include "endpoint.h"

#include "lm_anthropic.h"
#include "lm_openai.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Every wire format rlm speaks; the first is the default. */
static const lm_provider *const providers[] = {&lm_provider_openai, &lm_provider_anthropic};
#define N_PROVIDERS (sizeof providers / sizeof providers[0])

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

/* One part of h, copied into out; -1 when it cannot be read or does not fit. */
static int url_part(CURLU *h, CURLUPart part, unsigned flags, char *out, size_t outlen)
{
    char *v = NULL;
    if (curl_url_get(h, part, &v, flags) != CURLUE_OK || !v)
        return -1;
    int rc = strlen(v) < outlen ? 0 : -1;
    if (rc == 0)
        memcpy(out, v, strlen(v) + 1);
    curl_free(v);
    return rc;
}

int endpoint_parse(const char *text, endpoint_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!text || !text[0]) {
        snprintf(err, errlen, "no URL given");
        return -1;
    }
    if (strlen(text) >= ENDPOINT_URL_MAX) {
        snprintf(err, errlen, "URL longer than %d characters", ENDPOINT_URL_MAX - 1);
        return -1;
    }
    if (strpbrk(text, "\r\n\t ")) {
        snprintf(err, errlen, "'%s' holds a space or a line break", text);
        return -1;
    }
    if (strncasecmp(text, "http://", 7) != 0 && strncasecmp(text, "https://", 8) != 0) {
        snprintf(err, errlen, "'%s' must start with http:// or https://", text);
        return -1;
    }
    CURLU *h = curl_url();
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = -1;
    char scheme[16], port[16], path[ENDPOINT_URL_MAX];
    CURLUcode uc = curl_url_set(h, CURLUPART_URL, text, 0);
    if (uc == CURLUE_BAD_PORT_NUMBER) {
        snprintf(err, errlen, "'%s': the port must be a number from 1 to 65535", text);
        goto done;
    }
    if (uc != CURLUE_OK) {
        snprintf(err, errlen, "'%s' is not a URL: %s", text, curl_url_strerror(uc));
        goto done;
    }
    if (url_part(h, CURLUPART_SCHEME, 0, scheme, sizeof scheme) != 0 ||
        url_part(h, CURLUPART_HOST, 0, out->host, sizeof out->host) != 0 || !out->host[0]) {
        snprintf(err, errlen, "'%s' has no host", text);
        goto done;
    }
    if (url_part(h, CURLUPART_PORT, CURLU_DEFAULT_PORT, port, sizeof port) != 0 ||
        strcmp(port, "0") == 0) {
        snprintf(err, errlen, "'%s': the port must be a number from 1 to 65535", text);
        goto done;
    }
    lower(scheme);
    lower(out->host);
    if (url_part(h, CURLUPART_PATH, 0, path, sizeof path) != 0)
        path[0] = '\0';
    size_t n = strlen(path);
    while (n > 0 && path[n - 1] == '/')
        path[--n] = '\0';
    for (size_t i = 0; i < N_PROVIDERS; i++) {
        size_t k = strlen(providers[i]->path);
        if (n >= k && strcmp(path + n - k, providers[i]->path) == 0) {
            n -= k;
            path[n] = '\0';
            out->pasted_path = 1;
            break;
        }
    }
    /* The fragment is never sent; the host is written back lower-cased. */
    if (curl_url_set(h, CURLUPART_FRAGMENT, NULL, 0) != CURLUE_OK ||
        curl_url_set(h, CURLUPART_HOST, out->host, 0) != CURLUE_OK ||
        curl_url_set(h, CURLUPART_SCHEME, scheme, 0) != CURLUE_OK ||
        curl_url_set(h, CURLUPART_PATH, n ? path : "/", 0) != CURLUE_OK ||
        url_part(h, CURLUPART_URL, 0, out->base, sizeof out->base) != 0) {
        snprintf(err, errlen, "'%s' cannot be used as a URL", text);
        goto done;
    }
    if (!n) {
        /* "https://host/" → "https://host", and "https://host/?q" → "https://host?q" */
        char *slash = strstr(out->base, "://");
        slash = slash ? strchr(slash + 3, '/') : NULL;
        if (slash && (slash[1] == '\0' || slash[1] == '?'))
            memmove(slash, slash + 1, strlen(slash + 1) + 1);
    }
    if ((size_t)snprintf(out->origin, sizeof out->origin, "%s://%s:%s", scheme, out->host, port) >=
        sizeof out->origin) {
        snprintf(err, errlen, "URL longer than %d characters", ENDPOINT_URL_MAX - 1);
        goto done;
    }
    rc = 0;
done:
    curl_url_cleanup(h);
    return rc;
}

int endpoint_parse_list(const char *list, endpoint_url *out, size_t max, size_t *n, char *err,
                        size_t errlen)
{
    *n = 0;
    const char *p = list ? list : "";
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (*n == max) {
            snprintf(err, errlen, "at most %zu URLs", max);
            return -1;
        }
        char item[ENDPOINT_URL_MAX];
        if (len >= sizeof item) {
            snprintf(err, errlen, "URL longer than %d characters", ENDPOINT_URL_MAX - 1);
            return -1;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        if (endpoint_parse(item, &out[*n], err, errlen) != 0)
            return -1;
        (*n)++;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

int endpoint_request_url(const endpoint_url *u, const lm_provider *p, char *out, size_t outlen,
                         char *err, size_t errlen)
{
    return endpoint_url_with(u, p->path, out, outlen, err, errlen);
}

int endpoint_url_with(const endpoint_url *u, const char *suffix, char *out, size_t outlen, char *err,
                      size_t errlen)
{
    CURLU *h = curl_url();
    char path[ENDPOINT_URL_MAX + 32];
    int rc = -1;
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (curl_url_set(h, CURLUPART_URL, u->base, 0) != CURLUE_OK ||
        url_part(h, CURLUPART_PATH, 0, path, ENDPOINT_URL_MAX) != 0) {
        snprintf(err, errlen, "'%s' cannot be used as a URL", u->base);
        goto done;
    }
    size_t n = strlen(path);
    while (n > 0 && path[n - 1] == '/')
        path[--n] = '\0';
    snprintf(path + n, sizeof path - n, "%s", suffix);
    if (curl_url_set(h, CURLUPART_PATH, path, 0) != CURLUE_OK ||
        url_part(h, CURLUPART_URL, 0, out, outlen) != 0) {
        snprintf(err, errlen, "'%s' is too long to make a request URL from", u->base);
        goto done;
    }
    rc = 0;
done:
    curl_url_cleanup(h);
    return rc;
}

const lm_provider *endpoint_default_provider(void)
{
    return providers[0];
}

const lm_provider *endpoint_provider_named(const char *name)
{
    for (size_t i = 0; name && i < N_PROVIDERS; i++)
        if (strcmp(name, providers[i]->name) == 0)
            return providers[i];
    return NULL;
}

const lm_provider *endpoint_host_provider(const char *host)
{
    for (size_t i = 0; host && i < N_PROVIDERS; i++)
        if (providers[i]->host && strcasecmp(host, providers[i]->host) == 0)
            return providers[i];
    return NULL;
}

const lm_provider *endpoint_model_provider(const char *model)
{
    for (size_t i = 0; model && i < N_PROVIDERS; i++) {
        const char *prefix = providers[i]->model_prefix;
        if (prefix && strncmp(model, prefix, strlen(prefix)) == 0)
            return providers[i];
    }
    return NULL;
}

void endpoint_provider_names(char *out, size_t outlen)
{
    size_t used = 0;
    if (outlen)
        out[0] = '\0';
    for (size_t i = 0; i < N_PROVIDERS && used < outlen; i++) {
        const char *sep = i == 0 ? "" : i + 1 == N_PROVIDERS ? " or " : ", ";
        int n = snprintf(out + used, outlen - used, "%s%s", sep, providers[i]->name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

int endpoint_list_within(const char *urls, const char *allowed)
{
    endpoint_url *mine = NULL, *theirs = NULL;
    size_t n_mine = 0, n_theirs = 0;
    char err[256];
    int ok = 0;
    /* Two lists of 16 URLs are 140 KB: on the heap, not the stack. */
    mine = calloc(ENDPOINT_MAX_URLS, sizeof *mine);
    theirs = calloc(ENDPOINT_MAX_URLS, sizeof *theirs);
    if (!mine || !theirs ||
        endpoint_parse_list(urls, mine, ENDPOINT_MAX_URLS, &n_mine, err, sizeof err) != 0 ||
        endpoint_parse_list(allowed, theirs, ENDPOINT_MAX_URLS, &n_theirs, err, sizeof err) != 0)
        goto done;
    ok = 1;
    for (size_t i = 0; i < n_mine && ok; i++) {
        int found = 0;
        for (size_t k = 0; k < n_theirs && !found; k++)
            found = strcmp(mine[i].origin, theirs[k].origin) == 0;
        ok = found;
    }
done:
    free(mine);
    free(theirs);
    return ok;
}

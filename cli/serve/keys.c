/* keys — bearer keys as digests, compared in constant time (keys.h). */
#include "keys.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "util.h"

/* A key file is small: this many bytes at most. */
#define KEYS_FILE_MAX ((size_t)1 << 20)

struct keys {
    unsigned char digest[KEYS_MAX][SHA256_DIGEST_LENGTH];
    size_t n;
};

keys *keys_new(void)
{
    return calloc(1, sizeof(keys));
}

void keys_free(keys *k)
{
    if (k)
        OPENSSL_cleanse(k, sizeof *k);
    free(k);
}

size_t keys_count(const keys *k)
{
    return k->n;
}

static int key_ok(const char *s, size_t n)
{
    if (n == 0 || n > KEYS_MAX_LEN)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~')
            return 0;
    return 1;
}

int keys_add_file(keys *k, const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "--api-key-file %s: %s", path, strerror(errno));
        return -1;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, errlen, "--api-key-file %s: others can read it (mode %03o); keys are "
                 "secrets: chmod 600 it", path, (unsigned)(st.st_mode & 0777));
        return -1;
    }
    size_t len = 0;
    char *text = file_read(path, KEYS_FILE_MAX, &len);
    if (!text) {
        snprintf(err, errlen, "--api-key-file %s: %s", path,
                 errno == EFBIG ? "larger than 1 MiB" : strerror(errno));
        return -1;
    }
    int rc = 0;
    size_t line_no = 0, before = k->n;
    for (char *line = text; rc == 0 && line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        char *end = nl ? nl : text + len;
        line_no++;
        char *a = line, *b = end;
        while (a < b && isspace((unsigned char)*a))
            a++;
        while (b > a && isspace((unsigned char)b[-1]))
            b--;
        if (a < b && *a != '#') {
            if (!key_ok(a, (size_t)(b - a))) {
                snprintf(err, errlen, "--api-key-file %s line %zu: a key is 1-%d printable "
                         "characters without spaces", path, line_no, KEYS_MAX_LEN);
                rc = -1;
            } else if (k->n == KEYS_MAX) {
                snprintf(err, errlen, "--api-key-file %s: more than %d keys", path, KEYS_MAX);
                rc = -1;
            } else {
                SHA256((const unsigned char *)a, (size_t)(b - a), k->digest[k->n++]);
            }
        }
        line = end + 1;
    }
    if (rc == 0 && k->n == before) {
        snprintf(err, errlen, "--api-key-file %s holds no key", path);
        rc = -1;
    }
    OPENSSL_cleanse(text, len);
    free(text);
    return rc;
}

int keys_check(const keys *k, const char *header)
{
    if (!header || strncasecmp(header, "Bearer ", 7) != 0)
        return 0;
    const char *token = header + 7;
    while (*token == ' ')
        token++;
    size_t n = strlen(token);
    while (n > 0 && token[n - 1] == ' ')
        n--;
    if (!key_ok(token, n))
        return 0;
    /* Digests have one length whatever the key's, and every one is
     * compared: the time taken says nothing of which key came close. */
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)token, n, digest);
    int found = 0;
    for (size_t i = 0; i < k->n; i++) {
        int same = CRYPTO_memcmp(digest, k->digest[i], sizeof digest) == 0;
        found |= same * (int)(i + 1) * (found == 0);
    }
    OPENSSL_cleanse(digest, sizeof digest);
    return found;
}

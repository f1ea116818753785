/* cache — model replies in SQLite keyed by the SHA-256 of the request (the
 * digest from OpenSSL's libcrypto), shared safely between processes through
 * WAL mode and a busy timeout. */
#include "cache.h"

#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

/* How long a writer waits for another process holding the lock. */
#define CACHE_BUSY_TIMEOUT_MS 5000
#define CACHE_PATH_MAX 4096

struct cache {
    sqlite3 *db;
    sqlite3_stmt *get, *put;
};

static void hex_key(const unsigned char *digest, unsigned int n, char key[CACHE_KEY_LEN])
{
    static const char hex[] = "0123456789abcdef";
    for (unsigned int i = 0; i < n; i++) {
        key[2 * i] = hex[digest[i] >> 4];
        key[2 * i + 1] = hex[digest[i] & 15];
    }
    key[64] = '\0';
}

int cache_hash(const void *data, size_t len, char key[CACHE_KEY_LEN])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(data, len, digest, &n, EVP_sha256(), NULL) != 1 || n != 32)
        return -1;
    hex_key(digest, n, key);
    return 0;
}

int cache_hash_parts(const void *const *parts, const size_t *lens, size_t n, char key[CACHE_KEY_LEN])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int got = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char len[8];
        for (int b = 0; b < 8; b++)
            len[b] = (unsigned char)((unsigned long long)lens[i] >> (8 * b));
        ok = EVP_DigestUpdate(ctx, len, sizeof len) == 1 && EVP_DigestUpdate(ctx, parts[i], lens[i]) == 1;
    }
    ok = ok && EVP_DigestFinal_ex(ctx, digest, &got) == 1 && got == 32;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -1;
    hex_key(digest, got, key);
    return 0;
}

static const char cache_schema[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE IF NOT EXISTS replies ("
    " key TEXT PRIMARY KEY,"
    " content TEXT NOT NULL,"
    " reasoning TEXT,"
    " finish_reason TEXT,"
    " prompt_tokens INTEGER NOT NULL,"
    " completion_tokens INTEGER NOT NULL,"
    " created REAL NOT NULL);";

cache *cache_open(const char *dir, char *err, size_t errlen)
{
    cache *c = calloc(1, sizeof *c);
    char path[CACHE_PATH_MAX];
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (dir_make_all(dir) != 0) {
        snprintf(err, errlen, "cannot create cache directory '%s': %s", dir, strerror(errno));
        goto fail;
    }
    int n = snprintf(path, sizeof path, "%s/cache.sqlite", dir);
    if (n < 0 || (size_t)n >= sizeof path) {
        snprintf(err, errlen, "cache directory path is too long");
        goto fail;
    }
    if (sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        goto fail_db;
    sqlite3_busy_timeout(c->db, CACHE_BUSY_TIMEOUT_MS);
    /* The first statement that reads the file is where a corrupt or foreign
     * file shows itself ("file is not a database"). */
    if (sqlite3_exec(c->db, cache_schema, NULL, NULL, NULL) != SQLITE_OK)
        goto fail_db;
    if (sqlite3_prepare_v2(c->db,
                           "SELECT content, reasoning, finish_reason, prompt_tokens, completion_tokens "
                           "FROM replies WHERE key = ?1",
                           -1, &c->get, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(c->db,
                           "INSERT OR REPLACE INTO replies (key, content, reasoning, finish_reason, "
                           "prompt_tokens, completion_tokens, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                           -1, &c->put, NULL) != SQLITE_OK)
        goto fail_db;
    return c;
fail_db:
    snprintf(err, errlen, "cache file '%s' is unusable: %s", path,
             c->db ? sqlite3_errmsg(c->db) : "cannot open");
fail:
    cache_close(c);
    return NULL;
}

static char *column_text(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    if (!t)
        return NULL;
    return str_dup_len((const char *)t, (size_t)sqlite3_column_bytes(st, col));
}

int cache_get(cache *c, const char *key, cache_entry *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int rc = -1;
    sqlite3_bind_text(c->get, 1, key, -1, SQLITE_STATIC);
    int step = sqlite3_step(c->get);
    if (step == SQLITE_DONE) {
        rc = 0;
    } else if (step == SQLITE_ROW) {
        out->content = column_text(c->get, 0);
        out->content_len = out->content ? (size_t)sqlite3_column_bytes(c->get, 0) : 0;
        out->reasoning = column_text(c->get, 1);
        out->finish_reason = column_text(c->get, 2);
        out->prompt_tokens = (long)sqlite3_column_int64(c->get, 3);
        out->completion_tokens = (long)sqlite3_column_int64(c->get, 4);
        if (out->content) {
            rc = 1;
        } else {
            snprintf(err, errlen, "cache: out of memory");
            cache_entry_clear(out);
        }
    } else {
        snprintf(err, errlen, "cache read failed: %s", sqlite3_errmsg(c->db));
    }
    sqlite3_reset(c->get);
    sqlite3_clear_bindings(c->get);
    return rc;
}

int cache_put(cache *c, const char *key, const cache_entry *e, char *err, size_t errlen)
{
    size_t len = !e->content ? 0 : e->content_len ? e->content_len : strlen(e->content);
    /* A reply past SQLite's length limit (SQLITE_TOOBIG) is an error, not a
     * NULL stored in its place. */
    int bound = sqlite3_bind_text(c->put, 1, key, -1, SQLITE_STATIC);
    if (bound == SQLITE_OK)
        bound = len > INT_MAX ? SQLITE_TOOBIG
                              : sqlite3_bind_text(c->put, 2, e->content ? e->content : "", (int)len,
                                                  SQLITE_STATIC);
    if (bound == SQLITE_OK && e->reasoning)
        bound = sqlite3_bind_text(c->put, 3, e->reasoning, -1, SQLITE_STATIC);
    if (bound == SQLITE_OK && e->finish_reason)
        bound = sqlite3_bind_text(c->put, 4, e->finish_reason, -1, SQLITE_STATIC);
    if (bound == SQLITE_OK)
        bound = sqlite3_bind_int64(c->put, 5, e->prompt_tokens);
    if (bound == SQLITE_OK)
        bound = sqlite3_bind_int64(c->put, 6, e->completion_tokens);
    if (bound == SQLITE_OK)
        bound = sqlite3_bind_double(c->put, 7, clock_wall());
    int step = bound == SQLITE_OK ? sqlite3_step(c->put) : bound;
    int rc = 0;
    if (bound != SQLITE_OK) {
        snprintf(err, errlen, "cache write failed: %s", sqlite3_errstr(bound));
        rc = -1;
    } else if (step != SQLITE_DONE) {
        snprintf(err, errlen, "cache write failed: %s", sqlite3_errmsg(c->db));
        rc = -1;
    }
    sqlite3_reset(c->put);
    sqlite3_clear_bindings(c->put);
    return rc;
}

void cache_entry_clear(cache_entry *e)
{
    free(e->content);
    free(e->reasoning);
    free(e->finish_reason);
    memset(e, 0, sizeof *e);
}

void cache_close(cache *c)
{
    if (!c)
        return;
    sqlite3_finalize(c->get);
    sqlite3_finalize(c->put);
    sqlite3_close(c->db);
    free(c);
}

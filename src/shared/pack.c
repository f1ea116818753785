/* pack — the context pack (pack.h): making and sealing its memfd, the pack
 * of one raw text, and reading a pack back with every offset checked. */
#include "pack.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

int pack_create(size_t total, int *fd_out, char **map_out, char *err, size_t errlen)
{
    *fd_out = -1;
    *map_out = NULL;
    int fd = memfd_create("rlm-pack", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || ftruncate(fd, (off_t)total) != 0) {
        snprintf(err, errlen, "cannot create the context pack: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    void *map = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "cannot map the context pack: %s", strerror(errno));
        close(fd);
        return -1;
    }
    /* A process another thread forks (a sandbox spawned on the way to its
     * exec) would get a copy of this writable mapping, and while it holds
     * one the seal fails with EBUSY: two runs of one process starting at
     * once hit it. */
    madvise(map, total, MADV_DONTFORK);
    *fd_out = fd;
    *map_out = map;
    return 0;
}

/* Seals fd (F_SEAL_SHRINK | GROW | WRITE | SEAL). A process another thread
 * forked in the instant between a writable mapping's mmap and its
 * MADV_DONTFORK holds a copy of it until its exec, a few milliseconds, and
 * the seal fails with EBUSY meanwhile: that is retried for up to a second.
 * 0, or -1 with err set and fd closed. */
static int seal(int fd, char *err, size_t errlen)
{
    const struct timespec pause = {.tv_nsec = 2 * 1000 * 1000};
    int rc;
    for (int tries = 0;; tries++) {
        rc = fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
        if (rc == 0 || errno != EBUSY || tries >= 500)
            break;
        nanosleep(&pause, NULL);
    }
    if (rc != 0) {
        snprintf(err, errlen, "cannot seal the context pack: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return 0;
}

int pack_seal(int fd, char *map, size_t total, char *err, size_t errlen)
{
    munmap(map, total);
    return seal(fd, err, errlen);
}

int pack_write_str(size_t data_len, int *fd_out, size_t *len_out, char *err, size_t errlen)
{
    /* The header, one entry, and the name "" (its NUL): written, not
     * mapped, so no fork can hold a writable mapping of it. */
    enum { INDEX_OFF = (sizeof(pack_header) + 63) / 64 * 64,
           NAMES_OFF = INDEX_OFF + sizeof(pack_entry), TOTAL = NAMES_OFF + 1 };
    char bytes[TOTAL];
    memset(bytes, 0, sizeof bytes);
    /* Empty, it has no data descriptor: inline, with no bytes. */
    pack_header h = {.version = 1, .kind = INGEST_STR, .flags = data_len ? PACK_EXTERNAL : 0,
                     .n_docs = 1, .index_off = INDEX_OFF, .names_off = NAMES_OFF, .names_len = 1,
                     .data_off = data_len ? 0 : TOTAL, .data_len = data_len};
    memcpy(h.magic, PACK_MAGIC, sizeof h.magic);
    pack_entry e = {.data_len = data_len};
    memcpy(bytes, &h, sizeof h);
    memcpy(bytes + INDEX_OFF, &e, sizeof e);
    *fd_out = memfd_create("rlm-pack", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (*fd_out < 0 || write_full(*fd_out, bytes, sizeof bytes) != 0) {
        snprintf(err, errlen, "cannot create the context pack: %s", strerror(errno));
        if (*fd_out >= 0)
            close(*fd_out);
        *fd_out = -1;
        return -1;
    }
    if (seal(*fd_out, err, errlen) != 0) {
        *fd_out = -1;
        return -1;
    }
    *len_out = TOTAL;
    return 0;
}

int pack_read(const void *pack, size_t len, const void *data, size_t data_len, ingest_kind *kind,
              ingest_doc **docs_out, size_t *n_docs, char *err, size_t errlen)
{
    *docs_out = NULL;
    *n_docs = 0;
    const char *p = pack;
    pack_header h;
    if (len < sizeof h) {
        snprintf(err, errlen, "context pack: too short");
        return -1;
    }
    memcpy(&h, p, sizeof h);
    if (memcmp(h.magic, PACK_MAGIC, sizeof h.magic) != 0 || h.version != 1 || h.kind > 2) {
        snprintf(err, errlen, "context pack: bad header");
        return -1;
    }
    int external = (h.flags & PACK_EXTERNAL) != 0;
    const char *base = external ? data : p + h.data_off;
    size_t base_len = external ? data_len : (size_t)h.data_len;
    if (h.index_off > len || h.n_docs > (len - h.index_off) / sizeof(pack_entry) ||
        h.names_off > len || h.names_len > len - h.names_off ||
        (!external && (h.data_off > len || h.data_len > len - h.data_off)) ||
        (external && (!data || h.data_len != data_len))) {
        snprintf(err, errlen, "context pack: sections out of bounds");
        return -1;
    }
    ingest_doc *docs = calloc(h.n_docs ? h.n_docs : 1, sizeof *docs);
    if (!docs) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const char *names = p + h.names_off;
    for (size_t i = 0; i < h.n_docs; i++) {
        pack_entry e;
        memcpy(&e, p + h.index_off + i * sizeof e, sizeof e);
        if (e.name_off >= h.names_len || e.name_len >= h.names_len - e.name_off ||
            names[e.name_off + e.name_len] != '\0' || e.data_off > base_len ||
            e.data_len > base_len - e.data_off) {
            snprintf(err, errlen, "context pack: document %zu out of bounds", i);
            free(docs);
            return -1;
        }
        docs[i].name = names + e.name_off;
        docs[i].data = e.data_len ? base + e.data_off : NULL;
        docs[i].len = e.data_len;
    }
    *kind = (ingest_kind)h.kind;
    *docs_out = docs;
    *n_docs = h.n_docs;
    return 0;
}

ingest_format pack_format(const void *pack, size_t len)
{
    pack_header h;
    if (!pack || len < sizeof h)
        return INGEST_TEXT;
    memcpy(&h, pack, sizeof h);
    return h.flags & PACK_JSONL ? INGEST_JSONL : h.flags & PACK_JSON ? INGEST_JSON : INGEST_TEXT;
}

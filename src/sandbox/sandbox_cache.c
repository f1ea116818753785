/* sandbox_cache — the host's search-index service for a sandbox child.
 *
 * Design note. The host trusts nothing a child sends and keeps no state a
 * child wrote. The index of an input is a function of the input alone, so the
 * host computes it from its own descriptors of that input and only accepts
 * the child's request as a request: the key it names must be the one the
 * host computes, and no byte from the child reaches a file. Building here
 * costs what building in the child costs (one pass, bounded by the input's
 * size: about 13 ms and 0.7 MB of index per MB of text on the machine of
 * bench/); the child waits for it instead of building its own, and then maps
 * a file (page cache) instead of holding the index in its heap.
 *
 * The host never maps a file that could shrink under it (a user's input file
 * truncated during a run would be SIGBUS in the host): a descriptor sealed
 * against shrinking (the packs and texts the host made itself) is mapped,
 * anything else is copied with pread into anonymous memory for the build and
 * released at once. */
#include "sandbox_cache.h"

#include "fdpass.h"
#include "pack.h"
#include "search.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

struct sandbox_cache {
    pthread_t thread;
    int sock;
    char *dir;
    sandbox_input in; /* the first input's descriptors, borrowed from the sandbox */
    atomic_int stop;
    /* What requests settled, so that asking again costs nothing: the
     * input's key, and the index's descriptor (-1: none to give). */
    int key_known;
    int index_tried;
    char key[33];
    int index_fd;
};

/* Bytes of one descriptor, readable without SIGBUS for as long as it is
 * held: a mapping when the file is sealed against shrinking, else a copy. */
typedef struct held_bytes {
    void *data;
    size_t len;
} held_bytes;

static int hold_bytes(int fd, size_t len, held_bytes *out, const atomic_int *stop)
{
    out->data = NULL;
    out->len = len;
    if (len == 0)
        return 0;
    struct stat st;
    if (fstat(fd, &st) != 0 || (S_ISREG(st.st_mode) && (unsigned long long)st.st_size < len))
        return -1;
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals >= 0 && (seals & F_SEAL_SHRINK)) {
        void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED)
            return -1;
        out->data = map;
        return 0;
    }
    char *copy = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED)
        return -1;
    for (size_t done = 0; done < len;) {
        size_t want = len - done < (64u << 20) ? len - done : (64u << 20);
        ssize_t n = pread(fd, copy + done, want, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || atomic_load(stop)) { /* shrank meanwhile, or unreadable */
            munmap(copy, len);
            return -1;
        }
        done += (size_t)n;
    }
    out->data = copy;
    return 0;
}

static void release_bytes(held_bytes *b)
{
    if (b->data)
        munmap(b->data, b->len);
    b->data = NULL;
}

static int key_ok(const char *key)
{
    for (int i = 0; i < 32; i++)
        if (!((key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'f')))
            return 0;
    return 1;
}

/* Reads the input for a request naming key: its key, then, if key is it,
 * the index found or built. Called until the index has been tried and at
 * most once with another key, so that no request can make the host read
 * the input more than twice or build more than once. */
static void settle(sandbox_cache *c, const char key[32])
{
    const sandbox_input *in = &c->in;
    held_bytes pack = {0}, data = {0};
    ingest_doc *docs = NULL;
    size_t n_docs = 0;
    char err[512];
    if (in->context_fd < 0 || hold_bytes(in->context_fd, in->context_len, &pack, &c->stop) != 0) {
        c->index_tried = 1;
        goto done;
    }
    /* The sandbox's copy of an input is always a pack (sandbox_input_copy). */
    ingest_kind kind;
    if ((in->data_fd >= 0 && hold_bytes(in->data_fd, in->data_len, &data, &c->stop) != 0) ||
        pack_read(pack.data, pack.len, data.data, data.len, &kind, &docs, &n_docs, err,
                  sizeof err) != 0) {
        c->index_tried = 1;
        goto done;
    }
    search_content_key(docs, n_docs, SEARCH_CHUNK_CHARS, c->key);
    c->key_known = 1;
    if (memcmp(c->key, key, 32) != 0)
        goto done;
    c->index_tried = 1;
    int built;
    c->index_fd = search_cache_fd(c->dir, docs, n_docs, SEARCH_CHUNK_CHARS, &c->stop, &built,
                                  err, sizeof err);
done:
    free(docs);
    release_bytes(&data);
    release_bytes(&pack);
}

/* One byte, 1 with the index's descriptor attached or 0 without; a child
 * that stopped listening is no concern of the service's. */
static void reply(int sock, int fd)
{
    char ignored[128];
    fd_send(sock, fd >= 0, &fd, fd >= 0, ignored, sizeof ignored);
}

static void *cache_main(void *arg)
{
    sandbox_cache *c = arg;
    char req[33];
    while (!atomic_load(&c->stop) && read_full(c->sock, req, sizeof req) == 0) {
        if (req[0] != 'L' || !key_ok(req + 1))
            break;
        int ours = c->key_known && memcmp(c->key, req + 1, 32) == 0;
        if (!c->index_tried && (ours || !c->key_known))
            settle(c, req + 1);
        ours = c->key_known && memcmp(c->key, req + 1, 32) == 0;
        reply(c->sock, ours ? c->index_fd : -1);
    }
    shutdown(c->sock, SHUT_RDWR);
    return NULL;
}

int sandbox_cache_start(const char *cache_dir, const sandbox_input *input, int sock,
                        sandbox_cache **out)
{
    *out = NULL;
    sandbox_cache *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->in = *input;
    c->dir = strdup(cache_dir);
    c->index_fd = -1;
    atomic_init(&c->stop, 0);
    c->sock = sock;
    if (!c->dir || pthread_create(&c->thread, NULL, cache_main, c) != 0) {
        free(c->dir);
        free(c);
        return -1;
    }
    *out = c;
    return 0;
}

void sandbox_cache_stop(sandbox_cache *c)
{
    if (!c)
        return;
    atomic_store(&c->stop, 1);
    shutdown(c->sock, SHUT_RDWR); /* wakes a read the child left waiting */
    pthread_join(c->thread, NULL);
    close(c->sock);
    if (c->index_fd >= 0)
        close(c->index_fd);
    free(c->dir);
    free(c);
}

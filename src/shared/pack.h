/* pack — the context pack's format, shared by the host that writes it
 * (ingest_pack, ingest.c) and the sandbox child that reads it: the header
 * and index layout (docs/internals/context-format.md), and reading a pack
 * back with every offset checked. The child links this file, not the
 * directory walker.
 *
 * Ownership: pack_read's *docs is malloc'd (the caller frees it); its names
 * and data point into the caller's mappings, which it keeps. */
#ifndef RLM_PACK_H
#define RLM_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "docs.h"

#define PACK_MAGIC "RLMCTX1"

/* Header flags: the data lives in a second fd; the documents are JSON
 * values, or JSON lines (ingest_format). */
enum { PACK_EXTERNAL = 1, PACK_JSON = 2, PACK_JSONL = 4 };

typedef struct pack_header {
    char magic[8];
    uint32_t version, kind;
    uint32_t flags, reserved;
    uint64_t n_docs;
    uint64_t index_off;
    uint64_t names_off, names_len;
    uint64_t data_off, data_len;
} pack_header;

typedef struct pack_entry {
    uint64_t name_off;   /* from names_off; the name is NUL-terminated */
    uint64_t name_len;
    uint64_t data_off;   /* from data_off (inline) or the data fd's start (external) */
    uint64_t data_len;
} pack_entry;

/* A pack read back: validates every offset against the lengths before
 * trusting it. data/data_len is the mapping of the data fd for an external
 * pack (NULL/0 for inline). *docs is malloc'd, its names and data point into
 * the mappings; the caller frees it with free() and keeps the mappings.
 * 0, or -1 with err set. */
int pack_read(const void *pack, size_t len, const void *data, size_t data_len, ingest_kind *kind,
              ingest_doc **docs, size_t *n_docs, char *err, size_t errlen);

/* The format a valid pack was made with (read from its header). */
ingest_format pack_format(const void *pack, size_t len);

/* Writing a pack: pack_create makes a memfd of total bytes and maps it
 * writable (*map); the writer fills it, then pack_seal unmaps and seals it
 * (F_SEAL_SHRINK | GROW | WRITE | SEAL: neither side can change what the
 * other reads). Both return 0, or -1 with err set and fd closed. */
int pack_create(size_t total, int *fd, char **map, char *err, size_t errlen);
int pack_seal(int fd, char *map, size_t total, char *err, size_t errlen);

/* The pack of one str document whose bytes are the first data_len bytes of
 * an external data descriptor (raw UTF-8 text; none when data_len is 0):
 * how the sandbox layer hands the child a text given as raw bytes. 0 with *fd (the caller closes it) and
 * *len, or -1 with err set. */
int pack_write_str(size_t data_len, int *fd, size_t *len, char *err, size_t errlen);

#endif

/* pack — reading the context pack the host wrote (pack.h). */
#include "pack.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

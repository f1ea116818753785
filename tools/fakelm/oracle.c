/* oracle — fakelm's oracle mode: answers computed from a benchmark task's key. */
#include "fakelm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Oracle mode answers the sub-calls of generated benchmark tasks from their
 * answer key (taskgen's key.jsonl), so a scripted root plus this oracle plays a
 * competent model end to end. The key is read whole into one buffer and its
 * strings are used in place (the quotes that end them become NULs), and an
 * open-addressing hash table points into it: a 430K-line, 40 MB key costs the
 * file plus ~24 bytes per line and loads in a fraction of a second, and a
 * lookup is one hash and one compare. Lines holding JSON escapes take the slow
 * path through jansson and keep their own copies. */

#define ORACLE_MAX_KEY ((off_t)4 << 30)   /* largest key file */
#define ORACLE_MAX_FIELDS 8               /* string fields kept per key line */

static uint64_t oracle_hash(const char *a, size_t alen, const char *b, size_t blen)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, with a separator between the parts */
    for (size_t i = 0; i < alen; i++)
        h = (h ^ (unsigned char)a[i]) * 0x100000001b3ULL;
    h = (h ^ 0x1f) * 0x100000001b3ULL;
    for (size_t i = 0; i < blen; i++)
        h = (h ^ (unsigned char)b[i]) * 0x100000001b3ULL;
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL; /* splitmix64's finaliser: FNV's low bits are weak */
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBULL;
    return h ^ (h >> 31);
}

void oracle_free(oracle *o)
{
    for (size_t i = 0; i < o->ncopies; i++)
        free(o->copies[i]);
    free(o->copies);
    free(o->slots);
    free(o->entries);
    free(o->text);
    memset(o, 0, sizeof *o);
}

/* The slot holding (a, b), or the free slot where it belongs. The slots are
 * 8 bytes with 32 bits of the hash, so a probe rarely touches an entry or the
 * key text it does not need: on a 430K-line key the lookups are cache-bound. */
static uint64_t *oracle_slot(const oracle *o, const char *a, size_t alen, const char *b, size_t blen)
{
    uint64_t h = oracle_hash(a, alen, b, blen), tag = h >> 32;
    for (size_t i = (size_t)h & o->mask;; i = (i + 1) & o->mask) {
        uint64_t *slot = &o->slots[i];
        if (*slot == 0)
            return slot;
        if ((*slot >> 32) != tag)
            continue;
        const oracle_entry *e = &o->entries[(*slot & 0xFFFFFFFFu) - 1];
        if (e->alen == alen && e->blen == blen && memcmp(e->a, a, alen) == 0 &&
            (blen == 0 || memcmp(e->b, b, blen) == 0))
            return slot;
    }
}

static void oracle_put(oracle *o, const char *a, const char *b, const char *value, const char *evidence)
{
    size_t alen = strlen(a), blen = b ? strlen(b) : 0;
    if (alen > UINT32_MAX || blen > UINT32_MAX || o->count >= o->cap)
        return; /* sized for every line of the file: cannot happen */
    uint64_t *slot = oracle_slot(o, a, alen, b ? b : "", blen);
    oracle_entry e = {.a = a, .b = b ? b : "", .value = value, .evidence = evidence,
                      .alen = (uint32_t)alen, .blen = (uint32_t)blen};
    if (*slot) {
        o->entries[(*slot & 0xFFFFFFFFu) - 1] = e; /* a repeated key: the last line wins */
        return;
    }
    o->entries[o->count++] = e;
    *slot = (oracle_hash(a, alen, b ? b : "", blen) >> 32 << 32) | (uint64_t)o->count;
}

typedef struct key_fields {
    const char *name[ORACLE_MAX_FIELDS], *value[ORACLE_MAX_FIELDS];
    size_t n;
} key_fields;

static const char *field(const key_fields *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->name[i], name) == 0)
            return f->value[i];
    return NULL;
}

/* Fast path for a flat object line without backslashes: string values are
 * cut in place; numbers and literals are skipped. -1: not that shape. */
static int parse_flat(char *p, char *end, key_fields *f)
{
    f->n = 0;
    if (p >= end || *p++ != '{')
        return -1;
    while (p < end && *p != '}') {
        if (*p != '"')
            return -1;
        char *name = ++p, *q = memchr(p, '"', (size_t)(end - p));
        if (!q || q + 1 >= end || q[1] != ':')
            return -1;
        *q = '\0';
        p = q + 2;
        if (p < end && *p == '"') {
            char *value = ++p;
            if (!(q = memchr(p, '"', (size_t)(end - p))))
                return -1;
            *q = '\0';
            p = q + 1;
            if (f->n < ORACLE_MAX_FIELDS) {
                f->name[f->n] = name;
                f->value[f->n++] = value;
            }
        } else {
            while (p < end && *p != ',' && *p != '}')
                p++;
        }
        if (p < end && *p == ',')
            p++;
    }
    return p < end ? 0 : -1;
}

static const char *oracle_copy(oracle *o, const char *s)
{
    if (!s)
        return NULL;
    if (o->ncopies == o->copies_cap) {
        size_t cap = o->copies_cap ? 2 * o->copies_cap : 64;
        char **grown = realloc(o->copies, cap * sizeof *grown);
        if (!grown)
            return NULL;
        o->copies = grown;
        o->copies_cap = cap;
    }
    char *copy = str_dup_len(s, strlen(s));
    if (copy)
        o->copies[o->ncopies++] = copy;
    return copy;
}

/* Slow path: a line with escapes, decoded by jansson into copies. */
static int parse_escaped(oracle *o, const char *line, size_t len, key_fields *f)
{
    json_t *obj = json_loadb(line, len, 0, NULL);
    const char *name;
    json_t *v;
    f->n = 0;
    if (!json_is_object(obj)) {
        json_decref(obj);
        return -1;
    }
    json_object_foreach(obj, name, v) {
        if (!json_is_string(v) || f->n >= ORACLE_MAX_FIELDS)
            continue;
        f->name[f->n] = oracle_copy(o, name);
        f->value[f->n] = oracle_copy(o, json_string_value(v));
        if (f->name[f->n] && f->value[f->n])
            f->n++;
    }
    json_decref(obj);
    return 0;
}

static void oracle_add_line(oracle *o, key_fields *f)
{
    const char *instance = field(f, "instance"), *subject = field(f, "subject");
    if (instance && field(f, "label"))
        oracle_put(o, instance, NULL, field(f, "label"), NULL);
    else if (subject && field(f, "relation") && field(f, "object"))
        oracle_put(o, subject, field(f, "relation"), field(f, "object"), field(f, "fact"));
}

int oracle_load(oracle *o, const char *path, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t lines = 1, lineno = 0;
    memset(o, 0, sizeof *o);
    errno = 0;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > ORACLE_MAX_KEY) {
        snprintf(err, errlen, "oracle key %s: %s", path,
                 fd < 0 || errno ? strerror(errno) : "not a regular file or too large");
        goto fail;
    }
    o->text = malloc((size_t)st.st_size + 1);
    if (!o->text || read_full(fd, o->text, (size_t)st.st_size) != 0) {
        snprintf(err, errlen, "oracle key %s: cannot read it", path);
        goto fail;
    }
    o->text[st.st_size] = '\0';
    char *end = o->text + st.st_size;
    for (char *p = o->text; (p = memchr(p, '\n', (size_t)(end - p))); p++)
        lines++;
    size_t cap = 16;
    while (cap < 2 * lines)
        cap *= 2;
    o->cap = lines;
    if (lines >= UINT32_MAX || !(o->slots = calloc(cap, sizeof *o->slots)) ||
        !(o->entries = malloc(lines * sizeof *o->entries))) {
        snprintf(err, errlen, "oracle key %s: out of memory", path);
        goto fail;
    }
    o->mask = cap - 1;
    for (char *line = o->text; line < end; lineno++) {
        char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            eol = end;
        *eol = '\0';
        size_t len = (size_t)(eol - line);
        key_fields f;
        if (len > 0 && (memchr(line, '\\', len) ? parse_escaped(o, line, len, &f)
                                                : parse_flat(line, eol, &f)) != 0) {
            snprintf(err, errlen, "oracle key %s line %zu: not a flat JSON object", path, lineno + 1);
            goto fail;
        }
        if (len > 0)
            oracle_add_line(o, &f);
        line = eol + 1;
    }
    close(fd);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    oracle_free(o);
    return -1;
}

static const oracle_entry *oracle_find(const oracle *o, const char *a, size_t alen, const char *b,
                                       size_t blen)
{
    if (!o->slots)
        return NULL;
    const uint64_t *slot = oracle_slot(o, a, alen, b, blen);
    return *slot ? &o->entries[(*slot & 0xFFFFFFFFu) - 1] : NULL;
}

int oracle_labels(const oracle *o, const char *text, size_t len, buf *out)
{
    static const char tag[] = "Instance: ";
    const char *end = text + len;
    size_t n = 0;
    for (const char *line = text; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            eol = end;
        const char *at = memmem(line, (size_t)(eol - line), tag, sizeof tag - 1);
        if (at) {
            const char *s = at + sizeof tag - 1, *e = eol;
            while (e > s && (e[-1] == '\r' || e[-1] == ' '))
                e--;
            const oracle_entry *hit = oracle_find(o, s, (size_t)(e - s), "", 0);
            if ((n++ && buf_puts(out, "\n") != 0) || buf_puts(out, hit ? hit->value : "unknown") != 0)
                return -1;
        }
        line = eol + 1;
    }
    return 0;
}

int oracle_facts(const oracle *o, const char *text, size_t len, pcre2_match_data *md, buf *out)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    if (pcre2_get_ovector_count(md) < 3 || ov[2] == PCRE2_UNSET || ov[4] == PCRE2_UNSET)
        return buf_puts(out, "NOT FOUND");
    const oracle_entry *hit = oracle_find(o, text + ov[4], ov[5] - ov[4], text + ov[2], ov[3] - ov[2]);
    if (!hit || (hit->evidence && !memmem(text, len, hit->evidence, strlen(hit->evidence))))
        return buf_puts(out, "NOT FOUND");
    return buf_puts(out, hit->value);
}

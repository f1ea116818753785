/* fakelm — a fake OpenAI-compatible chat-completions (and Anthropic Messages)
 * server for offline tests and benchmarks. Replies come from a JSON script of
 * regex rules; latency, error statuses, raw bodies, dropped connections, SSE
 * streams, stalls, resets mid-body, truncated streams and a seeded random
 * fault rate are scriptable. It binds 127.0.0.1 only. docs/fakelm.md is the manual. */

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#define FAKELM_MAX_BODY ((size_t)64 << 20)   /* largest request body accepted */
#define FAKELM_MAX_SCRIPT ((off_t)16 << 20)  /* largest script file */
#define FAKELM_MAX_RULES 4096
#define FAKELM_MAX_CONNECTIONS 4096          /* also the timer heap's capacity */
#define FAKELM_MAX_LATENCY_MS 3600000L
#define FAKELM_LOG_PREVIEW 200               /* code points of last_user logged */
#define FAKELM_MATCH_LIMIT 10000000          /* PCRE2 backtracking bound per match */
#define FAKELM_STREAM_PIECES 4               /* content deltas in an SSE stream */
#define FAKELM_CAPTURES 10                   /* $0..$9 */

/* ------------------------------------------------------------------ script */

typedef enum { ON_LAST_USER, ON_SYSTEM, ON_ANY } rule_on;

/* Replies computed from the answer key instead of `reply` (see oracle below). */
typedef enum { ORACLE_NONE, ORACLE_LABELS, ORACLE_FACTS } oracle_kind;

typedef struct rule {
    pcre2_code *match;
    uint32_t groups;      /* capture groups in match */
    pcre2_code *model;    /* NULL: any model */
    rule_on on;
    char *reply;
    char *body;           /* raw response body, sent verbatim; NULL: none */
    size_t body_len;
    char *content_type;   /* for body; NULL: chosen from the request */
    char *reasoning;      /* reasoning_content; NULL: none */
    char *error_type;     /* overrides the type derived from status */
    char *error_code;
    json_t *headers;      /* object of extra response headers, or NULL */
    long times;           /* answers at most this many requests; -1: no limit */
    long latency_ms;      /* -1: the global latency */
    long status;
    int content_null;
    int drop;             /* close the connection instead of answering */
    long stall_ms;        /* > 0: pause the body this long at stall_after bytes */
    long stall_after;
    long keepalive_ms;    /* > 0: during the pause, an SSE comment line this often */
    long reset_after;     /* >= 0: close the connection after this many body bytes */
    int truncate;         /* a stream ends without its terminator */
    oracle_kind oracle;
} rule;

/* Faults injected into a share of the normal (200) answers, chosen by a
 * seeded hash of the request's sequence number: the same script and the same
 * number of requests give the same number of each fault. */
typedef enum {
    FAULT_429, FAULT_500, FAULT_503, FAULT_RESET, FAULT_TRUNCATED, FAULT_MALFORMED,
    FAULT_EMPTY_REASONING, FAULT_STALL, FAULT_KINDS
} fault_kind;

static const char *const fault_names[FAULT_KINDS] = {
    "429", "500", "503", "reset", "truncated", "malformed", "empty_reasoning", "stall",
};

typedef struct faults {
    double rate;          /* 0: no faults */
    fault_kind kinds[FAULT_KINDS];
    size_t nkinds;
    uint64_t seed;
    char *retry_after;    /* Retry-After of injected 429s */
    long stall_ms;
} faults;

/* ------------------------------------------------------------------ oracle */

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

typedef struct oracle_entry {
    const char *a, *b;     /* instance text; or subject and relation of a fact */
    const char *value;     /* label; or the fact's object */
    const char *evidence;  /* facts: the sentence that states it; NULL otherwise */
    uint32_t alen, blen;
} oracle_entry;

typedef struct oracle {
    char *text;            /* the key file, strings NUL-terminated in place */
    uint64_t *slots;       /* hash table: (32 hash bits << 32) | (entry index + 1); 0 is free */
    size_t mask;
    oracle_entry *entries; /* in key order, one per distinct key */
    size_t count, cap;
    char **copies;         /* strings decoded by jansson (lines with escapes) */
    size_t ncopies, copies_cap;
} oracle;

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

static void oracle_free(oracle *o)
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

/* Loads the key at path: "instance"/"label" lines and "subject"/"relation"/
 * "object"/"fact" lines are indexed; other lines (an S-NIAH needle) are
 * ignored. Blank lines are skipped; a line that is not a JSON object fails. */
static int oracle_load(oracle *o, const char *path, char *err, size_t errlen)
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

/* "labels": the label of every `Instance: TEXT` line of the prompt, one per
 * line in order; "unknown" for an instance the key does not hold. */
static int oracle_labels(const oracle *o, const char *text, size_t len, buf *out)
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

/* "facts": the rule's group 1 names the relation and group 2 the subject;
 * the answer is the fact's object when the sentence stating it is in the
 * prompt (the root found the evidence), else "NOT FOUND". */
static int oracle_facts(const oracle *o, const char *text, size_t len, pcre2_match_data *md, buf *out)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    if (pcre2_get_ovector_count(md) < 3 || ov[2] == PCRE2_UNSET || ov[4] == PCRE2_UNSET)
        return buf_puts(out, "NOT FOUND");
    const oracle_entry *hit = oracle_find(o, text + ov[4], ov[5] - ov[4], text + ov[2], ov[3] - ov[2]);
    if (!hit || (hit->evidence && !memmem(text, len, hit->evidence, strlen(hit->evidence))))
        return buf_puts(out, "NOT FOUND");
    return buf_puts(out, hit->value);
}

typedef struct script {
    rule *rules;
    size_t nrules;
    long latency_ms;
    json_t *models;       /* array of model ids for GET /v1/models */
    pcre2_match_context *match_context;
    faults faults;
    char *oracle_key;     /* path of the answer key, or NULL */
    oracle oracle;        /* loaded at start-up when a rule or --oracle-key needs it */
} script;

static const struct {
    const char *key;
    size_t offset;
} rule_strings[] = {
    {"reply", offsetof(rule, reply)},
    {"reasoning", offsetof(rule, reasoning)},
    {"content_type", offsetof(rule, content_type)},
    {"error_type", offsetof(rule, error_type)},
    {"error_code", offsetof(rule, error_code)},
};

static const struct {
    const char *key;
    size_t offset;
    long min, max;
} rule_numbers[] = {
    {"times", offsetof(rule, times), 0, LONG_MAX},
    {"latency_ms", offsetof(rule, latency_ms), 0, FAKELM_MAX_LATENCY_MS},
    {"status", offsetof(rule, status), 100, 599},
    {"stall_ms", offsetof(rule, stall_ms), 1, FAKELM_MAX_LATENCY_MS},
    {"stall_after", offsetof(rule, stall_after), 0, LONG_MAX},
    {"keepalive_ms", offsetof(rule, keepalive_ms), 1, FAKELM_MAX_LATENCY_MS},
    {"reset_after", offsetof(rule, reset_after), 0, LONG_MAX},
};

static const struct {
    const char *key;
    size_t offset;
} rule_flags[] = {
    {"content_null", offsetof(rule, content_null)},
    {"drop", offsetof(rule, drop)},
    {"truncate", offsetof(rule, truncate)},
};

static void rule_free(rule *r)
{
    pcre2_code_free(r->match);
    pcre2_code_free(r->model);
    free(r->reply);
    free(r->body);
    free(r->content_type);
    free(r->reasoning);
    free(r->error_type);
    free(r->error_code);
    json_decref(r->headers);
}

static void script_free(script *sc)
{
    for (size_t i = 0; i < sc->nrules; i++)
        rule_free(&sc->rules[i]);
    free(sc->rules);
    json_decref(sc->models);
    pcre2_match_context_free(sc->match_context);
    free(sc->faults.retry_after);
    free(sc->oracle_key);
    oracle_free(&sc->oracle);
    memset(sc, 0, sizeof *sc);
}

/* UTF mode with invalid-UTF tolerance: requests are valid UTF-8 (jansson checks),
 * but a rule must never fail at match time because of what a client sent. */
static pcre2_code *regex_compile(const char *pattern, size_t len, char *err, size_t errlen)
{
    int code;
    PCRE2_SIZE offset;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF,
                                   &code, &offset, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        snprintf(err, errlen, "regex error at offset %zu: %s", (size_t)offset, (const char *)msg);
        return NULL;
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
    return re;
}

static int rule_set_string(rule *r, const char *key, json_t *v, bool *known)
{
    for (size_t i = 0; i < sizeof rule_strings / sizeof rule_strings[0]; i++) {
        if (strcmp(key, rule_strings[i].key) != 0)
            continue;
        *known = true;
        if (!json_is_string(v))
            return -1;
        char **slot = (char **)((char *)r + rule_strings[i].offset);
        *slot = str_dup_len(json_string_value(v), json_string_length(v));
        return *slot ? 0 : -1;
    }
    return 0;
}

static int rule_set_number(rule *r, const char *key, json_t *v, bool *known)
{
    for (size_t i = 0; i < sizeof rule_numbers / sizeof rule_numbers[0]; i++) {
        if (strcmp(key, rule_numbers[i].key) != 0)
            continue;
        *known = true;
        if (!json_is_integer(v))
            return -1;
        json_int_t n = json_integer_value(v);
        if (n < rule_numbers[i].min || n > rule_numbers[i].max)
            return -1;
        *(long *)((char *)r + rule_numbers[i].offset) = (long)n;
        return 0;
    }
    for (size_t i = 0; i < sizeof rule_flags / sizeof rule_flags[0]; i++) {
        if (strcmp(key, rule_flags[i].key) != 0)
            continue;
        *known = true;
        if (!json_is_boolean(v))
            return -1;
        *(int *)((char *)r + rule_flags[i].offset) = json_is_true(v);
        return 0;
    }
    return 0;
}

static int rule_set_other(rule *r, const char *key, json_t *v, bool *known)
{
    if (strcmp(key, "on") == 0) {
        *known = true;
        const char *on = json_string_value(v);
        if (!on)
            return -1;
        if (strcmp(on, "last_user") == 0)
            r->on = ON_LAST_USER;
        else if (strcmp(on, "system") == 0)
            r->on = ON_SYSTEM;
        else if (strcmp(on, "any") == 0)
            r->on = ON_ANY;
        else
            return -1;
    } else if (strcmp(key, "body") == 0) {
        *known = true;
        if (!json_is_string(v))
            return -1;
        r->body_len = json_string_length(v);
        r->body = str_dup_len(json_string_value(v), r->body_len);
        return r->body ? 0 : -1;
    } else if (strcmp(key, "headers") == 0) {
        *known = true;
        const char *name;
        json_t *value;
        if (!json_is_object(v))
            return -1;
        json_object_foreach(v, name, value) {
            if (!json_is_string(value))
                return -1;
        }
        r->headers = json_incref(v);
    } else if (strcmp(key, "oracle") == 0) {
        *known = true;
        const char *kind = json_string_value(v);
        if (!kind)
            return -1;
        if (strcmp(kind, "labels") == 0)
            r->oracle = ORACLE_LABELS;
        else if (strcmp(kind, "facts") == 0)
            r->oracle = ORACLE_FACTS;
        else
            return -1;
    }
    return 0;
}

static int rule_load(rule *r, size_t index, json_t *obj, char *err, size_t errlen)
{
    const char *match = "", *model = NULL, *key;
    size_t match_len = 0, model_len = 0;
    json_t *v;
    char detail[300];

    r->times = -1;
    r->latency_ms = -1;
    r->reset_after = -1;
    r->status = 200;
    r->on = ON_LAST_USER;
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "rules[%zu] is not an object", index);
        return -1;
    }
    json_object_foreach(obj, key, v) {
        bool known = false;
        int rc;
        if (strcmp(key, "match") == 0 || strcmp(key, "model") == 0) {
            known = true;
            rc = json_is_string(v) ? 0 : -1;
            if (key[1] == 'a') {
                match = json_string_value(v);
                match_len = json_string_length(v);
            } else {
                model = json_string_value(v);
                model_len = json_string_length(v);
            }
        } else {
            rc = rule_set_string(r, key, v, &known);
            if (!known)
                rc = rule_set_number(r, key, v, &known);
            if (!known)
                rc = rule_set_other(r, key, v, &known);
        }
        if (!known) {
            snprintf(err, errlen, "rules[%zu]: unknown key \"%s\"", index, key);
            return -1;
        }
        if (rc != 0) {
            snprintf(err, errlen, "rules[%zu].%s: wrong type or out of range", index, key);
            return -1;
        }
    }
    if (!r->reply && !(r->reply = str_dup_len("", 0)))
        return -1;
    r->match = regex_compile(match, match_len, detail, sizeof detail);
    if (!r->match) {
        snprintf(err, errlen, "rules[%zu].match: %s", index, detail);
        return -1;
    }
    pcre2_pattern_info(r->match, PCRE2_INFO_CAPTURECOUNT, &r->groups);
    if (model && !(r->model = regex_compile(model, model_len, detail, sizeof detail))) {
        snprintf(err, errlen, "rules[%zu].model: %s", index, detail);
        return -1;
    }
    return 0;
}

static int faults_parse(faults *f, json_t *v, char *err, size_t errlen)
{
    const char *key;
    json_t *item;
    f->stall_ms = 60000;
    if (!json_is_object(v)) {
        snprintf(err, errlen, "faults: not an object");
        return -1;
    }
    json_object_foreach(v, key, item) {
        if (strcmp(key, "rate") == 0 && json_is_number(item) && json_number_value(item) >= 0 &&
            json_number_value(item) <= 1) {
            f->rate = json_number_value(item);
        } else if (strcmp(key, "seed") == 0 && json_is_integer(item)) {
            f->seed = (uint64_t)json_integer_value(item);
        } else if (strcmp(key, "retry_after") == 0 && json_is_string(item)) {
            free(f->retry_after);
            f->retry_after = str_dup_len(json_string_value(item), json_string_length(item));
        } else if (strcmp(key, "stall_ms") == 0 && json_is_integer(item) && json_integer_value(item) > 0 &&
                   json_integer_value(item) <= FAKELM_MAX_LATENCY_MS) {
            f->stall_ms = (long)json_integer_value(item);
        } else if (strcmp(key, "kinds") == 0 && json_is_array(item) && json_array_size(item) > 0 &&
                   json_array_size(item) <= FAULT_KINDS) {
            size_t i;
            json_t *name;
            json_array_foreach(item, i, name) {
                size_t k = 0;
                while (k < FAULT_KINDS && (!json_is_string(name) ||
                                           strcmp(json_string_value(name), fault_names[k]) != 0))
                    k++;
                if (k == FAULT_KINDS) {
                    snprintf(err, errlen, "faults.kinds[%zu]: unknown fault (429, 500, 503, reset, "
                             "truncated, malformed, empty_reasoning, stall)", i);
                    return -1;
                }
                f->kinds[f->nkinds++] = (fault_kind)k;
            }
        } else {
            snprintf(err, errlen, "faults.%s: unknown key, wrong type or out of range", key);
            return -1;
        }
    }
    if (f->nkinds == 0) {
        for (size_t k = 0; k < FAULT_KINDS; k++)
            f->kinds[f->nkinds++] = (fault_kind)k;
    }
    if (!f->retry_after && !(f->retry_after = str_dup_len("1", 1)))
        return -1;
    return 0;
}

static int script_parse(script *sc, json_t *root, char *err, size_t errlen)
{
    const char *key;
    json_t *v, *rules = NULL;

    if (!json_is_object(root)) {
        snprintf(err, errlen, "the script must be a JSON object");
        return -1;
    }
    json_object_foreach(root, key, v) {
        if (strcmp(key, "rules") == 0 && json_is_array(v)) {
            rules = v;
        } else if (strcmp(key, "latency_ms") == 0 && json_is_integer(v) &&
                   json_integer_value(v) >= 0 && json_integer_value(v) <= FAKELM_MAX_LATENCY_MS) {
            sc->latency_ms = (long)json_integer_value(v);
        } else if (strcmp(key, "models") == 0 && json_is_array(v)) {
            size_t i;
            json_t *id;
            json_array_foreach(v, i, id) {
                if (!json_is_string(id)) {
                    snprintf(err, errlen, "models[%zu] is not a string", i);
                    return -1;
                }
            }
            json_decref(sc->models);
            sc->models = json_incref(v);
        } else if (strcmp(key, "faults") == 0) {
            if (faults_parse(&sc->faults, v, err, errlen) != 0)
                return -1;
        } else if (strcmp(key, "oracle") == 0 && json_is_object(v) && json_object_size(v) == 1 &&
                   json_is_string(json_object_get(v, "key"))) {
            json_t *path = json_object_get(v, "key");
            free(sc->oracle_key);
            sc->oracle_key = str_dup_len(json_string_value(path), json_string_length(path));
            if (!sc->oracle_key)
                return -1;
        } else {
            snprintf(err, errlen, "\"%s\": unknown key, wrong type or out of range", key);
            return -1;
        }
    }
    if (!rules) {
        snprintf(err, errlen, "\"rules\" (an array) is required");
        return -1;
    }
    if (json_array_size(rules) > FAKELM_MAX_RULES) {
        snprintf(err, errlen, "more than %d rules", FAKELM_MAX_RULES);
        return -1;
    }
    sc->rules = calloc(json_array_size(rules) + 1, sizeof *sc->rules);
    if (!sc->rules) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < json_array_size(rules); i++) {
        sc->nrules = i + 1; /* so script_free releases a half-loaded rule */
        if (rule_load(&sc->rules[i], i, json_array_get(rules, i), err, errlen) != 0)
            return -1;
    }
    return 0;
}

/* Loads and checks the whole script; any problem is reported in err and makes
 * start-up fail, so a typo never turns into a silently unmatched rule. */
static int script_load(script *sc, const char *path, char *err, size_t errlen)
{
    struct stat st;
    json_error_t jerr;
    json_t *root = NULL;
    int rc = -1;

    memset(sc, 0, sizeof *sc);
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        goto fail;
    }
    if (st.st_size > FAKELM_MAX_SCRIPT) {
        snprintf(err, errlen, "larger than %lld bytes", (long long)FAKELM_MAX_SCRIPT);
        goto fail;
    }
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(err, errlen, "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        goto fail;
    }
    sc->models = json_pack("[s]", "fakelm");
    sc->match_context = pcre2_match_context_create(NULL);
    if (!sc->models || !sc->match_context) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    pcre2_set_match_limit(sc->match_context, FAKELM_MATCH_LIMIT);
    if (script_parse(sc, root, err, errlen) != 0)
        goto fail;
    rc = 0;
fail:
    json_decref(root);
    if (rc != 0)
        script_free(sc);
    return rc;
}

/* ------------------------------------------------------------------- timer */

/* Latency design: MHD runs one event-loop thread; a request that must wait is
 * suspended (MHD_suspend_connection) and its deadline goes into a min-heap
 * served by one timer thread, which resumes it when due. Thousands of waiting
 * requests then cost a heap entry each instead of a thread and a stack each,
 * and one slow request never holds up the others. */

typedef struct timer_entry {
    double deadline; /* clock_now() seconds */
    struct MHD_Connection *conn;
} timer_entry;

typedef struct timer {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* on CLOCK_MONOTONIC, like clock_now() */
    timer_entry *heap;
    size_t len, cap;
    bool stopping;
    bool running;
    pthread_t thread;
} timer;

static void heap_push(timer *t, timer_entry e)
{
    size_t i = t->len++;
    while (i > 0 && t->heap[(i - 1) / 2].deadline > e.deadline) {
        t->heap[i] = t->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    t->heap[i] = e;
}

static timer_entry heap_pop(timer *t)
{
    timer_entry top = t->heap[0], last = t->heap[--t->len];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= t->len)
            break;
        if (child + 1 < t->len && t->heap[child + 1].deadline < t->heap[child].deadline)
            child++;
        if (t->heap[child].deadline >= last.deadline)
            break;
        t->heap[i] = t->heap[child];
        i = child;
    }
    if (t->len > 0)
        t->heap[i] = last;
    return top;
}

/* Resumes outside the lock: MHD takes its own locks inside resume. On stop,
 * every waiting connection is resumed so MHD_stop_daemon finds none suspended. */
static void *timer_main(void *arg)
{
    timer *t = arg;
    pthread_mutex_lock(&t->lock);
    for (;;) {
        if (t->len > 0 && (t->stopping || t->heap[0].deadline <= clock_now())) {
            timer_entry e = heap_pop(t);
            pthread_mutex_unlock(&t->lock);
            MHD_resume_connection(e.conn);
            pthread_mutex_lock(&t->lock);
        } else if (t->stopping) {
            break;
        } else if (t->len == 0) {
            pthread_cond_wait(&t->wake, &t->lock);
        } else {
            double when = t->heap[0].deadline;
            struct timespec ts = {.tv_sec = (time_t)when,
                                  .tv_nsec = (long)((when - (double)(time_t)when) * 1e9)};
            pthread_cond_timedwait(&t->wake, &t->lock, &ts);
        }
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

static int timer_start(timer *t, size_t cap)
{
    pthread_condattr_t attr;

    memset(t, 0, sizeof *t);
    t->heap = calloc(cap, sizeof *t->heap);
    if (!t->heap)
        return -1;
    t->cap = cap;
    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&t->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&t->thread, NULL, timer_main, t) != 0)
        return -1;
    t->running = true;
    return 0;
}

/* The caller has already suspended conn, so an early resume cannot race ahead
 * of the suspension. -1 when the heap is full (cannot happen while the heap is
 * as large as MHD's connection limit). */
static int timer_add(timer *t, struct MHD_Connection *conn, double deadline)
{
    int rc = -1;
    pthread_mutex_lock(&t->lock);
    if (t->len < t->cap && !t->stopping) {
        heap_push(t, (timer_entry){deadline, conn});
        pthread_cond_signal(&t->wake);
        rc = 0;
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

static void timer_stop(timer *t)
{
    if (t->running) {
        pthread_mutex_lock(&t->lock);
        t->stopping = true;
        pthread_cond_signal(&t->wake);
        pthread_mutex_unlock(&t->lock);
        pthread_join(t->thread, NULL);
        t->running = false;
    }
    if (t->heap) {
        pthread_cond_destroy(&t->wake);
        pthread_mutex_destroy(&t->lock);
        free(t->heap);
        t->heap = NULL;
    }
}

/* ------------------------------------------------------------------ server */

typedef struct server {
    script script;
    char *auth;            /* expected Authorization value, or NULL */
    FILE *log;
    double started;
    timer timer;
    pthread_mutex_t lock;  /* everything below, and writes to log */
    long requests, in_flight, max_in_flight, unmatched;
    long *hits;            /* per rule: requests it answered (also its use count) */
    unsigned long next_id;
    uint64_t fault_seq;    /* normal answers so far, the faults' random sequence */
    long fault_hits[FAULT_KINDS];
} server;

typedef enum { EP_NONE, EP_CHAT, EP_MESSAGES, EP_MODELS, EP_COUNTERS, EP_RESET, EP_BAD_METHOD } endpoint;

typedef struct request {
    endpoint endpoint;
    buf body;
    bool too_large;
    bool counted;          /* entered in_flight */
    bool prepared;         /* response decided; queue it on the next call */
    bool drop;
    unsigned status;
    long latency_ms;
    double arrived;        /* clock_now() when the headers came in */
    struct MHD_Response *response;
} request;

static void counters_enter(server *s, request *req)
{
    pthread_mutex_lock(&s->lock);
    s->requests++;
    if (++s->in_flight > s->max_in_flight)
        s->max_in_flight = s->in_flight;
    pthread_mutex_unlock(&s->lock);
    req->counted = true;
}

static void counters_leave(server *s)
{
    pthread_mutex_lock(&s->lock);
    s->in_flight--;
    pthread_mutex_unlock(&s->lock);
}

/* Takes one use of rule i if it has uses left; false if `times` is spent. */
static bool rule_take(server *s, size_t i)
{
    bool ok;
    pthread_mutex_lock(&s->lock);
    ok = s->script.rules[i].times < 0 || s->hits[i] < s->script.rules[i].times;
    if (ok)
        s->hits[i]++;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* Length of the longest prefix of s holding at most n UTF-8 code points. */
static size_t utf8_prefix(const char *s, size_t len, size_t n)
{
    size_t i = 0, points = 0;
    for (; i < len; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80 && points++ == n)
            break;
    }
    return i;
}

static void log_request(server *s, long rule_index, const char *model, const char *last_user,
                        size_t last_user_len, unsigned status, const char *fault)
{
    if (!s->log)
        return;
    size_t n = last_user ? utf8_prefix(last_user, last_user_len, FAKELM_LOG_PREVIEW) : 0;
    json_t *line = json_pack("{s:f, s:I, s:s?, s:s%, s:i}", "t", clock_now() - s->started,
                             "rule", (json_int_t)rule_index, "model", model,
                             "last_user", last_user ? last_user : "", n, "status", (int)status);
    if (line && fault)
        json_object_set_new(line, "fault", json_string(fault));
    char *text = line ? json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    if (text) {
        pthread_mutex_lock(&s->lock);
        fputs(text, s->log);
        fputc('\n', s->log);
        fflush(s->log);
        pthread_mutex_unlock(&s->lock);
    }
    free(text);
    json_decref(line);
}

/* --------------------------------------------------------------- responses */

static struct MHD_Response *response_owned(char *data, size_t len, const char *content_type)
{
    if (!data)
        return NULL;
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(data);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    return resp;
}

/* Compact text of value (whose reference it takes); NULL out of memory. */
static char *json_dumps_owned(json_t *value)
{
    char *text = value ? json_dumps(value, JSON_COMPACT) : NULL;
    json_decref(value);
    return text;
}

static struct MHD_Response *response_json(json_t *value)
{
    char *text = value ? json_dumps(value, JSON_COMPACT) : NULL;
    json_decref(value);
    return text ? response_owned(text, strlen(text), "application/json") : NULL;
}

static const char *error_type_for(unsigned status)
{
    if (status == 429)
        return "requests";
    if (status >= 500)
        return "server_error";
    return "invalid_request_error";
}

/* OpenAI's error object: {"error":{"message","type","param","code"}}. */
static struct MHD_Response *response_error(const char *message, const char *type,
                                           const char *param, const char *code)
{
    return response_json(json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", message,
                                   "type", type, "param", param, "code", code));
}

/* The wording real OpenAI uses, so clients' key-error handling can be tested. */
static struct MHD_Response *response_unauthorized(void)
{
    return response_error("Incorrect API key provided", "invalid_request_error", NULL,
                          "invalid_api_key");
}

static bool authorized(const server *s, struct MHD_Connection *conn)
{
    const char *got = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    return !s->auth || (got && strcmp(got, s->auth) == 0);
}

typedef struct usage {
    size_t prompt, completion;
} usage;

static json_t *usage_json(usage u)
{
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)u.prompt,
                     "completion_tokens", (json_int_t)u.completion, "total_tokens",
                     (json_int_t)(u.prompt + u.completion));
}

typedef struct completion {
    char id[48];
    long created;
    const char *model;
    const char *content;   /* NULL: JSON null */
    size_t content_len;    /* its bytes: a reply may hold NUL bytes (sent as \u0000) */
    const char *reasoning; /* NULL: absent */
    usage usage;
} completion;

static char *completion_text(const completion *c)
{
    json_t *message = json_pack("{s:s, s:o}", "role", "assistant", "content",
                                c->content ? json_stringn(c->content, c->content_len) : json_null());
    if (message && c->reasoning)
        json_object_set_new(message, "reasoning_content", json_string(c->reasoning));
    return json_dumps_owned(json_pack(
        "{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:s}], s:o}", "id", c->id, "object",
        "chat.completion", "created", (json_int_t)c->created, "model", c->model, "choices",
        "index", 0, "message", message, "logprobs", "finish_reason", "stop", "usage",
        usage_json(c->usage)));
}

/* How a body is delivered: whole, or with a pause (a stall) or a broken
 * connection at a given byte. */
typedef struct delivery {
    long stall_ms;        /* > 0: pause at stall_at */
    size_t stall_at;
    long keepalive_ms;    /* > 0: while paused, send ": keep-alive" this often */
    long reset_at;        /* >= 0: close the connection at this byte */
} delivery;

/* A body handed out one event per read, so each SSE event is its own HTTP
 * chunk as a streaming server would send it; also used for any body that
 * must stall or break part-way. */
typedef struct sse_body {
    buf data;
    size_t ends[FAKELM_STREAM_PIECES * 2 + 16];
    size_t nevents;
    delivery delivery;
    bool stalled;            /* the pause has begun */
    bool stall_done;         /* ... and is over */
    double stall_until, next_keepalive;
    size_t extra;            /* keep-alive bytes sent: body positions are pos - extra */
    struct MHD_Connection *conn;
    timer *timer;
} sse_body;

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

static ssize_t sse_read(void *cls, uint64_t at, char *out, size_t max)
{
    sse_body *sse = cls;
    const delivery *d = &sse->delivery;
    uint64_t pos = at - sse->extra;
    if (d->reset_at >= 0 && pos >= (uint64_t)d->reset_at)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (d->stall_ms > 0 && !sse->stall_done && pos >= d->stall_at && sse->conn) {
        /* Parked in the timer like a latency wait; resumed when it is due
         * (or at shutdown), then the rest of the body follows. With
         * keep-alives, it wakes to send one now and then. */
        double now = clock_now();
        if (!sse->stalled) {
            sse->stalled = true;
            sse->stall_until = now + (double)d->stall_ms / 1000.0;
            sse->next_keepalive = now + (double)d->keepalive_ms / 1000.0;
        }
        if (now >= sse->stall_until) {
            sse->stall_done = true;
        } else if (d->keepalive_ms > 0 && now >= sse->next_keepalive) {
            static const char comment[] = ": keep-alive\n\n";
            size_t n = min_size(sizeof comment - 1, max);
            memcpy(out, comment, n);
            sse->extra += n;
            sse->next_keepalive = now + (double)d->keepalive_ms / 1000.0;
            return (ssize_t)n;
        } else {
            double due = d->keepalive_ms > 0 && sse->next_keepalive < sse->stall_until
                             ? sse->next_keepalive : sse->stall_until;
            MHD_suspend_connection(sse->conn);
            if (timer_add(sse->timer, sse->conn, due) == 0)
                return 0;
            MHD_resume_connection(sse->conn);   /* shutting down: no more pause */
            sse->stall_done = true;
        }
    }
    if (pos >= sse->data.len)
        return MHD_CONTENT_READER_END_OF_STREAM;
    size_t end = sse->data.len;
    for (size_t i = 0; i < sse->nevents; i++) {
        if (sse->ends[i] > pos) {
            end = sse->ends[i];
            break;
        }
    }
    if (d->reset_at >= 0)
        end = min_size(end, (size_t)d->reset_at);
    if (d->stall_ms > 0 && !sse->stall_done && d->stall_at > pos)
        end = min_size(end, d->stall_at);
    size_t n = end - (size_t)pos < max ? end - (size_t)pos : max;
    memcpy(out, sse->data.data + pos, n);
    return (ssize_t)n;
}

static void sse_free(void *cls)
{
    sse_body *sse = cls;
    buf_free(&sse->data);
    free(sse);
}

/* Appends one event; name NULL: data only (OpenAI), else "event: name" first
 * (Anthropic). Takes the reference to chunk. */
static int sse_named_event(sse_body *sse, const char *name, json_t *chunk)
{
    char *text = chunk ? json_dumps(chunk, JSON_COMPACT) : NULL;
    int rc = -1;
    json_decref(chunk);
    if (text && name && buf_printf(&sse->data, "event: %s\n", name) != 0) {
        free(text);
        return -1;
    }
    if (text && sse->nevents < sizeof sse->ends / sizeof sse->ends[0] &&
        buf_printf(&sse->data, "data: %s\n\n", text) == 0) {
        sse->ends[sse->nevents++] = sse->data.len;
        rc = 0;
    }
    free(text);
    return rc;
}

static int sse_event(sse_body *sse, json_t *chunk)
{
    return sse_named_event(sse, NULL, chunk);
}

static json_t *sse_chunk(const completion *c, json_t *delta, const char *finish, bool usage_null)
{
    json_t *chunk = json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:s?}]}", "id", c->id,
                              "object", "chat.completion.chunk", "created",
                              (json_int_t)c->created, "model", c->model, "choices", "index", 0,
                              "delta", delta, "logprobs", "finish_reason", finish);
    if (chunk && usage_null)
        json_object_set_new(chunk, "usage", json_null());
    return chunk;
}

/* Splits text into up to FAKELM_STREAM_PIECES deltas under `field`, never
 * inside a UTF-8 sequence. */
static int sse_pieces(sse_body *sse, const completion *c, const char *field, const char *text,
                      size_t len, bool usage_null)
{
    size_t step = (len + FAKELM_STREAM_PIECES - 1) / FAKELM_STREAM_PIECES;
    for (size_t at = 0; at < len;) {
        size_t end = at + step < len ? at + step : len;
        while (end < len && ((unsigned char)text[end] & 0xC0) == 0x80)
            end++;
        json_t *delta = json_pack("{s:s%}", field, text + at, end - at);
        if (sse_event(sse, sse_chunk(c, delta, NULL, usage_null)) != 0)
            return -1;
        at = end;
    }
    return 0;
}

/* Hands the body out through sse_read (chunked), with its delivery. Takes sse. */
static struct MHD_Response *response_paced(sse_body *sse, const char *content_type, const delivery *d,
                                           struct MHD_Connection *conn, timer *t)
{
    sse->delivery = *d;
    sse->conn = conn;
    sse->timer = t;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, sse_read, sse, sse_free);
    if (!resp) {
        sse_free(sse);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return resp;
}

/* A whole body (owned), sent at once — or paced when the delivery asks for
 * a stall or a reset. */
static struct MHD_Response *response_body(char *data, size_t len, const char *content_type,
                                          const delivery *d, struct MHD_Connection *conn, timer *t)
{
    if (!data)
        return NULL;
    if (d->stall_ms <= 0 && d->reset_at < 0)
        return response_owned(data, len, content_type);
    sse_body *sse = calloc(1, sizeof *sse);
    if (!sse) {
        free(data);
        return NULL;
    }
    buf_init(&sse->data, FAKELM_MAX_BODY * 2);
    int rc = buf_append(&sse->data, data, len);
    free(data);
    if (rc != 0) {
        sse_free(sse);
        return NULL;
    }
    return response_paced(sse, content_type, d, conn, t);
}

static sse_body *stream_new(void)
{
    sse_body *sse = calloc(1, sizeof *sse);
    if (sse)
        buf_init(&sse->data, FAKELM_MAX_BODY * 2);
    return sse;
}

/* OpenAI's chat.completion.chunk stream; truncate: no [DONE]. */
static sse_body *stream_openai(const completion *c, bool include_usage, bool truncate)
{
    sse_body *sse = stream_new();
    if (!sse)
        return NULL;
    buf_init(&sse->data, FAKELM_MAX_BODY * 2);
    if (sse_event(sse, sse_chunk(c, json_pack("{s:s, s:s}", "role", "assistant", "content", ""),
                                 NULL, include_usage)) != 0)
        goto fail;
    if (c->reasoning &&
        sse_pieces(sse, c, "reasoning_content", c->reasoning, strlen(c->reasoning),
                   include_usage) != 0)
        goto fail;
    if (c->content && sse_pieces(sse, c, "content", c->content, c->content_len, include_usage) != 0)
        goto fail;
    if (sse_event(sse, sse_chunk(c, json_object(), "stop", include_usage)) != 0)
        goto fail;
    if (include_usage &&
        sse_event(sse, json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", c->id, "object",
                                 "chat.completion.chunk", "created", (json_int_t)c->created,
                                 "model", c->model, "choices", "usage", usage_json(c->usage))) != 0)
        goto fail;
    if (!truncate) {
        if (buf_puts(&sse->data, "data: [DONE]\n\n") != 0)
            goto fail;
        sse->ends[sse->nevents++] = sse->data.len;
    }
    return sse;
fail:
    sse_free(sse);
    return NULL;
}

/* ---- Anthropic Messages --------------------------------------------- */

static json_t *anthropic_usage(usage u)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "input_tokens", (json_int_t)u.prompt,
                     "cache_creation_input_tokens", (json_int_t)0, "cache_read_input_tokens",
                     (json_int_t)0, "output_tokens", (json_int_t)u.completion);
}

static json_t *anthropic_message(const completion *c, json_t *content, const char *stop, usage u)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:s?, s:n, s:o}", "id", c->id, "type", "message",
                     "role", "assistant", "model", c->model, "content", content, "stop_reason", stop,
                     "stop_sequence", "usage", anthropic_usage(u));
}

static char *anthropic_text(const completion *c)
{
    json_t *content = json_array();
    if (content && c->reasoning)
        json_array_append_new(content, json_pack("{s:s, s:s, s:s}", "type", "thinking", "thinking",
                                                 c->reasoning, "signature", "ZmFrZWxt"));
    if (content && c->content)
        json_array_append_new(content, json_pack("{s:s, s:s%}", "type", "text", "text", c->content,
                                                 c->content_len));
    return json_dumps_owned(content ? anthropic_message(c, content, "end_turn", c->usage) : NULL);
}

/* One content block as start, up to FAKELM_STREAM_PIECES deltas, stop. */
static int anthropic_block(sse_body *sse, int index, bool thinking, const char *text, size_t len)
{
    const char *field = thinking ? "thinking" : "text";
    if (sse_named_event(sse, "content_block_start",
                        json_pack("{s:s, s:i, s:{s:s, s:s}}", "type", "content_block_start", "index",
                                  index, "content_block", "type", field, field, "")) != 0)
        return -1;
    size_t step = (len + FAKELM_STREAM_PIECES - 1) / FAKELM_STREAM_PIECES;
    for (size_t at = 0; at < len;) {
        size_t end = at + step < len ? at + step : len;
        while (end < len && ((unsigned char)text[end] & 0xC0) == 0x80)
            end++;
        json_t *delta = json_pack("{s:s, s:s%}", "type", thinking ? "thinking_delta" : "text_delta",
                                  field, text + at, end - at);
        if (sse_named_event(sse, "content_block_delta",
                            json_pack("{s:s, s:i, s:o}", "type", "content_block_delta", "index",
                                      index, "delta", delta)) != 0)
            return -1;
        at = end;
    }
    return sse_named_event(sse, "content_block_stop",
                           json_pack("{s:s, s:i}", "type", "content_block_stop", "index", index));
}

/* Anthropic's event stream; truncate: no message_stop. */
static sse_body *stream_anthropic(const completion *c, bool truncate)
{
    sse_body *sse = stream_new();
    usage start = {c->usage.prompt, 1};
    int index = 0;
    if (!sse)
        return NULL;
    if (sse_named_event(sse, "message_start",
                        json_pack("{s:s, s:o}", "type", "message_start", "message",
                                  anthropic_message(c, json_array(), NULL, start))) != 0 ||
        sse_named_event(sse, "ping", json_pack("{s:s}", "type", "ping")) != 0)
        goto fail;
    if (c->reasoning && anthropic_block(sse, index++, true, c->reasoning, strlen(c->reasoning)) != 0)
        goto fail;
    if (c->content && anthropic_block(sse, index++, false, c->content, c->content_len) != 0)
        goto fail;
    if (sse_named_event(sse, "message_delta",
                        json_pack("{s:s, s:{s:s, s:n}, s:{s:I}}", "type", "message_delta", "delta",
                                  "stop_reason", "end_turn", "stop_sequence", "usage",
                                  "output_tokens", (json_int_t)c->usage.completion)) != 0)
        goto fail;
    if (!truncate && sse_named_event(sse, "message_stop", json_pack("{s:s}", "type", "message_stop")) != 0)
        goto fail;
    return sse;
fail:
    sse_free(sse);
    return NULL;
}

static const char *anthropic_error_type(unsigned status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

/* {"type":"error","error":{"type","message"}} */
static struct MHD_Response *response_anthropic_error(unsigned status, const char *message, const char *type)
{
    return response_json(json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type",
                                   type ? type : anthropic_error_type(status), "message", message));
}

/* --------------------------------------------------------- chat completions */

typedef struct chat {
    json_t *root;
    const char *model;
    buf last_user, system, any;
    bool has_user;
    size_t content_bytes;  /* all message contents, for prompt_tokens */
    bool stream, include_usage;
    bool anthropic;        /* a Messages request (POST /v1/messages) */
} chat;

static void chat_free(chat *c)
{
    json_decref(c->root);
    buf_free(&c->last_user);
    buf_free(&c->system);
    buf_free(&c->any);
}

/* A message's content as text: a string, an array of parts whose "text"
 * fields are concatenated, or null/absent (e.g. an assistant tool call). */
static int content_text(json_t *content, buf *out)
{
    size_t i;
    json_t *part;
    if (!content || json_is_null(content))
        return 0;
    if (json_is_string(content))
        return buf_append(out, json_string_value(content), json_string_length(content));
    if (!json_is_array(content))
        return -1;
    json_array_foreach(content, i, part) {
        if (!json_is_object(part))
            return -1;
        json_t *text = json_object_get(part, "text");
        if (json_is_string(text) &&
            buf_append(out, json_string_value(text), json_string_length(text)) != 0)
            return -1;
    }
    return 0;
}

static int chat_message(chat *c, size_t index, json_t *message, buf *text)
{
    const char *role = json_string_value(json_object_get(message, "role"));
    if (!json_is_object(message) || !role)
        return -1;
    buf_reset(text);
    if (content_text(json_object_get(message, "content"), text) != 0)
        return -1;
    c->content_bytes += text->len;
    if (index > 0 && buf_puts(&c->any, "\n") != 0)
        return -1;
    if (buf_append(&c->any, text->data, text->len) != 0)
        return -1;
    if (strcmp(role, "user") == 0) {
        buf_reset(&c->last_user);
        c->has_user = true;
        return buf_append(&c->last_user, text->data, text->len);
    }
    if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
        if (c->system.len > 0 && buf_puts(&c->system, "\n") != 0)
            return -1;
        return buf_append(&c->system, text->data, text->len);
    }
    return 0;
}

/* Parses a request body; on error fills *message and *param for a 400. */
static int chat_parse(chat *c, const char *body, size_t len, const char **message,
                      const char **param)
{
    json_error_t jerr;
    json_t *messages, *message_json, *options;
    buf text;
    size_t i;
    int rc = -1;

    buf_init(&c->last_user, FAKELM_MAX_BODY);
    buf_init(&c->system, FAKELM_MAX_BODY);
    buf_init(&c->any, FAKELM_MAX_BODY);
    buf_init(&text, FAKELM_MAX_BODY);
    *param = NULL;
    c->root = json_loadb(body ? body : "", len, JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(c->root)) {
        *message = "We could not parse the JSON body of your request. (HINT: This likely means "
                   "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                   "payload, but what was sent was not valid JSON.)";
        goto fail;
    }
    c->model = json_string_value(json_object_get(c->root, "model"));
    if (!c->model) {
        *message = "you must provide a model parameter";
        *param = "model";
        goto fail;
    }
    messages = json_object_get(c->root, "messages");
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        *message = "'messages' must be a non-empty array";
        *param = "messages";
        goto fail;
    }
    if (c->anthropic) {
        /* The system prompt is a top-level string or array of text blocks. */
        json_t *system = json_object_get(c->root, "system");
        if (system && content_text(system, &c->system) != 0) {
            *message = "system: Input should be a valid string or a list of text blocks";
            goto fail;
        }
        c->content_bytes += c->system.len;
        if (buf_append(&c->any, c->system.data ? c->system.data : "", c->system.len) != 0)
            goto fail;
        if (!json_is_integer(json_object_get(c->root, "max_tokens"))) {
            *message = "max_tokens: Field required";
            goto fail;
        }
    }
    json_array_foreach(messages, i, message_json) {
        if (chat_message(c, i + (c->anthropic && c->any.len ? 1 : 0), message_json, &text) != 0) {
            *message = "each message needs a string 'role' and a 'content' that is a string, "
                       "an array of content parts or null";
            *param = "messages";
            goto fail;
        }
    }
    c->stream = json_is_true(json_object_get(c->root, "stream"));
    options = json_object_get(c->root, "stream_options");
    c->include_usage = json_is_true(json_object_get(options, "include_usage"));
    rc = 0;
fail:
    buf_free(&text);
    return rc;
}

static const char *chat_subject(const chat *c, rule_on on, size_t *len)
{
    const buf *b = on == ON_SYSTEM ? &c->system : on == ON_ANY ? &c->any : &c->last_user;
    *len = b->len;
    return b->data ? b->data : "";
}

/* Writes tmpl to out with $0..$9 replaced by capture groups of the match in
 * md ("" for a group that did not take part); "$$" is one dollar; a $N naming
 * a group the pattern lacks stays as written. */
static int reply_expand(const char *tmpl, const char *subject, pcre2_match_data *md,
                        uint32_t groups, buf *out)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    uint32_t pairs = pcre2_get_ovector_count(md);
    for (const char *p = tmpl; *p; p++) {
        if (p[0] == '$' && p[1] == '$') {
            p++;
        } else if (p[0] == '$' && p[1] >= '0' && p[1] <= '9' && (uint32_t)(p[1] - '0') <= groups) {
            uint32_t g = (uint32_t)(p[1] - '0');
            p++;
            if (g < pairs && ov[2 * g] != PCRE2_UNSET &&
                buf_append(out, subject + ov[2 * g], ov[2 * g + 1] - ov[2 * g]) != 0)
                return -1;
            continue;
        }
        if (buf_append(out, p, 1) != 0)
            return -1;
    }
    return 0;
}

/* First rule, in script order, whose model and match regexes accept the
 * request and that has uses left; its reply is expanded into reply. -1: none. */
static long chat_match(server *s, const chat *c, buf *reply)
{
    pcre2_match_data *md = pcre2_match_data_create(FAKELM_CAPTURES, NULL);
    pcre2_match_context *mc = s->script.match_context;
    long found = -1;
    if (!md)
        return -1;
    for (size_t i = 0; i < s->script.nrules && found < 0; i++) {
        const rule *r = &s->script.rules[i];
        size_t len;
        const char *subject = chat_subject(c, r->on, &len);
        if (r->model &&
            pcre2_match(r->model, (PCRE2_SPTR)c->model, strlen(c->model), 0, 0, md, mc) < 0)
            continue;
        if (pcre2_match(r->match, (PCRE2_SPTR)subject, len, 0, 0, md, mc) < 0)
            continue;
        if (!rule_take(s, i))
            continue;
        found = (long)i;
        int rc = r->oracle == ORACLE_LABELS  ? oracle_labels(&s->script.oracle, subject, len, reply)
                 : r->oracle == ORACLE_FACTS ? oracle_facts(&s->script.oracle, subject, len, md, reply)
                                             : reply_expand(r->reply, subject, md, r->groups, reply);
        if (rc != 0)
            buf_reset(reply);
    }
    pcre2_match_data_free(md);
    return found;
}

static void add_rule_headers(struct MHD_Response *resp, const rule *r)
{
    const char *name;
    json_t *value;
    if (!resp || !r || !r->headers)
        return;
    json_object_foreach(r->headers, name, value)
        MHD_add_response_header(resp, name, json_string_value(value));
}

static size_t tokens_of(size_t bytes)
{
    return (bytes + 3) / 4;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* The fault for the next normal answer, or -1 for none. */
static int fault_pick(server *s)
{
    const faults *f = &s->script.faults;
    if (f->rate <= 0 || f->nkinds == 0)
        return -1;
    pthread_mutex_lock(&s->lock);
    uint64_t n = ++s->fault_seq;
    pthread_mutex_unlock(&s->lock);
    uint64_t h = splitmix64(f->seed * 0x100000001B3ULL + n);
    if ((double)(h >> 11) / 9007199254740992.0 >= f->rate)
        return -1;
    int kind = (int)f->kinds[(h & 0xFFFF) % f->nkinds];
    pthread_mutex_lock(&s->lock);
    s->fault_hits[kind]++;
    pthread_mutex_unlock(&s->lock);
    return kind;
}

static bool authorized_anthropic(const server *s, struct MHD_Connection *conn)
{
    const char *got = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "x-api-key");
    return !s->auth || (got && strcmp(got, s->auth + 7) == 0); /* s->auth is "Bearer KEY" */
}

/* An error in the endpoint's own shape. */
static struct MHD_Response *chat_error(const chat *c, unsigned status, const char *message, const rule *r,
                                       const char *param)
{
    if (c->anthropic)
        return response_anthropic_error(status, message, r ? r->error_type : NULL);
    return response_error(message, r && r->error_type ? r->error_type : error_type_for(status), param,
                          r ? r->error_code : NULL);
}

/* The normal answer (status 200) to a parsed request, with the rule's
 * delivery and the fault, if one was drawn, applied. */
static struct MHD_Response *chat_answer(server *s, request *req, struct MHD_Connection *conn,
                                        const chat *c, const rule *r, const char *reply,
                                        size_t reply_len, int fault)
{
    delivery d = {.reset_at = r ? r->reset_after : -1};
    bool truncate = r && r->truncate;
    if (r && r->stall_ms > 0) {
        d.stall_ms = r->stall_ms;
        d.stall_at = (size_t)r->stall_after;
        d.keepalive_ms = r->keepalive_ms;
    }
    completion out = {.created = (long)clock_wall(), .model = c->model};
    pthread_mutex_lock(&s->lock);
    unsigned long id = ++s->next_id;
    pthread_mutex_unlock(&s->lock);
    snprintf(out.id, sizeof out.id, c->anthropic ? "msg_fakelm%lu" : "chatcmpl-fakelm%lu", id);
    out.content = r && r->content_null ? NULL : reply;
    out.content_len = out.content ? reply_len : 0;
    out.reasoning = r ? r->reasoning : NULL;
    switch (fault) {
    case FAULT_TRUNCATED:
        truncate = true;
        break;
    case FAULT_EMPTY_REASONING:
        out.content = NULL;
        out.content_len = 0;
        out.reasoning = "fakelm: thought about it but wrote no answer";
        break;
    case FAULT_STALL:
        d.stall_ms = s->script.faults.stall_ms;
        d.stall_at = 0;
        break;
    case FAULT_MALFORMED: {
        static const char bad[] = "{\"id\":\"fakelm-malformed\",\"choices\":[{\"message\":";
        return response_body(str_dup_len(bad, sizeof bad - 1), sizeof bad - 1, "application/json", &d,
                             conn, &s->timer);
    }
    default:
        break;
    }
    out.usage.prompt = tokens_of(c->content_bytes);
    out.usage.completion = tokens_of(out.content_len +
                                     (out.reasoning ? strlen(out.reasoning) : 0));
    if (c->stream) {
        sse_body *sse = c->anthropic ? stream_anthropic(&out, truncate)
                                     : stream_openai(&out, c->include_usage, truncate);
        if (!sse)
            return NULL;
        if (fault == FAULT_RESET)
            d.reset_at = (long)(sse->data.len / 2);
        return response_paced(sse, "text/event-stream", &d, conn, &s->timer);
    }
    char *text = c->anthropic ? anthropic_text(&out) : completion_text(&out);
    size_t len = text ? strlen(text) : 0;
    if (fault == FAULT_RESET)
        d.reset_at = (long)(len / 2);
    if (truncate)
        len /= 2; /* a body cut short but ended cleanly: malformed JSON */
    return response_body(text, len, "application/json", &d, conn, &s->timer);
}

/* Decides the answer to one chat request: sets req->status, latency and drop,
 * and returns the response (NULL only when dropping or out of memory). */
static struct MHD_Response *chat_respond(server *s, request *req, struct MHD_Connection *conn)
{
    chat c = {.anthropic = req->endpoint == EP_MESSAGES};
    buf reply;
    const char *message = "out of memory", *param = NULL;
    const rule *r = NULL;
    struct MHD_Response *resp = NULL;
    long index = -1;
    int fault = -1;

    buf_init(&reply, FAKELM_MAX_BODY);
    req->latency_ms = 0;
    if (c.anthropic ? !authorized_anthropic(s, conn) : !authorized(s, conn)) {
        req->status = MHD_HTTP_UNAUTHORIZED;
        resp = c.anthropic ? response_anthropic_error(401, "invalid x-api-key", NULL)
                           : response_unauthorized();
        goto done;
    }
    if (req->too_large) {
        req->status = 413;
        resp = chat_error(&c, 413, "request body too large", NULL, NULL);
        goto done;
    }
    if (chat_parse(&c, req->body.data, req->body.len, &message, &param) != 0) {
        req->status = MHD_HTTP_BAD_REQUEST;
        resp = chat_error(&c, 400, message, NULL, param);
        goto done;
    }

    index = chat_match(s, &c, &reply);
    if (index < 0) {
        pthread_mutex_lock(&s->lock);
        s->unmatched++;
        pthread_mutex_unlock(&s->lock);
        buf_puts(&reply, "fakelm: no rule matched");
    } else {
        r = &s->script.rules[index];
    }
    req->latency_ms = r && r->latency_ms >= 0 ? r->latency_ms : s->script.latency_ms;
    req->status = r ? (unsigned)r->status : MHD_HTTP_OK;
    req->drop = r && r->drop;
    if (req->drop) {
        req->status = 0; /* logged as 0: no response was sent */
        goto done;
    } else if (r && r->body) {
        const char *type = r->content_type ? r->content_type
                           : c.stream      ? "text/event-stream"
                                           : "application/json";
        delivery d = {.reset_at = r->reset_after, .stall_ms = r->stall_ms,
                      .stall_at = (size_t)r->stall_after, .keepalive_ms = r->keepalive_ms};
        resp = response_body(str_dup_len(r->body, r->body_len), r->body_len, type, &d, conn, &s->timer);
    } else if (req->status != MHD_HTTP_OK) {
        resp = chat_error(&c, req->status, reply.data ? reply.data : "", r, NULL);
    } else {
        fault = fault_pick(s);
        if (fault == FAULT_429 || fault == FAULT_500 || fault == FAULT_503) {
            req->status = fault == FAULT_429 ? 429 : fault == FAULT_500 ? 500 : 503;
            resp = chat_error(&c, req->status, "fakelm: injected fault", NULL, NULL);
            if (resp && fault == FAULT_429)
                MHD_add_response_header(resp, "Retry-After", s->script.faults.retry_after);
            goto done;
        }
        resp = chat_answer(s, req, conn, &c, r, reply.data ? reply.data : "", reply.len, fault);
    }
    add_rule_headers(resp, r);
done:
    log_request(s, index, c.model, c.has_user ? c.last_user.data : NULL, c.last_user.len,
                req->status, fault >= 0 ? fault_names[fault] : NULL);
    chat_free(&c);
    buf_free(&reply);
    return resp;
}

/* ------------------------------------------------------- other endpoints */

static struct MHD_Response *models_respond(server *s, struct MHD_Connection *conn, unsigned *status)
{
    size_t i;
    json_t *id, *data;
    if (!authorized(s, conn)) {
        *status = MHD_HTTP_UNAUTHORIZED;
        return response_unauthorized();
    }
    *status = MHD_HTTP_OK;
    data = json_array();
    json_array_foreach(s->script.models, i, id) {
        json_array_append_new(data, json_pack("{s:O, s:s, s:I, s:s}", "id", id, "object", "model",
                                              "created", (json_int_t)0, "owned_by", "fakelm"));
    }
    return response_json(json_pack("{s:s, s:o}", "object", "list", "data", data));
}

static struct MHD_Response *counters_respond(server *s)
{
    json_t *hits = json_array();
    json_t *out;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->script.nrules; i++)
        json_array_append_new(hits, json_integer(s->hits[i]));
    json_t *fault_counts = json_object();
    for (size_t k = 0; k < FAULT_KINDS; k++)
        json_object_set_new(fault_counts, fault_names[k], json_integer(s->fault_hits[k]));
    out = json_pack("{s:I, s:I, s:I, s:o, s:I, s:o}", "requests", (json_int_t)s->requests,
                    "in_flight", (json_int_t)s->in_flight, "max_in_flight",
                    (json_int_t)s->max_in_flight, "rules", hits, "unmatched",
                    (json_int_t)s->unmatched, "faults", fault_counts);
    pthread_mutex_unlock(&s->lock);
    return response_json(out);
}

/* in_flight is live state, not a counter: requests still being answered keep
 * it, and max_in_flight restarts from it. */
static struct MHD_Response *reset_respond(server *s)
{
    pthread_mutex_lock(&s->lock);
    s->requests = 0;
    s->unmatched = 0;
    s->max_in_flight = s->in_flight;
    memset(s->hits, 0, s->script.nrules * sizeof *s->hits);
    memset(s->fault_hits, 0, sizeof s->fault_hits);
    s->fault_seq = 0;
    pthread_mutex_unlock(&s->lock);
    return response_json(json_pack("{s:b}", "reset", 1));
}

/* ----------------------------------------------------------- MHD callbacks */

static endpoint route(const char *url, const char *method)
{
    static const struct {
        const char *url, *method;
        endpoint endpoint;
    } routes[] = {
        {"/v1/chat/completions", "POST", EP_CHAT}, {"/chat/completions", "POST", EP_CHAT},
        {"/v1/messages", "POST", EP_MESSAGES},     {"/messages", "POST", EP_MESSAGES},
        {"/v1/models", "GET", EP_MODELS},          {"/models", "GET", EP_MODELS},
        {"/counters", "GET", EP_COUNTERS},         {"/reset", "POST", EP_RESET},
    };
    endpoint found = EP_NONE;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(url, routes[i].url) != 0)
            continue;
        if (strcmp(method, routes[i].method) == 0)
            return routes[i].endpoint;
        found = EP_BAD_METHOD;
    }
    return found;
}

static void request_prepare(server *s, request *req, struct MHD_Connection *conn)
{
    req->status = MHD_HTTP_OK;
    switch (req->endpoint) {
    case EP_CHAT:
    case EP_MESSAGES:
        req->response = chat_respond(s, req, conn);
        break;
    case EP_MODELS:
        req->response = models_respond(s, conn, &req->status);
        break;
    case EP_COUNTERS:
        req->response = counters_respond(s);
        break;
    case EP_RESET:
        req->response = reset_respond(s);
        break;
    case EP_BAD_METHOD:
        req->status = MHD_HTTP_METHOD_NOT_ALLOWED;
        req->response = response_error("method not allowed", "invalid_request_error", NULL, NULL);
        break;
    case EP_NONE:
        req->status = MHD_HTTP_NOT_FOUND;
        req->response = response_error("unknown URL", "invalid_request_error", NULL, NULL);
        break;
    }
    req->prepared = true;
}

/* MHD calls this once when headers arrive, once per body piece, once when the
 * body is complete, and once more after a resume. The answer is decided when
 * the body is complete; with latency the connection is parked in the timer. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    server *s = cls;
    request *req = *con_cls;
    enum MHD_Result ret;

    if (!req) {
        if (!(req = calloc(1, sizeof *req)))
            return MHD_NO;
        buf_init(&req->body, FAKELM_MAX_BODY);
        req->arrived = clock_now();
        req->endpoint = route(url, method);
        *con_cls = req;
        if (req->endpoint == EP_CHAT || req->endpoint == EP_MESSAGES)
            counters_enter(s, req);
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (!req->too_large && buf_append(&req->body, upload, *upload_size) != 0)
            req->too_large = true;
        *upload_size = 0;
        return MHD_YES;
    }
    if (!req->prepared) {
        request_prepare(s, req, conn);
        /* Latency counts from arrival, like a real server's time to answer:
         * the time spent preparing the answer (oracle lookups) and waiting
         * behind other requests on this one thread is part of it, so the fake
         * adds exactly the configured latency and no queueing of its own. */
        double due = req->arrived + (double)req->latency_ms / 1000.0;
        if (req->latency_ms > 0 && due > clock_now()) {
            MHD_suspend_connection(conn);
            if (timer_add(&s->timer, conn, due) != 0)
                MHD_resume_connection(conn);
            return MHD_YES;
        }
    }
    if (req->drop || !req->response)
        return MHD_NO;
    ret = MHD_queue_response(conn, req->status, req->response);
    MHD_destroy_response(req->response);
    req->response = NULL;
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    server *s = cls;
    request *req = *con_cls;
    if (!req)
        return;
    if (req->counted)
        counters_leave(s);
    if (req->response)
        MHD_destroy_response(req->response);
    buf_free(&req->body);
    free(req);
    *con_cls = NULL;
}

/* -------------------------------------------------------------------- main */

typedef struct options {
    const char *script, *port_file, *log, *key, *oracle_key;
    long port, latency_ms;
} options;

static void print_usage(FILE *out)
{
    fputs("usage: fakelm --script FILE [--port N] [--port-file FILE] [--latency-ms N]\n"
          "              [--log FILE] [--require-key KEY] [--oracle-key FILE]\n"
          "\n"
          "A fake OpenAI-compatible chat-completions server on 127.0.0.1 for tests.\n"
          "\n"
          "  --script FILE      JSON rules deciding each reply (see docs/fakelm.md)\n"
          "  --port N           port to listen on; 0 (default) picks a free one\n"
          "  --port-file FILE   write the chosen port to FILE (atomically) once listening\n"
          "  --latency-ms N     delay before every answer; overrides the script's\n"
          "                     latency_ms (a rule's own latency_ms still wins)\n"
          "  --log FILE         append one JSON line per chat request\n"
          "  --require-key KEY  answer 401 unless 'Authorization: Bearer KEY'\n"
          "  --oracle-key FILE  answer key (taskgen's key.jsonl) for \"oracle\" rules;\n"
          "                     overrides the script's \"oracle\": {\"key\": FILE}\n"
          "  --help             this text\n"
          "\n"
          "Endpoints: POST /v1/chat/completions (and /chat/completions), GET /v1/models,\n"
          "GET /counters, POST /reset.\n"
          "Prints 'listening on 127.0.0.1:PORT' when ready; exits 0 on SIGTERM/SIGINT,\n"
          "1 if it cannot serve, 2 on a bad command line or script.\n",
          out);
}

/* 0 to run, 1 when --help was printed, -1 on a usage error (message printed). */
static int options_parse(options *o, int argc, char **argv)
{
    memset(o, 0, sizeof *o);
    o->latency_ms = -1;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_usage(stdout);
            return 1;
        }
        if (!value) {
            fprintf(stderr, "fakelm: %s: unknown option or missing value\n", arg);
            return -1;
        }
        i++;
        if (strcmp(arg, "--script") == 0) {
            o->script = value;
        } else if (strcmp(arg, "--port-file") == 0) {
            o->port_file = value;
        } else if (strcmp(arg, "--log") == 0) {
            o->log = value;
        } else if (strcmp(arg, "--require-key") == 0) {
            o->key = value;
        } else if (strcmp(arg, "--oracle-key") == 0) {
            o->oracle_key = value;
        } else if (strcmp(arg, "--port") == 0) {
            if (parse_long(value, &o->port) != 0 || o->port < 0 || o->port > 65535) {
                fprintf(stderr, "fakelm: --port: not a port number: %s\n", value);
                return -1;
            }
        } else if (strcmp(arg, "--latency-ms") == 0) {
            if (parse_long(value, &o->latency_ms) != 0 || o->latency_ms < 0 ||
                o->latency_ms > FAKELM_MAX_LATENCY_MS) {
                fprintf(stderr, "fakelm: --latency-ms: expected 0..%ld: %s\n",
                        FAKELM_MAX_LATENCY_MS, value);
                return -1;
            }
        } else {
            fprintf(stderr, "fakelm: unknown option %s\n", arg);
            return -1;
        }
    }
    if (!o->script) {
        fputs("fakelm: --script FILE is required (try --help)\n", stderr);
        return -1;
    }
    return 0;
}

/* Loads the answer key named by --oracle-key or the script (a relative path
 * in the script is taken from the script's directory). A rule with "oracle"
 * and no key is an error, so a misnamed key never turns into "unknown" labels. */
static int oracle_prepare(script *sc, const char *script_path, const char *override, char *err,
                          size_t errlen)
{
    bool needed = false;
    for (size_t i = 0; i < sc->nrules; i++)
        needed = needed || sc->rules[i].oracle != ORACLE_NONE;
    const char *key = override ? override : sc->oracle_key;
    if (!key) {
        if (needed)
            snprintf(err, errlen, "a rule uses \"oracle\" but no answer key was given "
                     "(script \"oracle\": {\"key\": FILE} or --oracle-key FILE)");
        return needed ? -1 : 0;
    }
    buf path;
    buf_init(&path, PATH_MAX);
    const char *slash = strrchr(script_path, '/');
    int rc = override || key[0] == '/' || !slash
                 ? buf_puts(&path, key)
                 : buf_printf(&path, "%.*s/%s", (int)(slash - script_path), script_path, key);
    if (rc == 0) {
        double started = clock_now();
        rc = oracle_load(&sc->oracle, path.data, err, errlen);
        if (rc == 0)
            fprintf(stderr, "fakelm: oracle key %s: %zu entries in %.3f s\n", path.data,
                    sc->oracle.count, clock_now() - started);
    } else {
        snprintf(err, errlen, "oracle key path too long");
    }
    buf_free(&path);
    return rc;
}

/* Temp file + rename so a waiting test never reads a half-written number. */
static int port_file_write(const char *path, unsigned port)
{
    buf tmp, text;
    int fd = -1, rc = -1;
    buf_init(&tmp, PATH_MAX);
    buf_init(&text, 32);
    if (buf_printf(&tmp, "%s.tmp.%ld", path, (long)getpid()) != 0 ||
        buf_printf(&text, "%u\n", port) != 0)
        goto fail;
    fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write_full(fd, text.data, text.len) != 0 || close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp.data, path) != 0)
        goto fail;
    rc = 0;
fail:
    if (fd >= 0)
        close(fd);
    if (rc != 0 && tmp.data)
        unlink(tmp.data);
    buf_free(&tmp);
    buf_free(&text);
    return rc;
}

/* Many concurrent clients need many descriptors; take what the hard limit allows. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static struct MHD_Daemon *daemon_start(server *s, long port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    /* One event-loop thread: answers are computed in microseconds and waiting
     * happens in the timer, so more threads would only add locking. */
    return MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
        (uint16_t)port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)FAKELM_MAX_CONNECTIONS,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_CONNECTION_TIMEOUT, 300u,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
}

static int serve(server *s, const options *o)
{
    sigset_t stop_signals;
    struct MHD_Daemon *daemon = NULL;
    const union MHD_DaemonInfo *info;
    int sig, rc = 1;

    /* Blocked before any thread starts, so only sigwait below sees them. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    if (timer_start(&s->timer, FAKELM_MAX_CONNECTIONS + 16) != 0) {
        fputs("fakelm: cannot start the timer thread\n", stderr);
        goto fail;
    }
    daemon = daemon_start(s, o->port);
    if (!daemon) {
        fprintf(stderr, "fakelm: cannot listen on 127.0.0.1:%ld\n", o->port);
        goto fail;
    }
    info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || info->port == 0) {
        fputs("fakelm: cannot learn the bound port\n", stderr);
        goto fail;
    }
    if (o->port_file && port_file_write(o->port_file, info->port) != 0) {
        fprintf(stderr, "fakelm: cannot write %s: %s\n", o->port_file, strerror(errno));
        goto fail;
    }
    printf("listening on 127.0.0.1:%u\n", (unsigned)info->port);
    fflush(stdout);
    while (sigwait(&stop_signals, &sig) != 0)
        ;
    rc = 0;
fail:
    timer_stop(&s->timer); /* resumes every parked connection first */
    if (daemon)
        MHD_stop_daemon(daemon);
    return rc;
}

int main(int argc, char **argv)
{
    options o;
    server s;
    char err[512];
    int rc;

    memset(&s, 0, sizeof s);
    rc = options_parse(&o, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    if (script_load(&s.script, o.script, err, sizeof err) != 0) {
        fprintf(stderr, "fakelm: bad script %s: %s\n", o.script, err);
        return 2;
    }
    if (oracle_prepare(&s.script, o.script, o.oracle_key, err, sizeof err) != 0) {
        fprintf(stderr, "fakelm: %s\n", err);
        script_free(&s.script);
        return 2;
    }
    rc = 2;
    if (o.latency_ms >= 0)
        s.script.latency_ms = o.latency_ms;
    s.hits = calloc(s.script.nrules + 1, sizeof *s.hits);
    if (!s.hits)
        goto done;
    if (o.key) {
        buf auth;
        buf_init(&auth, 4096);
        if (buf_printf(&auth, "Bearer %s", o.key) != 0) {
            fputs("fakelm: --require-key: key too long\n", stderr);
            buf_free(&auth);
            goto done;
        }
        s.auth = buf_take(&auth);
    }
    if (o.log && !(s.log = fopen(o.log, "ae"))) {
        fprintf(stderr, "fakelm: cannot open log %s: %s\n", o.log, strerror(errno));
        goto done;
    }
    pthread_mutex_init(&s.lock, NULL);
    s.started = clock_now();
    rc = serve(&s, &o);
    pthread_mutex_destroy(&s.lock);
done:
    if (s.log)
        fclose(s.log);
    free(s.auth);
    free(s.hits);
    script_free(&s.script);
    return rc;
}

/* gitignore — .gitignore rules as a pure matcher: each rule is parsed once
 * (negation, directory-only, anchoring) and matched with a small glob engine
 * that knows `**`; bracket classes are left to fnmatch(3). */
#include "gitignore.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

enum { PATTERN_MAX_BYTES = 4096 };

typedef struct rule {
    char *base;        /* directory of the .gitignore, "" or ending in '/' */
    size_t base_len;
    char *pattern;     /* without '!', leading '/' and trailing '/' */
    size_t pattern_len;
    int negated, dir_only, anchored;
} rule;

struct gitignore {
    rule *rules;
    size_t n, cap, max;
};

gitignore *gitignore_new(size_t max_rules)
{
    gitignore *g = calloc(1, sizeof *g);
    if (g)
        g->max = max_rules;
    return g;
}

static void rule_free(rule *r)
{
    free(r->base);
    free(r->pattern);
}

void gitignore_free(gitignore *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++)
        rule_free(&g->rules[i]);
    free(g->rules);
    free(g);
}

size_t gitignore_count(const gitignore *g) { return g->n; }

void gitignore_truncate(gitignore *g, size_t n)
{
    while (g->n > n)
        rule_free(&g->rules[--g->n]);
}

/* A '[' class starting at p: the index just past its ']', or 0 if it does not
 * close (then '[' is literal). "[]x]" and "[!]x]" keep the first ']'. */
static size_t class_end(const char *p, size_t len)
{
    size_t i = 1;
    if (i < len && (p[i] == '!' || p[i] == '^'))
        i++;
    if (i < len && p[i] == ']')
        i++;
    for (; i < len; i++) {
        if (p[i] == ']')
            return i + 1;
    }
    return 0;
}

/* Does the class p[0..n) accept the byte c? fnmatch does the class syntax;
 * git's '^' negation is mapped to POSIX '!'. */
static int class_accepts(const char *p, size_t n, char c)
{
    char cls[PATTERN_MAX_BYTES + 1];
    if (n > PATTERN_MAX_BYTES)
        return 0;
    memcpy(cls, p, n);
    cls[n] = '\0';
    if (n > 1 && cls[1] == '^')
        cls[1] = '!';
    char one[2] = {c, '\0'};
    return fnmatch(cls, one, FNM_NOESCAPE) == 0;
}

static int glob_at(const char *pat, const char *p, const char *pe, const char *s, const char *se)
{
    while (p < pe) {
        char c = *p;
        if (c == '*') {
            int double_star = p + 1 < pe && p[1] == '*' && (p == pat || p[-1] == '/') &&
                              (p + 2 == pe || p[2] == '/');
            if (double_star) {
                if (p + 2 == pe)
                    return 1;   /* a trailing double star: everything inside */
                /* a double star then a slash: zero or more whole directories */
                for (const char *t = s;;) {
                    if (glob_at(pat, p + 3, pe, t, se))
                        return 1;
                    const char *slash = memchr(t, '/', (size_t)(se - t));
                    if (!slash)
                        return 0;
                    t = slash + 1;
                }
            }
            while (p < pe && *p == '*')
                p++;
            if (p == pe)
                return memchr(s, '/', (size_t)(se - s)) == NULL;
            for (const char *t = s; t <= se; t++) {
                if (glob_at(pat, p, pe, t, se))
                    return 1;
                if (t < se && *t == '/')
                    return 0;
            }
            return 0;
        }
        if (s == se)
            return 0;
        if (c == '?') {
            if (*s == '/')
                return 0;
            /* one character, not one byte: skip UTF-8 continuation bytes */
            s++;
            while (s < se && ((unsigned char)*s & 0xC0) == 0x80)
                s++;
            p++;
            continue;
        }
        if (c == '[') {
            size_t end = class_end(p, (size_t)(pe - p));
            if (end) {
                if (*s == '/' || !class_accepts(p, end, *s))
                    return 0;
                p += end;
                s++;
                continue;
            }
        }
        if (c == '\\' && p + 1 < pe)
            c = *++p;
        if (c != *s)
            return 0;
        p++;
        s++;
    }
    return s == se;
}

int gitignore_glob_match(const char *pattern, size_t pattern_len, const char *path, size_t path_len)
{
    return glob_at(pattern, pattern, pattern + pattern_len, path, path + path_len);
}

/* Parses one line into r; 1 if it is a rule, 0 if blank or a comment. */
static int rule_parse(const char *line, size_t len, rule *r)
{
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        len--;
    /* trailing spaces go, unless escaped with a backslash */
    while (len > 0 && line[len - 1] == ' ' && !(len > 1 && line[len - 2] == '\\'))
        len--;
    if (len == 0 || line[0] == '#')
        return 0;
    memset(r, 0, sizeof *r);
    if (line[0] == '!') {
        r->negated = 1;
        line++;
        len--;
    }
    if (len > 0 && line[len - 1] == '/') {
        r->dir_only = 1;
        len--;
    }
    if (len > 0 && line[0] == '/') {
        r->anchored = 1;
        line++;
        len--;
    }
    if (len == 0 || len > PATTERN_MAX_BYTES)
        return 0;
    if (memchr(line, '/', len))
        r->anchored = 1;
    r->pattern = malloc(len + 1);
    if (!r->pattern)
        return -1;
    memcpy(r->pattern, line, len);
    r->pattern[len] = '\0';
    r->pattern_len = len;
    return 1;
}

static int rules_push(gitignore *g, rule *r)
{
    if (g->n >= g->max)
        return -1;
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 16;
        rule *grown = realloc(g->rules, cap * sizeof *grown);
        if (!grown)
            return -1;
        g->rules = grown;
        g->cap = cap;
    }
    g->rules[g->n++] = *r;
    return 0;
}

static int add_line(gitignore *g, const char *base, const char *line, size_t len)
{
    rule r;
    int parsed = rule_parse(line, len, &r);
    if (parsed <= 0)
        return parsed;
    r.base_len = strlen(base);
    r.base = malloc(r.base_len + 1);
    if (!r.base || rules_push(g, &r) != 0) {
        rule_free(&r);
        return -1;
    }
    memcpy(r.base, base, r.base_len + 1);
    return 0;
}

int gitignore_add_text(gitignore *g, const char *base, const char *text, size_t len)
{
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - text) : len;
        if (add_line(g, base, text + i, end - i) != 0)
            return -1;
        i = end + 1;
    }
    return 0;
}

int gitignore_add_pattern(gitignore *g, const char *pattern)
{
    return add_line(g, "", pattern, strlen(pattern));
}

static int rule_matches(const rule *r, const char *path, size_t path_len, int is_dir)
{
    if (r->dir_only && !is_dir)
        return 0;
    if (path_len < r->base_len || memcmp(path, r->base, r->base_len) != 0)
        return 0;
    const char *rel = path + r->base_len;
    size_t rel_len = path_len - r->base_len;
    if (!r->anchored) {
        const char *slash = rel_len ? memrchr(rel, '/', rel_len) : NULL;
        if (slash) {
            rel_len -= (size_t)(slash + 1 - rel);
            rel = slash + 1;
        }
    }
    return gitignore_glob_match(r->pattern, r->pattern_len, rel, rel_len);
}

int gitignore_match(const gitignore *g, const char *path, int is_dir)
{
    size_t path_len = strlen(path);
    for (size_t i = g->n; i-- > 0;) {
        const rule *r = &g->rules[i];
        if (rule_matches(r, path, path_len, is_dir))
            return r->negated ? GITIGNORE_INCLUDE : GITIGNORE_IGNORE;
    }
    return GITIGNORE_NONE;
}

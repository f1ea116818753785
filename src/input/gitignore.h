/* gitignore — the .gitignore pattern rules the directory walk needs, as a pure
 * matcher over relative paths: globs, `**`, leading `/` anchors, trailing `/`
 * for directories, `!` negation, comments and backslash escapes.
 *
 * Ownership: a gitignore list owns copies of its patterns; gitignore_free
 * releases them. Paths passed in are borrowed for the duration of a call. */
#ifndef RLM_GITIGNORE_H
#define RLM_GITIGNORE_H

#include <stddef.h>

typedef struct gitignore gitignore;

enum {
    GITIGNORE_NONE = 0,     /* no rule matched */
    GITIGNORE_IGNORE = 1,   /* the last matching rule excludes the path */
    GITIGNORE_INCLUDE = 2,  /* the last matching rule is a `!` negation */
};

/* An empty rule list holding at most max_rules rules. NULL when out of memory. */
gitignore *gitignore_new(size_t max_rules);
void gitignore_free(gitignore *g);

/* Adds the rules of one .gitignore text found in directory `base` (relative
 * to the walk's root, "" for the root itself, otherwise ending in '/').
 * Blank lines and comments are skipped. Returns 0, or -1 when the rule limit
 * is reached or memory ran out (the rules added so far stay). */
int gitignore_add_text(gitignore *g, const char *base, const char *text, size_t len);

/* Adds one pattern line (no newline) with base "". Same returns. */
int gitignore_add_pattern(gitignore *g, const char *pattern);

/* The number of rules, and dropping the rules added after the first n: the
 * walk pushes a directory's .gitignore on entry and truncates on exit. */
size_t gitignore_count(const gitignore *g);
void gitignore_truncate(gitignore *g, size_t n);

/* What the rules say about `path` (relative to the root, '/'-separated, no
 * leading or trailing '/'); is_dir tells whether it names a directory. The
 * last matching rule wins, as in git. The caller checks parent directories
 * first: as in git, nothing inside an ignored directory can be re-included. */
int gitignore_match(const gitignore *g, const char *path, int is_dir);

/* One glob against one path with gitignore semantics: `*` and `?` do not
 * cross '/', `**` does, `[...]` classes as fnmatch(3). 1 on a match. */
int gitignore_glob_match(const char *pattern, size_t pattern_len, const char *path, size_t path_len);

#endif

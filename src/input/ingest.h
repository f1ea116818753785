/* ingest — turns the --context arguments (files, directories, globs, "-" for
 * stdin, JSONL), a file or a text given through the API and a child RLM's
 * context into a document set, the one shape an input has from the API to
 * the sandbox child: names and byte ranges over read-only mappings, never
 * copies of the files in the host's heap. Also writing the
 * packed form handed to the sandbox child (pack.h reads it;
 * docs/internals/context-format.md).
 *
 * Ownership: ingest_open returns a set freed by ingest_free; every pointer a
 * getter returns (names, data, problem texts) is borrowed from the set and
 * lives as long as it. ingest_pack returns a file descriptor the caller
 * closes. */
#ifndef RLM_INGEST_H
#define RLM_INGEST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "docs.h"

typedef struct ingest_options {
    const char *const *include;   /* globs that narrow directory walks (may be NULL) */
    size_t n_include;
    const char *const *exclude;   /* globs that exclude, gitignore syntax (may be NULL) */
    size_t n_exclude;
    const char *jsonl_field;      /* non-NULL: every file is JSONL, this field is the text */
    ingest_format format;         /* without jsonl_field: how the sandbox reads the files */
    int stdin_fd;                 /* what "-" reads; 0 unless a test says otherwise */
    /* NULL, or one per argument: fds[i] >= 0 makes args[i] only the name of
     * the input read from that descriptor (a regular file or memfd mapped
     * like a file named on its own, a pipe read like stdin; the caller
     * keeps it, the set holds a duplicate); -1, a path as usual. */
    const int *fds;
    /* Non-NULL: reading stdin or a pipe (which may wait for its writer)
     * stops with the error "cancelled" within about 100 ms of *cancel
     * turning nonzero, so Ctrl-C always works. */
    const atomic_int *cancel;
    /* NULL, or n_roots canonical directories (ingest_root_resolve) the
     * inputs are confined to: every path
     * an argument names, every match of a glob and every file or directory
     * a walk reaches is opened only when it resolves (symbolic links
     * followed) inside one of them, and through exactly the resolved path
     * (openat2 with RESOLVE_NO_SYMLINKS, so a link swapped in after the
     * check fails the open instead of escaping). An argument outside is an
     * error that does not say whether it exists; a walk skips what lies
     * outside (a problem each); "-" (stdin) is refused. Descriptors given
     * in fds are the caller's choice and are not checked. */
    const char *const *roots;
    size_t n_roots;
    size_t max_files;             /* documents at most (0: 1,000,000) */
    size_t max_depth;             /* directory nesting at most (0: 128) */
    size_t max_problems;          /* problem texts kept (0: 1,000; the rest are counted) */
} ingest_options;

typedef struct ingest_set ingest_set;

/* Fills *opt with the defaults above. */
void ingest_options_init(ingest_options *opt);

/* The canonical form of root directory `dir` for ingest_options.roots
 * (realpath; it must exist and be a directory): 0 with out filled, or -1
 * with err set. */
int ingest_root_resolve(const char *dir, char *out, size_t outlen, char *err, size_t errlen);

/* 1 when path resolves (symbolic links followed) inside one of the n
 * canonical roots, else 0 (also when it does not exist). */
int ingest_path_within(const char *path, const char *const *roots, size_t n);

/* Builds the set from n_args arguments. Pipes and FIFOs (a named FIFO,
 * bash's <(cmd) under /dev/fd) are read to their end like "-": into a
 * sealed memory file, waiting for a writer as cat would. A path that does not exist, a glob
 * that matches nothing, unreadable stdin, an argument that yields no text at
 * all, or a limit that is passed is an error: -1 with err set (*out NULL).
 * Lesser trouble — an unreadable or binary file inside a directory, a broken
 * JSONL line, a symlink loop — is skipped and listed as a problem. */
int ingest_open(const char *const *args, size_t n_args, const ingest_options *opt,
                ingest_set **out, char *err, size_t errlen);

/* The set of the one regular file at path (kind INGEST_STR, read as text),
 * mapped whatever its size: what rlm_set_context_file gives. -1 with err set
 * when it is missing, unreadable, a directory, not a regular file or empty. */
int ingest_open_file(const char *path, ingest_set **out, char *err, size_t errlen);

/* The set of one str document holding a copy of text[0..len) (len may be 0)
 * in a sealed memory file, the one copy: a text given through the API, or a
 * child RLM's context. The document's name is "" (it was read from no file).
 * -1 with err set when no memory file can be made. */
int ingest_open_text(const char *text, size_t len, ingest_set **out, char *err, size_t errlen);

void ingest_free(ingest_set *s);

ingest_kind ingest_kind_of(const ingest_set *s);
ingest_format ingest_format_of(const ingest_set *s);
size_t ingest_count(const ingest_set *s);
const ingest_doc *ingest_docs(const ingest_set *s);     /* ingest_count entries, sorted by name */
size_t ingest_total_bytes(const ingest_set *s);
size_t ingest_invalid_utf8(const ingest_set *s);        /* over all documents */

/* Tells the kernel the host is done with the pages of every document (after
 * describing the set): they leave the host's resident set but stay in the
 * page cache or memfd, where the sandbox's own mapping finds them. Every
 * document lives in a shared mapping, so nothing is lost; later reads fault
 * the pages back in. */
void ingest_release_pages(const ingest_set *s);

/* What was skipped or repaired, one line each ("skipped 'a/b.bin': binary").
 * ingest_problem_total counts them all, including those not kept. */
size_t ingest_problem_count(const ingest_set *s);
const char *ingest_problem(const ingest_set *s, size_t i);
size_t ingest_problem_total(const ingest_set *s);

/* A file that shrinks after it was mapped would raise SIGBUS on the pages
 * past its new end. ingest_validate re-reads each mapped file's size (fstat
 * on the descriptor kept open, or stat by path, checking device and inode)
 * and shortens every document whose file shrank or was replaced to the bytes
 * that still exist, recording a problem; a file of the same size or larger
 * whose first or last bytes changed is recorded as rewritten
 * (ingest_rewritten). Returns how many documents changed. Call it before a
 * pass over the data when files may be edited meanwhile. */
size_t ingest_validate(ingest_set *s);

/* A document whose file ingest_validate found rewritten in place (same
 * size or larger, but its first or last bytes — up to 4 KiB each — differ
 * from what was read), or NULL. Its bytes cannot be trusted: the caller
 * stops rather than use them. Borrowed from the set. */
const char *ingest_rewritten(const ingest_set *s);

/* The packed form for the sandbox (pack.h, docs/internals/context-format.md): a
 * sealed memfd holding a header, the document index and the names, and
 * either the bytes too (inline) or nothing more, when the whole set is one
 * file: then *data_fd is a descriptor of that file, which the child maps
 * itself, so a 4 GB log is never copied on the host. Inline bytes come from
 * files with pread(2) straight into the memfd's mapping (the one copy), so a
 * file that shrank gives a short read, never SIGBUS: the document is
 * shortened in the pack. Returns 0 with *fd, *len and *data_fd (-1 when
 * inline; the caller closes both), or -1 with err set. */
int ingest_pack(const ingest_set *s, int *fd, size_t *len, int *data_fd, char *err,
                size_t errlen);

#endif

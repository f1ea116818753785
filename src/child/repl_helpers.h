/* repl_helpers — the built-in `_rlm_docs` module behind the REPL's fast
 * helpers over the input's raw bytes: grep (PCRE2 JIT), chunks, search (BM25)
 * and count_tokens. Lives only in the rlm-sandbox child.
 *
 * Ownership: the documents given to repl_helpers_configure are borrowed and
 * must stay valid for the life of the process (the child never frees them).
 * Functions returning PyObject* return new references. */
#ifndef RLM_REPL_HELPERS_H
#define RLM_REPL_HELPERS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>

#include "docs.h"
#include "search.h"

/* Registers `_rlm_docs` as a built-in module; call before Py_Initialize.
 * 0, or -1 when CPython refuses. */
int repl_helpers_register(void);

/* Hands the helpers the documents `context` was built from. ascii[i] is 1
 * when docs[i] is pure ASCII (byte offsets are character offsets), so hits
 * can carry character offsets without a count. cache_fd is the socket to
 * the host's search-index cache (-1: none; consumed): on the first search()
 * the child sends 'L' + the 32-hex-digit content key and receives one byte
 * (1: found) with the index file's descriptor attached; after building a
 * new index it sends 'S' + key + the saved index and closes the socket.
 * Returns 0, or -1 with a Python error set. */
int repl_helpers_configure(ingest_kind kind, const ingest_doc *docs, size_t n_docs,
                           const unsigned char *ascii, int cache_fd);

/* Points the helpers at another set of documents, under the rules of
 * repl_helpers_configure, with that set's search index (NULL: built on its
 * first search()), and returns the index they had (NULL if none was built),
 * which the caller now keeps. Only the configured set's index is looked up
 * in and saved to the host's cache. Switching back to the configured set
 * restores it. */
search_index *repl_helpers_switch(ingest_kind kind, const ingest_doc *docs, size_t n_docs,
                                  const unsigned char *ascii, search_index *index);

/* A helper by its namespace name ("grep", "chunks", "search",
 * "count_tokens"), new reference; NULL without an error if unknown. */
PyObject *repl_helpers_function(const char *name);

/* A helper's docstring (static storage), NULL if unknown. */
const char *repl_helpers_doc(const char *name);

#endif

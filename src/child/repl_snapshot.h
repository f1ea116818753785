/* repl_snapshot — what a conversation carries from one question to the next:
 * the namespace's variables that hold data, encoded by C into a tagged
 * binary format (docs/internals/snapshot-format.md) at the end of a
 * question, and decoded, validated strictly, into the next question's fresh
 * sandbox. Data only: exact str, bytes, int, float, complex, bool, None, and
 * list, tuple, dict, set, frozenset (and collections.Counter, OrderedDict,
 * defaultdict, deque) of those, nested; shared and cyclic references kept;
 * the allowed modules and their attributes by name (an `import re`, a `from
 * collections import Counter`). Never pickle or marshal: both run or trust
 * what they read. Lives in the rlm-sandbox child (and the tests and the fuzz
 * harness, which embed Python).
 *
 * Ownership: the encoder writes into a buffer the caller owns; the decoder
 * reads a buffer it borrows and hands each (name, value) to a callback,
 * borrowed for the call. Functions returning PyObject* return new
 * references. */
#ifndef RLM_REPL_SNAPSHOT_H
#define RLM_REPL_SNAPSHOT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>

/* Nesting of containers a snapshot may hold, by default and at most. */
#define REPL_SNAPSHOT_DEPTH 100
/* Bytes of a variable's name. */
#define REPL_SNAPSHOT_NAME_MAX 255
/* Names listed per reason a variable was not carried (the rest counted). */
#define REPL_SNAPSHOT_LISTED 40

/* Why a variable was not carried, in the order they are reported. */
typedef enum repl_snapshot_reason {
    REPL_SNAPSHOT_NOT_DATA,   /* a function, class, generator, an instance of another type
                                 (a subclass of a data type too), or data holding one */
    REPL_SNAPSHOT_TOO_LARGE,  /* past the snapshot's byte limit */
    REPL_SNAPSHOT_TOO_DEEP,   /* nested deeper than the depth limit */
    REPL_SNAPSHOT_CYCLE,      /* contains itself through a tuple, a frozenset or one of
                                 the collections types (built after their items) */
    REPL_SNAPSHOT_REASONS
} repl_snapshot_reason;

/* A short phrase for each reason, for the model ("functions and other
 * objects that are not data", ...). */
const char *repl_snapshot_reason_text(repl_snapshot_reason reason);

typedef struct repl_snapshot_stats {
    size_t bytes;                          /* written into out */
    size_t carried;                        /* variables in the snapshot */
    size_t not_carried[REPL_SNAPSHOT_REASONS];
    PyObject *names[REPL_SNAPSHOT_REASONS]; /* lists of the first REPL_SNAPSHOT_LISTED
                                               names per reason (new references, or NULL);
                                               repl_snapshot_stats_clear drops them */
} repl_snapshot_stats;

void repl_snapshot_stats_clear(repl_snapshot_stats *stats);

/* Encodes the data variables of ns (the namespace: exact-str keys only, no
 * model code running meanwhile) into out[0 .. cap). A variable that is not
 * data, or would not fit in cap or max_depth (at most REPL_SNAPSHOT_DEPTH),
 * is left out and counted in stats with its reason; the others are
 * written. Skipped without a word: dunders, names that are no identifier or
 * longer than REPL_SNAPSHOT_NAME_MAX bytes, the names the host binds (the
 * policy table's REPL functions and data: context_k, history_k, answer,
 * answer_k, ...) and a helper still bound to the REPL's own function.
 * Returns 0 with stats filled, or -1 with err (out of memory, or cap too
 * small for the header). Runs no model code: every type is checked
 * exactly. */
int repl_snapshot_encode(PyObject *ns, unsigned char *out, size_t cap, int max_depth,
                         repl_snapshot_stats *stats, char *err, size_t errlen);

/* Receives one decoded variable; returns 0, or -1 with a Python error set
 * (the decode stops). */
typedef int (*repl_snapshot_bind_fn)(void *userdata, PyObject *name, PyObject *value);

/* Validates data[0 .. len) as a whole (any flaw rejects all of it: a bad
 * tag, a length past the end, a reference forward, a name the host binds or
 * a dunder, a duplicate name or key, an unhashable key, invalid UTF-8, a
 * module that is not allowed, nesting past max_depth, trailing bytes), then
 * calls bind for each variable in order. Modules are resolved in the running
 * interpreter's sys.modules: only the allowed ones. *bound (may be NULL)
 * receives how many were bound. Returns 0, or -1 with err (nothing was
 * bound unless bind itself failed). */
int repl_snapshot_decode(const unsigned char *data, size_t len, int max_depth,
                         repl_snapshot_bind_fn bind, void *userdata, size_t *bound, char *err,
                         size_t errlen);

#endif

/* pool — what many rlm handles of one process share (rlm_pool, include/rlm.h):
 * the model dispatchers (one set of connections, one bound on requests in
 * flight, one set of rate limits), a sandbox zygote every run forks its
 * sandboxes from, and named inputs, each loaded once into a zygote of its
 * own. The public functions that need a run handle (rlm_new_in,
 * rlm_use_input, rlm_pool_add_input, which reads its input through one) are
 * in rlm.c; this header is what rlm.c sees of a pool.
 *
 * Ownership: a pool is reference-counted. rlm_pool_new's caller holds one
 * reference (rlm_pool_free drops it), each handle made from it another
 * (pool_hold / pool_release); the last one frees the pool. Everything a
 * getter returns is borrowed from the pool and valid while a reference is
 * held. pool_add_input takes the engine_preloaded it is given. */
#ifndef RLM_POOL_H
#define RLM_POOL_H

#include <stddef.h>

#include "engine.h"
#include "lm.h"
#include "rlm.h"

/* The dispatchers cfg describes: the root endpoint's in *root and, when
 * sub-calls go elsewhere (another base URL, provider or key), the sub-call
 * endpoint's in *sub (NULL otherwise). The root's key follows sub-calls
 * only to the hosts it was given for. 0, or -1 with err (*root and *sub
 * NULL). */
int pool_dispatchers_new(const rlm_config *cfg, lm **root, lm **sub, char *err, size_t errlen);

/* The options a pool fixes for its handles, NULL-terminated. */
extern const char *const pool_fixed_keys[];

rlm_pool *pool_hold(rlm_pool *p);
void pool_release(rlm_pool *p);

const rlm_config *pool_config(const rlm_pool *p);
lm *pool_root_lm(const rlm_pool *p);
lm *pool_sub_lm(const rlm_pool *p);     /* NULL: sub-calls use the root's */
struct sandbox_factory *pool_factory(const rlm_pool *p);   /* NULL: none could start */
const char *pool_sandbox_exe(const rlm_pool *p);

/* The named input `name`, or NULL; *arg (may be NULL) is what it was read
 * from (for conversations, which load their own copy). */
const engine_preloaded *pool_input(rlm_pool *p, const char *name, const char **arg);

/* Adds a named input, taking *pre (cleared here whatever happens). 0, or -1
 * when out of memory. The name must not be taken (pool_input). */
int pool_add_input(rlm_pool *p, engine_preloaded *pre, const char *arg);

/* The run log at path that the pool's handles share, locked for the
 * caller until pool_log_release. 1 with *log set (borrowed); 0 when the
 * pool's log is at another path (a handle's own log_db: it opens its own);
 * -1 with err when it cannot be opened. Unlocked unless 1. */
struct runlog;
int pool_log_acquire(rlm_pool *p, const char *path, struct runlog **log, char *err, size_t errlen);
void pool_log_release(rlm_pool *p);

/* The message for rlm_pool_errmsg; the warnings for rlm_pool_warnings. */
void pool_set_error(rlm_pool *p, const char *message);
void pool_add_warnings(rlm_pool *p, const char *lines);

#endif

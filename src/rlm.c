/* rlm — the public API (include/rlm.h): run handles that own the
 * dispatchers, the call path (prices, budgets, cache, record/replay), a
 * trace and the input pending for the next question, and rlm_ask. The
 * options behind rlm_config are config.c's; the state of a conversation
 * (its inputs, their records, a session continued by a later process) is
 * conversation.c's. */
#include "rlm.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "calls.h"
#include "config.h"
#include "conversation.h"
#include "endpoint.h"
#include "engine.h"
#include "events.h"
#include "runlog.h"
#include "frame.h"
#include "ingest.h"
#include "lm.h"
#include "pool.h"
#include "pricing.h"
#include "prompt.h"
#include "sandbox.h"
#include "session.h"
#include "trace.h"
#include "util.h"

/* Most base URLs in one comma-separated base_url. */
#define MAX_BASE_URLS ENDPOINT_MAX_URLS
/* Bytes of warnings a handle keeps. */
#define MAX_WARNINGS_BYTES (64 * 1024)

/* ---- run handles ------------------------------------------------------------ */

struct rlm {
    rlm_config *cfg;           /* our copy */
    rlm_pool *pool;            /* a reference, when made by rlm_new_in; NULL: on its own */
    lm *lm;                    /* the pool's, or the handle's own */
    lm *sub_lm;                /* a second endpoint for sub-calls, or NULL */
    const engine_preloaded *named;   /* the pool's named input (rlm_use_input), or NULL */
    const char *named_arg;     /* what it was read from (the pool's string) */
    char **roots;              /* the roots option, resolved (ingest confines to them) */
    size_t n_roots;
    pricing *prices;
    cache *cache;
    json_t *key_options;       /* request options that change replies: part of cache keys */
    calls *calls;
    buf warnings;
    trace *trace;
    char **ctx_args;           /* rlm_add_context arguments, in order */
    int *ctx_fds;              /* per argument: rlm_add_context_fd's descriptor (ours), or -1 */
    size_t n_ctx_args;
    /* The input: built from ctx_args by rlm_ask, or given whole by
     * rlm_set_context_file (given_file: its path) or rlm_set_context_text
     * (given_whole without a file). */
    ingest_set *docs;
    int given_whole;
    char *given_file;
    char *search_cache_dir;
    char *sandbox_exe;
    engine_params params;
    rlm_progress_fn progress;
    void *progress_data;
    events events;             /* rlm_set_event_callback; the trace's listener */
    runlog *log;               /* the run log, opened at the first run logged */
    runlog_capture *capture;   /* the trace of the run in progress, for the log */
    int log_broken;            /* the log cannot be written: said once, not retried */
    char *report;
    /* rlm_cancel sets it (from a signal handler too), rlm_ask clears it;
     * params.cancel points here. */
    atomic_int cancelled;
    /* rlm_begin_conversation, the session option; NULL: every rlm_ask is a
     * question of its own. */
    conversation *conv;
    int trace_warned;          /* the trace's write failure was said */
    char errmsg[2048];
};

static rlm_status rlm_error(rlm *r, rlm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static rlm_status rlm_error(rlm *r, rlm_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->errmsg, sizeof r->errmsg, fmt, ap);
    va_end(ap);
    return status;
}

/* Remembers a warning for rlm_warnings and the trace. */
static void rlm_warn(void *userdata, const char *message)
{
    rlm *r = userdata;
    /* Past the bound, later warnings stay in the trace only. */
    buf_printf(&r->warnings, "%s\n", message);
    trace_event(r->trace, "warning", json_pack("{s:s}", "message", message));
}

/* The price table: built-in, then the user's config-dir file if it exists,
 * then the `prices` file (which must exist). */
static rlm_status rlm_load_prices(rlm *r)
{
    char err[1024];
    r->prices = pricing_new();
    if (!r->prices)
        return rlm_error(r, RLM_ERR_NOMEM, "out of memory");
    char *user = user_file_path("XDG_CONFIG_HOME", ".config", "prices.json");
    if (user && access(user, F_OK) == 0 && pricing_load_file(r->prices, user, err, sizeof err) != 0) {
        free(user);
        return rlm_error(r, RLM_ERR_USAGE, "%s", err);
    }
    free(user);
    const char *path = rlm_config_get(r->cfg, "prices");
    if (path[0] && pricing_load_file(r->prices, path, err, sizeof err) != 0)
        return rlm_error(r, RLM_ERR_USAGE, "%s", err);
    /* A dollar limit that cannot be counted must not pretend to hold. */
    price pr;
    if (rlm_config_get(r->cfg, "max_cost")[0]) {
        const char *models[2] = {r->params.model, r->params.sub_model};
        for (int i = 0; i < 2; i++)
            if (!pricing_lookup(r->prices, models[i], &pr))
                return rlm_error(r, RLM_ERR_USAGE,
                                 "max_cost needs the price of model '%s', which is unknown: add it "
                                 "to a prices file (--prices FILE; see docs/budgets.md)", models[i]);
    }
    return RLM_OK;
}

/* Whether identical sub-calls are sent once: the dedupe option when set,
 * else on unless the temperature is above 0 (sampled replies differ, and a
 * program that asks twice may want two). */
static int rlm_dedupe_wanted(const rlm_config *cfg)
{
    if (rlm_config_get(cfg, "dedupe")[0])
        return config_long(cfg, "dedupe") != 0;
    return !rlm_config_get(cfg, "temperature")[0] || config_double(cfg, "temperature") <= 0;
}

/* Request options that change what a model replies: part of the cache key
 * (the dispatchers send them, pool_dispatchers_new). */
static rlm_status rlm_request_options(rlm *r)
{
    r->key_options = json_object();
    if (!r->key_options)
        return rlm_error(r, RLM_ERR_NOMEM, "out of memory");
    const char *v;
    if ((v = rlm_config_get(r->cfg, "max_output_tokens"))[0])
        json_object_set_new(r->key_options, "max_output_tokens",
                            json_integer(config_long(r->cfg, "max_output_tokens")));
    if ((v = rlm_config_get(r->cfg, "reasoning_effort"))[0])
        json_object_set_new(r->key_options, "reasoning_effort", json_string(v));
    if ((v = rlm_config_get(r->cfg, "temperature"))[0])
        json_object_set_new(r->key_options, "temperature",
                            json_real(config_double(r->cfg, "temperature")));
    return RLM_OK;
}

/* The response cache, if asked for. Trouble opening it is a warning: the
 * run goes on without it. */
static void rlm_open_cache(rlm *r)
{
    if (config_long(r->cfg, "cache") == 0 || rlm_config_get(r->cfg, "replay")[0])
        return;
    const char *dir = rlm_config_get(r->cfg, "cache_dir");
    char *def = dir[0] ? NULL : user_file_path("XDG_CACHE_HOME", ".cache", "");
    char err[1024];
    if (!dir[0] && !def) {
        rlm_warn(r, "response cache disabled: neither XDG_CACHE_HOME nor HOME is set (use cache_dir)");
        return;
    }
    r->cache = cache_open(dir[0] ? dir : def, err, sizeof err);
    free(def);
    if (!r->cache) {
        char msg[1200];
        snprintf(msg, sizeof msg, "response cache disabled: %s", err);
        rlm_warn(r, msg);
    }
}

/* With the session option: opens the session (creating the database and its
 * directory when needed) and makes the handle a conversation saved there. */
static rlm_status rlm_open_conversation(rlm *r, const char *db, const char *name);

static rlm_status rlm_open_session(rlm *r)
{
    const char *name = rlm_config_get(r->cfg, "session");
    if (!name[0])
        return RLM_OK;
    const char *db = rlm_config_get(r->cfg, "session_db");
    char *def = db[0] ? NULL : user_file_path("XDG_DATA_HOME", ".local/share", "sessions.db");
    if (!db[0] && !def)
        return rlm_error(r, RLM_ERR_USAGE, "session '%s': neither XDG_DATA_HOME nor HOME is set, "
                         "so there is no default session database (set session_db)", name);
    rlm_status st = rlm_open_conversation(r, db[0] ? db : def, name);
    free(def);
    return st;
}

static size_t split_globs(char *list, const char **out, size_t max);

/* The roots option resolved into r->roots (ingest confines inputs to them). */
static rlm_status rlm_resolve_roots(rlm *r)
{
    const char *value = rlm_config_get(r->cfg, "roots");
    char *list = strdup(value);
    if (!list)
        return rlm_error(r, RLM_ERR_NOMEM, "out of memory");
    const char *dirs[256];
    size_t n = split_globs(list, dirs, 256);
    rlm_status st = RLM_OK;
    if (n && !(r->roots = calloc(n, sizeof *r->roots)))
        st = rlm_error(r, RLM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; st == RLM_OK && i < n; i++) {
        char resolved[PATH_MAX], err[PATH_MAX + 128];
        if (ingest_root_resolve(dirs[i], resolved, sizeof resolved, err, sizeof err) != 0)
            st = rlm_error(r, RLM_ERR_INPUT, "roots: %s", err);
        else if (!(r->roots[r->n_roots++] = strdup(resolved)))
            st = rlm_error(r, RLM_ERR_NOMEM, "out of memory");
    }
    free(list);
    return st;
}

rlm_status rlm_new(const rlm_config *cfg, rlm **out)
{
    return rlm_new_in(NULL, cfg, out);
}

rlm_status rlm_new_in(rlm_pool *pool, const rlm_config *cfg, rlm **out)
{
    rlm *r = calloc(1, sizeof *r);
    *out = r;
    if (!r)
        return RLM_ERR_NOMEM;
    buf_init(&r->warnings, MAX_WARNINGS_BYTES);
    r->cfg = rlm_config_copy(cfg ? cfg : pool ? pool_config(pool) : NULL);
    if (!r->cfg)
        return rlm_error(r, RLM_ERR_NOMEM, "out of memory");
    if (pool) {
        /* The pool's dispatchers and zygote serve every handle made from it:
         * a handle cannot ask for another endpoint or sandbox. */
        for (const char *const *k = pool_fixed_keys; *k; k++)
            if (strcmp(rlm_config_get(r->cfg, *k), rlm_config_get(pool_config(pool), *k)) != 0)
                return rlm_error(r, RLM_ERR_USAGE, "%s differs from the pool's: a handle made from "
                                 "a pool uses its endpoint and sandbox", *k);
        r->pool = pool_hold(pool);
    }
    rlm_status roots_st = rlm_resolve_roots(r);
    if (roots_st != RLM_OK)
        return roots_st;
    r->sandbox_exe = sandbox_find_exe(rlm_config_get(r->cfg, "sandbox_exe"));
    if (!r->sandbox_exe)
        return rlm_error(r, RLM_ERR_NOMEM, "out of memory");

    engine_params *p = &r->params;
    p->model = rlm_config_get(r->cfg, "model");
    p->sub_model = rlm_config_get(r->cfg, "sub_model");
    p->max_iterations = (int)config_long(r->cfg, "max_iterations");
    const char *system_prompt = rlm_config_get(r->cfg, "system_prompt");
    p->system_prompt = system_prompt[0] ? system_prompt : NULL;
    p->output_limit = (size_t)config_long(r->cfg, "output_limit");
    p->cell_timeout = config_double(r->cfg, "cell_timeout");
    double wall = config_limit(r->cfg, "cell_wall");
    p->cell_wall = wall > 0 ? wall : 0;
    p->max_sandboxes = (int)config_long(r->cfg, "max_sandboxes");
    p->max_child_batch = (int)config_long(r->cfg, "max_child_batch");
    p->sandbox_exe = r->sandbox_exe;
    p->unsafe_no_sandbox = config_long(r->cfg, "unsafe_no_sandbox") != 0;
    p->warn = rlm_warn;
    p->warn_data = r;
    const char *mode = rlm_config_get(r->cfg, "mode");
    p->mode = strcmp(mode, "rlm") == 0 ? ENGINE_MODE_RLM
              : strcmp(mode, "direct") == 0 ? ENGINE_MODE_DIRECT : ENGINE_MODE_AUTO;
    p->direct_threshold = (size_t)config_long(r->cfg, "direct_threshold");
    p->max_depth = (int)config_long(r->cfg, "max_depth");
    p->max_children = (int)config_long(r->cfg, "max_children");
    p->child_share = config_double(r->cfg, "child_share");
    p->context_window = (size_t)config_long(r->cfg, "context_window");
    p->compact_at = config_double(r->cfg, "compact_at");
    p->cancel = &r->cancelled;
    p->strict = config_long(r->cfg, "strict") != 0;
    p->prompt_cache = config_long(r->cfg, "prompt_cache") != 0;
    const char *cache_dir = rlm_config_get(r->cfg, "cache_dir");
    r->search_cache_dir = cache_dir[0] ? strdup(cache_dir) : user_file_path("XDG_CACHE_HOME", ".cache", "");
    p->search_cache_dir = r->search_cache_dir;
    const char *mem = rlm_config_get(r->cfg, "sandbox_memory");
    if (mem[0])
        parse_size(mem, &p->sandbox_memory);
    parse_size(rlm_config_get(r->cfg, "snapshot_max"), &p->snapshot_max);

    char err[1024];
    const char *trace_path = rlm_config_get(r->cfg, "trace");
    /* The trace exists without a file too: the event callback and the run
     * log listen to it. */
    if (!(r->trace = trace_new()))
        return rlm_error(r, RLM_ERR_NOMEM, "out of memory");
    if (trace_path[0] && trace_open_file(r->trace, trace_path, err, sizeof err) != 0)
        return rlm_error(r, RLM_ERR_INPUT, "%s", err);
    if (config_long(r->cfg, "log") && (r->capture = runlog_capture_new()))
        trace_set_line_sink(r->trace, runlog_capture_line, r->capture);
    rlm_status st = rlm_load_prices(r);
    if (st != RLM_OK)
        return st;
    if ((st = rlm_open_session(r)) != RLM_OK)
        return st;

    if ((st = rlm_request_options(r)) != RLM_OK)
        return st;
    const char *base_url = rlm_config_get(r->cfg, "base_url");
    const char *sub_base_url = rlm_config_get(r->cfg, "sub_base_url");
    const char *sub_provider = rlm_config_get(r->cfg, "sub_provider");
    if (r->pool) {
        r->lm = pool_root_lm(r->pool);
        r->sub_lm = pool_sub_lm(r->pool);
        p->factory = pool_factory(r->pool);
    } else if (pool_dispatchers_new(r->cfg, &r->lm, &r->sub_lm, err, sizeof err) != 0) {
        return rlm_error(r, RLM_ERR_INTERNAL, "%s", err);
    }

    json_t *start = json_pack("{s:s,s:o,s:s}", "version", RLM_VERSION, "config", config_json(r->cfg),
                              "sandbox_exe", r->sandbox_exe);
    trace_event(r->trace, "run_start", start);
    rlm_open_cache(r);

    calls_options co = {
        .root_lm = r->lm,
        .sub_lm = r->sub_lm,
        .provider = rlm_config_get(r->cfg, "provider"),
        .sub_provider = sub_provider,
        .root_base_url = base_url,
        .sub_base_url = sub_base_url,
        .key_options = r->key_options,
        .prices = r->prices,
        .cache = r->cache,
        .record_path = rlm_config_get(r->cfg, "record"),
        .replay_path = rlm_config_get(r->cfg, "replay"),
        .limits = {
            .max_cost = config_limit(r->cfg, "max_cost"),
            .max_tokens = (long)config_limit(r->cfg, "max_tokens"),
            .max_time = config_limit(r->cfg, "max_time"),
            .max_subcalls = (long)config_limit(r->cfg, "max_subcalls"),
        },
        .warn = rlm_warn,
        .warn_data = r,
        .dedupe = rlm_dedupe_wanted(r->cfg),
    };
    if (calls_new(&co, &r->calls, err, sizeof err) != 0) {
        if (!r->pool)
            lm_free(r->lm);
        r->lm = NULL;   /* the handle is unusable: rlm_ask refuses it */
        return rlm_error(r, RLM_ERR_INPUT, "%s", err);
    }
    return RLM_OK;
}

static void rlm_clear_docs(rlm *r);

void rlm_free(rlm *r)
{
    if (!r)
        return;
    conversation_free(r->conv);
    calls_free(r->calls);
    if (!r->pool) {
        lm_free(r->lm);
        lm_free(r->sub_lm);
    }
    pool_release(r->pool);
    for (size_t i = 0; i < r->n_roots; i++)
        free(r->roots[i]);
    free(r->roots);
    cache_close(r->cache);
    pricing_free(r->prices);
    json_decref(r->key_options);
    trace_close(r->trace);
    runlog_capture_free(r->capture);
    runlog_close(r->log);
    rlm_clear_docs(r);   /* the document set, the arguments and their descriptors */
    free(r->search_cache_dir);
    rlm_config_free(r->cfg);
    buf_free(&r->warnings);
    free(r->sandbox_exe);
    free(r->report);
    free(r);
}

const char *rlm_warnings(const rlm *r)
{
    return r && r->warnings.data ? r->warnings.data : "";
}

const char *rlm_errmsg(const rlm *r)
{
    return r ? r->errmsg : "out of memory";
}

/* Forgets the input: the document set and its arguments. */
static void rlm_clear_docs(rlm *r)
{
    ingest_free(r->docs);
    r->docs = NULL;
    r->params.docs = NULL;
    free(r->given_file);
    r->given_file = NULL;
    r->given_whole = 0;
    for (size_t i = 0; i < r->n_ctx_args; i++) {
        free(r->ctx_args[i]);
        if (r->ctx_fds[i] >= 0)
            close(r->ctx_fds[i]);
    }
    free(r->ctx_args);
    free(r->ctx_fds);
    r->ctx_args = NULL;
    r->ctx_fds = NULL;
    r->n_ctx_args = 0;
}

/* 0 when arg names something to read: stdin, an existing path, or a glob
 * that matches; else -1 with r's error set. The reading itself waits for
 * rlm_ask, but a typo is said at once, before it can spoil other inputs. */
static int context_arg_exists(rlm *r, const char *arg)
{
    struct stat st;
    if (r->n_roots) {
        /* Confined: the answer must not tell what lies outside the roots. */
        const char *const *roots = (const char *const *)r->roots;
        int inside = strcmp(arg, "-") != 0 && ingest_path_within(arg, roots, r->n_roots);
        if (!inside && strcmp(arg, "-") != 0 && strpbrk(arg, "*?[")) {
            glob_t g;
            if (glob(arg, 0, NULL, &g) == 0) {
                for (size_t i = 0; i < g.gl_pathc && !inside; i++)
                    inside = ingest_path_within(g.gl_pathv[i], roots, r->n_roots);
                globfree(&g);
            }
        }
        if (inside)
            return 0;
        rlm_error(r, RLM_ERR_INPUT, "context '%s': %s", arg, strcmp(arg, "-") == 0
                  ? "stdin is not an input when inputs are confined to roots"
                  : "not found inside the allowed roots");
        return -1;
    }
    if (strcmp(arg, "-") == 0 || stat(arg, &st) == 0)
        return 0;
    int e = errno;
    if (strpbrk(arg, "*?[")) {
        glob_t g;
        int rc = glob(arg, 0, NULL, &g);
        int matched = rc == 0 && g.gl_pathc > 0;
        if (rc != GLOB_NOMATCH)
            globfree(&g);
        if (matched)
            return 0;
        rlm_error(r, RLM_ERR_INPUT, "context '%s': no file matches", arg);
        return -1;
    }
    rlm_error(r, RLM_ERR_INPUT, "context '%s': %s", arg, strerror(e));
    return -1;
}

/* Appends one input (arg, and fd: ours, or -1 for a path), taking fd. */
static rlm_status add_input(rlm *r, const char *arg, int fd)
{
    char **args = realloc(r->ctx_args, (r->n_ctx_args + 1) * sizeof *args);
    if (args)
        r->ctx_args = args;
    int *fds = args ? realloc(r->ctx_fds, (r->n_ctx_args + 1) * sizeof *fds) : NULL;
    if (fds)
        r->ctx_fds = fds;
    char *copy = fds ? strdup(arg) : NULL;
    if (!copy) {
        if (fd >= 0)
            close(fd);
        return rlm_error(r, RLM_ERR_NOMEM, "out of memory");
    }
    args[r->n_ctx_args] = copy;
    fds[r->n_ctx_args] = fd;
    r->n_ctx_args++;
    /* Rebuilt with every argument by rlm_ask; an input given whole is
     * replaced. */
    ingest_free(r->docs);
    r->docs = NULL;
    r->params.docs = NULL;
    free(r->given_file);
    r->given_file = NULL;
    r->given_whole = 0;
    return RLM_OK;
}

rlm_status rlm_add_context(rlm *r, const char *arg)
{
    if (!arg || !arg[0])
        return rlm_error(r, RLM_ERR_USAGE, "empty context argument");
    if (context_arg_exists(r, arg) != 0)
        return RLM_ERR_INPUT;
    return add_input(r, arg, -1);
}

rlm_status rlm_add_context_fd(rlm *r, const char *name, int fd)
{
    if (!name || !name[0])
        return rlm_error(r, RLM_ERR_USAGE, "an input given by descriptor needs a name");
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        return rlm_error(r, RLM_ERR_INPUT, "context '%s': descriptor %d: %s", name, fd,
                         strerror(fd < 0 ? EBADF : errno));
    if (S_ISDIR(st.st_mode))
        return rlm_error(r, RLM_ERR_INPUT, "context '%s': descriptor %d is a directory", name, fd);
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
        return rlm_error(r, RLM_ERR_INPUT, "context '%s': %s", name, strerror(errno));
    return add_input(r, name, own);
}

/* Splits a newline-separated glob list in place into up to max pointers. */
static size_t split_globs(char *list, const char **out, size_t max)
{
    size_t n = 0;
    for (char *p = list; p && *p && n < max;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl++ = '\0';
        if (*p)
            out[n++] = p;
        p = nl;
    }
    return n;
}

/* "/relative/path" (gitignore syntax, anchored) of file `path` when it lies
 * inside one of the directory arguments, else NULL. */
static char *own_file_glob(const char *const *args, size_t n_args, const char *path)
{
    char file[PATH_MAX], dir[PATH_MAX];
    if (!path || !path[0] || !realpath(path, file))
        return NULL;
    for (size_t i = 0; i < n_args; i++) {
        if (!realpath(args[i], dir))
            continue;
        size_t n = strlen(dir);
        if (strncmp(file, dir, n) == 0 && file[n] == '/') {
            buf b;
            buf_init(&b, PATH_MAX + 2);
            buf_printf(&b, "%s", file + n);
            return buf_take(&b);
        }
    }
    return NULL;
}

/* 1 when every argument ends in suffix. */
static int all_end_with(const char *const *args, size_t n_args, const char *suffix)
{
    size_t n = strlen(suffix);
    for (size_t i = 0; i < n_args; i++) {
        size_t len = strlen(args[i]);
        if (len <= n || strcmp(args[i] + len - n, suffix) != 0)
            return 0;
    }
    return n_args > 0;
}

/* How rlm_add_context arguments are read now (the options). */
static conversation_reading rlm_reading(const rlm *r)
{
    return (conversation_reading){.include = rlm_config_get(r->cfg, "include"),
                                  .exclude = rlm_config_get(r->cfg, "exclude"),
                                  .jsonl_field = rlm_config_get(r->cfg, "jsonl_field"),
                                  .json_input = rlm_config_get(r->cfg, "json_input")[0] == '1'};
}

/* Builds a document set from n_args --context arguments, read `how` (see
 * conversation_reading); what was skipped or repaired becomes warnings
 * (stderr and the trace). How the sandbox reads it: JSONL records with
 * jsonl_field; else .jsonl files (all of them) are JSON lines, each record
 * its whole value, and .json files (all of them), or any input with
 * json_input, one JSON value each. legacy: a session input recorded before
 * JSON was parsed, read as it was then (.jsonl: the "text" field of each
 * record; .json: text). */
static rlm_status rlm_ingest(rlm *r, const char *const *args, const int *fds, size_t n_args,
                             const conversation_reading *how, ingest_set **out)
{
    enum { MAX_GLOBS = 256 };
    *out = NULL;
    const char *field = how->jsonl_field;
    int legacy = how->legacy;
    char *inc = strdup(how->include);
    char *exc = strdup(how->exclude);
    const char *inc_v[MAX_GLOBS], *exc_v[MAX_GLOBS];
    rlm_status st = RLM_OK;
    if (!inc || !exc) {
        st = rlm_error(r, RLM_ERR_NOMEM, "out of memory");
        goto done;
    }
    ingest_options opt;
    ingest_options_init(&opt);
    opt.n_include = split_globs(inc, inc_v, MAX_GLOBS);
    opt.include = opt.n_include ? inc_v : NULL;
    opt.n_exclude = split_globs(exc, exc_v, MAX_GLOBS);
    opt.exclude = opt.n_exclude ? exc_v : NULL;
    opt.jsonl_field = field[0] ? field : NULL;
    opt.cancel = &r->cancelled;   /* a pipe waiting for its writer, stdin: Ctrl-C ends the wait */
    opt.fds = fds;
    opt.roots = (const char *const *)r->roots;
    opt.n_roots = r->n_roots;
    /* The set has one reading, so a reading by extension needs every
     * argument to have it. */
    if (!opt.jsonl_field && all_end_with(args, n_args, ".jsonl")) {
        if (legacy)
            opt.jsonl_field = "text";
        else
            opt.format = INGEST_JSONL;
    } else if (!opt.jsonl_field && !legacy && (how->json_input || all_end_with(args, n_args, ".json"))) {
        opt.format = INGEST_JSON;
    }
    char err[2048];
    /* The run's own trace and record files are written during the run: a
     * directory input that holds them must not read them. */
    char *own[2] = {NULL, NULL};
    const char *own_keys[2] = {"trace", "record"};
    for (int k = 0; k < 2 && opt.n_exclude < MAX_GLOBS; k++) {
        own[k] = own_file_glob(args, n_args, rlm_config_get(r->cfg, own_keys[k]));
        if (own[k])
            exc_v[opt.n_exclude++] = own[k];
    }
    opt.exclude = opt.n_exclude ? exc_v : NULL;
    ingest_set *docs = NULL;
    int rc = ingest_open(args, n_args, &opt, &docs, err, sizeof err);
    free(own[0]);
    free(own[1]);
    if (rc != 0) {
        st = r->cancelled ? rlm_error(r, RLM_NO_ANSWER, "cancelled") : rlm_error(r, RLM_ERR_INPUT, "%s", err);
        goto done;
    }
    if (ingest_total_bytes(docs) == 0) {
        ingest_free(docs);
        st = rlm_error(r, RLM_ERR_INPUT, "the input is empty: no text in %s%s",
                       args[0], n_args > 1 ? " and the other --context inputs" : "");
        goto done;
    }
    size_t shown = ingest_problem_count(docs);
    for (size_t i = 0; i < shown; i++) {
        char msg[4200];
        snprintf(msg, sizeof msg, "input: %s", ingest_problem(docs, i));
        rlm_warn(r, msg);
    }
    if (ingest_problem_total(docs) > shown) {
        char msg[128];
        snprintf(msg, sizeof msg, "input: ... and %zu more problems",
                 ingest_problem_total(docs) - shown);
        rlm_warn(r, msg);
    }
    trace_event(r->trace, "input",
                json_pack("{s:I,s:I,s:I,s:I}", "documents", (json_int_t)ingest_count(docs),
                          "bytes", (json_int_t)ingest_total_bytes(docs), "invalid_utf8",
                          (json_int_t)ingest_invalid_utf8(docs), "problems",
                          (json_int_t)ingest_problem_total(docs)));
    *out = docs;
done:
    free(inc);
    free(exc);
    return st;
}

/* Builds the document set from the rlm_add_context arguments and the
 * include / exclude / jsonl_field options. */
static rlm_status rlm_load_docs(rlm *r)
{
    conversation_reading how = rlm_reading(r);
    rlm_status st = rlm_ingest(r, (const char *const *)r->ctx_args, r->ctx_fds, r->n_ctx_args,
                               &how, &r->docs);
    r->params.docs = r->docs;
    return st;
}

/* Makes docs (taken) the whole input, replacing any other; file: the path
 * it was read from, or NULL for a text. */
static rlm_status rlm_give_whole(rlm *r, ingest_set *docs, const char *file)
{
    char *copy = file ? strdup(file) : NULL;
    if (file && !copy) {
        ingest_free(docs);
        return rlm_error(r, RLM_ERR_NOMEM, "out of memory");
    }
    rlm_clear_docs(r);
    r->docs = docs;
    r->params.docs = docs;
    r->given_whole = 1;
    r->given_file = copy;
    return RLM_OK;
}

rlm_status rlm_set_context_file(rlm *r, const char *path)
{
    char err[1024];
    ingest_set *docs;
    if (!path)
        return rlm_error(r, RLM_ERR_USAGE, "no context path given");
    if (ingest_open_file(path, &docs, err, sizeof err) != 0)
        return rlm_error(r, RLM_ERR_INPUT, "%s", err);
    return rlm_give_whole(r, docs, path);
}

rlm_status rlm_set_context_text(rlm *r, const char *text, size_t len)
{
    char err[1024];
    ingest_set *docs;
    if (!text && len)
        return rlm_error(r, RLM_ERR_USAGE, "context text is NULL");
    if (ingest_open_text(text ? text : "", len, &docs, err, sizeof err) != 0)
        return rlm_error(r, RLM_ERR_INPUT, "%s", err);
    return rlm_give_whole(r, docs, NULL);
}

void rlm_set_event_callback(rlm *r, rlm_event_fn fn, void *userdata)
{
    r->events.fn = fn;
    r->events.userdata = userdata;
    if (r->trace)
        trace_set_listener(r->trace, fn ? events_listener : NULL, &r->events);
}

void rlm_set_progress(rlm *r, rlm_progress_fn fn, void *userdata)
{
    r->progress = fn;
    r->progress_data = userdata;
}

void rlm_cancel(rlm *r)
{
    if (r)
        r->cancelled = 1;
}

rlm_status rlm_use_input(rlm *r, const char *name)
{
    if (!name) {
        r->named = NULL;
        r->named_arg = NULL;
        return RLM_OK;
    }
    if (!r->pool)
        return rlm_error(r, RLM_ERR_USAGE, "input '%s': this handle was not made from a pool "
                         "(rlm_new_in)", name);
    const char *arg = NULL;
    const engine_preloaded *pre = pool_input(r->pool, name, &arg);
    if (!pre)
        return rlm_error(r, RLM_ERR_USAGE, "the pool has no input named '%s'", name);
    r->named = pre;
    r->named_arg = arg;
    return RLM_OK;
}

rlm_status rlm_describe(rlm *r, char **out)
{
    *out = NULL;
    if (!r->lm || !r->calls)
        return rlm_error(r, RLM_ERR_USAGE, "this handle failed to open");
    r->cancelled = 0;
    if (r->n_ctx_args && !r->docs) {
        rlm_status st = rlm_load_docs(r);
        if (st != RLM_OK)
            return st;
    }
    engine_params p = r->params;
    p.preloaded = r->named;
    char err[1024];
    *out = engine_describe(&p, r->docs, err, sizeof err);
    return *out ? RLM_OK : rlm_error(r, RLM_ERR_INPUT, "cannot describe the input: %s", err);
}

/* A named input's name: 1-64 of [A-Za-z0-9._-]. */
static int input_name_valid(const char *name)
{
    return str_name_valid(name, 64);
}

/* Design note. A named input is read through a handle of the pool (the
 * handle's ingest: the config's input options, roots, warnings), then made
 * into a zygote holding it (engine_preload). The handle and its document
 * set go away afterwards: the zygote holds descriptors of its own, and
 * every run that uses the input forks from it. The handle's config is the
 * pool's without the per-run files a handle would open (trace, record,
 * replay, session), which loading must never touch. */
rlm_status rlm_pool_add_input(rlm_pool *pool, const char *name, const char *arg)
{
    char msg[2600];
    if (!name || !input_name_valid(name)) {
        snprintf(msg, sizeof msg, "bad input name '%.100s': use 1-64 letters, digits, '.', '_' "
                 "and '-'", name ? name : "(null)");
        pool_set_error(pool, msg);
        return RLM_ERR_USAGE;
    }
    if (!arg || !arg[0] || strcmp(arg, "-") == 0) {
        snprintf(msg, sizeof msg, "input '%s': give a file, a directory or a glob", name);
        pool_set_error(pool, msg);
        return RLM_ERR_USAGE;
    }
    if (pool_input(pool, name, NULL)) {
        snprintf(msg, sizeof msg, "input '%s' is already in the pool", name);
        pool_set_error(pool, msg);
        return RLM_ERR_USAGE;
    }
    rlm_config *cfg = rlm_config_copy(pool_config(pool));
    static const char *const per_run[] = {"trace", "record", "replay", "session", "log"};
    for (size_t i = 0; cfg && i < sizeof per_run / sizeof per_run[0]; i++)
        rlm_config_set(cfg, per_run[i], NULL);
    rlm *r = NULL;
    rlm_status st = cfg ? rlm_new_in(pool, cfg, &r) : RLM_ERR_NOMEM;
    if (st == RLM_OK)
        st = rlm_add_context(r, arg);
    if (st == RLM_OK)
        st = rlm_load_docs(r);
    if (st == RLM_OK) {
        engine_preloaded pre;
        char err[2048];
        int rc = engine_preload(&r->params, name, r->docs, &pre, err, sizeof err);
        if (rc != 0)
            st = rlm_error(r, rc == -2 ? RLM_ERR_INPUT : RLM_ERR_SANDBOX, "input '%s': %s", name, err);
        else if (pool_add_input(pool, &pre, arg) != 0)
            st = RLM_ERR_NOMEM;   /* the pool's message says why */
    }
    if (r)
        pool_add_warnings(pool, rlm_warnings(r));
    if (st != RLM_OK && st != RLM_ERR_NOMEM) {
        snprintf(msg, sizeof msg, "%s", r ? rlm_errmsg(r) : "out of memory");
        pool_set_error(pool, msg);
    }
    rlm_free(r);
    rlm_config_free(cfg);
    return st;
}

/* ---- conversations -----------------------------------------------------------
 *
 * The conversation (conversation.c) owns what the engine state borrows:
 * every input (kept until rlm_free) and the session store; the handle keeps
 * the input pending for the next question. A session's config records the inputs in
 * the order they came (docs/sessions.md):
 *     {"inputs": [{"args": [...], "cwd": DIR, "include": .., "exclude": ..,
 *                  "jsonl_field": ..} | {"file": PATH} | {"text": TEXT}, ...],
 *      "model": .., "sub_model": ..}
 * so a later process can read each input again, in order, before the engine
 * replays the recorded cells. Arguments are kept as given, with the directory
 * they were given in: read again from the same directory, documents keep the
 * same names in `context`. */

/* The conversation reads a saved input again as rlm_add_context would. */
static rlm_status conversation_ingest(void *data, const char *const *args, size_t n,
                                      const conversation_reading *how, ingest_set **out, char *err,
                                      size_t errlen)
{
    rlm *r = data;
    rlm_status st = rlm_ingest(r, args, NULL, n, how, out);
    if (st != RLM_OK)
        snprintf(err, errlen, "%s", r->errmsg);
    return st;
}

/* A conversation of r's: saved as the session db/name, or in memory (db NULL). */
static rlm_status rlm_open_conversation(rlm *r, const char *db, const char *name)
{
    conversation_hooks hooks = {.ingest = conversation_ingest, .warn = rlm_warn, .data = r};
    char err[sizeof r->errmsg];
    rlm_status st = conversation_open(db, name, &hooks, &r->conv, err, sizeof err);
    return st == RLM_OK ? RLM_OK : rlm_error(r, st, "%s", err);
}

rlm_status rlm_begin_conversation(rlm *r)
{
    if (!r->lm || !r->calls)
        return rlm_error(r, RLM_ERR_USAGE, "this handle failed to open");
    return r->conv ? RLM_OK : rlm_open_conversation(r, NULL, NULL);
}

int rlm_conversation_is_new(const rlm *r)
{
    return r && r->conv && conversation_is_new(r->conv);
}

/* After the pending arguments failed to load together: drops those that
 * fail alone, keeps the others pending for the next question (a bad
 * /context must not lose the inputs given with it), and says so in r's
 * error. Returns how many were kept; 0 leaves everything to the caller. */
static size_t drop_bad_args(rlm *r)
{
    if (r->n_ctx_args < 2)
        return 0;
    char first[sizeof r->errmsg];
    snprintf(first, sizeof first, "%s", r->errmsg);
    buf dropped;
    buf_init(&dropped, 4096);
    size_t kept = 0;
    conversation_reading how = rlm_reading(r);
    for (size_t i = 0; i < r->n_ctx_args; i++) {
        const char *arg = r->ctx_args[i];
        ingest_set *alone = NULL;
        rlm_status st = rlm_ingest(r, &arg, &r->ctx_fds[i], 1, &how, &alone);
        ingest_free(alone);
        if (st == RLM_OK) {
            r->ctx_fds[kept] = r->ctx_fds[i];
            r->ctx_args[kept++] = r->ctx_args[i];
        } else {
            buf_printf(&dropped, "%s'%s'", dropped.len ? ", " : "", arg);
            free(r->ctx_args[i]);
            if (r->ctx_fds[i] >= 0)
                close(r->ctx_fds[i]);
        }
    }
    r->n_ctx_args = kept;
    if (kept)
        rlm_error(r, RLM_ERR_INPUT, "%s (input %s dropped; the other inputs given with it are kept "
                  "for the next question)", first, dropped.data ? dropped.data : "?");
    else
        rlm_error(r, RLM_ERR_INPUT, "%s", first);
    buf_free(&dropped);
    return kept;
}

/* Makes the context given since the last question (rlm_add_context, or
 * rlm_set_context_file / _text) the conversation's next input, unless it is
 * one the conversation already has. */
static rlm_status conversation_add_pending(rlm *r)
{
    char err[sizeof r->errmsg];
    const char *const *args = (const char *const *)r->ctx_args;
    json_t *rec = NULL;
    rlm_status st = RLM_OK;
    if (r->n_ctx_args) {
        conversation_reading how = rlm_reading(r);
        rec = conversation_args_record(args, r->ctx_fds, r->n_ctx_args, &how);
        if (!rec)
            return rlm_error(r, RLM_ERR_NOMEM, "out of memory");
        if (conversation_has(r->conv, rec)) {
            json_decref(rec);
            rlm_clear_docs(r);
            return RLM_OK;
        }
        json_t *text = NULL;
        st = r->docs ? RLM_OK : rlm_load_docs(r);
        if (st == RLM_OK &&
            (st = conversation_stream_record(r->conv, args, r->ctx_fds, r->n_ctx_args, r->docs,
                                             &text, err, sizeof err)) != RLM_OK)
            rlm_error(r, st, "%s", err);
        if (st != RLM_OK) {
            json_decref(rec);
            if (st == RLM_ERR_INPUT && drop_bad_args(r) > 0)
                return st;   /* the others wait for the next question */
            /* Dropped, so that the next question can bring a better one. */
            rlm_clear_docs(r);
            return st;
        }
        if (text) {
            json_decref(rec);
            rec = text;
        }
    } else if (r->given_whole) {
        if (r->given_file && !(rec = conversation_file_record(r->given_file)))
            return rlm_error(r, RLM_ERR_NOMEM, "out of memory");
        if (!r->given_file) {
            const ingest_doc *d = ingest_docs(r->docs);
            st = conversation_text_record(r->conv, "the context text", d->data, d->len, &rec, err,
                                          sizeof err);
            if (st != RLM_OK)
                return rlm_error(r, st, "%s", err);
        }
        if (conversation_has(r->conv, rec)) {
            json_decref(rec);
            rlm_clear_docs(r);
            return RLM_OK;
        }
    } else {
        return RLM_OK;
    }
    ingest_set *in = r->docs;
    r->docs = NULL;
    rlm_clear_docs(r);
    st = conversation_add(r->conv, in, rec, err, sizeof err);
    return st == RLM_OK ? RLM_OK : rlm_error(r, st, "%s", err);
}

/* Before each question of a conversation: the earlier process's questions
 * (once), then the new input, then the session's record of them. */
static rlm_status conversation_prepare(rlm *r)
{
    char err[sizeof r->errmsg];
    rlm_status st = conversation_ready(r->conv, r->params.model, r->params.sub_model, err,
                                       sizeof err);
    if (st != RLM_OK)
        return rlm_error(r, st, "%s", err);
    if ((st = conversation_add_pending(r)) != RLM_OK)
        return st;
    st = conversation_save(r->conv, r->params.model, r->params.sub_model, err, sizeof err);
    return st == RLM_OK ? RLM_OK : rlm_error(r, st, "%s", err);
}

/* Says once that the trace could not be written (the run went on). */
static void rlm_trace_check(rlm *r)
{
    if (r->trace_warned || !trace_failed(r->trace))
        return;
    r->trace_warned = 1;
    rlm_warn(r, trace_error(r->trace));
}

static void rlm_build_report(rlm *r, const engine_outcome *o)
{
    int in_flight = lm_max_in_flight(r->lm);
    if (r->sub_lm && lm_max_in_flight(r->sub_lm) > in_flight)
        in_flight = lm_max_in_flight(r->sub_lm);
    json_t *answer = o->answer ? frame_string(o->answer, o->answer_len) : json_null();
    /* Usage per model is the call path's: it counts cache hits and replayed
     * calls too, and is the run's one ledger. */
    json_t *usage = calls_usage_json(r->calls);
    json_t *j = json_pack("{s:o,s:s?,s:s,s:s?,s:i,s:I,s:I,s:I,s:s?,s:o,s:f,s:s?,s:s,s:s,s:i,s:o,s:s?,s:s}",
                          "answer", answer ? answer : json_null(),
                          "how", o->status == RLM_OK ? o->how : NULL,
                          "status", rlm_status_name(o->status),
                          "error", o->error, "iterations", o->iterations,
                          "blocks", (json_int_t)o->blocks, "sub_calls", (json_int_t)o->sub_calls,
                          "sub_call_errors", (json_int_t)o->sub_call_errors,
                          "sub_call_error", o->sub_call_error,
                          "usage", usage ? usage : json_object(), "elapsed_seconds", o->elapsed,
                          "sandbox_layers", o->sandbox_layers, "model", r->params.model,
                          "sub_model", r->params.sub_model, "max_in_flight", in_flight,
                          "cost_usd", o->cost_usd >= 0 ? json_real(o->cost_usd) : json_null(),
                          "stopped_by", o->stopped_by, "mode", o->mode ? o->mode : "rlm");
    const char *name = rlm_config_get(r->cfg, "session");
    const char *trace_err = trace_error(r->trace);
    if (j)
        json_object_set_new(j, "trace_error", trace_err[0] ? json_string(trace_err) : json_null());
    if (j)
        json_object_update_new(j, json_pack("{s:I,s:I,s:i,s:o,s:o}", "children",
                                            (json_int_t)o->children, "sandboxes",
                                            (json_int_t)o->sandboxes, "depth_reached",
                                            o->depth_reached, "question",
                                            o->question > 0 ? json_integer(o->question) : json_null(),
                                            "session", name[0] ? json_string(name) : json_null()));
    budget spent;
    calls_budget_snapshot(r->calls, &spent);
    if (j)
        json_object_update_new(j, json_pack("{s:I,s:I,s:I,s:o}", "sub_calls_deduplicated",
                                            (json_int_t)o->sub_calls_deduplicated, "cached_tokens",
                                            (json_int_t)spent.cached_tokens, "cache_write_tokens",
                                            (json_int_t)spent.cache_write_tokens, "cost_no_cache_usd",
                                            o->cost_usd >= 0 ? json_real(spent.cost_no_cache) : json_null()));
    free(r->report);
    r->report = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
}

/* The inputs of the question for the run log: each argument and its size
 * (-1 when it is no regular file: a directory, a glob, stdin). */
static json_t *rlm_log_inputs(const rlm *r)
{
    json_t *inputs = json_array();
    for (size_t i = 0; i < r->n_ctx_args; i++) {
        struct stat st;
        int file = stat(r->ctx_args[i], &st) == 0 && S_ISREG(st.st_mode);
        json_array_append_new(inputs, json_pack("{s:s,s:I}", "name", r->ctx_args[i], "bytes",
                                                file ? (json_int_t)st.st_size : (json_int_t)-1));
    }
    if (r->n_ctx_args == 0 && r->given_whole)
        json_array_append_new(inputs, json_pack("{s:s,s:I}", "name",
                                                r->given_file ? r->given_file : "(text)", "bytes",
                                                (json_int_t)ingest_total_bytes(r->docs)));
    return inputs;
}

/* Records the run just ended in the run log (the log option). The log never
 * breaks a run: a failure is one warning, and the handle logs no more. */
static void rlm_log_run(rlm *r, const char *question, double started)
{
    if (!config_long(r->cfg, "log") || r->log_broken)
        return;
    trace_sink_flush(r->trace);
    char err[1400] = "";
    /* A pool's handles share its connection to the log (pool_log_acquire). */
    runlog *log = r->log;
    int shared = 0;
    if (!log) {
        const char *db = rlm_config_get(r->cfg, "log_db");
        char *path = db[0] ? strdup(db) : user_file_path("XDG_DATA_HOME", ".local/share", "logs.db");
        if (path && r->pool)
            shared = pool_log_acquire(r->pool, path, &log, err, sizeof err);
        if (path && shared == 0)
            log = r->log = runlog_open(path, err, sizeof err);
        if (!path)
            snprintf(err, sizeof err, "neither XDG_DATA_HOME nor HOME is set: give log_db");
        free(path);
        shared = shared > 0;
    }
    json_t *inputs = rlm_log_inputs(r);
    long long id;
    size_t max = 0;
    parse_size(rlm_config_get(r->cfg, "log_max"), &max);
    int recorded = log && runlog_record_report(log, rlm_config_get(r->cfg, "log_command"), question,
                                               inputs, started, r->report, r->capture, max, &id, err,
                                               sizeof err) == 0;
    if (shared)
        pool_log_release(r->pool);
    if (!recorded) {
        char msg[1600];
        snprintf(msg, sizeof msg, "this run is not in the run log: %s (--no-log or RLM_LOG=0 turns "
                 "the log off)", err);
        rlm_warn(r, msg);
        r->log_broken = 1;
    } else {
        /* The report names the run's row, for rlm view ID. */
        json_t *rep = r->report ? json_loads(r->report, 0, NULL) : NULL;
        char *text = NULL;
        if (rep && json_object_set_new(rep, "log_id", json_integer(id)) == 0 &&
            (text = json_dumps(rep, JSON_COMPACT))) {
            free(r->report);
            r->report = text;
        }
        json_decref(rep);
    }
    json_decref(inputs);
}

rlm_status rlm_ask(rlm *r, const char *question, char **answer)
{
    return rlm_ask_len(r, question, answer, NULL);
}

rlm_status rlm_ask_len(rlm *r, const char *question, char **answer, size_t *answer_len)
{
    *answer = NULL;
    if (answer_len)
        *answer_len = 0;
    if (!r->lm || !r->calls) {
        char why[sizeof r->errmsg];
        snprintf(why, sizeof why, "%s", r->errmsg);
        return rlm_error(r, RLM_ERR_USAGE, "this handle failed to open: %s", why);
    }
    r->errmsg[0] = '\0';
    r->cancelled = 0;
    if (!question || !question[0])
        return rlm_error(r, RLM_ERR_USAGE, "the question is empty");

    /* Streamed root turns let the progress line show the reply arriving. */
    const char *stream = rlm_config_get(r->cfg, "stream");
    r->params.stream = stream[0] ? stream[0] == '1' : r->progress != NULL || r->events.fn != NULL;

    if (r->conv && r->named) {
        /* A conversation loads its own copy of a named input, by its path,
         * so that a saved session reads it again when continued. */
        rlm_status st = add_input(r, r->named_arg, -1);
        r->named = NULL;
        if (st != RLM_OK)
            return st;
    }
    r->params.preloaded = r->conv ? NULL : r->named;
    if (r->conv) {
        rlm_status st = conversation_prepare(r);
        if (st != RLM_OK)
            return st;
    } else if (r->n_ctx_args && !r->docs) {
        rlm_status st = rlm_load_docs(r);
        if (st != RLM_OK)
            return st;
    }
    r->params.state = r->conv ? conversation_state(r->conv) : NULL;

    engine_outcome o;
    double started = clock_wall();
    trace_sink_flush(r->trace);   /* the capture is ours again: the last question's lines are in */
    runlog_capture_reset(r->capture, NULL, 0);
    calls_begin_run(r->calls);
    /* A conversation's questions share their sub-calls' replies; separate
     * rlm_ask calls on one handle do not. */
    if (!r->conv)
        calls_forget_answers(r->calls);
    rlm_status st = engine_run(&r->params, r->calls, r->trace, question, r->progress,
                               r->progress_data, &o);
    rlm_trace_check(r);
    rlm_build_report(r, &o);
    if (o.sub_call_errors && (st == RLM_OK || st == RLM_NO_ANSWER)) {
        /* An answer built on failed sub-calls may be wrong: never silently. */
        char msg[1400];
        snprintf(msg, sizeof msg, "%zu of %zu sub-calls failed (the model's code got \"Error: ...\" "
                 "strings instead of replies); the first: %.1000s", o.sub_call_errors, o.sub_calls,
                 o.sub_call_error ? o.sub_call_error : "?");
        rlm_warn(r, msg);
    }
    rlm_log_run(r, question, started);
    if (st == RLM_OK) {
        *answer = o.answer;
        if (answer_len)
            *answer_len = o.answer_len;
        o.answer = NULL;
    } else if (o.error) {
        rlm_error(r, st, "%s", o.error);
    }
    engine_outcome_clear(&o);
    return st;
}

rlm_status rlm_system_prompt(const rlm_config *cfg, int template, char **out)
{
    *out = NULL;
    rlm_config *defaults = cfg ? NULL : rlm_config_new();
    const rlm_config *c = cfg ? cfg : defaults;
    if (!c)
        return RLM_ERR_NOMEM;
    const char *custom = rlm_config_get(c, "system_prompt");
    if (template)
        *out = prompt_system_template();
    else if (custom[0])
        *out = prompt_system_fill(custom, (int)config_long(c, "max_iterations"), NULL);
    else
        *out = prompt_system((int)config_long(c, "max_iterations"));
    rlm_config_free(defaults);
    return *out ? RLM_OK : RLM_ERR_NOMEM;
}

const char *rlm_report_json(rlm *r)
{
    return r->report;
}

const char *rlm_trace_error(const rlm *r)
{
    return r ? trace_error(r->trace) : "";
}

/* ---- sessions on disk, as a whole ------------------------------------------- */

#define NO_SESSION_DB "neither XDG_DATA_HOME nor HOME is set: give session_db"

/* cfg's session_db, else the default file; NULL when neither can be named. */
static char *sessions_db_path(const rlm_config *cfg)
{
    const char *db = cfg ? rlm_config_get(cfg, "session_db") : "";
    return db[0] ? strdup(db) : user_file_path("XDG_DATA_HOME", ".local/share", "sessions.db");
}

/* *out = the JSON text of j (stolen) on RLM_OK, else a copy of err. */
static rlm_status sessions_result(int rc, json_t *j, const char *err, char **out)
{
    *out = rc == 0 && j ? json_dumps(j, JSON_COMPACT) : strdup(rc == 0 ? "out of memory" : err);
    json_decref(j);
    if (!*out)
        return RLM_ERR_NOMEM;
    return rc == 0 && j ? RLM_OK : RLM_ERR_INPUT;
}

rlm_status rlm_sessions_list(const rlm_config *cfg, char **out)
{
    char err[2048], *path = sessions_db_path(cfg);
    json_t *list = NULL;
    if (!path)
        return sessions_result(-1, NULL, NO_SESSION_DB, out);
    int rc = session_list(path, &list, err, sizeof err);
    free(path);
    return sessions_result(rc, list, err, out);
}

rlm_status rlm_session_remove(const rlm_config *cfg, const char *name, char **out)
{
    char err[2048], *path = sessions_db_path(cfg);
    if (!path)
        return sessions_result(-1, NULL, NO_SESSION_DB, out);
    int rc = session_remove(path, name ? name : "", err, sizeof err);
    json_t *j = rc == 0 ? json_pack("{s:s,s:s}", "removed", name, "database", path) : NULL;
    free(path);
    return sessions_result(rc, j, err, out);
}

rlm_status rlm_sessions_recover(const rlm_config *cfg, char **out)
{
    char err[2048], *path = sessions_db_path(cfg);
    json_t *report = NULL;
    if (!path)
        return sessions_result(-1, NULL, NO_SESSION_DB, out);
    int rc = session_recover(path, &report, err, sizeof err);
    free(path);
    return sessions_result(rc, report, err, out);
}

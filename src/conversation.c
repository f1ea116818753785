/* conversation — the inputs, records and engine state of questions that
 * build on each other, in memory or saved as a session (docs/sessions.md). */
#include "conversation.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "session.h"
#include "util.h"

/* Largest text input a session saves (a later process cannot read it again). */
#define MAX_SAVED_TEXT_BYTES ((size_t)1 << 20)
/* Inputs one conversation may be given. */
#define MAX_INPUTS 4096

struct conversation {
    conversation_hooks hooks;
    char name[128];            /* the session's name; "" in memory */
    session *store;            /* NULL: in memory only */
    engine_state *state;       /* borrows store and inputs: freed first */
    ingest_set **inputs;       /* every input given, in order */
    size_t n_inputs;
    /* The inputs as the session's config records them; kept in memory-only
     * conversations too, to tell a repeated input. */
    json_t *recorded;
    int resumed;               /* the session's earlier questions were read back */
    int broken;                /* resuming failed: the conversation cannot go on */
};

static void warn(const conversation *c, const char *message)
{
    if (c->hooks.warn)
        c->hooks.warn(c->hooks.data, message);
}

rlm_status conversation_open(const char *db, const char *name, const conversation_hooks *hooks,
                             conversation **out, char *err, size_t errlen)
{
    *out = NULL;
    conversation *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return RLM_ERR_NOMEM;
    }
    c->hooks = *hooks;
    if (db) {
        snprintf(c->name, sizeof c->name, "%s", name);
        char why[1024];
        if (session_open(db, name, &c->store, why, sizeof why) != 0) {
            /* "session 'x' is in use by pid N" names the session already. */
            if (strncmp(why, "session '", 9) == 0)
                snprintf(err, errlen, "%s", why);
            else
                snprintf(err, errlen, "session '%s': %s", name, why);
            conversation_free(c);
            return RLM_ERR_INPUT;
        }
        if (session_created(c->store)) {
            char msg[1400];
            snprintf(msg, sizeof msg, "new session '%s' in %.1000s ('rlm sessions' lists the others)",
                     name, db);
            warn(c, msg);
        }
    }
    c->state = engine_state_new(c->store);
    c->recorded = json_array();
    if (!c->state || !c->recorded) {
        conversation_free(c);
        snprintf(err, errlen, "out of memory");
        return RLM_ERR_NOMEM;
    }
    *out = c;
    return RLM_OK;
}

void conversation_free(conversation *c)
{
    if (!c)
        return;
    /* The state borrows the store and the inputs: it goes first. */
    engine_state_free(c->state);
    session_free(c->store);
    for (size_t i = 0; i < c->n_inputs; i++)
        ingest_free(c->inputs[i]);
    free(c->inputs);
    json_decref(c->recorded);
    free(c);
}

engine_state *conversation_state(conversation *c)
{
    return c->state;
}

int conversation_is_new(const conversation *c)
{
    return engine_state_questions(c->state) == 0 && (!c->store || session_is_new(c->store));
}

/* ---- records ---------------------------------------------------------------- */

/* arg as an absolute path, taken from cwd when relative, without "..",
 * "." or symbolic links when it exists ("-" and globs otherwise unchanged). */
static json_t *absolute_arg(const char *cwd, const char *arg)
{
    if (strcmp(arg, "-") == 0)
        return json_string(arg);
    json_t *joined = arg[0] == '/' || !cwd || !cwd[0] ? json_string(arg)
                                                      : json_sprintf("%s/%s", cwd, arg);
    char real[PATH_MAX];
    if (joined && realpath(json_string_value(joined), real)) {
        json_decref(joined);
        return json_string(real);
    }
    return joined;
}

/* The record's arguments as absolute paths (a new array), NULL when it has
 * none. Two records name the same input when these are equal. */
static json_t *record_absolute_args(const json_t *rec)
{
    const json_t *args = json_object_get(rec, "args");
    const char *cwd = json_string_value(json_object_get(rec, "cwd"));
    if (!json_is_array(args))
        return NULL;
    json_t *out = json_array();
    size_t i;
    const json_t *a;
    json_array_foreach(args, i, a) {
        if (!json_is_string(a) || json_array_append_new(out, absolute_arg(cwd, json_string_value(a))) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* 1 for an argument read as a stream that no later process can read
 * again: stdin, a pipe or FIFO (bash's <(cmd)). */
static int stream_arg(const char *arg)
{
    struct stat st;
    return strcmp(arg, "-") == 0 || (stat(arg, &st) == 0 && S_ISFIFO(st.st_mode));
}

int conversation_has(const conversation *c, const json_t *rec)
{
    if (json_is_true(json_object_get(rec, "descriptors")))
        return 0;
    json_t *mine = record_absolute_args(rec);
    const char *file = json_string_value(json_object_get(rec, "file"));
    int found = 0;
    if (mine) {
        size_t i;
        const json_t *a;
        json_array_foreach(mine, i, a)
            if (stream_arg(json_string_value(a))) {
                json_decref(mine);
                return 0;
            }
    }
    size_t i;
    const json_t *old;
    json_array_foreach(c->recorded, i, old) {
        if (mine) {
            json_t *theirs = record_absolute_args(old);
            found = theirs && json_equal(mine, theirs);
            json_decref(theirs);
        } else if (file) {
            const char *old_file = json_string_value(json_object_get(old, "file"));
            found = old_file && strcmp(old_file, file) == 0;
        }
        if (found)
            break;
    }
    json_decref(mine);
    return found;
}

static json_t *text_or_null(const char *s)
{
    return s && s[0] ? json_string(s) : json_null();
}

json_t *conversation_args_record(const char *const *args, const int *fds, size_t n,
                                 const conversation_reading *how)
{
    char cwd[PATH_MAX];
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++)
        if (json_array_append_new(list, json_string(args[i])) != 0) {
            json_decref(list);
            list = NULL;
        }
    if (!list)
        return NULL;
    int descriptors = 0;
    for (size_t i = 0; fds && i < n; i++)
        descriptors |= fds[i] >= 0;
    /* "json": JSON inputs are parsed (records made before are read as text).
     * "descriptors": some arguments only name data given by descriptor,
     * new each time (never "already given"). */
    json_t *rec = json_pack("{s:o,s:o,s:o,s:o,s:o,s:b,s:b}", "args", list,
                            "cwd", getcwd(cwd, sizeof cwd) ? json_string(cwd) : json_null(),
                            "include", text_or_null(how->include),
                            "exclude", text_or_null(how->exclude),
                            "jsonl_field", text_or_null(how->jsonl_field),
                            "json_input", how->json_input, "json", 1);
    if (rec && descriptors && json_object_set_new(rec, "descriptors", json_true()) != 0) {
        json_decref(rec);
        return NULL;
    }
    return rec;
}

json_t *conversation_file_record(const char *path)
{
    char full[PATH_MAX];
    return json_pack("{s:s}", "file", realpath(path, full) ? full : path);
}

rlm_status conversation_text_record(const conversation *c, const char *what, const char *data,
                                    size_t len, json_t **rec, char *err, size_t errlen)
{
    *rec = NULL;
    if (!c->store) {   /* in memory only: nothing will read it again */
        *rec = json_pack("{s:n}", "text");
    } else if (len >= MAX_SAVED_TEXT_BYTES) {
        snprintf(err, errlen, "session '%s': %s (%zu bytes) cannot be saved: a later process "
                 "cannot read it again, and a session keeps such text only under 1 MB; give it "
                 "as a file instead", c->name, what, len);
        return RLM_ERR_USAGE;
    } else {
        json_t *text = json_stringn(data ? data : "", len);
        if (!text) {
            snprintf(err, errlen, "session '%s': %s is not valid UTF-8 and cannot be saved; give "
                     "it as a file instead", c->name, what);
            return RLM_ERR_USAGE;
        }
        *rec = json_pack("{s:o}", "text", text);
    }
    if (*rec)
        return RLM_OK;
    snprintf(err, errlen, "out of memory");
    return RLM_ERR_NOMEM;
}

rlm_status conversation_stream_record(const conversation *c, const char *const *args,
                                      const int *fds, size_t n, const ingest_set *docs,
                                      json_t **rec, char *err, size_t errlen)
{
    *rec = NULL;
    int has_stream = 0;
    for (size_t i = 0; i < n; i++)
        has_stream |= (fds && fds[i] >= 0) || stream_arg(args[i]);
    if (!has_stream || !c->store)
        return RLM_OK;
    if (n != 1 || ingest_kind_of(docs) != INGEST_STR || ingest_count(docs) != 1 ||
        ingest_format_of(docs) != INGEST_TEXT) {
        snprintf(err, errlen, "session '%s': stdin (-), a pipe or an input given by descriptor can "
                 "be an input of a saved session only on its own and as plain text (not JSON or "
                 "JSONL)", c->name);
        return RLM_ERR_USAGE;
    }
    const ingest_doc *d = ingest_docs(docs);
    return conversation_text_record(c, "the text read from stdin", d->data, d->len, rec, err,
                                    errlen);
}

rlm_status conversation_add(conversation *c, ingest_set *docs, json_t *rec, char *err,
                            size_t errlen)
{
    ingest_set **grown = NULL;
    if (c->n_inputs < MAX_INPUTS)
        grown = realloc(c->inputs, (c->n_inputs + 1) * sizeof *grown);
    if (!grown) {
        ingest_free(docs);
        json_decref(rec);
        if (c->n_inputs < MAX_INPUTS) {
            snprintf(err, errlen, "out of memory");
            return RLM_ERR_NOMEM;
        }
        snprintf(err, errlen, "a conversation takes at most %d inputs", MAX_INPUTS);
        return RLM_ERR_USAGE;
    }
    c->inputs = grown;
    c->inputs[c->n_inputs++] = docs;
    if (json_array_append_new(c->recorded, rec) != 0 || engine_state_add_input(c->state, docs) < 0) {
        snprintf(err, errlen, "out of memory");
        return RLM_ERR_NOMEM;
    }
    return RLM_OK;
}

/* ---- a session continued --------------------------------------------------- */

/* Reads input number n of the session again from its record. */
static rlm_status input_reopen(conversation *c, const json_t *rec, size_t n, ingest_set **in,
                               char *err, size_t errlen)
{
    const char *name = c->name;
    const char *file = json_string_value(json_object_get(rec, "file"));
    const json_t *text = json_object_get(rec, "text");
    const json_t *args = json_object_get(rec, "args");
    char why[2048];
    if (file) {
        if (ingest_open_file(file, in, why, sizeof why) == 0)
            return RLM_OK;
        snprintf(err, errlen, "session '%s': input %zu (%s) cannot be read again: %s", name, n,
                 file, why);
        return RLM_ERR_INPUT;
    }
    if (json_is_string(text)) {
        if (ingest_open_text(json_string_value(text), json_string_length(text), in, why,
                             sizeof why) == 0)
            return RLM_OK;
        snprintf(err, errlen, "session '%s': input %zu (saved text): %s", name, n, why);
        return RLM_ERR_INPUT;
    }
    /* From the directory it was given in, the names stay the same; elsewhere
     * relative arguments are read from there. */
    char cwd[PATH_MAX];
    const char *then = json_string_value(json_object_get(rec, "cwd"));
    int here = !then || (getcwd(cwd, sizeof cwd) && strcmp(cwd, then) == 0);
    json_t *use = !json_is_array(args) ? NULL
                  : here               ? json_incref((json_t *)args)
                                       : record_absolute_args(rec);
    size_t count = use ? json_array_size(use) : 0;
    const char **argv = count ? calloc(count, sizeof *argv) : NULL;
    buf shown;
    buf_init(&shown, 1024);
    rlm_status st = RLM_ERR_INPUT;
    for (size_t i = 0; argv && i < count; i++) {
        argv[i] = json_string_value(json_array_get(use, i));
        buf_printf(&shown, "%s%s", i ? " " : "", argv[i] ? argv[i] : "?");
        if (!argv[i]) {
            free(argv);
            argv = NULL;
        }
    }
    if (!argv) {
        snprintf(err, errlen, "session '%s': input %zu cannot be read again: its record in the "
                 "session has an unknown form", name, n);
        goto done;
    }
    const char *inc = json_string_value(json_object_get(rec, "include"));
    const char *exc = json_string_value(json_object_get(rec, "exclude"));
    const char *field = json_string_value(json_object_get(rec, "jsonl_field"));
    conversation_reading how = {.include = inc ? inc : "", .exclude = exc ? exc : "",
                                .jsonl_field = field ? field : "",
                                .json_input = json_is_true(json_object_get(rec, "json_input")),
                                .legacy = !json_object_get(rec, "json")};
    st = c->hooks.ingest(c->hooks.data, argv, count, &how, in, why, sizeof why);
    if (st != RLM_OK) {
        snprintf(err, errlen, "session '%s': input %zu (%s) cannot be read again: %s", name, n,
                 shown.data ? shown.data : "", why);
        st = RLM_ERR_INPUT;
    }
done:
    free(argv);
    json_decref(use);
    buf_free(&shown);
    return st;
}

/* A session with questions from an earlier process: its inputs are read again
 * in order, then the engine reads back the history (and rebuilds the
 * sandbox's variables at the next question). */
static rlm_status resume(conversation *c, const char *model, const char *sub_model, char *err,
                         size_t errlen)
{
    if (session_is_new(c->store))
        return RLM_OK;
    const char *name = c->name;
    const json_t *cfg = session_config(c->store);
    const char *keys[2] = {"model", "sub_model"};
    const char *now[2] = {model, sub_model};
    for (int k = 0; k < 2; k++) {
        const char *then = json_string_value(json_object_get(cfg, keys[k]));
        if (then && strcmp(then, now[k]) != 0) {
            char msg[1200];
            snprintf(msg, sizeof msg, "session '%s' was last run with %s '%.400s'; this run uses "
                     "'%.400s'", name, keys[k], then, now[k]);
            warn(c, msg);
        }
    }
    /* Recorded before the first input was also context_0: its code and
     * history name the inputs context_1, context_2, ... (docs/sessions.md). */
    const char *names = json_string_value(json_object_get(cfg, "names"));
    engine_state_set_legacy_names(c->state, !names || strcmp(names, "context_1") == 0);
    size_t i;
    const json_t *rec;
    json_array_foreach(json_object_get(cfg, "inputs"), i, rec) {
        ingest_set *in = NULL;
        rlm_status st = input_reopen(c, rec, i + 1, &in, err, errlen);
        if (st == RLM_OK)
            st = conversation_add(c, in, json_deep_copy(rec), err, errlen);
        if (st != RLM_OK)
            return st;
    }
    char why[1024];
    if (engine_state_resume(c->state, why, sizeof why) != 0) {
        snprintf(err, errlen, "session '%s' cannot be continued: %s", name, why);
        return RLM_ERR_INPUT;
    }
    const char *partly = engine_state_resume_warning(c->state);
    if (partly) {
        char msg[1200];
        snprintf(msg, sizeof msg, "session '%s': %s", name, partly);
        warn(c, msg);
    }
    /* A session recovered from a damaged file says what it lost. */
    const json_t *lost = json_object_get(cfg, "recovered");
    if (json_is_true(json_object_get(lost, "data_lost")) && !partly &&
        !engine_state_has_data(c->state)) {
        char msg[512];
        snprintf(msg, sizeof msg, "session '%s' lost the data of its last question when its file was "
                 "recovered: its variables are not restored (its history and answers are)", name);
        warn(c, msg);
    }
    if (json_is_true(json_object_get(lost, "messages_lost")) ||
        json_is_true(json_object_get(lost, "questions_lost"))) {
        char msg[512];
        snprintf(msg, sizeof msg, "session '%s' lost part of its history or answers when its file was "
                 "recovered", name);
        warn(c, msg);
    }
    return RLM_OK;
}

rlm_status conversation_ready(conversation *c, const char *model, const char *sub_model,
                              char *err, size_t errlen)
{
    if (c->broken) {
        snprintf(err, errlen, "session '%s' could not be continued (see the first error)", c->name);
        return RLM_ERR_INPUT;
    }
    if (!c->store || c->resumed)
        return RLM_OK;
    rlm_status st = resume(c, model, sub_model, err, errlen);
    if (st != RLM_OK) {
        c->broken = 1;
        return st;
    }
    c->resumed = 1;
    return RLM_OK;
}

rlm_status conversation_save(conversation *c, const char *model, const char *sub_model,
                             char *err, size_t errlen)
{
    if (!c->store)
        return RLM_OK;
    json_t *cfg = json_pack("{s:O,s:s,s:s,s:s}", "inputs", c->recorded, "model", model,
                            "sub_model", sub_model, "names",
                            engine_state_legacy_names(c->state) ? "context_1" : "context_0");
    int rc = cfg ? session_set_config(c->store, cfg) : -1;
    json_decref(cfg);
    if (rc == 0)
        return RLM_OK;
    snprintf(err, errlen, "session '%s': %s", c->name, cfg ? session_errmsg(c->store) : "out of memory");
    return RLM_ERR_INPUT;
}

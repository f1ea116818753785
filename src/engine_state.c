/* engine_state — conversations: the inputs (context, context_1, ...), the
 * sandbox kept between questions, the answers (answer_k) and earlier
 * questions' messages (history_k), the session store every message and cell
 * is saved to, and the replay that rebuilds a namespace in a later process
 * (engine.h describes the contract). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "prompt.h"
#include "util.h"

/* Answers each sub-call of a replayed cell from its recorded reply. */
typedef struct replay_cursor {
    const json_t *replies;
    size_t next;
} replay_cursor;

static int replay_calls(void *userdata, int kind, const char *model, const char *const *prompts,
                        const size_t *prompt_lens, const char *const *contexts,
                        const size_t *context_lens, size_t n, char **results,
                        size_t *result_lens)
{
    (void)kind;
    (void)model;
    (void)prompts;
    (void)prompt_lens;
    (void)contexts;
    (void)context_lens;
    replay_cursor *cur = userdata;
    for (size_t i = 0; i < n; i++) {
        const json_t *r = json_array_get(cur->replies, cur->next++);
        if (json_is_string(r)) {
            results[i] = str_dup_len(json_string_value(r), json_string_length(r));
            result_lens[i] = json_string_length(r);
        } else {
            results[i] = strdup("Error: no recorded reply for this sub-call (session replay)");
        }
    }
    return 0;
}

typedef struct replay_run {
    engine *e;
    size_t cells, raised;
    int broken;
    char err[512];
} replay_run;

static int replay_cell(void *userdata, const char *code, const json_t *replies)
{
    replay_run *rr = userdata;
    replay_cursor cur = {.replies = replies};
    sandbox_cell cell = {0};
    int rc = sandbox_exec(rr->e->sb, code, replay_calls, &cur, &cell, rr->err, sizeof rr->err);
    if (rc == 0) {
        rr->cells++;
        rr->raised += cell.raised != 0;
    }
    sandbox_cell_clear(&cell);
    if (rc != 0) {
        rr->broken = 1;
        return 1;
    }
    return engine_cancelled(rr->e);
}

/* The variable input i (0-based) of the conversation is bound to: context_i,
 * or context_{i+1} in a session recorded before context_0 existed, whose
 * recorded code and history use those names. */
static void input_name(const engine_state *st, size_t i, char *name, size_t size)
{
    snprintf(name, size, "context_%zu", i + (st->legacy_names ? 1 : 0));
}

static void set_var_failed(engine *e, const char *what, const char *err)
{
    engine_event(e, "warning", json_pack("{s:s,s:s}", "message", what, "detail", err));
}

/* answer_1 .. answer_k of the questions so far, and with histories their
 * history_0 .. history_{k-1} (protected: set once per sandbox). */
static void engine_set_answers(engine *e, int histories)
{
    engine_state *st = e->st;
    for (int k = 0; k < st->questions; k++) {
        char name[32], err[256];
        if (histories && st->histories[k]) {
            snprintf(name, sizeof name, "history_%d", k);
            if (sandbox_set_value(e->sb, name, st->histories[k], err, sizeof err) != 0)
                set_var_failed(e, "cannot set a history variable", err);
        }
        if (!st->answers || !st->answers[k])
            continue;
        snprintf(name, sizeof name, "answer_%d", k + 1);
        if (sandbox_set_var(e->sb, name, st->answers[k], err, sizeof err) != 0)
            set_var_failed(e, "cannot set an answer variable", err);
    }
}

/* Makes sure the conversation's sandbox runs with every input loaded, and
 * after a resume, rebuilds its namespace. */
int engine_state_sandbox(engine *e)
{
    engine_state *st = e->st;
    int fresh = 0;
    if (!st->sb) {
        engine_input *first = st->n_inputs ? &st->inputs[0] : NULL;
        if (engine_start_sandbox(e, first ? first->docs : NULL, first ? first->ctx : NULL) != 0)
            return -1;
        st->sb = e->sb;
        st->inputs_loaded = first ? 1 : 0;
        st->input_base = first ? 0 : 1;   /* without an input, the sandbox's first is '' */
        fresh = 1;
    }
    e->sb = st->sb;
    if (!e->out->sandbox_layers)
        e->out->sandbox_layers = strdup(sandbox_layers(st->sb));
    while (st->inputs_loaded < st->n_inputs) {
        engine_input *in = &st->inputs[st->inputs_loaded];
        char name[32], err[1024];
        input_name(st, st->inputs_loaded, name, sizeof name);
        sandbox_input si;
        int rc = engine_input_open(in->docs, in->ctx, &si, err, sizeof err);
        if (rc == 0) {
            rc = sandbox_add_input(st->sb, name, &si, err, sizeof err);
            engine_input_close(&si, in->docs);
        }
        if (rc == -2) {
            engine_fail(e, RLM_ERR_INPUT, "input: %s", err);
            return -1;
        }
        if (rc != 0) {
            engine_fail(e, RLM_ERR_INPUT, "cannot load %s into the sandbox: %s", name, err);
            return -1;
        }
        engine_input_problems(e, sandbox_input_summary(st->sb, st->inputs_loaded + st->input_base));
        st->inputs_loaded++;
    }
    if (fresh && (st->replay_pending || st->questions > 0)) {
        engine_set_answers(e, 1);
        if (st->replay_pending && st->store) {
            engine_progress(e, "rebuilding the session's variables");
            double t0 = clock_now();
            replay_run rr = {.e = e};
            int read = session_each_cell(st->store, replay_cell, &rr);
            if (read < 0 && !rr.broken) {
                /* Cells that cannot be read would leave some variables out, or
                 * give other sub-call results than the model's code had. */
                snprintf(rr.err, sizeof rr.err, "%s", session_errmsg(st->store));
                engine_event(e, "session_replay", json_pack("{s:I,s:b,s:s}", "cells",
                                                            (json_int_t)rr.cells, "broken", 1,
                                                            "error", rr.err));
                engine_fail(e, RLM_ERR_INPUT, "the session cannot be rebuilt: %s", rr.err);
                return -1;
            }
            engine_event(e, "session_replay",
                         json_pack("{s:I,s:I,s:f,s:b,s:s?}", "cells", (json_int_t)rr.cells, "raised",
                                   (json_int_t)rr.raised, "seconds", clock_now() - t0, "broken",
                                   rr.broken, "error", rr.broken ? rr.err : NULL));
            if (rr.broken) {
                engine_fail(e, RLM_ERR_SANDBOX, "sandbox failed while rebuilding the session: %s", rr.err);
                return -1;
            }
            engine_set_answers(e, 0);   /* a replayed cell may have rebound one */
        }
        st->replay_pending = 0;
    }
    return 0;
}

/* The messages that open a question of a conversation: the first question
 * describes its input like a single run; a later one says what carried over
 * and describes the inputs that arrived since (context_1, ...). */
int engine_state_messages(engine *e, const char *question, int number)
{
    engine_state *st = e->st;
    size_t first_new = 0;
    while (first_new < st->n_inputs && st->inputs[first_new].announced)
        first_new++;
    buf desc;
    buf_init(&desc, SIZE_MAX / 2);
    char names[256] = "";
    engine_check_inputs(e);   /* the descriptions read the files: cut any that shrank first */
    for (size_t i = first_new; i < st->n_inputs; i++) {
        engine_input *in = &st->inputs[i];
        char *d = engine_input_describe(in->docs, in->ctx,
                                        sandbox_input_summary(st->sb, i + st->input_base));
        if (!d) {
            buf_free(&desc);
            return -1;
        }
        char name[32];
        input_name(st, i, name, sizeof name);
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s%s", used ? ", " : "", name);
        if (i > first_new)
            buf_printf(&desc, "\nThe variable `%s` holds another input:\n", name);
        buf_puts(&desc, d);
        free(d);
        in->announced = 1;
    }
    int rc;
    if (e->h->n == 0) {
        char *none = desc.data ? NULL : prompt_describe_context(NULL, "", 0);
        const char *first = desc.data ? desc.data : none;
        int described;
        rc = engine_push(e, "system", engine_system_prompt(e, first, &described));
        st->question_start = e->h->n;
        if (rc == 0)
            rc = engine_push(e, "user", prompt_first_user(described ? "" : first, question,
                                                          e->p->max_iterations));
        free(none);
    } else {
        st->question_start = e->h->n;
        rc = engine_push(e, "user", prompt_next_question(desc.data, desc.data ? names : NULL, question,
                                                         number, e->p->max_iterations));
    }
    buf_free(&desc);
    return rc;
}

/* Question k's messages as history_{k-1}: a list of {"role", "content"}
 * from the message that opened it to its last (after a compaction, from
 * the note that replaced the earlier ones). NULL when out of memory. */
static json_t *question_history(const engine_state *st)
{
    json_t *list = json_array();
    size_t from = st->question_start <= st->h.n ? st->question_start : st->h.n;
    for (size_t i = from; list && i < st->h.n; i++) {
        json_t *m = json_pack("{s:s,s:s}", "role", st->h.m[i].role, "content", st->h.m[i].content);
        if (!m || json_array_append_new(list, m) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    return list;
}

/* Grows answers and histories to hold question `number`. -1 when out of memory. */
static int make_room(engine_state *st, int number)
{
    if (number <= st->questions)
        return 0;
    char **a = realloc(st->answers, (size_t)number * sizeof *a);
    if (a)
        st->answers = a;
    json_t **h = realloc(st->histories, (size_t)number * sizeof *h);
    if (h)
        st->histories = h;
    if (!a || !h)
        return -1;
    for (int k = st->questions; k < number; k++) {
        a[k] = NULL;
        h[k] = NULL;
    }
    st->questions = number;
    return 0;
}

/* Keeps this question's answer and messages for the next ones. */
void engine_state_answered(engine *e, int number, const char *answer)
{
    engine_state *st = e->st;
    if (make_room(st, number) != 0)
        return;
    free(st->answers[number - 1]);
    st->answers[number - 1] = answer ? strdup(answer) : NULL;
    json_decref(st->histories[number - 1]);
    st->histories[number - 1] = question_history(st);
    char name[32], err[256];
    if (answer && st->sb) {
        snprintf(name, sizeof name, "answer_%d", number);
        if (sandbox_set_var(st->sb, name, answer, err, sizeof err) != 0)
            set_var_failed(e, "cannot set an answer variable", err);
    }
    if (st->histories[number - 1] && st->sb) {
        snprintf(name, sizeof name, "history_%d", number - 1);
        if (sandbox_set_value(st->sb, name, st->histories[number - 1], err, sizeof err) != 0)
            set_var_failed(e, "cannot set a history variable", err);
    }
    if (st->store && st->histories[number - 1] &&
        session_add_history(st->store, number, st->histories[number - 1]) != 0)
        engine_store_failed(e, "the question's history");
    if (st->store && session_end_question(st->store, answer) != 0)
        engine_store_failed(e, "the answer");
}

/* ---- conversation state --------------------------------------------------- */

engine_state *engine_state_new(session *store)
{
    engine_state *st = calloc(1, sizeof *st);
    if (st)
        st->store = store;
    return st;
}

int engine_state_add_input(engine_state *st, ingest_set *docs, const context *ctx)
{
    if (st->n_inputs == st->cap_inputs) {
        size_t cap = st->cap_inputs ? st->cap_inputs * 2 : 4;
        engine_input *in = realloc(st->inputs, cap * sizeof *in);
        if (!in)
            return -1;
        st->inputs = in;
        st->cap_inputs = cap;
    }
    st->inputs[st->n_inputs] = (engine_input){.docs = docs, .ctx = ctx};
    return (int)++st->n_inputs;
}

int engine_state_questions(const engine_state *st)
{
    return st->questions;
}

void engine_state_set_legacy_names(engine_state *st, int legacy)
{
    st->legacy_names = legacy != 0;
}

int engine_state_legacy_names(const engine_state *st)
{
    return st->legacy_names;
}

static const char *role_name(const char *role)
{
    if (strcmp(role, "system") == 0)
        return "system";
    if (strcmp(role, "assistant") == 0)
        return "assistant";
    return "user";
}

static int resume_message(void *userdata, long seq, const char *role, const char *content)
{
    (void)seq;
    engine_state *st = userdata;
    char *copy = strdup(content);
    return history_push(&st->h, role_name(role), copy) != 0;
}

static int resume_answer(void *userdata, int number, const char *question, const char *answer)
{
    (void)question;
    engine_state *st = userdata;
    if (number < 1)
        return 0;
    if (make_room(st, number) != 0)
        return 1;
    free(st->answers[number - 1]);
    st->answers[number - 1] = answer ? strdup(answer) : NULL;
    return 0;
}

static int resume_history(void *userdata, int number, const json_t *messages)
{
    engine_state *st = userdata;
    if (number < 1 || !json_is_array(messages))
        return 0;
    if (make_room(st, number) != 0)
        return 1;
    json_decref(st->histories[number - 1]);
    st->histories[number - 1] = json_deep_copy(messages);
    return 0;
}

int engine_state_resume(engine_state *st, char *err, size_t errlen)
{
    if (!st->store) {
        snprintf(err, errlen, "no session store to resume from");
        return -1;
    }
    history_free(&st->h);
    if (session_each_message(st->store, resume_message, st) != 0 ||
        session_each_answer(st->store, resume_answer, st) != 0 ||
        session_each_history(st->store, resume_history, st) != 0) {
        snprintf(err, errlen, "cannot read the session: %s", session_errmsg(st->store));
        return -1;
    }
    for (size_t i = 0; i < st->n_inputs; i++)
        st->inputs[i].announced = 1;
    st->replay_pending = 1;
    return 0;
}

void engine_state_skip_replay(engine_state *st)
{
    st->replay_pending = 0;
}

void engine_state_free(engine_state *st)
{
    if (!st)
        return;
    sandbox_free(st->sb);
    history_free(&st->h);
    for (int k = 0; k < st->questions; k++) {
        free(st->answers[k]);
        json_decref(st->histories[k]);
    }
    free(st->answers);
    free(st->histories);
    free(st->inputs);
    free(st);
}

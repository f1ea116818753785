/* engine_state — conversations: the inputs (context, context_1, ...), held
 * by the conversation's zygote; each question's fresh sandbox and the data
 * it carries from the last (a snapshot); the answers (answer_k) and earlier
 * questions' messages (history_k); the session store every message, cell,
 * answer and snapshot is saved to (engine.h describes the contract). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "describe.h"
#include "engine_internal.h"
#include "prompt.h"
#include "util.h"

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

/* answer_1 .. answer_k of the questions so far, and their history_0 ..
 * history_{k-1} (protected). */
static void engine_set_answers(engine *e)
{
    engine_state *st = e->st;
    for (int k = 0; k < st->questions; k++) {
        char name[32], err[256];
        if (st->histories[k]) {
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

static void set_note(engine_state *st, char *note)
{
    free(st->data_note);
    st->data_note = note;
}

/* Loads the conversation's new inputs into its zygote, once for all the
 * questions to come. Without a zygote (it could not start) the inputs stay
 * the state's, and each question's sandbox loads them itself. */
static int load_new_inputs(engine *e)
{
    engine_state *st = e->st;
    if (!st->factory && !st->no_factory) {
        sandbox_options so = {.exe_path = e->p->sandbox_exe,
                              .unsafe_no_sandbox = e->p->unsafe_no_sandbox};
        char err[512];
        if (sandbox_factory_new(&so, &st->factory, err, sizeof err) != 0) {
            st->factory = NULL;
            st->no_factory = 1;
            engine_event(e, "warning", json_pack("{s:s,s:s}", "message",
                                                 "each question's sandbox will be spawned and "
                                                 "load the inputs", "detail", err));
        }
    }
    while (st->factory && st->inputs_loaded < st->n_inputs) {
        engine_input *in = &st->inputs[st->inputs_loaded];
        char name[32], err[1024];
        input_name(st, st->inputs_loaded, name, sizeof name);
        sandbox_input si;
        engine_progress(e, "loading %s", name);
        int rc = engine_input_open(in->docs, &si, err, sizeof err);
        if (rc == 0) {
            rc = sandbox_factory_add_input(st->factory, name, &si, err, sizeof err);
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
        st->inputs_loaded++;
    }
    return 0;
}

/* Without a zygote: a spawned sandbox on the first input, then the others. */
static int start_spawned(engine *e)
{
    engine_state *st = e->st;
    engine_input *first = st->n_inputs ? &st->inputs[0] : NULL;
    if (engine_start_sandbox(e, first ? first->docs : NULL, NULL) != 0)
        return -1;
    for (size_t i = 1; i < st->n_inputs; i++) {
        engine_input *in = &st->inputs[i];
        char name[32], err[1024];
        input_name(st, i, name, sizeof name);
        sandbox_input si;
        int rc = engine_input_open(in->docs, &si, err, sizeof err);
        if (rc == 0) {
            rc = sandbox_add_input(e->sb, name, &si, err, sizeof err);
            engine_input_close(&si, in->docs);
        }
        if (rc != 0) {
            engine_fail(e, RLM_ERR_INPUT, rc == -2 ? "input: %s" : "cannot load an input: %s", err);
            return -1;
        }
    }
    return 0;
}

/* The question's sandbox: a fresh process, forked from the conversation's
 * zygote with every input in memory already (spawned and loading them when
 * there is no zygote), given the data the last question left and the
 * answers and histories so far. Nothing a process of an earlier question
 * did reaches it but that data, which its child validates. */
int engine_state_sandbox(engine *e)
{
    engine_state *st = e->st;
    size_t announced = 0;
    while (announced < st->n_inputs && st->inputs[announced].announced)
        announced++;
    if (load_new_inputs(e) != 0)
        return -1;
    if (st->factory ? engine_start_sandbox(e, NULL, st->factory) != 0 : start_spawned(e) != 0)
        return -1;
    for (size_t i = announced; i < st->n_inputs; i++)
        engine_input_problems(e, sandbox_input_summary(e->sb, i));
    if (st->data.fd >= 0) {
        char err[512];
        size_t variables = 0;
        int rc = sandbox_load_snapshot(e->sb, st->data.fd, st->data.len, &variables, err, sizeof err);
        engine_event(e, "data_loaded",
                     json_pack("{s:i,s:I,s:I,s:b,s:s?}", "from_question", st->data_question,
                               "bytes", (json_int_t)st->data.len, "variables",
                               (json_int_t)variables, "ok", rc == 0, "error", rc ? err : NULL));
        if (rc < 0) {
            engine_fail(e, RLM_ERR_SANDBOX, "sandbox failed while loading the data of earlier "
                        "questions: %s", err);
            return -1;
        }
        if (rc > 0)
            set_note(st, engine_strf("The data of the earlier questions could not be given back "
                                     "to the REPL (%s): start from the inputs.", err));
    }
    engine_set_answers(e);
    return 0;
}

/* What the next question's message says about the data carried: how many
 * variables, those left out by reason (named, bounded), and a note. NULL
 * when there is nothing to say. */
static char *carried_text(const engine_state *st)
{
    buf b;
    buf_init(&b, 16384);
    json_t *item;
    size_t i;
    /* The list was checked when the child sent it, but a resumed one comes
     * from the database file: nothing in it is taken for granted either. */
    json_array_foreach(st->data.not_carried, i, item) {
        const char *reason = json_string_value(json_object_get(item, "reason"));
        json_int_t count = json_integer_value(json_object_get(item, "count"));
        json_t *names = json_object_get(item, "names");
        if (!reason || count <= 0 || i >= 4)
            continue;
        const char *why = strcmp(reason, "not_data") == 0
                              ? "functions, classes and other objects that are not data"
                          : strcmp(reason, "too_large") == 0 ? "too large to carry"
                          : strcmp(reason, "too_deep") == 0  ? "nested too deeply"
                                                             : "contain themselves through a tuple";
        buf_printf(&b, "%sNot carried over (%s): ", b.len ? "\n" : "", why);
        size_t k, shown = 0;
        json_t *name;
        json_array_foreach(names, k, name) {
            const char *text = json_string_value(name);
            if (text && shown < 40 && strlen(text) <= 64)
                buf_printf(&b, "%s%s", shown++ ? ", " : "", text);
        }
        if ((size_t)count > shown)
            buf_printf(&b, "%s%lld more", shown ? " and " : "", (long long)count - (long long)shown);
        buf_puts(&b, ".");
    }
    if (st->data_note)
        buf_printf(&b, "%s%s", b.len ? "\n" : "", st->data_note);
    if (!b.len) {
        buf_free(&b);
        return NULL;
    }
    return buf_take(&b);
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
        char *d = engine_input_describe(in->docs, sandbox_input_summary(e->sb, i));
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
        char *none = desc.data ? NULL : describe_input(NULL, NULL);
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
        char *carried = carried_text(st);
        rc = engine_push(e, "user", prompt_next_question(desc.data, desc.data ? names : NULL,
                                                         carried, question, number,
                                                         e->p->max_iterations));
        free(carried);
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

/* Keeps the data the question's sandbox holds for the next question (and
 * the store). When it cannot be taken, the data of the question before
 * stays, and the next message says why. */
static void keep_data(engine *e, int number)
{
    engine_state *st = e->st;
    if (!e->sb)
        return; /* the question never got a sandbox: the data is as it was */
    engine_progress(e, "keeping the data for the next question");
    sandbox_snapshot snap;
    char err[512];
    size_t max = e->p->snapshot_max ? e->p->snapshot_max : ENGINE_SNAPSHOT_MAX;
    double t0 = clock_now();
    int rc = sandbox_take_snapshot(e->sb, max, &snap, err, sizeof err);
    engine_event(e, "data_kept",
                 json_pack("{s:i,s:b,s:I,s:I,s:O?,s:f,s:s?}", "question", number, "ok", rc == 0,
                           "bytes", (json_int_t)(rc == 0 ? snap.len : 0), "variables",
                           (json_int_t)(rc == 0 ? snap.variables : 0), "not_carried",
                           rc == 0 ? snap.not_carried : NULL, "seconds", clock_now() - t0,
                           "error", rc ? err : NULL));
    if (rc != 0) {
        set_note(st, engine_strf("The data of question %d could not be carried over (%s); the "
                                 "REPL holds the data of the questions before it.", number, err));
        return;
    }
    if (st->store && session_save_snapshot(st->store, number, snap.fd, snap.len,
                                           snap.not_carried) != 0)
        engine_store_failed(e, "the data of the question");
    sandbox_snapshot_clear(&st->data);
    st->data = snap;
    st->data_question = number;
    set_note(st, NULL);
}

/* Keeps this question's answer, messages and data for the next ones. */
void engine_state_answered(engine *e, int number, const char *answer)
{
    engine_state *st = e->st;
    keep_data(e, number);
    if (make_room(st, number) != 0)
        return;
    free(st->answers[number - 1]);
    st->answers[number - 1] = answer ? strdup(answer) : NULL;
    json_decref(st->histories[number - 1]);
    st->histories[number - 1] = question_history(st);
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
    if (st) {
        st->store = store;
        st->data = (sandbox_snapshot){.fd = -1};
    }
    return st;
}

int engine_state_add_input(engine_state *st, ingest_set *docs)
{
    if (st->n_inputs == st->cap_inputs) {
        size_t cap = st->cap_inputs ? st->cap_inputs * 2 : 4;
        engine_input *in = realloc(st->inputs, cap * sizeof *in);
        if (!in)
            return -1;
        st->inputs = in;
        st->cap_inputs = cap;
    }
    st->inputs[st->n_inputs] = (engine_input){.docs = docs};
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
    /* The last data, as the question that left it wrote it: the next
     * question's child checks it like any snapshot. */
    sandbox_snapshot_clear(&st->data);
    int rc = session_load_snapshot(st->store, &st->data_question, &st->data.fd, &st->data.len,
                                   &st->data.not_carried);
    free(st->resume_warning);
    st->resume_warning = NULL;
    if (rc < 0) {
        /* A damaged file stops here, as for its history (session.h). */
        snprintf(err, errlen, "cannot read the session: %s", session_errmsg(st->store));
        return -1;
    }
    if (rc > 0 && st->questions > 0 && session_recorded_replies(st->store)) {
        st->resume_warning = strdup("it was recorded by an earlier rlm, which rebuilt variables "
                                    "by running the recorded cells again; this rlm carries data "
                                    "between questions instead, and runs nothing again: its "
                                    "history and answers are loaded, its variables are not");
        set_note(st, engine_strf("The variables of the earlier questions are not in the REPL "
                                 "(this session was recorded by an earlier version of rlm): "
                                 "answer_k and history_k are."));
    }
    return 0;
}

const char *engine_state_resume_warning(const engine_state *st)
{
    return st->resume_warning;
}

int engine_state_has_data(const engine_state *st)
{
    return st->data.fd >= 0;
}

void engine_state_free(engine_state *st)
{
    if (!st)
        return;
    sandbox_factory_free(st->factory);
    sandbox_snapshot_clear(&st->data);
    free(st->data_note);
    free(st->resume_warning);
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

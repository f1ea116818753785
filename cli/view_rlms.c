/* view_rlms — the reference library's RLMLogger JSONL read as rlm's trace
 * events, so that users of `rlms` can look at their runs with `rlm view`.
 * The mapping (docs/trace.md, "Reading rlms logs"): the metadata line is
 * run_start; each iteration is a root turn (root_request with its prompt's
 * last message, root_reply with the response), each of its code blocks a
 * `code` event (stdout and stderr as the output), each rlm_calls entry a
 * sub_call — or, when it carries a trajectory of its own (a child RLM's
 * metadata), a child node whose iterations are converted the same way —
 * and a final_answer closes the node with final_answer and run_end. Times
 * are rebuilt from iteration_time and execution_time, counted from 0. */
#include "view.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct convert {
    json_t *out;
    double t;                 /* the clock rebuilt from the durations */
} convert;

static void emit(convert *c, const char *type, const char *node, const char *parent, json_t *fields)
{
    json_object_set_new(fields, "v", json_integer(1));
    json_object_set_new(fields, "type", json_string(type));
    json_object_set_new(fields, "t", json_real(c->t));
    json_object_set_new(fields, "node", json_string(node));
    json_object_set_new(fields, "parent", parent ? json_string(parent) : json_null());
    json_array_append_new(c->out, fields);
}

static double number_of(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0;
}

/* A prompt is a string or a list of messages: its last message's text. */
static json_t *last_message(json_t *prompt)
{
    if (json_is_string(prompt))
        return json_copy(prompt);
    if (json_is_array(prompt) && json_array_size(prompt) > 0) {
        json_t *m = json_array_get(prompt, json_array_size(prompt) - 1);
        json_t *content = json_object_get(m, "content");
        if (json_is_string(content))
            return json_copy(content);
    }
    if (json_is_object(prompt) || json_is_array(prompt)) {
        char *text = json_dumps(prompt, JSON_COMPACT);
        json_t *s = text ? json_string(text) : json_null();
        free(text);
        return s ? s : json_null();
    }
    return json_null();
}

/* The first user message of a prompt: the question, as near as a log
 * without it can tell. */
static json_t *first_user(json_t *prompt)
{
    size_t i;
    json_t *m;
    json_array_foreach(prompt, i, m) {
        json_t *content = json_object_get(m, "content");
        const char *role = json_string_value(json_object_get(m, "role"));
        if (role && strcmp(role, "user") == 0 && json_is_string(content))
            return json_copy(content);
    }
    return last_message(prompt);
}

static json_t *usage_of(json_t *call)
{
    json_int_t in = 0, out = 0;
    const char *model;
    json_t *s;
    json_object_foreach(json_object_get(json_object_get(call, "usage_summary"), "model_usage_summaries"), model, s) {
        in += json_integer_value(json_object_get(s, "total_input_tokens"));
        out += json_integer_value(json_object_get(s, "total_output_tokens"));
    }
    return json_pack("{s:I,s:I}", "prompt_tokens", in, "completion_tokens", out);
}

static const char *answer_text(json_t *final)
{
    /* Older logs kept ["type", value]. */
    if (json_is_array(final))
        final = json_array_get(final, json_array_size(final) - 1);
    return json_string_value(final);
}

static void convert_node(convert *c, json_t *iterations, const char *node, const char *parent,
                         const char *model, int depth);

static void convert_call(convert *c, json_t *call, const char *node, int turn, size_t index,
                         size_t batch, int depth, size_t *children)
{
    json_t *meta = json_object_get(call, "metadata");
    json_t *iterations = json_object_get(meta, "iterations");
    const char *model = json_string_value(json_object_get(call, "root_model"));
    double seconds = number_of(call, "execution_time");
    if (json_is_array(iterations)) {
        char child[256];
        snprintf(child, sizeof child, "%s.%zu", node, ++*children);
        emit(c, "child_start", child, node,
             json_pack("{s:i,s:o,s:s?,s:i}", "turn", turn, "prompt",
                       last_message(json_object_get(call, "prompt")), "model", model, "depth", depth + 1));
        double t0 = c->t;
        json_t *run_meta = json_object_get(meta, "run_metadata");
        const char *child_model = json_string_value(json_object_get(run_meta, "root_model"));
        convert_node(c, iterations, child, node, child_model ? child_model : model, depth + 1);
        json_t *err = json_object_get(call, "error");
        emit(c, "child_end", child, node,
             json_pack("{s:s,s:O,s:f,s:I}", "status", json_is_string(err) ? "error" : "ok", "answer",
                       json_is_string(err) ? err : json_object_get(call, "response"),
                       "seconds", seconds > 0 ? seconds : c->t - t0, "sub_calls", (json_int_t)0));
        return;
    }
    json_t *err = json_object_get(call, "error");
    emit(c, "sub_call", node, NULL,
         json_pack("{s:i,s:s,s:s?,s:I,s:I,s:o,s:O,s:O,s:f,s:i,s:o,s:n}", "turn", turn, "kind",
                   "llm_query", "model", model, "index", (json_int_t)index, "batch", (json_int_t)batch,
                   "prompt", last_message(json_object_get(call, "prompt")), "reply",
                   json_object_get(call, "response") ? json_object_get(call, "response") : json_null(),
                   "error", json_is_string(err) ? err : json_null(), "seconds", seconds, "attempts", 1,
                   "usage", usage_of(call), "cost_usd"));
}

static void convert_node(convert *c, json_t *iterations, const char *node, const char *parent,
                         const char *model, int depth)
{
    size_t k, children = 0;
    json_t *it;
    int turn = 0, answered = 0;
    json_t *answer = NULL;
    json_array_foreach(iterations, k, it) {
        turn++;
        json_t *prompt = json_object_get(it, "prompt");
        if (turn == 1)
            emit(c, "question", node, parent, json_pack("{s:o,s:i}", "question", first_user(prompt), "depth", depth));
        /* Events of a child name its parent: the tree is rebuilt from them. */
        const char *p = parent;
        emit(c, "root_request", node, p,
             json_pack("{s:i,s:s?,s:I,s:o}", "turn", turn, "model", model, "messages",
                       (json_int_t)(json_is_array(prompt) ? json_array_size(prompt) : 1),
                       "last_message", last_message(prompt)));
        double blocks_time = 0;
        size_t b;
        json_t *block;
        json_array_foreach(json_object_get(it, "code_blocks"), b, block)
            blocks_time += number_of(json_object_get(block, "result"), "execution_time");
        double turn_time = number_of(it, "iteration_time");
        c->t += turn_time > blocks_time ? turn_time - blocks_time : 0;
        json_t *response = json_object_get(it, "response");
        emit(c, "root_reply", node, p,
             json_pack("{s:i,s:O,s:f,s:i,s:{s:i,s:i},s:n}", "turn", turn, "content",
                       response ? response : json_null(), "seconds",
                       turn_time > blocks_time ? turn_time - blocks_time : 0, "attempts", 1, "usage",
                       "prompt_tokens", -1, "completion_tokens", -1, "cost_usd"));
        json_array_foreach(json_object_get(it, "code_blocks"), b, block) {
            json_t *result = json_object_get(block, "result");
            json_t *calls = json_object_get(result, "rlm_calls");
            if (!calls)
                calls = json_object_get(result, "llm_calls");
            size_t n = json_array_size(calls), i;
            json_t *call;
            json_array_foreach(calls, i, call)
                convert_call(c, call, node, turn, i, n, depth, &children);
            c->t += number_of(result, "execution_time");
            const char *out = json_string_value(json_object_get(result, "stdout"));
            const char *errs = json_string_value(json_object_get(result, "stderr"));
            size_t olen = out ? strlen(out) : 0, elen = errs ? strlen(errs) : 0;
            char *both = malloc(olen + elen + 2);
            if (both) {
                memcpy(both, out ? out : "", olen);
                if (elen && olen && out[olen - 1] != '\n')
                    both[olen++] = '\n';
                memcpy(both + olen, errs ? errs : "", elen);
                both[olen + elen] = '\0';
            }
            json_t *code = json_object_get(block, "code");
            emit(c, "code", node, p,
                 json_pack("{s:i,s:I,s:O,s:s,s:b,s:f,s:I}", "turn", turn, "block", (json_int_t)(b + 1),
                           "code", code ? code : json_null(), "output", both ? both : "", "raised", elen > 0,
                           "seconds", number_of(result, "execution_time"), "calls", (json_int_t)n));
            free(both);
        }
        json_t *final = json_object_get(it, "final_answer");
        const char *text = answer_text(final);
        if (text) {
            answered = 1;
            answer = json_string(text);
            emit(c, "final_answer", node, p, json_pack("{s:i,s:s,s:s}", "turn", turn, "how", "code", "answer", text));
        }
    }
    if (answered)
        emit(c, "run_end", node, parent,
             json_pack("{s:s,s:o,s:s,s:i,s:f}", "status", "ok", "answer", answer, "how", "code",
                       "iterations", turn, "elapsed", c->t));
}

int view_is_rlms_line(json_t *line)
{
    const char *type = json_string_value(json_object_get(line, "type"));
    if (json_object_get(line, "v"))
        return 0;
    if (type && (strcmp(type, "metadata") == 0 || strcmp(type, "iteration") == 0))
        return 1;
    /* Early logs wrote iterations without a type. */
    return json_object_get(line, "code_blocks") != NULL && json_object_get(line, "response") != NULL;
}

json_t *view_from_rlms(json_t *lines, json_t *notes)
{
    convert c = {.out = json_array(), .t = 0};
    json_t *iterations = json_array();
    const char *model = NULL;
    size_t i;
    json_t *line;
    json_array_foreach(lines, i, line) {
        const char *type = json_string_value(json_object_get(line, "type"));
        if (type && strcmp(type, "metadata") == 0) {
            model = json_string_value(json_object_get(line, "root_model"));
            json_t *config = json_deep_copy(line);
            json_object_del(config, "type");
            emit(&c, "run_start", "0", NULL, json_pack("{s:s,s:o}", "version", "rlms", "config", config));
        } else {
            json_array_append(iterations, line);
        }
    }
    if (json_array_size(iterations) == 0)
        json_array_append_new(notes, json_pack("{s:s,s:s}", "level", "warn", "text",
                                               "the RLMLogger file holds no iteration"));
    convert_node(&c, iterations, "0", NULL, model, 1);
    json_decref(iterations);
    return c.out;
}

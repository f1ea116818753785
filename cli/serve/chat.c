/* chat — the chat completions request parsed, and the reply, chunk and
 * error bodies built (chat.h). */
#include "chat.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "long_strings.h"
#include "utf8.h"
#include "util.h"

/* String values at least this long (encoded) are decoded apart from jansson
 * (long_strings.h): a document sent inline. */
#define CHAT_LONG_STRING_BYTES (16 * 1024)

/* Standard fields rlm does not use: named in rlm.ignored when present. */
static const char *const known_ignored[] = {
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "seed", "stop", "user",
    "metadata", "store", "parallel_tool_calls", "reasoning_effort", "service_tier", "modalities",
    "prediction", "audio", "web_search_options", "response_format", "verbosity", "n",
    "prompt_cache_key", "safety_identifier", NULL,
};

void chat_error_set(chat_error *err, int status, const char *type, const char *code,
                    const char *param, const char *fmt, ...)
{
    err->status = status;
    err->type = type;
    err->code = code;
    err->param = param;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

#define BAD(err, param, ...) chat_error_set(err, 400, "invalid_request_error", NULL, param, __VA_ARGS__)

/* 0 when body nests arrays and objects at most max deep (strings skipped,
 * escapes honoured); jansson recurses per level, this does not. */
static int depth_ok(const char *body, size_t len, int max)
{
    int depth = 0;
    for (size_t i = 0; i < len; i++) {
        char c = body[i];
        if (c == '"') {
            i = long_strings_token_end(body, len, i);
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                return -1;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 0;
}

static void note_ignored(chat_request *req, const char *name)
{
    for (size_t i = 0; i < req->n_ignored; i++)
        if (strcmp(req->ignored[i], name) == 0)
            return;
    if (req->n_ignored < CHAT_MAX_IGNORED)
        req->ignored[req->n_ignored++] = name;
}

/* Appends a string value of the body: its own text, or the long string its
 * placeholder stands for. */
static int append_string(buf *out, const json_t *s, const long_strings *ls)
{
    long long i = long_strings_find(ls, json_string_value(s), json_string_length(s));
    size_t len = json_string_length(s);
    const char *text = i < 0 ? json_string_value(s) : long_strings_text(ls, (size_t)i, &len);
    return text && buf_append(out, text, len) == 0 ? 0 : -2;
}

/* The text of a message's content: a string, null (""), or an array of
 * text parts joined. -1 with err for anything else (images, audio, files). */
static int content_text(const json_t *content, const long_strings *ls, buf *out, size_t index,
                        chat_error *err)
{
    if (!content || json_is_null(content))
        return 0;
    if (json_is_string(content))
        return append_string(out, content, ls);
    if (!json_is_array(content)) {
        BAD(err, "messages", "messages[%zu].content must be a string or an array of text parts", index);
        return -1;
    }
    size_t i;
    const json_t *part;
    json_array_foreach(content, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        const json_t *text = json_object_get(part, "text");
        if (!type || (strcmp(type, "text") != 0 && strcmp(type, "input_text") != 0) ||
            !json_is_string(text)) {
            BAD(err, "messages", "messages[%zu].content[%zu]: only text parts are supported%s%s",
                index, i, type ? ", not " : "", type ? type : "");
            return -1;
        }
        if (append_string(out, text, ls) != 0)
            return -2;
    }
    return 0;
}

static int role_known(const char *role)
{
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool",
                                        "function", NULL};
    for (int i = 0; roles[i]; i++)
        if (strcmp(role, roles[i]) == 0)
            return 1;
    return 0;
}

static int instruction_role(const char *role)
{
    return strcmp(role, "system") == 0 || strcmp(role, "developer") == 0;
}

/* "rlm" or "rlm:NAME" (NAME non-empty); *name set to NAME or NULL. */
static int model_name(const char *model, const char **name)
{
    *name = NULL;
    if (strcmp(model, "rlm") == 0)
        return 0;
    if (strncmp(model, "rlm:", 4) == 0 && model[4]) {
        *name = model + 4;
        return 0;
    }
    return -1;
}

/* A number >= 0 from the rlm object; -1 when absent. */
static int ext_number(const json_t *ext, const char *key, double *out, chat_error *err)
{
    const json_t *v = json_object_get(ext, key);
    *out = -1;
    if (!v)
        return 0;
    if (!json_is_number(v) || json_number_value(v) < 0) {
        BAD(err, "rlm", "rlm.%s must be a number >= 0", key);
        return -1;
    }
    *out = json_number_value(v);
    return 0;
}

static int ext_integer(const json_t *ext, const char *key, long *out, chat_error *err)
{
    const json_t *v = json_object_get(ext, key);
    *out = -1;
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000000000LL) {
        BAD(err, "rlm", "rlm.%s must be a whole number >= 0", key);
        return -1;
    }
    *out = (long)json_integer_value(v);
    return 0;
}

/* The "rlm" extension object: every key known, every value checked (a typo
 * in rlm's own namespace is an error, never a silent default). */
static int parse_extension(const json_t *ext, chat_request *req, chat_error *err)
{
    static const char *const keys[] = {"input", "conversation_id", "max_cost", "max_tokens",
                                       "max_time", "max_subcalls", "max_iterations", "progress",
                                       NULL};
    if (!json_is_object(ext)) {
        BAD(err, "rlm", "rlm must be an object");
        return -1;
    }
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)ext, key, v) {
        int known = 0;
        for (int i = 0; keys[i] && !known; i++)
            known = strcmp(key, keys[i]) == 0;
        if (!known) {
            BAD(err, "rlm", "unknown field rlm.%.64s (known: input, conversation_id, max_cost, "
                "max_tokens, max_time, max_subcalls, max_iterations, progress)", key);
            return -1;
        }
    }
    const json_t *input = json_object_get(ext, "input");
    if (input && !json_is_null(input)) {
        if (!json_is_string(input) || json_string_length(input) == 0 || json_string_length(input) > 64) {
            BAD(err, "rlm", "rlm.input must be the name of a named input");
            return -1;
        }
        if (req->input && strcmp(req->input, json_string_value(input)) != 0) {
            BAD(err, "rlm", "rlm.input '%.64s' and the model '%.100s' name different inputs",
                json_string_value(input), req->model);
            return -1;
        }
        if (!req->input && !(req->input = strdup(json_string_value(input))))
            return -2;
    }
    const json_t *conv = json_object_get(ext, "conversation_id");
    if (conv && !json_is_null(conv)) {
        if (!json_is_string(conv) || json_string_length(conv) == 0 || json_string_length(conv) > 100) {
            BAD(err, "rlm", "rlm.conversation_id must be a string of 1-100 characters");
            return -1;
        }
        if (!(req->conversation = strdup(json_string_value(conv))))
            return -2;
    }
    const json_t *progress = json_object_get(ext, "progress");
    if (progress && !json_is_boolean(progress)) {
        BAD(err, "rlm", "rlm.progress must be true or false");
        return -1;
    }
    req->progress_chunks = json_is_true(progress);
    if (ext_number(ext, "max_cost", &req->max_cost, err) != 0 ||
        ext_number(ext, "max_time", &req->max_time, err) != 0 ||
        ext_integer(ext, "max_tokens", &req->max_tokens, err) != 0 ||
        ext_integer(ext, "max_subcalls", &req->max_subcalls, err) != 0 ||
        ext_integer(ext, "max_iterations", &req->max_iterations, err) != 0)
        return -1;
    return 0;
}

/* The messages: instructions, the earlier messages' text, the question. */
static int parse_messages(const json_t *messages, size_t max_bytes, long_strings *ls,
                          chat_request *req, chat_error *err)
{
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        BAD(err, "messages", "messages must be a non-empty array");
        return -1;
    }
    size_t n = json_array_size(messages);
    if (n > CHAT_MAX_MESSAGES) {
        BAD(err, "messages", "at most %d messages", CHAT_MAX_MESSAGES);
        return -1;
    }
    const json_t *last = json_array_get(messages, n - 1);
    const char *last_role = json_string_value(json_object_get(last, "role"));
    if (!last_role || strcmp(last_role, "user") != 0) {
        BAD(err, "messages", "the last message must be the user's question");
        return -1;
    }
    /* The earlier non-instruction messages: one is the input as it is,
     * several are each put under its role. */
    size_t others = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const char *role = json_string_value(json_object_get(json_array_get(messages, i), "role"));
        if (role && !instruction_role(role))
            others++;
    }
    buf instructions, context, text, question;
    buf_init(&instructions, CHAT_MAX_INSTRUCTIONS);
    buf_init(&context, max_bytes);
    buf_init(&text, max_bytes);
    buf_init(&question, max_bytes + CHAT_MAX_INSTRUCTIONS + 2);
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(messages, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || !role) {
            BAD(err, "messages", "messages[%zu] must be an object with a string role", i);
            goto done;
        }
        if (!role_known(role)) {
            BAD(err, "messages", "messages[%zu].role '%.32s' is not system, developer, user, "
                "assistant or tool", i, role);
            goto done;
        }
        const json_t *content = json_object_get(m, "content");
        long long long_index = json_is_string(content) ? long_strings_find(ls, json_string_value(content),
                                                                          json_string_length(content))
                                                       : -1;
        if (i + 1 < n && others == 1 && long_index >= 0 && !instruction_role(role)) {
            /* The one document sent inline, decoded already: it is the
             * input as it is, no copy. */
            req->context = long_strings_take(ls, (size_t)long_index, &req->context_len);
            if (!req->context)
                goto too_large;
            continue;
        }
        buf_reset(&text);
        int c = content_text(content, ls, &text, i, err);
        if (c == -2)
            goto too_large;
        if (c != 0)
            goto done;
        const char *t = text.data ? text.data : "";
        if (i == n - 1) {
            if (text.len == 0 || strspn(t, " \t\r\n") == text.len) {
                BAD(err, "messages", "the question (the last user message) is empty");
                goto done;
            }
            if (instructions.len && (buf_append(&question, instructions.data, instructions.len) ||
                                     buf_puts(&question, "\n\n")))
                goto too_large;
            if (buf_append(&question, t, text.len) != 0)
                goto too_large;
        } else if (instruction_role(role)) {
            if ((instructions.len && buf_puts(&instructions, "\n\n")) ||
                buf_append(&instructions, t, text.len) != 0) {
                chat_error_set(err, 400, "invalid_request_error", "instructions_too_long", "messages",
                               "system and developer messages hold more than %d bytes: send "
                               "documents as user messages, which become the input",
                               CHAT_MAX_INSTRUCTIONS);
                goto done;
            }
        } else if (others == 1) {
            if (buf_append(&context, t, text.len) != 0)
                goto too_large;
        } else {
            if ((context.len && buf_puts(&context, "\n\n")) || buf_printf(&context, "[%s]\n", role) ||
                buf_append(&context, t, text.len) != 0)
                goto too_large;
        }
    }
    req->question = buf_take(&question);
    if (others && !req->context) {
        req->context_len = context.len;
        req->context = buf_take(&context);
    }
    rc = req->question ? 0 : -2;
    goto done;
too_large:
    rc = -2;
done:
    buf_free(&instructions);
    buf_free(&context);
    buf_free(&text);
    buf_free(&question);
    return rc;
}

int chat_parse(const char *body, size_t len, chat_request *out, chat_error *err)
{
    memset(out, 0, sizeof *out);
    out->max_cost = out->max_time = -1;
    out->max_tokens = out->max_subcalls = out->max_iterations = -1;
    memset(err, 0, sizeof *err);
    if (depth_ok(body, len, CHAT_MAX_DEPTH) != 0) {
        BAD(err, NULL, "the body nests arrays and objects more than %d deep", CHAT_MAX_DEPTH);
        return -1;
    }
    char *skeleton = NULL;
    size_t skeleton_len = 0;
    long_strings *ls = NULL;
    int split = long_strings_split(body, len, CHAT_LONG_STRING_BYTES, &skeleton, &skeleton_len, &ls);
    if (split < 0) {
        chat_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
        return -1;
    }
    json_error_t jerr;
    json_t *root = json_loadb(split ? skeleton : body, split ? skeleton_len : len, 0, &jerr);
    free(skeleton);
    if (!root && split)
        json_decref(json_loadb(body, len, 0, &jerr));   /* where the client's body is wrong */
    if (!root) {
        long_strings_free(ls);
        BAD(err, NULL, "the body is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
            jerr.column);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(root)) {
        BAD(err, NULL, "the body must be a JSON object");
        goto done;
    }
    const json_t *model = json_object_get(root, "model");
    if (!json_is_string(model) || json_string_length(model) == 0) {
        BAD(err, "model", "model must be a non-empty string: \"rlm\" or \"rlm:NAME\"");
        goto done;
    }
    const char *name;
    if (json_string_length(model) > 200 || model_name(json_string_value(model), &name) != 0) {
        chat_error_set(err, 404, "invalid_request_error", "model_not_found", "model",
                       "The model '%.200s' does not exist: this server's models are \"rlm\" and "
                       "\"rlm:NAME\" for its named inputs (GET /v1/models)", json_string_value(model));
        goto done;
    }
    if (!(out->model = strdup(json_string_value(model))) || (name && !(out->input = strdup(name))))
        goto oom;
    const json_t *stream = json_object_get(root, "stream");
    if (stream && !json_is_boolean(stream) && !json_is_null(stream)) {
        BAD(err, "stream", "stream must be true or false");
        goto done;
    }
    out->stream = json_is_true(stream);
    const json_t *opts = json_object_get(root, "stream_options");
    if (opts && !json_is_null(opts)) {
        const json_t *usage = json_object_get(opts, "include_usage");
        if (!json_is_object(opts) || (usage && !json_is_boolean(usage))) {
            BAD(err, "stream_options", "stream_options must be {\"include_usage\": true|false}");
            goto done;
        }
        out->include_usage = json_is_true(usage);
    }
    const json_t *n = json_object_get(root, "n");
    if (n && !json_is_null(n) && !(json_is_integer(n) && json_integer_value(n) == 1)) {
        BAD(err, "n", "n must be 1: rlm gives one answer");
        goto done;
    }
    static const char *const refused[] = {"tools", "functions", "tool_choice", "function_call", NULL};
    for (int i = 0; refused[i]; i++) {
        const json_t *v = json_object_get(root, refused[i]);
        if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0) &&
            !(json_is_string(v) && strcmp(json_string_value(v), "none") == 0)) {
            BAD(err, refused[i], "%s: tool calls are not supported by rlm (its model writes code "
                "in a sandbox instead)", refused[i]);
            goto done;
        }
    }
    const json_t *ext = json_object_get(root, "rlm");
    if (ext && !json_is_null(ext)) {
        int e = parse_extension(ext, out, err);
        if (e == -2)
            goto oom;
        if (e != 0)
            goto done;
    }
    int m = parse_messages(json_object_get(root, "messages"), len, ls, out, err);
    if (m == -2)
        goto oom;
    if (m != 0)
        goto done;
    const char *key;
    const json_t *v;
    json_object_foreach(root, key, v) {
        static const char *const used[] = {"model", "messages", "stream", "stream_options", "rlm",
                                           "tools", "functions", "tool_choice", "function_call", NULL};
        int is_used = 0;
        for (int i = 0; used[i] && !is_used; i++)
            is_used = strcmp(key, used[i]) == 0;
        if (is_used || json_is_null(v))
            continue;
        const char *known = NULL;
        for (int i = 0; known_ignored[i] && !known; i++)
            if (strcmp(key, known_ignored[i]) == 0)
                known = known_ignored[i];
        note_ignored(out, known ? known : "(other fields)");
    }
    rc = 0;
    goto done;
oom:
    chat_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
done:
    json_decref(root);
    long_strings_free(ls);
    if (rc != 0)
        chat_request_clear(out);
    return rc;
}

void chat_request_clear(chat_request *req)
{
    free(req->model);
    free(req->input);
    free(req->question);
    free(req->context);
    free(req->conversation);
    memset(req, 0, sizeof *req);
}

/* ---- replies --------------------------------------------------------------- */

static char *dump(json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(j);
    return text;
}

static json_t *error_object(const chat_error *err)
{
    return json_pack("{s:{s:s,s:s,s:s?,s:s?}}", "error", "message", err->message, "type",
                     err->type ? err->type : "server_error", "param", err->param, "code", err->code);
}

char *chat_error_body(const chat_error *err)
{
    return dump(error_object(err));
}

/* The run's prompt and completion tokens, over every model (usage per
 * model in the report). */
void chat_report_tokens(const json_t *report, json_int_t *prompt, json_int_t *completion)
{
    *prompt = *completion = 0;
    const char *model;
    json_t *u;
    json_object_foreach(json_object_get(report, "usage"), model, u) {
        json_int_t p = json_integer_value(json_object_get(u, "prompt_tokens"));
        json_int_t c = json_integer_value(json_object_get(u, "completion_tokens"));
        *prompt += p > 0 ? p : 0;
        *completion += c > 0 ? c : 0;
    }
}

static json_t *usage_object(const json_t *report)
{
    json_int_t prompt, completion;
    chat_report_tokens(report, &prompt, &completion);
    return json_pack("{s:I,s:I,s:I}", "prompt_tokens", prompt, "completion_tokens", completion,
                     "total_tokens", prompt + completion);
}

static json_t *copy_field(const json_t *report, const char *key)
{
    json_t *v = json_object_get(report, key);
    return v ? json_incref(v) : json_null();
}

/* The "rlm" object of a reply: how the run went. */
static json_t *rlm_object(const chat_outcome *o, const json_t *report)
{
    json_t *ext = json_pack("{s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:s?,s:s?}",
                            "status", o->status ? o->status : "internal error",
                            "how", copy_field(report, "how"),
                            "turns", copy_field(report, "iterations"),
                            "sub_calls", copy_field(report, "sub_calls"),
                            "sub_call_errors", copy_field(report, "sub_call_errors"),
                            "cost_usd", copy_field(report, "cost_usd"),
                            "stopped_by", copy_field(report, "stopped_by"),
                            "elapsed_seconds", copy_field(report, "elapsed_seconds"),
                            "trace_id", copy_field(report, "log_id"),
                            "conversation_id", o->conversation, "error", o->error);
    if (!ext)
        return NULL;
    if (o->req && o->req->n_ignored) {
        json_t *ignored = json_array();
        for (size_t i = 0; i < o->req->n_ignored; i++)
            json_array_append_new(ignored, json_string(o->req->ignored[i]));
        json_object_set_new(ext, "ignored", ignored);
    }
    if (o->warnings && o->warnings[0]) {
        json_t *list = json_array();
        for (const char *line = o->warnings; *line;) {
            size_t n = strcspn(line, "\n");
            if (json_array_size(list) < 20)
                json_array_append_new(list, json_stringn(line, n));
            line += n + (line[n] == '\n');
        }
        json_object_set_new(ext, "warnings", list);
    }
    return ext;
}

/* The answer as a JSON string; bytes that are not UTF-8 become U+FFFD
 * (JSON cannot carry them). */
static json_t *answer_string(const chat_outcome *o)
{
    if (!o->answer)
        return json_null();
    json_t *s = json_stringn(o->answer, o->answer_len);
    if (s)
        return s;
    size_t clean_len = 0;
    char *clean = utf8_sanitize(o->answer, o->answer_len, &clean_len);
    s = clean ? json_stringn(clean, clean_len) : NULL;
    free(clean);
    return s ? s : json_null();
}

char *chat_completion_body(const chat_outcome *o)
{
    json_t *report = o->report ? json_loads(o->report, JSON_ALLOW_NUL, NULL) : NULL;
    json_t *j = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:{s:s,s:o,s:n},s:n,s:s}],s:o,s:n,s:o}",
                          "id", o->id, "object", "chat.completion", "created", (json_int_t)o->created,
                          "model", o->model, "choices", "index", 0, "message", "role", "assistant",
                          "content", answer_string(o), "refusal", "logprobs", "finish_reason",
                          o->answer ? "stop" : "length", "usage", usage_object(report),
                          "system_fingerprint", "rlm", rlm_object(o, report));
    json_decref(report);
    return dump(j);
}

/* One chunk as an SSE event. */
static char *sse(json_t *j)
{
    char *text = dump(j);
    if (!text)
        return NULL;
    buf b;
    buf_init(&b, strlen(text) + 16);
    buf_printf(&b, "data: %s\n\n", text);
    free(text);
    return b.data ? buf_take(&b) : NULL;
}

/* A chunk's envelope with one choice (delta, finish) or none. */
static json_t *chunk(const chat_outcome *o, json_t *choices)
{
    json_t *j = json_pack("{s:s,s:s,s:I,s:s,s:n,s:o}", "id", o->id, "object",
                          "chat.completion.chunk", "created", (json_int_t)o->created, "model",
                          o->model, "system_fingerprint", "choices", choices);
    if (j && o->req && o->req->include_usage)
        json_object_set_new(j, "usage", json_null());
    return j;
}

char *chat_chunk_role(const chat_outcome *o)
{
    return sse(chunk(o, json_pack("[{s:i,s:{s:s,s:s},s:n,s:n}]", "index", 0, "delta", "role",
                                  "assistant", "content", "", "logprobs", "finish_reason")));
}

char *chat_chunk_content(const chat_outcome *o)
{
    return sse(chunk(o, json_pack("[{s:i,s:{s:o},s:n,s:n}]", "index", 0, "delta", "content",
                                  answer_string(o), "logprobs", "finish_reason")));
}

char *chat_chunk_finish(const chat_outcome *o)
{
    json_t *report = o->report ? json_loads(o->report, JSON_ALLOW_NUL, NULL) : NULL;
    json_t *j = chunk(o, json_pack("[{s:i,s:{},s:n,s:s}]", "index", 0, "delta", "logprobs",
                                   "finish_reason", o->answer ? "stop" : "length"));
    if (j)
        json_object_set_new(j, "rlm", rlm_object(o, report));
    json_decref(report);
    return sse(j);
}

char *chat_chunk_usage(const chat_outcome *o)
{
    json_t *report = o->report ? json_loads(o->report, JSON_ALLOW_NUL, NULL) : NULL;
    json_t *j = chunk(o, json_array());
    if (j)
        json_object_set_new(j, "usage", usage_object(report));
    json_decref(report);
    return sse(j);
}

char *chat_chunk_error(const chat_error *err)
{
    return sse(error_object(err));
}

char *chat_chunk_event(const chat_outcome *o, const char *event)
{
    json_t *ev = json_loads(event, 0, NULL);
    json_t *j = ev ? chunk(o, json_array()) : NULL;
    if (j)
        json_object_set_new(j, "rlm_event", ev);
    else
        json_decref(ev);
    return sse(j);
}

/* mcp_proto — MCP messages read and written (mcp_proto.h). */
#include "mcp_proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"
#include "util.h"

/* The revisions the TypeScript SDK supports, newest first. */
static const char *const versions[] = {MCP_PROTOCOL_LATEST, "2025-06-18", "2025-03-26", "2024-11-05",
                                       NULL};

static int depth_ok(const char *s, size_t len)
{
    int depth = 0, in_string = 0;
    for (size_t i = 0; i < len; i++) {
        if (in_string) {
            if (s[i] == '\\')
                i++;
            else if (s[i] == '"')
                in_string = 0;
        } else if (s[i] == '"') {
            in_string = 1;
        } else if (s[i] == '[' || s[i] == '{') {
            if (++depth > MCP_MAX_DEPTH)
                return 0;
        } else if (s[i] == ']' || s[i] == '}') {
            depth--;
        }
    }
    return 1;
}

static void invalid(mcp_message *m, int code, const char *why)
{
    m->kind = MCP_INVALID;
    m->error_code = code;
    snprintf(m->error, sizeof m->error, "%s", why);
}

void mcp_parse(const char *line, size_t len, mcp_message *m)
{
    memset(m, 0, sizeof *m);
    if (!depth_ok(line, len)) {
        invalid(m, MCP_PARSE_ERROR, "message nested too deeply");
        return;
    }
    json_error_t jerr;
    m->root = json_loadb(line, len, 0, &jerr);
    if (!m->root) {
        char why[256];
        snprintf(why, sizeof why, "parse error: %s", jerr.text);
        invalid(m, MCP_PARSE_ERROR, why);
        return;
    }
    if (!json_is_object(m->root)) {
        invalid(m, MCP_INVALID_REQUEST, json_is_array(m->root) ? "batches are not part of this "
                "protocol revision: send one message per line" : "a message is a JSON object");
        return;
    }
    const json_t *id = json_object_get(m->root, "id");
    if (id && (json_is_string(id) || json_is_integer(id)))
        m->id = id;
    const char *version = json_string_value(json_object_get(m->root, "jsonrpc"));
    if (!version || strcmp(version, "2.0") != 0) {
        invalid(m, MCP_INVALID_REQUEST, "jsonrpc must be \"2.0\"");
        return;
    }
    if (id && !m->id && !json_is_null(id)) {
        invalid(m, MCP_INVALID_REQUEST, "id must be a string or an integer");
        return;
    }
    const json_t *method = json_object_get(m->root, "method");
    if (!method) {
        if (json_object_get(m->root, "result") || json_object_get(m->root, "error")) {
            m->kind = MCP_RESPONSE;
            return;
        }
        invalid(m, MCP_INVALID_REQUEST, "no method");
        return;
    }
    if (!json_is_string(method)) {
        invalid(m, MCP_INVALID_REQUEST, "method must be a string");
        return;
    }
    m->method = json_string_value(method);
    const json_t *params = json_object_get(m->root, "params");
    if (params && !json_is_object(params)) {
        invalid(m, MCP_INVALID_PARAMS, "params must be an object");
        return;
    }
    m->params = params;
    m->kind = m->id ? MCP_REQUEST : MCP_NOTIFICATION;
}

void mcp_message_clear(mcp_message *m)
{
    json_decref(m->root);
    memset(m, 0, sizeof *m);
}

const char *mcp_negotiate(const json_t *params)
{
    const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
    for (int i = 0; asked && versions[i]; i++)
        if (strcmp(asked, versions[i]) == 0)
            return versions[i];
    return MCP_PROTOCOL_LATEST;
}

/* One line: the message's JSON and a newline (JSON escapes every newline
 * inside strings, so a message is always one line). */
static char *line_of(json_t *msg)
{
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    char *out = realloc(text, n + 2);
    if (!out) {
        free(text);
        return NULL;
    }
    out[n] = '\n';
    out[n + 1] = '\0';
    return out;
}

static json_t *id_or_null(const json_t *id)
{
    return id ? json_incref((json_t *)id) : json_null();
}

char *mcp_result(const json_t *id, json_t *result)
{
    return line_of(json_pack("{s:s,s:o,s:o}", "jsonrpc", "2.0", "id", id_or_null(id), "result",
                             result ? result : json_object()));
}

char *mcp_error(const json_t *id, int code, const char *message)
{
    return line_of(json_pack("{s:s,s:o,s:{s:i,s:s}}", "jsonrpc", "2.0", "id", id_or_null(id), "error",
                             "code", code, "message", message));
}

char *mcp_progress(const json_t *token, double progress, const char *message)
{
    return line_of(json_pack("{s:s,s:s,s:{s:O,s:f,s:s}}", "jsonrpc", "2.0", "method",
                             "notifications/progress", "params", "progressToken", token, "progress",
                             progress, "message", message));
}

json_t *mcp_initialize_result(const char *version, const char *server_version, const char *roots)
{
    char instructions[2048];
    snprintf(instructions, sizeof instructions,
             "rlm answers questions about inputs far larger than a context window (a codebase, "
             "thousands of documents, years of logs) with a Recursive Language Model: a model "
             "that reads the files through code in a sandbox and calls sub-models on the pieces. "
             "rlm_ask takes a question and the paths (files, directories, globs) to answer it "
             "from; rlm_describe tells what the model would be told about those paths. Paths must "
             "lie under the allowed roots (%.1500s); relative ones are taken from the first.",
             roots);
    return json_pack("{s:s,s:{s:{s:b}},s:{s:s,s:s,s:s},s:s}", "protocolVersion", version,
                     "capabilities", "tools", "listChanged", 0, "serverInfo", "name", "rlm",
                     "title", "rlm (Recursive Language Models)", "version", server_version,
                     "instructions", instructions);
}

json_t *mcp_tools(void)
{
    json_t *paths = json_pack("{s:s,s:{s:s},s:i,s:s}", "type", "array", "items", "type", "string",
                              "maxItems", MCP_MAX_PATHS, "description",
                              "Files, directories (walked; .gitignore honoured) or globs, under "
                              "the allowed roots; relative paths are taken from the first root.");
    json_t *ask = json_pack(
        "{s:s,s:s,s:s,s:{s:s,s:{s:{s:s,s:s},s:O,s:{s:s,s:s},s:{s:s,s:s},s:{s:s,s:s}},s:[s]},"
        "s:{s:s,s:{s:{s:[s,s]},s:{s:[s,s]},s:{s:s},s:{s:[s,s]},s:{s:s},s:{s:s},s:{s:s},"
        "s:{s:[s,s]},s:{s:[s,s]}},s:[s,s,s,s]},s:{s:b,s:b}}",
        "name", "rlm_ask", "title", "Ask an RLM about files",
        "description", "Answers a question about files of any size with a Recursive Language Model: "
                       "the model never reads the files whole, it writes code over them and calls "
                       "sub-models on pieces. Returns the answer, how it was reached and its cost.",
        "inputSchema", "type", "object", "properties",
        "question", "type", "string", "description", "The question to answer.",
        "paths", paths,
        "max_cost", "type", "number", "description", "US dollars at most (capped by the server's).",
        "max_time", "type", "number", "description", "Seconds at most (capped by the server's).",
        "max_subcalls", "type", "integer", "description", "Sub-calls at most (capped by the server's).",
        "required", "question",
        "outputSchema", "type", "object", "properties",
        "answer", "type", "string", "null",
        "how", "type", "string", "null",
        "status", "type", "string",
        "cost_usd", "type", "number", "null",
        "turns", "type", "integer",
        "sub_calls", "type", "integer",
        "elapsed_seconds", "type", "number",
        "trace_id", "type", "integer", "null",
        "error", "type", "string", "null",
        "required", "answer", "how", "status", "cost_usd",
        "annotations", "readOnlyHint", 1, "openWorldHint", 1);
    json_t *describe = json_pack(
        "{s:s,s:s,s:s,s:{s:s,s:{s:O},s:[s]},s:{s:s,s:{s:{s:s}},s:[s]},s:{s:b,s:b}}",
        "name", "rlm_describe", "title", "What rlm would tell its model about files",
        "description", "Describes the files as rlm's root model would see them (type, size, "
                       "estimated tokens, names, a preview), without calling any model.",
        "inputSchema", "type", "object", "properties", "paths", paths, "required", "paths",
        "outputSchema", "type", "object", "properties", "description", "type", "string",
        "required", "description",
        "annotations", "readOnlyHint", 1, "openWorldHint", 0);
    json_decref(paths);
    return json_pack("{s:[o,o]}", "tools", ask, describe);
}

int mcp_call_parse(const json_t *params, mcp_call *call, int *tool_error, char *why, size_t whylen)
{
    memset(call, 0, sizeof *call);
    call->max_cost = call->max_time = -1;
    call->max_subcalls = -1;
    *tool_error = 0;
    call->tool = json_string_value(json_object_get(params, "name"));
    if (!call->tool || (strcmp(call->tool, "rlm_ask") != 0 && strcmp(call->tool, "rlm_describe") != 0)) {
        snprintf(why, whylen, "unknown tool '%.64s' (rlm_ask, rlm_describe)", call->tool ? call->tool : "");
        return -1;
    }
    *tool_error = 1;
    const json_t *args = json_object_get(params, "arguments");
    if (args && !json_is_object(args)) {
        snprintf(why, whylen, "arguments must be an object");
        return -1;
    }
    int ask = strcmp(call->tool, "rlm_ask") == 0;
    const json_t *q = json_object_get(args, "question");
    if (ask) {
        if (!json_is_string(q) || json_string_length(q) == 0) {
            snprintf(why, whylen, "question must be a non-empty string");
            return -1;
        }
        call->question = json_string_value(q);
    }
    const json_t *paths = json_object_get(args, "paths");
    if (paths && !json_is_array(paths)) {
        snprintf(why, whylen, "paths must be an array of strings");
        return -1;
    }
    if (!ask && json_array_size(paths) == 0) {
        snprintf(why, whylen, "paths must name at least one file, directory or glob");
        return -1;
    }
    if (json_array_size(paths) > MCP_MAX_PATHS) {
        snprintf(why, whylen, "at most %d paths (use a directory or a glob)", MCP_MAX_PATHS);
        return -1;
    }
    size_t i;
    const json_t *p;
    json_array_foreach(paths, i, p) {
        if (!json_is_string(p) || json_string_length(p) == 0 || json_string_length(p) > 4000 ||
            memchr(json_string_value(p), '\0', json_string_length(p))) {
            snprintf(why, whylen, "paths[%zu] must be a non-empty path", i);
            return -1;
        }
        call->paths[call->n_paths++] = json_string_value(p);
    }
    static const char *const numbers[] = {"max_cost", "max_time", "max_subcalls"};
    for (int k = 0; k < 3; k++) {
        const json_t *v = json_object_get(args, numbers[k]);
        if (!v)
            continue;
        if (!json_is_number(v) || json_number_value(v) < 0 || (k == 2 && !json_is_integer(v))) {
            snprintf(why, whylen, "%s must be a number >= 0", numbers[k]);
            return -1;
        }
        if (k == 0)
            call->max_cost = json_number_value(v);
        else if (k == 1)
            call->max_time = json_number_value(v);
        else
            call->max_subcalls = (long)json_integer_value(v);
    }
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)args, key, v) {
        if (strcmp(key, "question") && strcmp(key, "paths") && strcmp(key, "max_cost") &&
            strcmp(key, "max_time") && strcmp(key, "max_subcalls")) {
            snprintf(why, whylen, "unknown argument '%.64s'", key);
            return -1;
        }
    }
    return 0;
}

json_t *mcp_tool_result(const char *text, size_t len, json_t *structured, int is_error)
{
    json_t *s = json_stringn(text, len);
    if (!s) {
        size_t clean_len = 0;
        char *clean = utf8_sanitize(text, len, &clean_len);
        s = clean ? json_stringn(clean, clean_len) : json_string("");
        free(clean);
    }
    json_t *r = json_pack("{s:[{s:s,s:o}],s:b}", "content", "type", "text", "text", s, "isError", is_error);
    if (r && structured)
        json_object_set_new(r, "structuredContent", structured);
    else
        json_decref(structured);
    return r;
}

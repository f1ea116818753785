/* chat — OpenAI's chat completions API as `rlm serve` speaks it: a request
 * body parsed into what a run needs (the question, the input the earlier
 * messages make, the named input, streaming, the rlm extension), and the
 * bodies that go back (a completion, stream chunks, an error). Pure: no
 * sockets, no runs; fuzzed (fuzz/fuzz_chat.c).
 *
 * How a request becomes a run (docs/serve.md): the last message, which must
 * be the user's, is the question; system and developer messages are
 * instructions put before it; the other earlier messages are the input
 * (`context`): one message's text as it is, several each under a "[role]"
 * line. The model is "rlm" or "rlm:NAME", NAME a named input of the server
 * (also "rlm": {"input": NAME}). Sampling options (temperature, max_tokens,
 * ...) are the server's: they are listed in the reply's rlm.ignored, never
 * silently dropped. Everything rlm adds lives under the "rlm" key.
 *
 * Ownership: chat_parse fills a chat_request whose strings are malloc'd and
 * released by chat_request_clear. Every function returning char * returns
 * a malloc'd string the caller frees (NULL only when out of memory). */
#ifndef RLM_SERVE_CHAT_H
#define RLM_SERVE_CHAT_H

#include <jansson.h>
#include <stddef.h>

/* Deepest nesting of arrays and objects a body may have (checked before it
 * is parsed, so the parser's recursion stays shallow). */
#define CHAT_MAX_DEPTH 32
/* Most bytes of system and developer messages put before the question. */
#define CHAT_MAX_INSTRUCTIONS (64 * 1024)
/* Most messages in one request. */
#define CHAT_MAX_MESSAGES 100000
/* Most names listed in rlm.ignored. */
#define CHAT_MAX_IGNORED 16

/* Why a request is refused: the HTTP status and OpenAI's error fields. */
typedef struct chat_error {
    int status;                /* 400, 404, 413, ... */
    const char *type;          /* "invalid_request_error", ... (static) */
    const char *code;          /* "model_not_found", ... (static) or NULL */
    const char *param;         /* the field at fault (static) or NULL */
    char message[512];
} chat_error;

typedef struct chat_request {
    char *model;               /* as the client named it */
    char *input;               /* the named input ("rlm:NAME" or rlm.input), or NULL */
    char *question;            /* the last user message, after any instructions */
    char *context;             /* the earlier messages' text, or NULL when there are none */
    size_t context_len;
    int stream;                /* "stream": true */
    int include_usage;         /* "stream_options": {"include_usage": true} */
    int progress_chunks;       /* "rlm": {"progress": true}: progress as chunks too */
    char *conversation;        /* "rlm": {"conversation_id": ...}, or NULL */
    /* Budgets the request asks for ("rlm": {...}); < 0: not asked. The
     * server caps them with its own. */
    double max_cost, max_time;
    long max_tokens, max_subcalls, max_iterations;
    /* Fields rlm does not use, by name (the reply says so). */
    const char *ignored[CHAT_MAX_IGNORED];
    size_t n_ignored;
} chat_request;

/* Parses a request body. 0 with *out filled, or -1 with *err set (400 for
 * anything malformed, 404 model_not_found for a model that is neither
 * "rlm" nor "rlm:NAME"). Whether NAME exists is the server's to check. */
int chat_parse(const char *body, size_t len, chat_request *out, chat_error *err);
void chat_request_clear(chat_request *req);

/* {"error": {"message", "type", "param", "code"}} */
char *chat_error_body(const chat_error *err);

/* Sets *err (message formatted). */
void chat_error_set(chat_error *err, int status, const char *type, const char *code,
                    const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* What a finished run adds to a reply: the answer and the run's report. */
typedef struct chat_outcome {
    const char *id;            /* "chatcmpl-..." */
    const char *model;
    long created;              /* Unix time */
    const char *answer;        /* NULL: no answer */
    size_t answer_len;
    const char *report;        /* rlm_report_json's text, or NULL */
    const char *status;        /* rlm_status_name */
    const char *error;         /* the run's error message, or NULL */
    const char *conversation;  /* or NULL */
    const chat_request *req;   /* for ignored, include_usage */
    const char *warnings;      /* the run's warnings, one per line, or NULL */
} chat_outcome;

/* The non-streaming reply: a chat.completion object with usage (the whole
 * run's tokens) and "rlm": {status, how, turns, sub_calls, sub_call_errors,
 * cost_usd, stopped_by, elapsed_seconds, trace_id, conversation_id,
 * ignored, warnings, error}. finish_reason is "stop" with an answer,
 * "length" without (a budget or the turn limit ran out). */
char *chat_completion_body(const chat_outcome *o);

/* Stream pieces, each one whole SSE event ("data: ...\n\n"). */
char *chat_chunk_role(const chat_outcome *o);      /* the first: role assistant */
char *chat_chunk_content(const chat_outcome *o);   /* the answer */
char *chat_chunk_finish(const chat_outcome *o);    /* finish_reason and "rlm" */
char *chat_chunk_usage(const chat_outcome *o);     /* choices [] and usage */
char *chat_chunk_error(const chat_error *err);     /* {"error": ...} mid-stream */
/* A progress event as an extension chunk: choices [] and "rlm_event":
 * event (a JSON object's text). */
char *chat_chunk_event(const chat_outcome *o, const char *event);
#define CHAT_STREAM_DONE "data: [DONE]\n\n"

/* A run's prompt and completion tokens over every model (the report's
 * "usage" per model, rlm_report_json); 0 each when report is NULL. */
void chat_report_tokens(const json_t *report, json_int_t *prompt, json_int_t *completion);

#endif

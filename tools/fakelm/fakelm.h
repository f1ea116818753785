/* fakelm — what the fake server's files share: script.c (the rules and
 * faults a script declares, loaded and checked at start-up), oracle.c
 * (answers computed from a benchmark task's key), wire.c (OpenAI and
 * Anthropic bodies, error objects and event streams as a provider writes
 * them: the mirror of src/lm/lm_openai.c and lm_anthropic.c), timer.c (the
 * connections parked until a deadline) and fakelm.c (the HTTP server:
 * matching requests to rules, latency, faults, counters, main). docs/fakelm.md is the manual.
 *
 * Ownership: a script owns its rules and its oracle (script_free releases
 * them; the oracle's strings point into its own copy of the key). Response
 * builders take what they are handed as "owned" or "takes" and free it on
 * failure too; an sse_body belongs to the MHD response made from it. */
#ifndef FAKELM_H
#define FAKELM_H

#include "util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <microhttpd.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#define FAKELM_MAX_BODY ((size_t)64 << 20)   /* largest request body accepted */
#define FAKELM_MAX_SCRIPT ((off_t)16 << 20)  /* largest script file */
#define FAKELM_MAX_RULES 4096
#define FAKELM_MAX_CONNECTIONS 4096          /* also the timer heap's capacity */
#define FAKELM_MAX_LATENCY_MS 3600000L
#define FAKELM_LOG_PREVIEW 200               /* code points of last_user logged */
#define FAKELM_MATCH_LIMIT 10000000          /* PCRE2 backtracking bound per match */
#define FAKELM_STREAM_PIECES 4               /* content deltas in an SSE stream */
#define FAKELM_CAPTURES 10                   /* $0..$9 */
/* ------------------------------------------------------------------ script */

typedef enum { ON_LAST_USER, ON_SYSTEM, ON_ANY } rule_on;

/* Replies computed from the answer key instead of `reply` (see oracle below). */
typedef enum { ORACLE_NONE, ORACLE_LABELS, ORACLE_FACTS } oracle_kind;

typedef struct rule {
    pcre2_code *match;
    uint32_t groups;      /* capture groups in match */
    pcre2_code *model;    /* NULL: any model */
    rule_on on;
    char *reply;
    char *body;           /* raw response body, sent verbatim; NULL: none */
    size_t body_len;
    char *content_type;   /* for body; NULL: chosen from the request */
    char *reasoning;      /* reasoning_content; NULL: none */
    char *error_type;     /* overrides the type derived from status */
    char *error_code;
    json_t *headers;      /* object of extra response headers, or NULL */
    long times;           /* answers at most this many requests; -1: no limit */
    long latency_ms;      /* -1: the global latency */
    long status;
    int content_null;
    int drop;             /* close the connection instead of answering */
    long stall_ms;        /* > 0: pause the body this long at stall_after bytes */
    long stall_after;
    long keepalive_ms;    /* > 0: during the pause, an SSE comment line this often */
    long reset_after;     /* >= 0: close the connection after this many body bytes */
    int truncate;         /* a stream ends without its terminator */
    oracle_kind oracle;
} rule;

/* Faults injected into a share of the normal (200) answers, chosen by a
 * seeded hash of the request's sequence number: the same script and the same
 * number of requests give the same number of each fault. */
typedef enum {
    FAULT_429, FAULT_500, FAULT_503, FAULT_RESET, FAULT_TRUNCATED, FAULT_MALFORMED,
    FAULT_EMPTY_REASONING, FAULT_STALL, FAULT_KINDS
} fault_kind;

/* The names of the fault kinds, as scripts and /counters write them. */
extern const char *const fault_names[FAULT_KINDS];

typedef struct faults {
    double rate;          /* 0: no faults */
    fault_kind kinds[FAULT_KINDS];
    size_t nkinds;
    uint64_t seed;
    char *retry_after;    /* Retry-After of injected 429s */
    long stall_ms;
} faults;
/* ------------------------------------------------------------------ oracle */

typedef struct oracle_entry {
    const char *a, *b;     /* instance text; or subject and relation of a fact */
    const char *value;     /* label; or the fact's object */
    const char *evidence;  /* facts: the sentence that states it; NULL otherwise */
    uint32_t alen, blen;
} oracle_entry;

typedef struct oracle {
    char *text;            /* the key file, strings NUL-terminated in place */
    uint64_t *slots;       /* hash table: (32 hash bits << 32) | (entry index + 1); 0 is free */
    size_t mask;
    oracle_entry *entries; /* in key order, one per distinct key */
    size_t count, cap;
    char **copies;         /* strings decoded by jansson (lines with escapes) */
    size_t ncopies, copies_cap;
} oracle;

/* The prompt cache's settings (prefix.c), from the script's "prompt_cache". */
typedef struct prompt_cache_options {
    bool off;             /* "prompt_cache": false */
    long min_tokens;      /* shortest prefix cached; 0: 1024 */
    long step_tokens;     /* OpenAI's steps between cached prefixes; 0: 128 */
} prompt_cache_options;

typedef struct script {
    rule *rules;
    size_t nrules;
    long latency_ms;
    json_t *models;       /* array of model ids for GET /v1/models */
    pcre2_match_context *match_context;
    faults faults;
    char *oracle_key;     /* path of the answer key, or NULL */
    oracle oracle;        /* loaded at start-up when a rule or --oracle-key needs it */
    prompt_cache_options prompt_cache;
} script;

/* Loads and checks the whole script at path; any problem is reported in err
 * and makes start-up fail, so a typo never turns into a silently unmatched
 * rule. 0, or -1 with sc left empty. */
int script_load(script *sc, const char *path, char *err, size_t errlen);
void script_free(script *sc);

/* Loads the key at path: "instance"/"label" lines and "subject"/"relation"/
 * "object"/"fact" lines are indexed; other lines (an S-NIAH needle) are
 * ignored. Blank lines are skipped; a line that is not a JSON object fails. */
int oracle_load(oracle *o, const char *path, char *err, size_t errlen);
void oracle_free(oracle *o);
/* "labels": the label of every `Instance: TEXT` line of text, one per line
 * in order; "unknown" for an instance the key does not hold. */
int oracle_labels(const oracle *o, const char *text, size_t len, buf *out);
/* "facts": the rule's group 1 (in md) names the relation and group 2 the
 * subject; the answer is the fact's object when the sentence stating it is
 * in text, else "NOT FOUND". */
int oracle_facts(const oracle *o, const char *text, size_t len, pcre2_match_data *md, buf *out);

/* ------------------------------------------------------------------- timer */

/* The timer thread that resumes parked connections (timer.c). */
typedef struct timer_entry {
    double deadline; /* clock_now() seconds */
    struct MHD_Connection *conn;
} timer_entry;

typedef struct timer {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* on CLOCK_MONOTONIC, like clock_now() */
    timer_entry *heap;
    size_t len, cap;
    bool stopping;
    bool running;
    pthread_t thread;
} timer;

/* Starts the timer thread with room for cap parked connections. 0, or -1. */
int timer_start(timer *t, size_t cap);
/* Resumes every parked connection, stops the thread, frees the heap. */
void timer_stop(timer *t);

/* Parks conn, which the caller has already suspended, until deadline
 * (clock_now() seconds). -1 when the heap is full or the timer stopping. */
int timer_add(timer *t, struct MHD_Connection *conn, double deadline);

/* -------------------------------------------------------------------- wire */

typedef struct usage {
    size_t prompt, completion;
    size_t cached;        /* of prompt: read from the prompt cache */
    size_t cache_write;   /* of prompt: written to it (Anthropic) */
} usage;

/* ------------------------------------------------------------ prompt cache */

/* The prefixes a provider would hold in its prompt cache: a bounded set of
 * prefix hashes shared by every request (prefix.c says how each API uses
 * it). Thread-safe. */
typedef struct prompt_cache {
    pthread_mutex_t lock;
    uint64_t *slots;      /* open addressing; 0 is free; emptied when half full */
    size_t mask, count;
    bool enabled;
    size_t min_tokens, step_tokens;
} prompt_cache;

/* 2^slots_log2 slots, enabled with OpenAI's thresholds. -1 out of memory. */
int prompt_cache_init(prompt_cache *pc, size_t slots_log2);
void prompt_cache_free(prompt_cache *pc);
/* Sets u->cached and u->cache_write for a parsed request (u->prompt already
 * set) and remembers its prefixes: OpenAI's rules, or Anthropic's
 * cache_control breakpoints when anthropic. */
void prompt_cache_account(prompt_cache *pc, json_t *request, bool anthropic, usage *u);

typedef struct completion {
    char id[48];
    long created;
    const char *model;
    const char *content;   /* NULL: JSON null */
    size_t content_len;    /* its bytes: a reply may hold NUL bytes (sent as \u0000) */
    const char *reasoning; /* NULL: absent */
    usage usage;
} completion;

/* How a body is delivered: whole, or with a pause (a stall) or a broken
 * connection at a given byte. */
typedef struct delivery {
    long stall_ms;        /* > 0: pause at stall_at */
    size_t stall_at;
    long keepalive_ms;    /* > 0: while paused, send ": keep-alive" this often */
    long reset_at;        /* >= 0: close the connection at this byte */
} delivery;

/* A body handed out one event per read, so each SSE event is its own HTTP
 * chunk as a streaming server would send it; also used for any body that
 * must stall or break part-way. */
typedef struct sse_body {
    buf data;
    size_t ends[FAKELM_STREAM_PIECES * 2 + 16];
    size_t nevents;
    delivery delivery;
    bool stalled;            /* the pause has begun */
    bool stall_done;         /* ... and is over */
    double stall_until, next_keepalive;
    size_t extra;            /* keep-alive bytes sent: body positions are pos - extra */
    struct MHD_Connection *conn;
    timer *timer;
} sse_body;

/* A response of data (owned: freed on failure too); NULL out of memory. */
struct MHD_Response *response_owned(char *data, size_t len, const char *content_type);
/* A JSON response of value, whose reference it takes. */
struct MHD_Response *response_json(json_t *value);
/* OpenAI's error object: {"error":{"message","type","param","code"}}. */
struct MHD_Response *response_error(const char *message, const char *type, const char *param,
                                    const char *code);
/* The 401 real OpenAI sends, in its words. */
struct MHD_Response *response_unauthorized(void);
/* OpenAI's error type for a status ("requests", "server_error", ...). */
const char *error_type_for(unsigned status);
/* Anthropic's {"type":"error","error":{"type","message"}}; type NULL: the
 * one Anthropic uses for status. */
struct MHD_Response *response_anthropic_error(unsigned status, const char *message, const char *type);

/* Hands sse's body out through a reader, one event per read, with the
 * delivery d (stall, keep-alives, reset); parks in t while stalled. Takes sse. */
struct MHD_Response *response_paced(sse_body *sse, const char *content_type, const delivery *d,
                                    struct MHD_Connection *conn, timer *t);
/* A whole body (owned), sent at once, or paced when d asks for a stall or a reset. */
struct MHD_Response *response_body(char *data, size_t len, const char *content_type,
                                   const delivery *d, struct MHD_Connection *conn, timer *t);

/* A chat.completion body, and a chat.completion.chunk stream (truncate: no
 * [DONE]; include_usage: the usage chunk). NULL out of memory. */
char *completion_text(const completion *c);
sse_body *stream_openai(const completion *c, bool include_usage, bool truncate);
/* A Messages body, and a Messages event stream (truncate: no message_stop). */
char *anthropic_text(const completion *c);
sse_body *stream_anthropic(const completion *c, bool truncate);

#endif

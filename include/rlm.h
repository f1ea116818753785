/* rlm.h — the public API of rlm, a Recursive Language Model engine.
 *
 * A root language model answers a question about an input far larger than its
 * context window. It never reads the input: it sees a description of it and
 * writes Python, run in a locked-down sandbox where the input is the variable
 * `context`, and it calls sub-models on pieces of the input, many at once,
 * until it can answer. The rlm command-line tool uses nothing but this header.
 *
 * Lifecycle:
 *     rlm_config *cfg = rlm_config_new();
 *     rlm_config_set(cfg, "model", "gpt-5-mini");          // returns RLM_OK or RLM_ERR_USAGE
 *     rlm *r;
 *     if (rlm_new(cfg, &r) != RLM_OK) { puts(rlm_errmsg(r)); ... }
 *     rlm_set_context_file(r, "big.txt");
 *     char *answer;
 *     rlm_status st = rlm_ask(r, "How many ...?", &answer);
 *     ... rlm_string_free(answer); rlm_free(r); rlm_config_free(cfg);
 *
 * Ownership, once for the whole API:
 *   - Handles (rlm_config, rlm) are created by *_new and released by the
 *     matching *_free; passing NULL to a *_free is a no-op.
 *   - Strings passed in are borrowed: rlm copies what it keeps.
 *   - Strings handed out through a `char **` are the caller's, released with
 *     rlm_string_free. Strings returned as `const char *` are borrowed from
 *     the handle and stay valid until the next call on that handle.
 *
 * Errors: every fallible call returns an rlm_status; RLM_OK is 0. The message
 * explaining the last failure is kept on the handle (rlm_errmsg,
 * rlm_config_errmsg), never in a global. Nothing that comes from the network,
 * the model, a file or the user aborts the process.
 *
 * Threads: a handle may be used by one thread at a time — except rlm_cancel,
 * which any thread (or a signal handler) may call at any time. Different
 * handles are independent; handles made from one pool (rlm_pool_new) share
 * its dispatchers and zygotes, and may run on different threads at once. */
#ifndef RLM_H
#define RLM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RLM_VERSION_MAJOR 0
#define RLM_VERSION_MINOR 1
#define RLM_VERSION_PATCH 0
#define RLM_VERSION "0.1.0"

/* The library's version string, e.g. "0.1.0". */
const char *rlm_version(void);

typedef enum rlm_status {
    RLM_OK = 0,
    RLM_NO_ANSWER = 1,    /* the run ended without a final answer (turns or a budget ran out) */
    RLM_ERR_USAGE = 2,    /* a bad option, value or call sequence */
    RLM_ERR_INPUT = 3,    /* the context or question could not be read */
    RLM_ERR_MODEL = 4,    /* the model endpoint failed: unreachable, HTTP error, unusable reply */
    RLM_ERR_SANDBOX = 5,  /* the sandbox could not be started or broke beyond repair */
    RLM_ERR_NOMEM = 6,
    RLM_ERR_INTERNAL = 7,
} rlm_status;

/* A short English name for a status ("ok", "no answer", "model error", ...). */
const char *rlm_status_name(rlm_status status);

/* ---- Configuration ------------------------------------------------------ */

typedef struct rlm_config rlm_config;

/* A configuration with every option at its default. NULL if out of memory. */
rlm_config *rlm_config_new(void);
void rlm_config_free(rlm_config *cfg);

/* A copy of cfg (NULL: the defaults), with every option as cfg has it: a
 * program that runs many questions with one base configuration copies it
 * and sets what differs. NULL if out of memory. */
rlm_config *rlm_config_copy(const rlm_config *cfg);

/* Sets one option from its text form. Keys and defaults:
 *   base_url          endpoint: http:// or https:// URLs (a pasted
 *                     ".../chat/completions" or ".../messages" is
 *                     recognised); several, separated by commas: each
 *                     request to the live one with the fewest requests
 *                     outstanding, a failing one drained and probed until
 *                     it answers (docs/providers.md)   the provider's own API:
 *                     "https://api.openai.com/v1" or "https://api.anthropic.com/v1"
 *   api_key           bearer token / x-api-key, sent to base_url's URLs only
 *                     (and to sub-calls on the same hosts); "" for none  ""
 *   provider          "openai" or "anthropic"        inferred: from base_url's
 *                     exact host (api.anthropic.com is anthropic, any other
 *                     host openai); with no base_url, from the model's name
 *                     (claude-* is anthropic); else openai
 *   model             root model                     "gpt-5-mini"
 *   sub_model         model for llm_query            same as model
 *   max_iterations    root turns before a last call  30
 *   concurrency       sub-calls in flight at once    64
 *   cell_timeout      seconds per code cell          120
 *   output_limit      characters of output per block 20000
 *   request_timeout   seconds per HTTP attempt       600
 *   max_retries       retries on 429/5xx/network     3
 *   sandbox_memory    sandbox address-space limit    4G + 4 x context size ("4G", "512M", bytes)
 *   sandbox_exe       path of rlm-sandbox            next to the program, the build, or libexec
 *   unsafe_no_sandbox "1" runs model code without seccomp and rlimits   "0"
 *   trace             JSONL trace file to write      none
 *   sub_base_url      endpoint(s) for sub-calls      base_url; but when neither
 *                     base_url nor provider is set and sub_model implies
 *                     another provider (claude-*), that provider's own API
 *   sub_provider      "openai" or "anthropic" for sub-calls   inferred from
 *                     sub_base_url's host, else as above, else provider
 *   sub_api_key       the key for sub_base_url       api_key when every
 *                     sub_base_url URL is on a host (scheme, host, port) of
 *                     base_url, else none: a key is never sent to a host it
 *                     was not given for
 *   rpm, tpm          client-side requests / tokens per minute per endpoint; 0 = none   0
 *   max_output_tokens output token cap per request   provider default
 *   reasoning_effort  "low", "medium", "high"        not sent
 *   temperature       sampling temperature           not sent
 *   stream            "1" streams root replies, "0" never   unset: when a progress callback is set
 *   stall_timeout     seconds a stream may go without data (keep-alive
 *                     comments do not count) before it is retried   300
 *   strict            "1": any sub-call that fails (after its retries) ends
 *                     the run with RLM_ERR_MODEL; "0": only errors no retry
 *                     fixes do (401, 403, 404, a 400 on every prompt of a
 *                     batch of several), others reach model code as "Error: ..." strings
 *                     and are counted (report, warning)   "0"
 *   prompt_cache      "1": mark cache_control breakpoints for Anthropic
 *                     (system prompt, latest turns, a batch's shared
 *                     preamble); "0": none. OpenAI-compatible servers
 *                     cache prefixes on their own (docs/costs.md)   "1"
 *   dedupe            "1": identical sub-calls of a run (or conversation)
 *                     are sent once and the reply shared; "0": every one
 *                     is sent   unset: on unless temperature > 0
 *   Budgets for a whole run (rlm_ask), counting root turns and every sub-call;
 *   unset = no limit (docs/budgets.md):
 *   max_cost          US dollars (needs known prices for model and sub_model)
 *   max_tokens        prompt + completion tokens
 *   max_time          wall seconds
 *   max_subcalls      sub-call prompts (0 = none allowed, "none" = no
 *                     limit)                                            10000
 *   Bounds a cell cannot escape (docs/sandbox.md):
 *   cell_wall         wall seconds per code cell, its sub-calls and child
 *                     RLMs included: past it the sub-calls in flight end
 *                     and the cell is interrupted ("none" = no limit)   1800
 *   max_child_batch   prompts one rlm_query_batched may start as child
 *                     RLMs; a bigger batch gets an error per prompt,
 *                     1 to 65536                                        256
 *   max_sandboxes     sandboxes alive at once in the whole tree of RLMs,
 *                     the top one's included; a child waits for one while
 *                     another RLM can finish, else fails, 1 to 4096     32
 *   prices            JSON prices file on top of the built-in table and of
 *                     $XDG_CONFIG_HOME/rlm/prices.json    none
 *   cache             "1": answer repeated requests from the response cache "0"
 *   cache_dir         the cache's directory          $XDG_CACHE_HOME/rlm (~/.cache/rlm)
 *   record            JSONL file to write every request and response to    none
 *   replay            answer every request from a record file, offline     none
 *   include           newline-separated globs: only matching files inside
 *                     directories given to rlm_add_context   all
 *   exclude           newline-separated globs (gitignore syntax) to skip    none
 *   jsonl_field       read every rlm_add_context input as JSONL, this field
 *                     of each record holding its text (without it, .jsonl
 *                     files are lists of records, parsed)                  none
 *   json_input        "1": parse every rlm_add_context input as JSON; the
 *                     context is its value (.json files are parsed anyway) "0"
 *   system_prompt     the root model's system prompt, replacing rlm's own
 *                     (rlm_system_prompt gives it, to start from). These
 *                     placeholders are filled: {max_iterations} (the turns),
 *                     {allowed_modules} (what model code may import) and
 *                     {context_description} (the input's description, which
 *                     the first user message then leaves out); any other
 *                     text is sent as written. Child RLMs get it too   rlm's
 *   mode              "auto", "rlm" or "direct"      "auto"
 *                     auto: an input estimated under direct_threshold tokens
 *                     is answered by one plain call (no sandbox); rlm:
 *                     always the RLM loop; direct: always one call (an input
 *                     no model window holds is refused with RLM_ERR_USAGE)
 *   direct_threshold  estimated tokens for auto     32000
 *   Recursion (rlm_query in model code; docs/trace.md shows the call tree):
 *   max_depth         levels of RLMs, 1 to 16: 1 makes rlm_query a plain
 *                     sub-call on prompt + context; 2 lets the root start
 *                     child RLMs; 3 lets those start their own          1
 *   max_children      child RLMs of one rlm_query_batched running at once,
 *                     1 to 256                                          8
 *   child_share       share of the remaining budgets (max_cost, max_tokens,
 *                     max_time, max_subcalls) one child may spend, in
 *                     (0, 1]; a child that spends it returns its best
 *                     answer to its parent                              0.5
 *   Compaction of the root history:
 *   context_window    tokens of the root model's window, 1000 or more   128000
 *   compact_at        when the history's estimated tokens reach this
 *                     fraction of context_window, older turns are
 *                     summarised by the root model into one note (> 0;
 *                     1 or more: never)                                 0.85
 *   Conversations (see rlm_begin_conversation):
 *   session           name of a conversation saved on disk: 1-100
 *                     characters of letters, digits, '.', '_' and '-', not
 *                     starting with '.'. Set, every rlm_ask is a question
 *                     of that conversation, and a session that already has
 *                     questions is continued                            none
 *   The run log (see "The run log" below):
 *   log               "1": record every rlm_ask in the run log         "0"
 *   log_db            the log's SQLite file   $XDG_DATA_HOME/rlm/logs.db
 *   log_max           the traces' total size kept ("256M"; older traces
 *                     are dropped past it, their rows kept; 0: none) 256M
 *   log_command       what the row says asked ("ask", "chat", ...) "library"
 *   roots             newline-separated directories the inputs are
 *                     confined to: every path given to rlm_add_context
 *                     (and rlm_pool_add_input) must resolve, symbolic links
 *                     followed, inside one of them, or it is refused with
 *                     RLM_ERR_INPUT without saying whether it exists; a
 *                     directory walk skips what resolves outside (a
 *                     warning each); stdin ("-") is refused. Files are
 *                     opened through the checked path with no link
 *                     followed, so one swapped in after the check fails
 *                     instead of escaping. Needs Linux 5.6 (openat2). Inputs
 *                     given by descriptor are not checked     none
 *   session_db        the SQLite file sessions are kept in (created with
 *                     its directory)   $XDG_DATA_HOME/rlm/sessions.db
 *                                      (~/.local/share/rlm/sessions.db)
 *   snapshot_max      bytes of data variables one question leaves for
 *                     the next; larger variables are not carried (the
 *                     model is told)                                    256M
 * Returns RLM_OK, or RLM_ERR_USAGE for an unknown key or a bad value (the
 * reason in rlm_config_errmsg). */
rlm_status rlm_config_set(rlm_config *cfg, const char *key, const char *value);

/* The current text form of an option, borrowed from cfg; NULL for an unknown
 * key. provider, sub_provider, base_url and sub_base_url are given resolved,
 * as the run will use them (see the keys above). */
const char *rlm_config_get(const rlm_config *cfg, const char *key);

/* 1 when every URL of the URL option `key` ("base_url" or "sub_base_url", as
 * resolved) has the scheme, host and port of one of the comma-separated
 * URLs in `url`: a key given for `url` may then be sent there. 0 otherwise,
 * also for another key or a URL that does not parse. */
int rlm_config_url_within(const rlm_config *cfg, const char *key, const char *url);

/* Why the last rlm_config_set failed ("" if it did not). The message starts
 * with the key ("max_iterations must be ..."), so a front end can name the
 * flag or variable the value came from instead. */
const char *rlm_config_errmsg(const rlm_config *cfg);

/* ---- Runs --------------------------------------------------------------- */

typedef struct rlm rlm;

/* Creates a run handle from a copy of cfg (cfg may be freed afterwards) and
 * starts its model dispatcher. *out is set even on failure, so the reason can
 * be read with rlm_errmsg before rlm_free (it is NULL only when out of memory).
 * With the session option set it also opens that session in session_db:
 * RLM_ERR_INPUT when the database cannot be opened or written. */
rlm_status rlm_new(const rlm_config *cfg, rlm **out);
void rlm_free(rlm *r);

/* The message for the last failure on r ("" if none). */
const char *rlm_errmsg(const rlm *r);

/* Uses the file at path as the context (memory-mapped, not read into the
 * host's heap). RLM_ERR_INPUT if it is missing, unreadable, not a regular
 * file or empty. Replaces any earlier context. */
rlm_status rlm_set_context_file(rlm *r, const char *path);

/* Uses a copy of text[0..len) as the context. */
rlm_status rlm_set_context_text(rlm *r, const char *text, size_t len);

/* Adds one input to the context, like the CLI's repeatable --context: a
 * file, a directory (recursive; binary files, .git and paths matched by
 * .gitignore files or the exclude option are skipped; include narrows), a
 * glob, "-" for stdin, JSON or JSONL: one file makes `context` a str,
 * several files or a directory a dict path -> str; .json files (or any
 * input with the json_input option) are parsed, `context` being the value
 * (a dict path -> value for several), and .jsonl files are a list of
 * records (each line's value; a line that is not JSON is skipped with a
 * warning); with the jsonl_field option every input is JSONL read as a list
 * of str, that field of each record. Files are mapped, not
 * read into the heap. An argument that names nothing (a path that does not
 * exist, a glob that matches nothing) is refused at once with RLM_ERR_INPUT
 * and not added: the inputs added before it stay as they were. The inputs
 * are read by rlm_ask, which returns RLM_ERR_INPUT for inputs without any
 * text (or gone since), or a .json that does not parse (naming its line and
 * column); lesser problems (unreadable or binary files
 * skipped, broken JSONL lines, invalid UTF-8 replaced) are listed in
 * rlm_warnings and the trace. Replaces a context given by
 * rlm_set_context_file / rlm_set_context_text, and is replaced by them. In a
 * conversation (rlm_begin_conversation), the arguments added since the last
 * rlm_ask form the next question's new input. */
rlm_status rlm_add_context(rlm *r, const char *arg);

/* Adds one input whose data is read from the open descriptor fd, as
 * rlm_add_context would add a file named `name`: name is its key in
 * `context` when there are several inputs, and its ending says how it is
 * read (".json" parsed, ".jsonl" a list of records, else text; the
 * json_input and jsonl_field options apply). A regular file or a memfd is
 * mapped, never copied — so data the caller writes into a memfd (sealed
 * with F_SEAL_WRITE, F_SEAL_GROW and F_SEAL_SHRINK so nobody can change it
 * afterwards) reaches the sandbox with no copy by rlm; a pipe or socket is
 * read to its end by rlm_ask (one copy, as for stdin). The reading starts at
 * the file's beginning whatever fd's offset. rlm keeps a duplicate of fd
 * until the input is replaced or r is freed: the caller may close its own
 * at once. RLM_ERR_USAGE for an empty name, RLM_ERR_INPUT for a descriptor
 * that is not open or is a directory. In a saved session (the session
 * option), such an input, like stdin, can be kept only alone, as plain text
 * under 1 MB (docs/sessions.md). */
rlm_status rlm_add_context_fd(rlm *r, const char *name, int fd);

/* Called with a one-line description of what the run is doing (turn, blocks,
 * sub-calls in flight), at most a few times per second. Borrowed string. */
typedef void (*rlm_progress_fn)(void *userdata, const char *line);
void rlm_set_progress(rlm *r, rlm_progress_fn fn, void *userdata);

/* ---- Events: what the run does, as it happens ------------------------------
 *
 * Every step of a run is an event: the same facts the trace file holds
 * (docs/trace.md), plus progress that the trace leaves out (a root reply
 * arriving, a batch of sub-calls under way). `rlm --verbose`, the progress
 * line and the summary line are built from these events alone.
 *
 * The struct is versioned: `version` is RLM_EVENT_VERSION of the library
 * that built it and `size` its sizeof; fields are only ever added at the
 * end, so a caller compiled against an older header reads the fields it
 * knows. A field a kind does not use is 0, NULL or -1 (tokens, cost). */
#define RLM_EVENT_VERSION 1

typedef enum rlm_event_kind {
    RLM_EVENT_OTHER = 0,        /* any other trace event (mode, input, sandbox_ready,
                                   compaction, cancelled, error, ...): see `type` */
    RLM_EVENT_RUN_START,        /* an RLM starts on a question ("question"): text is the
                                   question; depth 1 for rlm_ask's own, 2+ for children */
    RLM_EVENT_RUN_END,          /* it ended ("run_end"): status, how, text = the answer
                                   (or NULL), turns, sub_calls, failed, cost_usd, seconds */
    RLM_EVENT_ROOT_REQUEST,     /* a root turn is asked for: turn, model */
    RLM_EVENT_ROOT_WAIT,        /* still waiting for it (about 4 a second): seconds
                                   waited, done = characters streamed so far (not traced) */
    RLM_EVENT_ROOT_REPLY,       /* its reply: text = content, output = reasoning,
                                   tokens, cost_usd, seconds, error */
    RLM_EVENT_CODE_START,       /* a code block starts: block (1-based), blocks (of the
                                   reply), text = the code (not traced: CODE has it) */
    RLM_EVENT_CODE,             /* it ended: block, blocks, text = the code, output = its output as the
                                   model sees it, raised, seconds */
    RLM_EVENT_BATCH_START,      /* model code sends batch_size sub-calls ("batch_start") */
    RLM_EVENT_BATCH_PROGRESS,   /* about 4 a second while they run: done, in_flight,
                                   failed, retried, seconds (not traced) */
    RLM_EVENT_BATCH_END,        /* they all came back ("batch_end"): the same counts */
    RLM_EVENT_SUB_CALL,         /* one sub-call of a batch: text = prompt excerpt,
                                   output = reply excerpt, error, tokens, cost */
    RLM_EVENT_CHILD_START,      /* a child RLM starts: node is the child's, depth its
                                   level, text = its prompt (excerpt) */
    RLM_EVENT_CHILD_END,        /* it ended: status, text = what rlm_query returned */
    RLM_EVENT_WARNING,          /* text = the warning */
    RLM_EVENT_FINAL_ANSWER,     /* text = the answer, how */
    RLM_EVENT_BUDGET_STOP,      /* a budget ran out ("budget_exhausted"): budget names it,
                                   text = what was spent */
} rlm_event_kind;

typedef struct rlm_event {
    int version;                /* RLM_EVENT_VERSION */
    size_t size;                /* sizeof (rlm_event) of the library that built it */
    rlm_event_kind kind;
    const char *type;           /* the trace's event type ("root_reply", ...; docs/trace.md),
                                   or "root_wait", "code_start", "batch_progress" */
    const char *node;           /* call-tree node: "0" for the top RLM, "0.1", ... */
    const char *parent;         /* its parent's, NULL for "0" */
    int depth;                  /* 1 for the top RLM, 2 for its children, ... */
    int turn;                   /* root turn of the node, 0 when none */
    double elapsed;             /* seconds since the trace started (the event's "t") */
    const char *text;           /* the main text of the kind (see above), or NULL */
    size_t text_len;            /* its bytes (it may hold NUL bytes) */
    const char *output;         /* the second text of the kind, or NULL */
    size_t output_len;
    const char *model;
    const char *status;         /* RUN_END, CHILD_END */
    const char *how;            /* FINAL_ANSWER, RUN_END */
    const char *budget;         /* BUDGET_STOP, RUN_END (stopped_by) */
    const char *error;          /* the error's name or message, NULL when none */
    int block, blocks;          /* CODE_START, CODE */
    int raised;                 /* CODE: the block raised an exception */
    size_t batch_size;          /* batch events, SUB_CALL */
    size_t done, in_flight, failed, retried;   /* batch events, RUN_END (failed) */
    size_t sub_calls;           /* RUN_END, CHILD_END */
    long prompt_tokens;         /* -1 when not reported */
    long completion_tokens;
    double cost_usd;            /* -1 when unknown */
    double seconds;             /* how long the step took (or has waited) */
    const void *internal_;      /* the library's: for rlm_event_json */
    /* Added after the first release of RLM_EVENT_VERSION 1 (check size): */
    long cached_tokens;         /* of prompt_tokens, read from the provider's prompt cache;
                                   -1 when not reported (ROOT_REPLY, SUB_CALL; RUN_END: the run's) */
    long cache_write_tokens;    /* of prompt_tokens, written to it (Anthropic); -1 likewise */
    size_t deduplicated;        /* SUB_CALL: 1 when answered by an identical earlier sub-call;
                                   RUN_END: the run's sub-calls deduplicated */
} rlm_event;

/* Called for every event of the handle's runs, child RLMs' included, on the
 * thread that produced it: the one in rlm_ask, or a child RLM's own thread —
 * never the network I/O thread. Calls are serialised (never two at once),
 * and they hold up the run that emits them: return quickly, copy what you
 * keep (the event and its strings are valid only during the call), and do
 * not call functions on the same handle from inside it — but rlm_cancel,
 * which only sets a flag: a callback may cancel the run it watches. */
typedef void (*rlm_event_fn)(void *userdata, const rlm_event *event);

/* Sets (fn NULL: removes) the event callback; takes effect at the next
 * rlm_ask. Setting one also streams root replies unless the stream option
 * says otherwise, so ROOT_WAIT counts the characters arriving. */
void rlm_set_event_callback(rlm *r, rlm_event_fn fn, void *userdata);

/* The whole event as one JSON object, as the trace writes it (with the
 * progress events' own fields for kinds the trace leaves out). Only inside
 * the callback; the caller's (rlm_string_free); NULL when out of memory. */
char *rlm_event_json(const rlm_event *event);

/* Answers question about the context. On RLM_OK *answer is the final answer.
 * On RLM_NO_ANSWER the turns or a budget ran out, or rlm_cancel was called;
 * *answer is NULL. When a budget runs out the root is asked one last time for
 * its best answer: if it gives one, the status is RLM_OK and the report's
 * stopped_by names the budget. On an error *answer is NULL and rlm_errmsg
 * says why. Either way the report (rlm_report_json) and the trace describe
 * everything that happened. In a conversation (rlm_begin_conversation) the
 * question follows the earlier ones. */
rlm_status rlm_ask(rlm *r, const char *question, char **answer);

/* rlm_ask, with the answer's length in bytes in *answer_len (may be NULL; 0
 * without an answer). An answer may hold NUL bytes — model code can answer
 * FINAL("a\0b") —, which a caller of rlm_ask cannot see past: use this one
 * to get every byte (the report's "answer" has them too, as \u0000). */
rlm_status rlm_ask_len(rlm *r, const char *question, char **answer, size_t *answer_len);

/* Cancels the rlm_ask in progress on r, from any thread or from a signal
 * handler (async-signal-safe: it only sets a flag). The cell running is
 * interrupted, the model requests in flight are abandoned and child RLMs
 * stop; that rlm_ask returns RLM_NO_ANSWER and rlm_errmsg says
 * "cancelled". In a conversation the questions before it are kept and the
 * next rlm_ask goes on from there. The flag is cleared when the next rlm_ask
 * starts: a caller that may cancel just before rlm_ask begins calls it again
 * once it has (a server watching a client that went away calls it until
 * rlm_ask returns). */
void rlm_cancel(rlm *r);

/* What the root model would be told about r's input — the description its
 * first message holds (type, size, tokens, names, a preview), the named
 * input's first (rlm_use_input) — without asking any model. Reads the
 * inputs as rlm_ask would (RLM_ERR_INPUT as there); a JSON input is parsed
 * by a sandbox, started for it. *out is the caller's (rlm_string_free). */
rlm_status rlm_describe(rlm *r, char **out);

/* ---- Pools: many runs in one process ---------------------------------------
 *
 * A pool holds what the handles made from it share, so that a server, a
 * batch runner or any program with many runs at once keeps one of each:
 *   - the model dispatchers: one set of connections, and the bound on
 *     requests in flight (concurrency) and the rate limits (rpm, tpm) hold
 *     for all the runs together, not per run;
 *   - a sandbox zygote: every run's sandboxes (child RLMs' included) are
 *     forked from one process that has started Python already, a few
 *     milliseconds each instead of a whole start-up;
 *   - named inputs (rlm_pool_add_input), read once and held by a zygote of
 *     their own: a run that uses one (rlm_use_input) forks its sandbox from
 *     it, so the input's memory is taken once however many runs use it;
 *   - the connection to the run log (the log option), opened by the first
 *     run that ends: the runs' rows are written one after the other instead
 *     of waiting for each other's lock (a handle whose log_db differs from
 *     the first one's opens its own).
 * A pool is made from a config: its dispatcher and sandbox options
 * (base_url, api_key, provider, sub_base_url, sub_api_key, sub_provider,
 * concurrency, request_timeout, max_retries, rpm, tpm, stall_timeout,
 * max_output_tokens, reasoning_effort, temperature, sandbox_exe,
 * unsafe_no_sandbox) are the pool's, and a handle made from it with a
 * config that says otherwise for one of them is refused. Everything else
 * (models, budgets, modes, the trace, the run log, sessions) is per handle.
 *
 * Ownership: the pool is reference-counted. rlm_pool_new's caller holds one
 * reference, dropped by rlm_pool_free; each handle made from it holds
 * another until rlm_free, so the pool may be freed before its handles.
 * Threads: rlm_new_in, rlm_pool_inputs and rlm_pool_free may be called
 * from any thread at once; rlm_pool_add_input and rlm_pool_errmsg are for
 * the thread that sets the pool up, before its handles run. */

typedef struct rlm_pool rlm_pool;

/* Makes a pool from a copy of cfg (NULL: the defaults) and starts its
 * dispatchers and zygote. *out is set even on failure, so the reason can be
 * read with rlm_pool_errmsg before rlm_pool_free (it is NULL only when out
 * of memory). RLM_ERR_USAGE for a bad endpoint, RLM_ERR_SANDBOX when no
 * sandbox process can be started. */
rlm_status rlm_pool_new(const rlm_config *cfg, rlm_pool **out);
void rlm_pool_free(rlm_pool *pool);

/* Why the last rlm_pool_new or rlm_pool_add_input failed ("" if none). */
const char *rlm_pool_errmsg(const rlm_pool *pool);

/* Warnings from loading the named inputs (files skipped, invalid UTF-8),
 * one per line; "" when none. Borrowed. */
const char *rlm_pool_warnings(const rlm_pool *pool);

/* Loads `arg` (anything rlm_add_context takes but "-": a file, a directory,
 * a glob, JSON, JSONL; the pool config's input options and roots apply)
 * once, as the named input `name` (1-64 letters, digits, '.', '_', '-').
 * Its zygote is started with it in memory, and what the root will be told
 * about it is made once. RLM_ERR_USAGE for a bad or taken name,
 * RLM_ERR_INPUT when it cannot be read (or is a .json that does not parse),
 * RLM_ERR_SANDBOX when its zygote cannot be started. */
rlm_status rlm_pool_add_input(rlm_pool *pool, const char *name, const char *arg);

/* The named inputs as JSON: [{"name", "documents", "bytes", "tokens" (an
 * estimate), "direct" (small enough to be answered by one call)}], in the
 * order they were added. *out is the caller's (rlm_string_free). */
rlm_status rlm_pool_inputs(const rlm_pool *pool, char **out);

/* rlm_new for a handle whose runs go through pool: its dispatchers, its
 * zygote, its named inputs. cfg NULL: the pool's config. A cfg whose
 * dispatcher or sandbox options (listed above) differ from the pool's is
 * refused with RLM_ERR_USAGE naming the first. The handle's report counts
 * max_in_flight over the whole pool. */
rlm_status rlm_new_in(rlm_pool *pool, const rlm_config *cfg, rlm **out);

/* Makes the pool's named input `name` r's `context` (NULL: none again).
 * The handle's own inputs (rlm_add_context, rlm_set_context_*), if any,
 * then come after it as `context_1`. Its sandbox is forked from the
 * input's zygote, nothing is read again. In a conversation the input is
 * added as its path, like rlm_add_context (the conversation's zygote loads
 * its own copy, and a saved session reads it again when continued).
 * RLM_ERR_USAGE when r was not made from a pool or the pool has no such
 * input. */
rlm_status rlm_use_input(rlm *r, const char *name);

/* ---- Conversations ------------------------------------------------------ */

/* From now on the rlm_ask calls on r form one conversation, kept in memory:
 * the root model's history and the sandbox's variables carry over from one
 * question to the next, and after question k its answer is the variable
 * answer_k and its messages the list history_{k-1} (`history` is history_0).
 * Inputs: the rlm_add_context calls made before an rlm_ask form one new
 * input for that question (as does rlm_set_context_file or
 * rlm_set_context_text); the first is `context` (also `context_0`), the next
 * `context_1`, and so on (a session saved by rlm 0.1 before these names
 * keeps its own: `context_1` for the first, `context_2` for the next, ...;
 * docs/sessions.md). Every input stays loaded until rlm_free. A
 * conversation always runs the RLM loop (the mode option is ignored).
 *
 * With the session option, rlm_new has already made r a conversation, saved
 * on disk as it happens: a later process that opens the same session
 * continues it. Its first rlm_ask reads the inputs again (from the paths
 * recorded; RLM_ERR_INPUT naming the input and the session when one is gone)
 * and loads the data the last question left (each question starts in a
 * fresh sandbox with the data variables of the one before, never its code:
 * docs/sessions.md); nothing is re-run, no model is asked. Inputs given
 * again with the same arguments as a recorded one are not new inputs. Text
 * inputs (rlm_set_context_text, stdin) are saved only under 1 MB: a larger
 * one makes rlm_ask fail with RLM_ERR_USAGE. A model other than the one the
 * session was saved with is a warning (rlm_warnings).
 *
 * Returns RLM_OK (also when r is already a conversation), or RLM_ERR_USAGE
 * for a handle that failed to open. */
rlm_status rlm_begin_conversation(rlm *r);

/* 1 when r is a conversation that has answered no question yet — a new
 * session, or an in-memory conversation before its first rlm_ask — else 0
 * (also when r is no conversation). A front end that is sent the whole
 * history each time (as OpenAI's API does) reads the earlier messages as
 * the input only then. */
int rlm_conversation_is_new(const rlm *r);

/* ---- Sessions on disk, as a whole --------------------------------------------
 *
 * Each takes cfg's session_db (cfg may be NULL: the default file) and sets
 * *out, the caller's (rlm_string_free): the result as JSON on RLM_OK, else
 * the reason. RLM_ERR_INPUT when the file cannot be read, is damaged (the
 * reason says to recover it), or the session is missing or in use. */

/* The sessions, by name: [{"name", "created", "questions", "last_question",
 * "model", "sub_model", "inputs", "in_use_by" (the pid holding it, or
 * null)}]; [] when there is no session file yet. */
rlm_status rlm_sessions_list(const rlm_config *cfg, char **out);

/* Removes session `name` and all it recorded: {"removed", "database"}.
 * Refused while a process holds it. */
rlm_status rlm_session_remove(const rlm_config *cfg, const char *name, char **out);

/* Recovers a damaged session file: every row that can still be read goes
 * into a new file that takes its place, the damaged one is kept beside it
 * (FILE.damaged-DATE), and a session that lost rows says so when it is
 * continued (without the data its last question left, its variables are not
 * restored). {"database", "damaged_copy", "sessions": [{"name",
 * "cells_lost", "messages_lost", "questions_lost", "data_lost"}], "rows",
 * "cut_tables", "cells_dropped"}. Refused while any of its sessions is in
 * use. */
rlm_status rlm_sessions_recover(const rlm_config *cfg, char **out);

/* ---- The run log --------------------------------------------------------------
 *
 * With the log option set, every rlm_ask is recorded when it ends in a SQLite
 * file (log_db; default $XDG_DATA_HOME/rlm/logs.db): the question, the
 * inputs' names and sizes, models, answer, status, how, turns, sub-calls,
 * tokens, cost, time, and the run's trace, compressed (zstd; older logs
 * kept them deflated, and those still read). The traces' total is
 * capped (log_max): past it the oldest traces are dropped, their rows kept.
 * The log never breaks a run: a file that cannot be written (damaged,
 * locked past 5 s) is one warning (rlm_warnings), and the run answers.
 * Each call below takes cfg's log_db (cfg may be NULL: the default file) and
 * sets *out, the caller's (rlm_string_free): JSON on RLM_OK, else the reason;
 * RLM_ERR_INPUT when the file cannot be read or the run does not exist,
 * RLM_ERR_USAGE for a bad argument. */

/* Runs, newest first: [{"id", "started" (Unix time), "command", "question",
 * "inputs" [{"name", "bytes"}], "model", "sub_model", "answer", "status",
 * "how", "error", "session", "turns", "sub_calls", "prompt_tokens",
 * "completion_tokens", "cost_usd", "elapsed", "trace_bytes" (0: no trace
 * kept), "trace_note", "cached_tokens", "cache_write_tokens",
 * "cost_no_cache_usd", "sub_calls_deduplicated" (null for runs logged
 * before rlm counted them)}]. filter (may be NULL) is a JSON object with any of
 * "text" (in the question or the answer, any case), "model", "status",
 * "since", "until" (Unix times) and "limit". */
rlm_status rlm_logs_list(const rlm_config *cfg, const char *filter, char **out);

/* One run, as a row of rlm_logs_list. */
rlm_status rlm_logs_show(const rlm_config *cfg, long long id, char **out);

/* One run's trace (docs/trace.md), *len bytes; on failure *trace is the
 * reason (no such run, its trace not kept). */
rlm_status rlm_logs_trace(const rlm_config *cfg, long long id, char **trace, size_t *len);

/* Removes runs: what is {"ids": [...]}, {"before": UNIX_TIME} or {"all":
 * true}; {"removed": n}. */
rlm_status rlm_logs_remove(const rlm_config *cfg, const char *what, char **out);

/* Records a request that was refused before any run started (a server's
 * 429, 400, 413, ...) in cfg's log, when cfg's log option is on (else does
 * nothing and returns RLM_OK): a row with status "refused", command
 * log_command, the model the request named and its question (either may be
 * NULL), error the reason, started now, and no trace. err (may be NULL)
 * gets the reason of a failure, the caller's (rlm_string_free); RLM_ERR_INPUT
 * when the log cannot be written. A server should record only requests
 * that passed its authentication: anyone could fill the disk otherwise. */
rlm_status rlm_logs_refused(const rlm_config *cfg, const char *model, const char *question,
                            const char *reason, char **err);

/* A JSON object describing the last rlm_ask: answer, how (how the answer
 * was given: "code", "final_literal", "FINAL in text", "FINAL_VAR in text",
 * "last_reply" or "direct", docs/trace.md; null without one), status, error,
 * iterations, blocks, sub_calls, sub_call_errors (failed sub-calls: the
 * model's code got an "Error: ..." string), sub_call_error (the first one's
 * message, or null), usage per model
 * ({"MODEL": {"calls", "cached_calls", "deduplicated", "errors", "prompt_tokens",
 * "cached_tokens", "cache_write_tokens", "completion_tokens", "cost_usd",
 * "cost_no_cache_usd"}}), cost_usd (the run's total in US
 * dollars; null when any call's price is unknown), cost_no_cache_usd (what
 * the same calls would have cost without the providers' prompt caches),
 * cached_tokens and cache_write_tokens (prompt tokens read from and written
 * to those caches, part of prompt_tokens), sub_calls_deduplicated (sub-calls
 * identical to an earlier one of the run or conversation, answered with its
 * reply and not sent), stopped_by (the budget that
 * ended the run: "max_cost", "max_tokens", "max_time", "max_subcalls", or
 * null), elapsed_seconds, sandbox_layers, model, sub_model, max_in_flight,
 * mode ("rlm" or "direct": how the question was answered), children (child
 * RLMs started, at every depth), sandboxes (sandboxes started, children's
 * included), depth_reached (the deepest level of RLM that ran; 1 = no
 * children), question (its number in a conversation, or null) and session
 * (the session's name, or null), trace_error (why the trace file could
 * not be written, or null) and log_id (the run's id in the run log, when
 * the log option recorded it).
 * Borrowed from r; NULL before the first rlm_ask. */
const char *rlm_report_json(rlm *r);

/* Why the trace file (the trace option) could not be written: a full disk,
 * a device that refuses writes. The run goes on (the trace then holds every
 * event up to the failure, as whole lines); this says so, naming the file,
 * and so do rlm_warnings and the report's trace_error. "" while every event
 * was written. Borrowed from r. */
const char *rlm_trace_error(const rlm *r);

/* Warnings since rlm_new, one per line (e.g. "response cache disabled: ...":
 * things that did not stop the run but that the user should know). Borrowed
 * from r; "" when there are none. */
const char *rlm_warnings(const rlm *r);

void rlm_string_free(char *s);

/* The system prompt a run with cfg (NULL: the defaults) would send the root
 * model: rlm's own, or the system_prompt option's, with {max_iterations} and
 * {allowed_modules} filled ({context_description} stays as written: the
 * input is not known here). With template non-zero, rlm's own with its
 * placeholders unfilled, to start a custom one from. *out is the caller's
 * (rlm_string_free). RLM_OK, or RLM_ERR_NOMEM. */
rlm_status rlm_system_prompt(const rlm_config *cfg, int template, char **out);

/* ---- Diagnostics --------------------------------------------------------- */

/* Probes what this machine allows the sandbox: starts a sandbox child with
 * cfg's settings (cfg may be NULL for the defaults) and reports every
 * confinement layer — active or not, and why not — as a JSON object:
 *   {"sandbox_exe": "...", "python": "3.11.2", "ready_seconds": 0.09,
 *    "layers": [{"name": "seccomp", "active": true, "detail": "..."}, ...],
 *    "ok": true, "not_covered": ["without landlock: ...", ...]}
 * "ok" is false when the floor (seccomp + rlimits) cannot be applied, in
 * which case rlm refuses to run model code without unsafe_no_sandbox;
 * "not_covered" says, for each layer that is off, what the floor does not
 * cover without it (empty when every layer is on). RLM_SANDBOX_FLOOR_ONLY=1
 * in the environment switches Landlock and namespaces off (docs/sandbox.md).
 * *report is the caller's (rlm_string_free). RLM_ERR_SANDBOX when no
 * sandbox child could be started at all (*report still explains). */
rlm_status rlm_doctor(const rlm_config *cfg, char **report);

/* Checks the rest of the setup cfg describes (NULL: the defaults):
 *   {"endpoint": {"base_url", "provider", "model", "hosted", "key": "set" |
 *    "none", "status" (HTTP, or null), "models" (how many it lists, or
 *    null), "model_listed" (true, false or null), "ok", "detail"},
 *    "sub_endpoint": the same for the sub-call endpoint, or null when it is
 *    the root's, "files": [{"name": "cache" | "sessions" | "prices", "path",
 *    "ok", "detail"}], "endpoints_ok", "files_ok"}
 * An endpoint is asked GET {base}/models with its key, unless offline (a
 * hosted API — api.openai.com, api.anthropic.com — with no key fails
 * either way); the cache directory must be writable or creatable, the
 * session file readable (a damaged one says how to recover it), the price
 * files valid. *report is the caller's (rlm_string_free). RLM_OK when all
 * is well; RLM_ERR_MODEL when an endpoint is not; else RLM_ERR_INPUT when
 * a file is not. */
rlm_status rlm_doctor_setup(const rlm_config *cfg, int offline, char **report);

#ifdef __cplusplus
}
#endif

#endif

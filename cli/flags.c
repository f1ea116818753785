/* flags — the flags `rlm ask` and `rlm chat` share: their help, the table of
 * long options and the config key each sets, the environment read after
 * them (a provider's key and base URL, RLM_MODEL), "did you mean" for a
 * misspelt flag, and the exit code of a status. The other commands parse
 * their own few flags. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "rlm.h"
#include "util.h"

/* Largest --system-prompt file: rlm's own is about 7 KB. */
#define MAX_SYSTEM_PROMPT_BYTES ((size_t)1 << 20)

/* Everything rlm ask and rlm chat take: the body of their --help. */
static const char options_text[] =
        "Answers QUESTION about a context of any size with a Recursive Language Model:\n"
        "the root model works on the context through a Python sandbox and sub-model calls.\n"
        "\n"
        "Model endpoint (any OpenAI-compatible server: OpenAI, vLLM, llama.cpp, Ollama, OpenRouter;\n"
        "or Anthropic's Messages API):\n"
        "  --base-url URL[,URL..]\n"
        "                         endpoint base, e.g. http://localhost:8080/v1; several: each\n"
        "                         request to the least busy live one, a dead one drained and\n"
        "                         probed until it answers (default: the provider's variable,\n"
        "                         $OPENAI_BASE_URL or $ANTHROPIC_BASE_URL, else its own API)\n"
        "  --provider NAME        openai or anthropic (default: api.anthropic.com as the host is\n"
        "                         anthropic, any other host openai; with no base URL, a claude-*\n"
        "                         model is anthropic's)\n"
        "  --api-key KEY          the key for the base URL (default: $OPENAI_API_KEY or\n"
        "                         $ANTHROPIC_API_KEY, sent only to its provider's API or to\n"
        "                         $OPENAI_BASE_URL / $ANTHROPIC_BASE_URL; no other host gets it)\n"
        "  --sub-base-url URL     send sub-calls to another endpoint (default: the root's)\n"
        "  --sub-api-key KEY      the key for --sub-base-url (the root's key goes there only when\n"
        "                         it is on the same host)\n"
        "  --sub-provider NAME    openai or anthropic for sub-calls (default: as --provider)\n"
        "  -m, --model NAME       root model (default $RLM_MODEL, else gpt-5-mini)\n"
        "  --sub-model NAME       model for llm_query sub-calls (default: --model)\n"
        "  --concurrency N        sub-calls in flight at once (default 64)\n"
        "  --request-timeout S    seconds per HTTP attempt (default 600)\n"
        "  --max-retries N        retries on 429, 5xx and network errors (default 3)\n"
        "  --rpm N, --tpm N       client-side requests / tokens per minute per endpoint (default none)\n"
        "  --max-output-tokens N  output token cap per request (default: the provider's)\n"
        "  --reasoning-effort E   low, medium or high, for reasoning models (default: not sent)\n"
        "  --temperature T        sampling temperature (default: not sent)\n"
        "  --stream, --no-stream  stream root replies (default: when the progress line is shown)\n"
        "  --stall-timeout S      abandon and retry a stream that sends no data for S seconds\n"
        "                         (keep-alive comments do not count; default 300)\n"
        "  --strict               any sub-call that still fails after its retries ends the run\n"
        "                         (exit 3); without it only errors no retry fixes do (a refused\n"
        "                         key, an unknown model, a batch of several prompts all refused),\n"
        "                         and other failures are counted and reported on stderr\n"
        "\n"
        "Budgets for the whole run, root turns and every sub-call (docs/budgets.md). When one\n"
        "runs out, no more calls are made and the root is asked once for its best answer:\n"
        "  --max-cost USD         dollars, from the price table (--prices FILE adds to it)\n"
        "  --max-tokens N         prompt + completion tokens\n"
        "  --max-time S           wall seconds\n"
        "  --max-subcalls N       sub-call prompts; a batch that does not fit is refused whole\n"
        "                         (default 10000; none: no limit)\n"
        "  --prices FILE          JSON prices: {\"MODEL\": {\"input\": 1.25, \"cached_input\": 0.125,\n"
        "                         \"cache_write\": 1.25, \"output\": 10}} in USD per million tokens\n"
        "                         (cached input: prompt tokens the provider's prompt cache served;\n"
        "                         cache_write: tokens written to it; `rlm cost` breaks a run down)\n"
        "\n"
        "Paying less (docs/costs.md):\n"
        "  --no-prompt-cache      send no cache_control breakpoints to Anthropic (default: the\n"
        "                         system prompt and the latest turns are marked for its prompt\n"
        "                         cache; OpenAI-compatible servers cache prefixes on their own)\n"
        "  --dedupe, --no-dedupe  send identical sub-calls of a run or conversation once and share\n"
        "                         the reply (default on, off with --temperature above 0 unless\n"
        "                         --dedupe)\n"
        "\n"
        "Cache and record/replay:\n"
        "  --cache, --no-cache    answer repeated requests from the response cache (default off)\n"
        "  --cache-dir DIR        its directory (default $XDG_CACHE_HOME/rlm, else ~/.cache/rlm)\n"
        "  --record FILE          write every model request and response to FILE (JSON lines)\n"
        "  --replay FILE          answer every request from a recorded FILE, with no network\n"
        "\n"
        "Input and run:\n"
        "  -c, --context ARG      the input, repeatable: a file (memory-mapped; any size), a\n"
        "                         directory (recursive; skips binary files, .git and what\n"
        "                         .gitignore files exclude), a glob, - for stdin, JSON (a .json\n"
        "                         file: the parsed value) or JSONL (a .jsonl file: a list of\n"
        "                         records). One file is a str in the sandbox, several a dict\n"
        "                         path -> str.\n"
        "                         Without --context, a piped stdin is the input (rlm ask)\n"
        "  --include GLOB         only files matching GLOB inside directories (repeatable)\n"
        "  --exclude GLOB         skip files matching GLOB, gitignore syntax (repeatable)\n"
        "  --json-input           parse every --context as JSON: context is the value (.json\n"
        "                         files are parsed anyway; .jsonl files are a list of records)\n"
        "  --jsonl-field NAME     read every --context as JSONL, NAME holding each record's text\n"
        "                         (without it a record is its whole JSON value)\n"
        "  --mode M               auto, rlm or direct (default auto); auto answers inputs under\n"
        "                         the direct threshold with one plain call, without a sandbox\n"
        "  --direct-threshold N   estimated tokens under which auto answers directly (default 32000)\n"
        "  --question-file FILE   read the question from FILE instead of the command line\n"
        "                         (- reads it from stdin)\n"
        "  --max-iterations N     root turns before a last request for the answer (default 30)\n"
        "  --system-prompt FILE   the root model's system prompt instead of rlm's (`rlm prompt\n"
        "                         --template` prints rlm's to start from); {max_iterations},\n"
        "                         {allowed_modules} and {context_description} are filled in\n"
        "  --cell-timeout S       wall seconds per code cell, sub-calls excluded (default 120)\n"
        "  --cell-wall S          wall seconds per code cell with its sub-calls and child RLMs:\n"
        "                         past it the sub-calls in flight end and the cell is\n"
        "                         interrupted (default 1800; none: no limit, for long sub-call\n"
        "                         phases)\n"
        "  --output-limit N       characters of each block's output shown to the model (default 20000)\n"
        "  --sandbox-memory SIZE  sandbox address-space limit, e.g. 8G (default 4G + 4x context)\n"
        "  --unsafe-no-sandbox    run model code without seccomp and rlimits (recorded in the trace)\n"
        "\n"
        "Recursion (rlm_query in model code starts a child RLM with its own sandbox):\n"
        "  --max-depth N          levels of RLMs, 1-16 (default 1: rlm_query is a plain sub-call;\n"
        "                         2: the root starts children; 3: children start their own)\n"
        "  --max-children N       children of one rlm_query_batched running at once (default 8)\n"
        "  --max-child-batch N    prompts one rlm_query_batched may start as child RLMs; a\n"
        "                         bigger batch is refused with an error (default 256)\n"
        "  --max-sandboxes N      sandboxes alive at once in the whole tree of RLMs; a child that\n"
        "                         cannot get one waits while some RLM can still finish, else it\n"
        "                         fails with an error (default 32)\n"
        "  --child-share F        share of the remaining budgets one child may spend, in (0, 1]\n"
        "                         (default 0.5); a child that spends it returns its best answer\n"
        "  --context-window N     tokens of the root model's window (default 128000)\n"
        "  --compact-at F         summarise older root turns into a note when the history reaches\n"
        "                         F x the window (default 0.85; 1 or more: never)\n"
        "\n"
        "Conversations (docs/sessions.md):\n"
        "  --session NAME         keep the conversation on disk under NAME: the next `rlm ask\n"
        "                         --session NAME` or `rlm chat --session NAME` continues it, with\n"
        "                         the same inputs, the data variables and answer_1, answer_2, ...;\n"
        "                         a new --context becomes context_1, context_2, ...\n"
        "  --session-db PATH      the sessions' SQLite file\n"
        "                         (default $XDG_DATA_HOME/rlm/sessions.db, ~/.local/share/rlm/...)\n"
        "  --snapshot-max SIZE    data one question leaves for the next: variables past it are\n"
        "                         not carried, and the model is told (default 256M)\n"
        "\n"
        "Output:\n"
        "  --trace FILE           write every event of the run to FILE as JSON lines\n"
        "  --no-log               do not record this run in the run log (also RLM_LOG=0); every\n"
        "                         question is recorded by default (rlm logs --help)\n"
        "  --log-db PATH          the run log (default $XDG_DATA_HOME/rlm/logs.db)\n"
        "  -j, --json             print one JSON object (answer, how, status, iterations, sub_calls,\n"
        "                         usage and cost_usd per model, cost_usd, stopped_by,\n"
        "                         elapsed_seconds) instead of the bare answer\n"
        "  -q, --quiet            no progress line and no summary line on stderr\n"
        "  -v, --verbose          show on stderr, as it happens, each root turn's text, its code\n"
        "                         (coloured on a terminal) and output (head and tail), each batch\n"
        "                         of sub-calls as one line, child RLMs indented by depth\n"
        "  --progress             the progress line and the summary line even when stderr is not\n"
        "                         a terminal (one line at a time, at most one a second)\n"
        "  -h, --help, --version\n"
        "The answer goes to a pipe or a file byte for byte (NUL bytes included); on a terminal\n"
        "its control characters and escape sequences, like those of warnings, errors and file\n"
        "names, are shown escaped (\\x1b, \\u202e). --json holds the exact text.\n"
        "\n"
        "Ctrl-C cancels the question (rlm chat goes back to its prompt); a second Ctrl-C quits.\n"
        "SIGTERM or SIGHUP cancel the question the same way (the sandbox stopped, the trace\n"
        "ended with run_end) and end rlm with exit 1; a second one quits at once.\n"
        "\n"
        "Exit codes (rlm chat: 0 when every question was answered, 1 when some were not):\n"
        "  0  answered (also when the reply to the last request after the turn limit or a budget\n"
        "     stop gave the answer, as FINAL or in plain words; --json says how and stopped_by)\n"
        "  1  no answer: the turn limit or a budget was reached and the last reply gave none, or\n"
        "     the question was cancelled\n"
        "  2  usage, input or output error (bad flag, missing or empty context, unreadable\n"
        "     question file, a --trace file or stdout that cannot be written)\n"
        "  3  model or API error (unreachable endpoint, HTTP error, unusable replies,\n"
        "     a request missing from the --replay file)\n"
        "  4  sandbox or internal error\n";

void cli_usage_options(FILE *out)
{
    fputs(options_text, out);
}

static void ask_usage(FILE *out)
{
    fputs("usage: rlm ask [options] QUESTION\n"
          "       rlm ask [options] --question-file FILE\n"
          "       COMMAND | rlm ask [options] QUESTION       (a piped stdin is the input)\n\n",
          out);
    fputs(options_text, out);
}

static void chat_usage(FILE *out)
{
    fputs("usage: rlm chat [options]\n"
          "\n"
          "A conversation with one RLM: question after question about the same inputs, the\n"
          "sandbox's variables and the earlier answers (answer_1, ...) kept; saved on disk with\n"
          "--session NAME. On a terminal: a prompt with line editing and history; Ctrl-C cancels\n"
          "the question running, Ctrl-D or /quit ends. From a pipe: one question per line, each\n"
          "answer printed followed by a blank line (--json: one report per line).\n"
          "\n"
          "Commands at the prompt:\n"
          "  /context ARG   add an input for the next question (as --context)\n"
          "  /report        the last question's report (JSON)\n"
          "  /help          the commands\n"
          "  /quit          end (also /exit, Ctrl-D)\n"
          "\n"
          "Exit: 0 when every question was answered, 1 when some were not, else the first\n"
          "error's code (2 usage or input, 3 model, 4 sandbox).\n"
          "\n"
          "Options: those of rlm ask (no question, no --question-file; --context - is refused,\n"
          "stdin holds the questions):\n\n",
          out);
    fputs(options_text, out);
}

int cli_exit_code(rlm_status st)
{
    switch (st) {
    case RLM_OK: return EXIT_ANSWERED;
    case RLM_NO_ANSWER: return EXIT_NO_ANSWER;
    case RLM_ERR_USAGE:
    case RLM_ERR_INPUT: return EXIT_USAGE;
    case RLM_ERR_MODEL: return EXIT_MODEL;
    default: return EXIT_INTERNAL;
    }
}

char *cli_read_text_file(const char *path, const char *what, size_t max, char *err,
                         size_t errlen)
{
    int from_stdin = strcmp(path, "-") == 0;
    FILE *f = from_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s '%s': %s", what, path, strerror(errno));
        return NULL;
    }
    char *text = malloc(max + 1);
    size_t n = text ? fread(text, 1, max + 1, f) : 0;
    int failed = !text || ferror(f);
    if (!from_stdin)
        fclose(f);
    if (failed) {
        snprintf(err, errlen, "cannot read %s '%s'", what, path);
        free(text);
        return NULL;
    }
    if (n > max) {
        snprintf(err, errlen, "%s '%s' is larger than %zu MiB", what, path, max >> 20);
        free(text);
        return NULL;
    }
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        n--;
    text[n] = '\0';
    if (strspn(text, " \t\r\n") == n) {
        snprintf(err, errlen, "%s '%s' is empty", what, path);
        free(text);
        return NULL;
    }
    return text;
}

/* What a flag does (the `val` of its row below). Most flags set the option of
 * their name (--max-cost sets max_cost: rlm_config's table in src/config.c
 * checks the value), so adding one is a row here, its line in the help
 * above and its option in config.c. The rest are the command's own. */
enum {
    OPT_SET = 256,     /* sets the option of its name to the flag's value */
    OPT_SET_ON,        /* a switch: sets the option of its name to 1 (--strict) */
    OPT_SET_OFF,       /* --no-NAME: sets the option NAME to 0 (--no-cache) */
    OPT_CONTEXT, OPT_QUESTION_FILE, OPT_INCLUDE, OPT_EXCLUDE, OPT_SYSTEM_PROMPT,
    OPT_JSON, OPT_QUIET, OPT_VERBOSE, OPT_PROGRESS, OPT_NO_LOG, OPT_HELP, OPT_VERSION,
};

static const struct option long_options[] = {
    {"base-url", required_argument, NULL, OPT_SET},
    {"api-key", required_argument, NULL, OPT_SET},
    {"model", required_argument, NULL, OPT_SET},
    {"sub-model", required_argument, NULL, OPT_SET},
    {"concurrency", required_argument, NULL, OPT_SET},
    {"request-timeout", required_argument, NULL, OPT_SET},
    {"max-retries", required_argument, NULL, OPT_SET},
    {"context", required_argument, NULL, OPT_CONTEXT},
    {"question-file", required_argument, NULL, OPT_QUESTION_FILE},
    {"max-iterations", required_argument, NULL, OPT_SET},
    {"cell-timeout", required_argument, NULL, OPT_SET},
    {"output-limit", required_argument, NULL, OPT_SET},
    {"sandbox-memory", required_argument, NULL, OPT_SET},
    {"unsafe-no-sandbox", no_argument, NULL, OPT_SET_ON},
    {"trace", required_argument, NULL, OPT_SET},
    {"json", no_argument, NULL, OPT_JSON},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {"max-cost", required_argument, NULL, OPT_SET},
    {"max-tokens", required_argument, NULL, OPT_SET},
    {"max-time", required_argument, NULL, OPT_SET},
    {"max-subcalls", required_argument, NULL, OPT_SET},
    {"cache", no_argument, NULL, OPT_SET_ON},
    {"no-cache", no_argument, NULL, OPT_SET_OFF},
    {"cache-dir", required_argument, NULL, OPT_SET},
    {"prices", required_argument, NULL, OPT_SET},
    {"record", required_argument, NULL, OPT_SET},
    {"replay", required_argument, NULL, OPT_SET},
    {"sub-base-url", required_argument, NULL, OPT_SET},
    {"provider", required_argument, NULL, OPT_SET},
    {"rpm", required_argument, NULL, OPT_SET},
    {"tpm", required_argument, NULL, OPT_SET},
    {"max-output-tokens", required_argument, NULL, OPT_SET},
    {"reasoning-effort", required_argument, NULL, OPT_SET},
    {"temperature", required_argument, NULL, OPT_SET},
    {"stream", no_argument, NULL, OPT_SET_ON},
    {"no-stream", no_argument, NULL, OPT_SET_OFF},
    {"stall-timeout", required_argument, NULL, OPT_SET},
    {"include", required_argument, NULL, OPT_INCLUDE},
    {"exclude", required_argument, NULL, OPT_EXCLUDE},
    {"jsonl-field", required_argument, NULL, OPT_SET},
    {"mode", required_argument, NULL, OPT_SET},
    {"direct-threshold", required_argument, NULL, OPT_SET},
    {"max-depth", required_argument, NULL, OPT_SET},
    {"max-children", required_argument, NULL, OPT_SET},
    {"child-share", required_argument, NULL, OPT_SET},
    {"context-window", required_argument, NULL, OPT_SET},
    {"compact-at", required_argument, NULL, OPT_SET},
    {"session", required_argument, NULL, OPT_SET},
    {"session-db", required_argument, NULL, OPT_SET},
    {"snapshot-max", required_argument, NULL, OPT_SET},
    {"sub-api-key", required_argument, NULL, OPT_SET},
    {"sub-provider", required_argument, NULL, OPT_SET},
    {"strict", no_argument, NULL, OPT_SET_ON},
    {"json-input", no_argument, NULL, OPT_SET_ON},
    {"system-prompt", required_argument, NULL, OPT_SYSTEM_PROMPT},
    {"cell-wall", required_argument, NULL, OPT_SET},
    {"max-sandboxes", required_argument, NULL, OPT_SET},
    {"max-child-batch", required_argument, NULL, OPT_SET},
    {"verbose", no_argument, NULL, OPT_VERBOSE},
    {"progress", no_argument, NULL, OPT_PROGRESS},
    {"no-log", no_argument, NULL, OPT_NO_LOG},
    {"log-db", required_argument, NULL, OPT_SET},
    {"prompt-cache", no_argument, NULL, OPT_SET_ON},
    {"no-prompt-cache", no_argument, NULL, OPT_SET_OFF},
    {"dedupe", no_argument, NULL, OPT_SET_ON},
    {"no-dedupe", no_argument, NULL, OPT_SET_OFF},
    {NULL, 0, NULL, 0},
};

/* The option a flag of the table sets: its name with '_' for '-', without
 * "no-" for an OPT_SET_OFF switch. */
static void flag_key(const struct option *o, char *key, size_t keylen)
{
    const char *name = o->val == OPT_SET_OFF && strncmp(o->name, "no-", 3) == 0 ? o->name + 3 : o->name;
    size_t n = 0;
    for (; name[n] && n + 1 < keylen; n++)
        key[n] = name[n] == '-' ? '_' : name[n];
    key[n] = '\0';
}

/* The flag that sets a config key ("--base-url" for base_url), or NULL. */
static const char *flag_of_key(const char *key, size_t len)
{
    char k[64];
    for (const struct option *o = long_options; o->name; o++) {
        if (o->val != OPT_SET)
            continue;
        flag_key(o, k, sizeof k);
        if (strlen(k) == len && strncmp(k, key, len) == 0)
            return o->name;
    }
    return NULL;
}

void cli_error(const char *message)
{
    /* The library names its options (max_cost, session_db); the user typed
     * flags. Keys with an underscore are never English words, so each
     * whole-word one is said as its flag. */
    buf b;
    buf_init(&b, strlen(message) * 2 + 64);
    for (const char *p = message; *p;) {
        size_t word = strspn(p, "abcdefghijklmnopqrstuvwxyz_");
        const char *flag = word && memchr(p, '_', word) && (p == message || !isalnum((unsigned char)p[-1]))
                               ? flag_of_key(p, word) : NULL;
        if (flag && !isalnum((unsigned char)p[word])) {
            buf_printf(&b, "--%s", flag);
            p += word;
        } else {
            size_t n = word ? word : 1;
            buf_append(&b, p, n);
            p += n;
        }
    }
    cli_say("rlm: ", b.data ? b.data : message);
    buf_free(&b);
}

/* Sets key from the value of `source` (a flag or an environment variable,
 * as the user wrote it); a bad value is explained naming the source. */
static int set_or_complain(rlm_config *cfg, const char *key, const char *value, const char *source)
{
    if (rlm_config_set(cfg, key, value) == RLM_OK)
        return 0;
    const char *msg = rlm_config_errmsg(cfg);
    size_t n = strlen(key);
    if (strncmp(msg, key, n) == 0)
        fprintf(stderr, "rlm: %s%s\n", source, msg + n);
    else
        fprintf(stderr, "rlm: %s: %s\n", source, msg);
    return -1;
}

/* The variables of a provider, named after it so that a new provider needs
 * no code here: $NAME_API_KEY, its key, and $NAME_BASE_URL, the base URL
 * that key is for (OPENAI_API_KEY, ANTHROPIC_BASE_URL, ...). */
typedef struct provider_vars {
    char key[64];
    char url[64];
} provider_vars;

static void provider_variables(const char *provider, provider_vars *v)
{
    char upper[32];
    size_t n = 0;
    for (; provider[n] && n < sizeof upper - 1; n++)
        upper[n] = (char)toupper((unsigned char)provider[n]);
    upper[n] = '\0';
    snprintf(v->key, sizeof v->key, "%s_API_KEY", upper);
    snprintf(v->url, sizeof v->url, "%s_BASE_URL", upper);
}

void cli_provider_key_variable(const char *provider, char *out, size_t outlen)
{
    provider_vars vars;
    provider_variables(provider ? provider : "", &vars);
    snprintf(out, outlen, "%s", vars.key);
}

/* Where the key in the provider's variable may go: its base URL variable,
 * else the provider's own API. */
static void key_home(const char *provider, const char *url_var, char *out, size_t outlen)
{
    const char *env = getenv(url_var);
    if (env && env[0]) {
        snprintf(out, outlen, "%s", env);
        return;
    }
    rlm_config *c = rlm_config_new();
    snprintf(out, outlen, "%s", c && rlm_config_set(c, "provider", provider) == RLM_OK
                                    ? rlm_config_get(c, "base_url") : "");
    rlm_config_free(c);
}

int cli_apply_environment(rlm_config *cfg, unsigned given, char *note, size_t notelen)
{
    const char *env;
    provider_vars vars;
    const char *key_var = vars.key, *url_var = vars.url;
    char source[80], home[4096];
    note[0] = '\0';
    if (!(given & CLI_GIVEN_MODEL) && (env = getenv("RLM_MODEL")) && env[0] &&
        set_or_complain(cfg, "model", env, "$RLM_MODEL") != 0)
        return EXIT_USAGE;

    /* The root endpoint: the flags', else the provider's variables. */
    provider_variables(rlm_config_get(cfg, "provider"), &vars);
    if (!(given & CLI_GIVEN_BASE_URL) && (env = getenv(url_var)) && env[0]) {
        snprintf(source, sizeof source, "$%s", url_var);
        if (set_or_complain(cfg, "base_url", env, source) != 0)
            return EXIT_USAGE;
    }
    const char *provider = rlm_config_get(cfg, "provider");
    provider_variables(provider, &vars);
    if (!(given & CLI_GIVEN_API_KEY) && (env = getenv(key_var)) && env[0]) {
        key_home(provider, url_var, home, sizeof home);
        if (rlm_config_url_within(cfg, "base_url", home))
            rlm_config_set(cfg, "api_key", env);
        else
            snprintf(note, notelen, "$%s was not sent to %s: it is the key for %s; give --api-key "
                     "for this endpoint", key_var, rlm_config_get(cfg, "base_url"), home);
    }

    /* Sub-calls on other hosts: their own provider's variables. */
    if (rlm_config_url_within(cfg, "sub_base_url", rlm_config_get(cfg, "base_url")))
        return 0;
    const char *sub_provider = rlm_config_get(cfg, "sub_provider");
    provider_variables(sub_provider, &vars);
    if (!(given & CLI_GIVEN_SUB_BASE_URL) && strcmp(sub_provider, provider) != 0 &&
        (env = getenv(url_var)) && env[0]) {
        snprintf(source, sizeof source, "$%s", url_var);
        if (set_or_complain(cfg, "sub_base_url", env, source) != 0)
            return EXIT_USAGE;
    }
    if (given & CLI_GIVEN_SUB_API_KEY)
        return 0;
    key_home(sub_provider, url_var, home, sizeof home);
    if ((env = getenv(key_var)) && env[0] && rlm_config_url_within(cfg, "sub_base_url", home)) {
        rlm_config_set(cfg, "sub_api_key", env);
    } else if (!note[0]) {
        snprintf(note, notelen, "no key was sent to the sub-call endpoint %s: the key given is for "
                 "%s; give --sub-api-key for it", rlm_config_get(cfg, "sub_base_url"),
                 rlm_config_get(cfg, "base_url"));
    }
    return 0;
}

/* Appends one glob to a newline-separated list option (include, exclude). */
static int add_glob(rlm_config *cfg, const char *key, const char *glob)
{
    if (strchr(glob, '\n')) {
        fprintf(stderr, "rlm: --%s: a glob cannot hold a newline\n", key);
        return -1;
    }
    const char *old = rlm_config_get(cfg, key);
    size_t len = strlen(old) + strlen(glob) + 2;
    char *joined = malloc(len);
    if (!joined) {
        fputs("rlm: out of memory\n", stderr);
        return -1;
    }
    snprintf(joined, len, "%s%s%s", old, old[0] ? "\n" : "", glob);
    int rc = set_or_complain(cfg, key, joined, strcmp(key, "include") == 0 ? "--include" : "--exclude");
    free(joined);
    return rc;
}

size_t cli_edit_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    n = n < 63 ? n : 63;
    m = m < 63 ? m : 63;
    size_t row[64];
    for (size_t j = 0; j <= m; j++)
        row[j] = j;
    for (size_t i = 1; i <= n; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= m; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            best = up + 1 < best ? up + 1 : best;
            best = row[j - 1] + 1 < best ? row[j - 1] + 1 : best;
            row[j] = best;
            diag = up;
        }
    }
    return row[m];
}

/* The flag a misspelt one most likely meant ("contxt" -> "context"), or NULL. */
static const char *closest_flag(const char *given)
{
    char name[64];
    snprintf(name, sizeof name, "%s", given + strspn(given, "-"));
    name[strcspn(name, "=")] = '\0';
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    for (const struct option *o = long_options; o->name; o++) {
        size_t d = cli_edit_distance(name, o->name);
        if (d < best_d) {
            best_d = d;
            best = o->name;
        }
    }
    size_t len = strlen(name);
    return best && best_d <= (len > 8 ? 3 : 2) ? best : NULL;
}

/* A bad option, said with the way to the command's help. */
static int bad_option(const char *command, int opt, const char *arg)
{
    if (opt == ':') {
        char shown[64];
        snprintf(shown, sizeof shown, "%s", arg);
        shown[strcspn(shown, "=")] = '\0';
        fprintf(stderr, "rlm: %s needs a value (rlm %s --help)\n", shown, command);
        return EXIT_USAGE;
    }
    const char *guess = arg[0] == '-' && arg[1] == '-' ? closest_flag(arg) : NULL;
    if (guess)
        fprintf(stderr, "rlm: unknown option '%s': did you mean --%s? (rlm %s --help)\n", arg, guess,
                command);
    else
        fprintf(stderr, "rlm: unknown option '%s' (rlm %s --help)\n", arg, command);
    return EXIT_USAGE;
}

int cli_flags_parse(int argc, char **argv, cli_flags *f)
{
    memset(f, 0, sizeof *f);
    unsigned given = 0;
    f->cfg = rlm_config_new();
    if (!f->cfg) {
        fputs("rlm: out of memory\n", stderr);
        return EXIT_INTERNAL;
    }
    rlm_config *cfg = f->cfg;

    int opt;
    optind = 1;
    opterr = 0;   /* we say it ourselves, naming rlm rather than argv[0] */
    int index = -1;
    const char *command = argv[0];
    /* The usual short flags: -h, -m MODEL, -q, -j, -c ARG. A leading ':'
     * makes a missing value ':' rather than '?'. */
    while ((opt = getopt_long(argc, argv, ":hm:qjvc:", long_options, &index)) != -1) {
        int short_flag = opt == 'h' || opt == 'm' || opt == 'q' || opt == 'j' || opt == 'c' || opt == 'v';
        char source[64];
        if (short_flag)
            snprintf(source, sizeof source, "-%c", opt);
        char key[64];
        if (opt == 'm') {
            snprintf(key, sizeof key, "model");
            opt = OPT_SET;
        } else if (opt == OPT_SET || opt == OPT_SET_ON || opt == OPT_SET_OFF) {
            flag_key(&long_options[index], key, sizeof key);
            snprintf(source, sizeof source, "--%s", long_options[index].name);
        }
        opt = opt == 'h' ? OPT_HELP : opt == 'q' ? OPT_QUIET : opt == 'j' ? OPT_JSON
            : opt == 'c' ? OPT_CONTEXT : opt == 'v' ? OPT_VERBOSE : opt;
        if (opt == OPT_SET) {
            if (set_or_complain(cfg, key, optarg, source) != 0)
                return EXIT_USAGE;
            given |= strcmp(key, "api_key") == 0 ? CLI_GIVEN_API_KEY
                   : strcmp(key, "base_url") == 0 ? CLI_GIVEN_BASE_URL
                   : strcmp(key, "sub_base_url") == 0 ? CLI_GIVEN_SUB_BASE_URL
                   : strcmp(key, "sub_api_key") == 0 ? CLI_GIVEN_SUB_API_KEY
                   : strcmp(key, "model") == 0 ? CLI_GIVEN_MODEL : 0;
            continue;
        }
        if (opt == OPT_SET_ON || opt == OPT_SET_OFF) {
            rlm_config_set(cfg, key, opt == OPT_SET_ON ? "1" : "0");
            continue;
        }
        switch (opt) {
        case OPT_CONTEXT:
            if (f->n_contexts == CLI_MAX_CONTEXTS) {
                fprintf(stderr, "rlm: at most %d --context arguments (use a directory or a glob)\n",
                        CLI_MAX_CONTEXTS);
                return EXIT_USAGE;
            }
            f->contexts[f->n_contexts++] = optarg;
            break;
        case OPT_INCLUDE:
        case OPT_EXCLUDE:
            if (add_glob(cfg, opt == OPT_INCLUDE ? "include" : "exclude", optarg) != 0)
                return EXIT_USAGE;
            break;
        case OPT_QUESTION_FILE: f->question_file = optarg; break;
        case OPT_SYSTEM_PROMPT: {
            char err[1200];
            char *text = cli_read_text_file(optarg, "--system-prompt file", MAX_SYSTEM_PROMPT_BYTES,
                                        err, sizeof err);
            int rc = text ? set_or_complain(cfg, "system_prompt", text, "--system-prompt") : -1;
            if (!text)
                fprintf(stderr, "rlm: %s\n", err);
            free(text);
            if (rc != 0)
                return EXIT_USAGE;
            break;
        }
        case OPT_JSON: f->json = 1; break;
        case OPT_QUIET: f->quiet = 1; break;
        case OPT_VERBOSE: f->verbose = 1; break;
        case OPT_PROGRESS: f->progress = 1; break;
        case OPT_NO_LOG: f->no_log = 1; break;
        case OPT_HELP:
            if (strcmp(command, "chat") == 0)
                chat_usage(stdout);
            else
                ask_usage(stdout);
            return EXIT_ANSWERED;
        case OPT_VERSION: printf("rlm %s\n", rlm_version()); return EXIT_ANSWERED;
        default:
            return bad_option(command, opt, opt == '?' && optopt && optopt != '?'
                                                ? (snprintf(source, sizeof source, "-%c", optopt), source)
                                                : argv[optind - 1]);
        }
    }

    /* The environment after the flags: a flag always wins, and a bad
     * variable the flags make irrelevant is never read. */
    int rc = cli_apply_environment(cfg, given, f->key_note, sizeof f->key_note);
    if (rc != 0)
        return rc;
    cli_log_setup(cfg, command, f->no_log);
    f->first_operand = optind;
    return -1;
}

void cli_flags_free(cli_flags *f)
{
    rlm_config_free(f->cfg);
    f->cfg = NULL;
}

int cli_add_contexts(rlm *r, const cli_flags *f)
{
    for (size_t i = 0; i < f->n_contexts; i++) {
        rlm_status st = rlm_add_context(r, f->contexts[i]);
        if (st != RLM_OK) {
            cli_error(rlm_errmsg(r));
            return cli_exit_code(st);
        }
    }
    return 0;
}

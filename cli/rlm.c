/* rlm — the command-line tool: a thin client of include/rlm.h.
 * `rlm ask` answers a question about a context through a Recursive Language
 * Model. Flags, environment and exit codes are documented in usage(). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "rlm.h"

enum {
    EXIT_ANSWERED = 0,
    EXIT_NO_ANSWER = 1,
    EXIT_USAGE = 2,
    EXIT_MODEL = 3,
    EXIT_INTERNAL = 4,
};

/* Largest question file we read: questions are short, this is a guard. */
#define MAX_QUESTION_BYTES (16u << 20)

static void usage(FILE *out)
{
    fputs(
        "usage: rlm ask [options] QUESTION\n"
        "       rlm ask [options] --question-file FILE\n"
        "       rlm doctor [--json] [--sandbox-exe PATH]   which sandbox layers this machine allows\n"
        "       rlm demo                 a simulated 10M-token run, offline, no key needed\n"
        "       rlm bench run|report ... the benchmark suites (rlm bench --help)\n"
        "       rlm --version | --help\n"
        "\n"
        "Answers QUESTION about a context of any size with a Recursive Language Model:\n"
        "the root model works on the context through a Python sandbox and sub-model calls.\n"
        "\n"
        "Model endpoint (any OpenAI-compatible server: OpenAI, vLLM, llama.cpp, Ollama, OpenRouter;\n"
        "or Anthropic's Messages API):\n"
        "  --base-url URL[,URL..] endpoint base, e.g. http://localhost:8080/v1; several are used\n"
        "                         round-robin with failover\n"
        "                         (default $OPENAI_BASE_URL, else https://api.openai.com/v1)\n"
        "  --provider NAME        openai or anthropic (default: inferred from the base URL)\n"
        "  --api-key KEY          API key (default $OPENAI_API_KEY, or $ANTHROPIC_API_KEY for\n"
        "                         anthropic; none for a local server)\n"
        "  --sub-base-url URL     send sub-calls to another endpoint (same key and provider)\n"
        "  --model NAME           root model (default $RLM_MODEL, else gpt-5-mini)\n"
        "  --sub-model NAME       model for llm_query sub-calls (default: --model)\n"
        "  --concurrency N        sub-calls in flight at once (default 64)\n"
        "  --request-timeout S    seconds per HTTP attempt (default 600)\n"
        "  --max-retries N        retries on 429, 5xx and network errors (default 3)\n"
        "  --rpm N, --tpm N       client-side requests / tokens per minute per endpoint (default none)\n"
        "  --max-output-tokens N  output token cap per request (default: the provider's)\n"
        "  --reasoning-effort E   low, medium or high, for reasoning models (default: not sent)\n"
        "  --temperature T        sampling temperature (default: not sent)\n"
        "  --stream, --no-stream  stream root replies (default: when the progress line is shown)\n"
        "  --stall-timeout S      abandon and retry a stream silent for S seconds (default 300)\n"
        "\n"
        "Budgets for the whole run, root turns and every sub-call (docs/budgets.md). When one\n"
        "runs out, no more calls are made and the root is asked once for its best answer:\n"
        "  --max-cost USD         dollars, from the price table (--prices FILE adds to it)\n"
        "  --max-tokens N         prompt + completion tokens\n"
        "  --max-time S           wall seconds\n"
        "  --max-subcalls N       sub-call prompts; a batch that does not fit is refused whole\n"
        "  --prices FILE          JSON prices: {\"MODEL\": {\"input\": 1.25, \"cached_input\": 0.125,\n"
        "                         \"output\": 10}} in USD per million tokens\n"
        "\n"
        "Cache and record/replay:\n"
        "  --cache, --no-cache    answer repeated requests from the response cache (default off)\n"
        "  --cache-dir DIR        its directory (default $XDG_CACHE_HOME/rlm, else ~/.cache/rlm)\n"
        "  --record FILE          write every model request and response to FILE (JSON lines)\n"
        "  --replay FILE          answer every request from a recorded FILE, with no network\n"
        "\n"
        "Input and run:\n"
        "  --context ARG          the input, repeatable: a file (memory-mapped; any size), a\n"
        "                         directory (recursive; skips binary files, .git and what\n"
        "                         .gitignore files exclude), a glob, - for stdin, or JSONL\n"
        "                         (a .jsonl file; each record is a document). One file is a\n"
        "                         str in the sandbox, several a dict path -> str, JSONL a list\n"
        "  --include GLOB         only files matching GLOB inside directories (repeatable)\n"
        "  --exclude GLOB         skip files matching GLOB, gitignore syntax (repeatable)\n"
        "  --jsonl-field NAME     read every --context as JSONL, NAME holding each record's text\n"
        "  --mode M               auto, rlm or direct (default auto); auto answers inputs under\n"
        "                         the direct threshold with one plain call, without a sandbox\n"
        "  --direct-threshold N   estimated tokens under which auto answers directly (default 32000)\n"
        "  --question-file FILE   read the question from FILE instead of the command line\n"
        "  --max-iterations N     root turns before a last request for the answer (default 30)\n"
        "  --cell-timeout S       wall seconds per code cell, sub-calls excluded (default 120)\n"
        "  --output-limit N       characters of each block's output shown to the model (default 20000)\n"
        "  --sandbox-memory SIZE  sandbox address-space limit, e.g. 8G (default 4G + 4x context)\n"
        "  --unsafe-no-sandbox    run model code without seccomp and rlimits (recorded in the trace)\n"
        "\n"
        "Output:\n"
        "  --trace FILE           write every event of the run to FILE as JSON lines\n"
        "  --json                 print one JSON object (answer, status, iterations, sub_calls,\n"
        "                         usage and cost_usd per model, cost_usd, stopped_by,\n"
        "                         elapsed_seconds) instead of the bare answer\n"
        "  --quiet                no progress line on stderr\n"
        "  --help, --version\n"
        "\n"
        "Exit codes:\n"
        "  0  answered\n"
        "  1  no answer: the turn limit or a budget was reached without a final answer\n"
        "     (a budget stop with an answer exits 0; --json says stopped_by)\n"
        "  2  usage or input error (bad flag, missing or empty context, unreadable question file)\n"
        "  3  model or API error (unreachable endpoint, HTTP error, unusable replies,\n"
        "     a request missing from the --replay file)\n"
        "  4  sandbox or internal error\n",
        out);
}

static int exit_code(rlm_status st)
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

typedef struct progress_state {
    int active;
} progress_state;

static void progress_line(void *userdata, const char *line)
{
    progress_state *ps = userdata;
    /* \r and "erase to end of line": one live line that rewrites itself. */
    fprintf(stderr, "\r\033[Krlm: %.*s", 200, line);
    fflush(stderr);
    ps->active = 1;
}

static void progress_clear(progress_state *ps)
{
    if (ps->active) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        ps->active = 0;
    }
}

static char *read_question_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open question file '%s': %s", path, strerror(errno));
        return NULL;
    }
    char *text = malloc(MAX_QUESTION_BYTES + 1);
    size_t n = text ? fread(text, 1, MAX_QUESTION_BYTES + 1, f) : 0;
    int failed = !text || ferror(f);
    fclose(f);
    if (failed) {
        snprintf(err, errlen, "cannot read question file '%s'", path);
        free(text);
        return NULL;
    }
    if (n > MAX_QUESTION_BYTES) {
        snprintf(err, errlen, "question file '%s' is larger than %u MiB", path, MAX_QUESTION_BYTES >> 20);
        free(text);
        return NULL;
    }
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        n--;
    text[n] = '\0';
    if (n == 0) {
        snprintf(err, errlen, "question file '%s' is empty", path);
        free(text);
        return NULL;
    }
    return text;
}

enum {
    OPT_BASE_URL = 256, OPT_API_KEY, OPT_MODEL, OPT_SUB_MODEL, OPT_CONCURRENCY, OPT_REQUEST_TIMEOUT,
    OPT_MAX_RETRIES, OPT_CONTEXT, OPT_QUESTION_FILE, OPT_MAX_ITERATIONS, OPT_CELL_TIMEOUT,
    OPT_OUTPUT_LIMIT, OPT_SANDBOX_MEMORY, OPT_UNSAFE, OPT_TRACE, OPT_JSON, OPT_QUIET, OPT_HELP,
    OPT_VERSION, OPT_MAX_COST, OPT_MAX_TOKENS, OPT_MAX_TIME, OPT_MAX_SUBCALLS, OPT_CACHE, OPT_NO_CACHE,
    OPT_CACHE_DIR, OPT_PRICES, OPT_RECORD, OPT_REPLAY, OPT_SUB_BASE_URL, OPT_PROVIDER, OPT_RPM, OPT_TPM,
    OPT_MAX_OUTPUT_TOKENS, OPT_REASONING_EFFORT, OPT_TEMPERATURE, OPT_STREAM, OPT_NO_STREAM,
    OPT_STALL_TIMEOUT, OPT_INCLUDE, OPT_EXCLUDE, OPT_JSONL_FIELD, OPT_MODE, OPT_DIRECT_THRESHOLD,
};

static const struct option long_options[] = {
    {"base-url", required_argument, NULL, OPT_BASE_URL},
    {"api-key", required_argument, NULL, OPT_API_KEY},
    {"model", required_argument, NULL, OPT_MODEL},
    {"sub-model", required_argument, NULL, OPT_SUB_MODEL},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"request-timeout", required_argument, NULL, OPT_REQUEST_TIMEOUT},
    {"max-retries", required_argument, NULL, OPT_MAX_RETRIES},
    {"context", required_argument, NULL, OPT_CONTEXT},
    {"question-file", required_argument, NULL, OPT_QUESTION_FILE},
    {"max-iterations", required_argument, NULL, OPT_MAX_ITERATIONS},
    {"cell-timeout", required_argument, NULL, OPT_CELL_TIMEOUT},
    {"output-limit", required_argument, NULL, OPT_OUTPUT_LIMIT},
    {"sandbox-memory", required_argument, NULL, OPT_SANDBOX_MEMORY},
    {"unsafe-no-sandbox", no_argument, NULL, OPT_UNSAFE},
    {"trace", required_argument, NULL, OPT_TRACE},
    {"json", no_argument, NULL, OPT_JSON},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {"max-cost", required_argument, NULL, OPT_MAX_COST},
    {"max-tokens", required_argument, NULL, OPT_MAX_TOKENS},
    {"max-time", required_argument, NULL, OPT_MAX_TIME},
    {"max-subcalls", required_argument, NULL, OPT_MAX_SUBCALLS},
    {"cache", no_argument, NULL, OPT_CACHE},
    {"no-cache", no_argument, NULL, OPT_NO_CACHE},
    {"cache-dir", required_argument, NULL, OPT_CACHE_DIR},
    {"prices", required_argument, NULL, OPT_PRICES},
    {"record", required_argument, NULL, OPT_RECORD},
    {"replay", required_argument, NULL, OPT_REPLAY},
    {"sub-base-url", required_argument, NULL, OPT_SUB_BASE_URL},
    {"provider", required_argument, NULL, OPT_PROVIDER},
    {"rpm", required_argument, NULL, OPT_RPM},
    {"tpm", required_argument, NULL, OPT_TPM},
    {"max-output-tokens", required_argument, NULL, OPT_MAX_OUTPUT_TOKENS},
    {"reasoning-effort", required_argument, NULL, OPT_REASONING_EFFORT},
    {"temperature", required_argument, NULL, OPT_TEMPERATURE},
    {"stream", no_argument, NULL, OPT_STREAM},
    {"no-stream", no_argument, NULL, OPT_NO_STREAM},
    {"stall-timeout", required_argument, NULL, OPT_STALL_TIMEOUT},
    {"include", required_argument, NULL, OPT_INCLUDE},
    {"exclude", required_argument, NULL, OPT_EXCLUDE},
    {"jsonl-field", required_argument, NULL, OPT_JSONL_FIELD},
    {"mode", required_argument, NULL, OPT_MODE},
    {"direct-threshold", required_argument, NULL, OPT_DIRECT_THRESHOLD},
    {NULL, 0, NULL, 0},
};

/* The config key each value flag sets. */
static const char *option_key(int opt)
{
    switch (opt) {
    case OPT_BASE_URL: return "base_url";
    case OPT_API_KEY: return "api_key";
    case OPT_MODEL: return "model";
    case OPT_SUB_MODEL: return "sub_model";
    case OPT_CONCURRENCY: return "concurrency";
    case OPT_REQUEST_TIMEOUT: return "request_timeout";
    case OPT_MAX_RETRIES: return "max_retries";
    case OPT_MAX_ITERATIONS: return "max_iterations";
    case OPT_CELL_TIMEOUT: return "cell_timeout";
    case OPT_OUTPUT_LIMIT: return "output_limit";
    case OPT_SANDBOX_MEMORY: return "sandbox_memory";
    case OPT_TRACE: return "trace";
    case OPT_MAX_COST: return "max_cost";
    case OPT_MAX_TOKENS: return "max_tokens";
    case OPT_MAX_TIME: return "max_time";
    case OPT_MAX_SUBCALLS: return "max_subcalls";
    case OPT_CACHE_DIR: return "cache_dir";
    case OPT_PRICES: return "prices";
    case OPT_RECORD: return "record";
    case OPT_REPLAY: return "replay";
    case OPT_SUB_BASE_URL: return "sub_base_url";
    case OPT_PROVIDER: return "provider";
    case OPT_RPM: return "rpm";
    case OPT_TPM: return "tpm";
    case OPT_MAX_OUTPUT_TOKENS: return "max_output_tokens";
    case OPT_REASONING_EFFORT: return "reasoning_effort";
    case OPT_TEMPERATURE: return "temperature";
    case OPT_STALL_TIMEOUT: return "stall_timeout";
    case OPT_JSONL_FIELD: return "jsonl_field";
    case OPT_MODE: return "mode";
    case OPT_DIRECT_THRESHOLD: return "direct_threshold";
    default: return NULL;
    }
}

/* 1 when the run will talk to Anthropic: said so, or its API's host. */
static int is_anthropic(const rlm_config *cfg)
{
    const char *provider = rlm_config_get(cfg, "provider");
    if (provider && provider[0])
        return strcmp(provider, "anthropic") == 0;
    const char *url = rlm_config_get(cfg, "base_url");
    return url && strstr(url, "://api.anthropic.com") != NULL;
}

/* Prints the handle's warnings after the first `from` bytes; returns how
 * many bytes have now been printed. */
static size_t print_warnings(const rlm *r, size_t from)
{
    const char *w = rlm_warnings(r);
    size_t len = strlen(w);
    for (const char *line = w + (from < len ? from : len); *line;) {
        const char *nl = strchr(line, '\n');
        int n = nl ? (int)(nl - line) : (int)strlen(line);
        fprintf(stderr, "rlm: warning: %.*s\n", n, line);
        line += n + (nl != NULL);
    }
    return len;
}

static int set_or_complain(rlm_config *cfg, const char *key, const char *value)
{
    if (rlm_config_set(cfg, key, value) == RLM_OK)
        return 0;
    fprintf(stderr, "rlm: %s\n", rlm_config_errmsg(cfg));
    return -1;
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
    int rc = set_or_complain(cfg, key, joined);
    free(joined);
    return rc;
}

static int cmd_ask(int argc, char **argv)
{
    int rc = EXIT_USAGE;
    int json = 0, quiet = 0, key_given = 0;
    const char *question_file = NULL;
    enum { MAX_CONTEXTS = 1024 };
    const char *contexts[MAX_CONTEXTS];
    size_t n_contexts = 0;
    char *question = NULL;
    rlm *r = NULL;
    rlm_config *cfg = rlm_config_new();
    if (!cfg) {
        fputs("rlm: out of memory\n", stderr);
        return EXIT_INTERNAL;
    }
    /* Environment first, so flags override it. */
    const char *env;
    if ((env = getenv("OPENAI_BASE_URL")) && env[0] && set_or_complain(cfg, "base_url", env) != 0)
        goto done;
    if ((env = getenv("OPENAI_API_KEY")) && env[0])
        rlm_config_set(cfg, "api_key", env);
    if ((env = getenv("RLM_MODEL")) && env[0])
        rlm_config_set(cfg, "model", env);

    int opt;
    optind = 1;
    opterr = 0;   /* we say it ourselves, naming rlm rather than argv[0] */
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        const char *key = option_key(opt);
        if (key) {
            if (set_or_complain(cfg, key, optarg) != 0)
                goto done;
            key_given |= opt == OPT_API_KEY;
            continue;
        }
        switch (opt) {
        case OPT_CONTEXT:
            if (n_contexts == MAX_CONTEXTS) {
                fprintf(stderr, "rlm: at most %d --context arguments (use a directory or a glob)\n",
                        MAX_CONTEXTS);
                goto done;
            }
            contexts[n_contexts++] = optarg;
            break;
        case OPT_INCLUDE:
        case OPT_EXCLUDE:
            if (add_glob(cfg, opt == OPT_INCLUDE ? "include" : "exclude", optarg) != 0)
                goto done;
            break;
        case OPT_QUESTION_FILE: question_file = optarg; break;
        case OPT_UNSAFE: rlm_config_set(cfg, "unsafe_no_sandbox", "1"); break;
        case OPT_STREAM: rlm_config_set(cfg, "stream", "1"); break;
        case OPT_NO_STREAM: rlm_config_set(cfg, "stream", "0"); break;
        case OPT_CACHE: rlm_config_set(cfg, "cache", "1"); break;
        case OPT_NO_CACHE: rlm_config_set(cfg, "cache", "0"); break;
        case OPT_JSON: json = 1; break;
        case OPT_QUIET: quiet = 1; break;
        case OPT_HELP: usage(stdout); rc = EXIT_ANSWERED; goto done;
        case OPT_VERSION: printf("rlm %s\n", rlm_version()); rc = EXIT_ANSWERED; goto done;
        default:
            fprintf(stderr, "rlm: unknown option or missing value: '%s' (try 'rlm --help')\n",
                    argv[optind - 1]);
            goto done;
        }
    }

    /* Anthropic's key lives in its own variable; a flag still wins. */
    if (!key_given && is_anthropic(cfg) && (env = getenv("ANTHROPIC_API_KEY")) && env[0])
        rlm_config_set(cfg, "api_key", env);

    int rest = argc - optind;
    if (question_file) {
        if (rest > 0) {
            fputs("rlm: give the question either as an argument or with --question-file, not both\n", stderr);
            goto done;
        }
        char err[1024];
        question = read_question_file(question_file, err, sizeof err);
        if (!question) {
            fprintf(stderr, "rlm: %s\n", err);
            goto done;
        }
    } else if (rest == 1 && argv[optind][0]) {
        question = strdup(argv[optind]);
    } else {
        fputs(rest > 1 ? "rlm: give the question as one argument (quote it)\n"
                       : "rlm: no question given (rlm ask [options] QUESTION)\n",
              stderr);
        goto done;
    }

    rlm_status st = rlm_new(cfg, &r);
    if (st != RLM_OK) {
        fprintf(stderr, "rlm: %s\n", rlm_errmsg(r));
        rc = exit_code(st);
        goto done;
    }
    size_t warned = print_warnings(r, 0);
    for (size_t i = 0; i < n_contexts; i++) {
        if ((st = rlm_add_context(r, contexts[i])) != RLM_OK) {
            fprintf(stderr, "rlm: %s\n", rlm_errmsg(r));
            rc = exit_code(st);
            goto done;
        }
    }

    progress_state ps = {0};
    if (!quiet && isatty(STDERR_FILENO))
        rlm_set_progress(r, progress_line, &ps);
    char *answer = NULL;
    st = rlm_ask(r, question, &answer);
    progress_clear(&ps);
    rc = exit_code(st);
    print_warnings(r, warned);

    if (json) {
        const char *report = rlm_report_json(r);
        puts(report ? report : "{}");
    } else if (answer) {
        puts(answer);
    }
    if (st == RLM_NO_ANSWER)
        fprintf(stderr, "rlm: no answer: %s\n", rlm_errmsg(r)[0] ? rlm_errmsg(r) : "turn limit reached");
    else if (st != RLM_OK)
        fprintf(stderr, "rlm: %s\n", rlm_errmsg(r));
    rlm_string_free(answer);

done:
    free(question);
    rlm_free(r);
    rlm_config_free(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return EXIT_ANSWERED;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("rlm %s\n", rlm_version());
        return EXIT_ANSWERED;
    }
    if (strcmp(cmd, "ask") == 0)
        return cmd_ask(argc - 1, argv + 1);
    if (strcmp(cmd, "doctor") == 0)
        return cmd_doctor(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0)
        return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "demo") == 0)
        return cmd_demo(argc - 1, argv + 1);
    fprintf(stderr, "rlm: unknown command '%s' (try 'rlm --help')\n", cmd);
    return EXIT_USAGE;
}

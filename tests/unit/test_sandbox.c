/* test_sandbox — the Python sandbox end to end, against the real rlm-sandbox
 * child: the REPL contract, sub-calls, more inputs and host-set variables,
 * imports, the seccomp lockdown, timeouts, cancels, crashes, protocol
 * violations and resource bounds. Every test runs twice: with spawned
 * children, then with children forked by a sandbox factory's zygote; the
 * factory's own tests (layers, concurrency, reaping, fallbacks) follow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "frame.h"
#include "ingest.h"
#include "sandbox.h"
#include "sandbox_policy.h"
#include "search.h"
#include "sandbox_expect.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SANDBOX_EXE RLM_BUILD_DIR "/rlm-sandbox"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/* The context every test gets: ASCII, one invalid byte, then more ASCII. */
#define CONTEXT_HEAD "The quick brown fox. "
#define CONTEXT_REPEAT 5000

typedef struct fixture {
    int context_fd;
    size_t context_len;
    sandbox_factory *factory; /* NULL: children are spawned */
} fixture;

static int make_context(size_t *len)
{
    int fd = memfd_create("context", MFD_CLOEXEC);
    assert_true(fd >= 0);
    size_t total = 0;
    for (int i = 0; i < CONTEXT_REPEAT; i++) {
        assert_int_equal(write(fd, CONTEXT_HEAD, strlen(CONTEXT_HEAD)),
                         (ssize_t)strlen(CONTEXT_HEAD));
        total += strlen(CONTEXT_HEAD);
        if (i == 0) {
            assert_int_equal(write(fd, "\xff", 1), 1);
            total++;
        }
    }
    *len = total;
    return fd;
}

static sandbox *start_with(const fixture *fx, double timeout, double grace, size_t memory,
                           size_t output_limit, int unsafe)
{
    sandbox_options opts = {
        .exe_path = SANDBOX_EXE,
        .context_fd = fx ? fx->context_fd : -1,
        .context_len = fx ? fx->context_len : 0,
        .memory_limit = memory,
        .cell_timeout = timeout,
        .kill_grace = grace,
        .output_limit = output_limit,
        .unsafe_no_sandbox = unsafe,
        .factory = fx ? fx->factory : NULL,
    };
    sandbox *sb = NULL;
    char err[512] = "";
    int rc = sandbox_start(&opts, &sb, err, sizeof err);
    if (rc != 0)
        print_message("sandbox_start: %s\n", err);
    assert_int_equal(rc, 0);
    assert_non_null(sb);
    /* With a factory every child is forked (an unsafe one does not fit it):
     * a silent fall back to spawning would make the second run pointless. */
    assert_int_equal(sandbox_forked(sb), fx && fx->factory && !unsafe);
    return sb;
}

static sandbox *start_default(void **state)
{
    return start_with(*state, 30, 1, 0, 0, 0);
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    fx->context_fd = make_context(&fx->context_len);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    close(fx->context_fd);
    sandbox_factory_free(fx->factory);
    free(fx);
    return 0;
}

static sandbox_factory *new_factory(int no_namespaces)
{
    sandbox_options opts = {.exe_path = SANDBOX_EXE, .no_namespaces = no_namespaces};
    sandbox_factory *f = NULL;
    char err[512] = "";
    int rc = sandbox_factory_new(&opts, &f, err, sizeof err);
    if (rc != 0)
        print_message("sandbox_factory_new: %s\n", err);
    assert_int_equal(rc, 0);
    assert_non_null(f);
    assert_true(sandbox_factory_pid(f) > 0);
    return f;
}

/* The same fixture, with a factory every test's children are forked from. */
static int setup_forked(void **state)
{
    setup(state);
    fixture *fx = *state;
    fx->factory = new_factory(0);
    return 0;
}

/* ---- the REPL contract ---- */

static void test_print_and_namespace(void **state)
{
    sandbox *sb = start_default(state);
    assert_true(sandbox_pid(sb) > 0);
    expect_output(sb, "print('hello', 42)", "hello 42\n");
    expect_output(sb, "x = 41", "");
    expect_output(sb, "print(x + 1)", "42\n");
    expect_output(sb, "def double(v):\n    return 2 * v\n", "");
    expect_output(sb, "print(double(x))", "82\n");
    /* stderr is captured with stdout. */
    expect_output(sb, "import io\nprint('to stderr', file=__import__('json').codecs.sys.stderr)",
                  "to stderr\n");
    sandbox_free(sb);
}

/* Every helper of the policy table is bound in the namespace under its
 * name, and those the table says take context= say so in their help(). */
static void test_helpers_from_policy(void **state)
{
    sandbox *sb = start_default(state);
    for (size_t i = 0; i < sandbox_repl_names_count; i++) {
        const sandbox_repl_name *n = &sandbox_repl_names[i];
        if (n->kind != SANDBOX_NAME_HELPER)
            continue;
        char code[256], want[128];
        snprintf(code, sizeof code, "print(%s.__name__, 'context=' in (%s.__doc__ or ''))",
                 n->name, n->name);
        snprintf(want, sizeof want, "%s %s\n", n->name, n->takes_context ? "True" : "False");
        expect_output(sb, code, want);
    }
    sandbox_free(sb);
}

static void test_last_expression_display(void **state)
{
    sandbox *sb = start_default(state);
    expect_output(sb, "a = 3\na * 2", "6\n");
    expect_output(sb, "'text'", "'text'\n");
    expect_output(sb, "None", "");
    expect_output(sb, "print('p')\n[1, 2]", "p\n[1, 2]\n");
    expect_output(sb, "b = 5", "");
    expect_output(sb, "if True:\n    b", ""); /* not a bare last expression */
    sandbox_free(sb);
}

static void test_exception_traceback(void **state)
{
    sandbox *sb = start_default(state);
    sandbox_cell cell;
    run(sb, "def f():\n    raise ValueError('bad value')\nprint('before')\nf()", &cell);
    assert_true(cell.raised);
    assert_false(cell.timed_out);
    assert_false(cell.restarted);
    assert_non_null(strstr(cell.output, "before\n"));
    assert_non_null(strstr(cell.output, "Traceback (most recent call last)"));
    assert_non_null(strstr(cell.output, "in f"));
    assert_non_null(strstr(cell.output, "raise ValueError('bad value')"));
    assert_non_null(strstr(cell.output, "ValueError: bad value"));
    /* Only the model's frames: none of the REPL machinery. */
    assert_null(strstr(cell.output, "rlm-glue"));
    assert_null(strstr(cell.output, "compile_cell"));
    sandbox_cell_clear(&cell);
    expect_raise(sb, "x = = 1", "SyntaxError");
    /* The namespace survives an exception. */
    expect_raise(sb, "y = 1\nraise KeyError('k')", "KeyError: 'k'");
    expect_output(sb, "print(y)", "1\n");
    sandbox_free(sb);
}

static void test_final_forms(void **state)
{
    sandbox *sb = start_default(state);
    sandbox_cell cell;
    run(sb, "FINAL(6 * 7)", &cell);
    assert_false(cell.raised);
    assert_non_null(cell.final_answer);
    assert_string_equal(cell.final_answer, "42");
    sandbox_cell_clear(&cell);

    run(sb, "result = 'the answer'\nFINAL_VAR('result')", &cell);
    assert_string_equal(cell.final_answer, "the answer");
    sandbox_cell_clear(&cell);

    /* A missing name written as a literal is an error the model sees,
     * never an answer. */
    expect_raise(sb, "FINAL_VAR('nothing_here')", "NameError");
    run(sb, "FINAL_VAR('nothing_here')", &cell);
    assert_non_null(strstr(cell.output, "nothing_here"));
    assert_null(cell.final_answer);
    sandbox_cell_clear(&cell);
    expect_raise(sb, "FINAL_VAR(\" `nothing_here` \")", "NameError");

    /* FINAL_VAR(x) whose value names no variable: the value is the answer. */
    run(sb, "x = 'The answer is 42.'\nFINAL_VAR(x)", &cell);
    assert_false(cell.raised);
    assert_false(cell.final_literal);
    assert_string_equal(cell.final_answer, "The answer is 42.");
    sandbox_cell_clear(&cell);
    run(sb, "label = 'result'\nFINAL_VAR(label)", &cell);   /* names `result`: its value */
    assert_string_equal(cell.final_answer, "the answer");
    sandbox_cell_clear(&cell);
    run(sb, "FINAL_VAR(['a', 1])", &cell);
    assert_string_equal(cell.final_answer, "['a', 1]");
    sandbox_cell_clear(&cell);

    /* FINAL(bare words) in code: the words are the answer, as written. */
    run(sb, "seen = 1\nFINAL(get_reservation_details)", &cell);
    assert_false(cell.raised);
    assert_true(cell.final_literal);
    assert_string_equal(cell.final_answer, "get_reservation_details");
    assert_non_null(strstr(cell.output, "[rlm] FINAL(get_reservation_details)"));
    assert_null(strstr(cell.output, "NameError"));
    sandbox_cell_clear(&cell);
    expect_output(sb, "print(seen)", "1\n");   /* the lines before it ran */
    static const char *const literal[][2] = {
        {"FINAL(The answer is Paris)", "The answer is Paris"},      /* a SyntaxError */
        {"if True:\n    FINAL(It's 42 apples.)", "It's 42 apples."},
        {"FINAL( Paris, France )  # done", "Paris, France"},
        {"for i in range(1):\n    FINAL(unknown)", "unknown"},
    };
    for (size_t i = 0; i < sizeof literal / sizeof literal[0]; i++) {
        run(sb, literal[i][0], &cell);
        if (!cell.final_answer)
            print_message("code: %s\noutput: %s\n", literal[i][0], cell.output);
        assert_true(cell.final_literal);
        assert_string_equal(cell.final_answer, literal[i][1]);
        sandbox_cell_clear(&cell);
    }
    /* Not bare words, or not the FINAL line that failed: a plain error. */
    expect_raise(sb, "FINAL(undefined_function(3))", "NameError");
    expect_raise(sb, "FINAL(missing + 1)", "NameError");
    expect_raise(sb, "def f():\n    return missing_name\nFINAL(f())", "NameError");
    expect_raise(sb, "y = no_such\nFINAL(y)", "NameError");
    expect_raise(sb, "FINAL('unclosed)", "SyntaxError");
    expect_raise(sb, "x = (\nFINAL(a b)", "SyntaxError");
    expect_raise(sb, "FINAL_VAR(not_defined)", "NameError");

    /* The answer dict: ready -> final answer once, then reset. */
    run(sb, "answer['content'] = 'done'", &cell);
    assert_null(cell.final_answer);
    sandbox_cell_clear(&cell);
    run(sb, "answer['ready'] = True", &cell);
    assert_non_null(cell.final_answer);
    assert_string_equal(cell.final_answer, "done");
    sandbox_cell_clear(&cell);
    run(sb, "x = 1", &cell);
    assert_null(cell.final_answer);
    sandbox_cell_clear(&cell);
    expect_output(sb, "print(answer)", "{'content': 'done', 'ready': False}\n");
    sandbox_free(sb);
}

static void test_context_loaded(void **state)
{
    fixture *fx = *state;
    sandbox *sb = start_default(state);
    char expect[128];
    /* One invalid byte became one U+FFFD; everything else is kept. */
    snprintf(expect, sizeof expect, "str %zu\n", fx->context_len);
    expect_output(sb, "print(type(context).__name__, len(context))", expect);
    expect_output(sb, "print(context.count('\\ufffd'), context[:9])", "1 The quick\n");
    expect_output(sb, "print(context.count('fox'))", "5000\n");
    sandbox_free(sb);

    /* Pure ASCII (copied on a second core) and valid UTF-8 (decoded). */
    fixture ascii = {.context_fd = memfd_create("ascii", MFD_CLOEXEC), .factory = fx->factory};
    for (int i = 0; i < 100000; i++)
        assert_int_equal(write(ascii.context_fd, "0123456789", 10), 10);
    ascii.context_len = 1000000;
    sb = start_with(&ascii, 30, 1, 0, 0, 0);
    expect_output(sb, "print(len(context), context.isascii(), context[-3:])",
                  "1000000 True 789\n");
    sandbox_free(sb);
    close(ascii.context_fd);
    fixture utf8 = {.context_fd = memfd_create("utf8", MFD_CLOEXEC), .factory = fx->factory};
    const char *text = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x82\xac \xf0\x9f\x98\x80";
    utf8.context_len = strlen(text);
    assert_int_equal(write(utf8.context_fd, text, utf8.context_len), (ssize_t)utf8.context_len);
    sb = start_with(&utf8, 30, 1, 0, 0, 0);
    expect_output(sb, "print(len(context), ascii(context))",
                  "15 'h\\xe9llo w\\xf6rld \\u20ac \\U0001f600'\n");
    sandbox_free(sb);
    close(utf8.context_fd);

    /* Without a context, it is an empty str. */
    fixture none = {.context_fd = -1, .factory = fx->factory};
    sb = start_with(&none, 30, 1, 0, 0, 0);
    expect_output(sb, "print(repr(context))", "''\n");
    sandbox_free(sb);
}

static void test_show_vars(void **state)
{
    fixture *fx = *state;
    sandbox *sb = start_default(state);
    char expect[512];
    /* A str it returns, printing nothing itself (models print(SHOW_VARS())). */
    expect_output(sb, "v = SHOW_VARS()", "");
    char first[256];
    snprintf(first, sizeof first,
             "REPL variables:\n  context: str (%zu chars)\n  context_0: str (%zu chars)",
             fx->context_len, fx->context_len);
    snprintf(expect, sizeof expect, "True\n%s\n  v: str (%zu chars)\n", first, strlen(first));
    expect_output(sb, "print(isinstance(v, str))\nprint(SHOW_VARS())", expect);
    /* Functions of the REPL, modules, the answer dict and _names are not
     * listed; the model's own functions and a rebound helper are. */
    snprintf(expect, sizeof expect,
             "REPL variables:\n  chunks: list (0 items)\n  context: str (%zu chars)\n"
             "  context_0: str (%zu chars)\n  name: str (3 chars)\n  items: list (3 items)\n"
             "  f: function\n",
             fx->context_len, fx->context_len);
    expect_output(sb, "del v\nimport re\nname = 'abc'\nitems = [1, 2, 3]\n_hidden = 1\n"
                      "def f():\n    pass\nchunks = []\nprint(SHOW_VARS())",
                  expect);
    /* A bare call as the last line shows the listing as text, not a quoted repr. */
    expect_output(sb, "SHOW_VARS()", expect);
    sandbox_free(sb);
}

/* ---- sub-calls ---- */

typedef struct recorder {
    int calls;
    int last_kind;
    char last_model[64];
    char prompts[8][256];
    size_t n_prompts;
    int had_contexts;         /* the callback got a contexts array */
    char contexts[8][256];    /* "(none)" for a NULL entry */
    size_t context_len[8];
    int fail_prompt;  /* index that gets an error string, or -1 */
    int stop;         /* return -1 */
    pid_t interrupt;  /* send SIGINT to this pid during the call */
} recorder;

static int record_call(void *userdata, int kind, const char *model, const char *const *prompts,
                       const size_t *prompt_lens, const char *const *contexts,
                       const size_t *context_lens, size_t n, char **results, size_t *result_lens)
{
    recorder *r = userdata;
    r->calls++;
    r->last_kind = kind;
    snprintf(r->last_model, sizeof r->last_model, "%s", model ? model : "(default)");
    r->n_prompts = n;
    r->had_contexts = contexts != NULL;
    for (size_t i = 0; contexts && i < n && i < 8; i++) {
        snprintf(r->contexts[i], sizeof r->contexts[i], "%s", contexts[i] ? contexts[i] : "(none)");
        r->context_len[i] = contexts[i] ? strlen(contexts[i]) : 0;
    }
    if (r->interrupt > 0)
        kill(r->interrupt, SIGINT);
    for (size_t i = 0; i < n; i++) {
        if (i < 8)
            snprintf(r->prompts[i], sizeof r->prompts[i], "%s", prompts[i]);
        size_t len = strlen(prompts[i]) + 32;
        results[i] = malloc(len);
        if ((int)i == r->fail_prompt)
            snprintf(results[i], len, "Error: failed %s", prompts[i]);
        else
            snprintf(results[i], len, "R:%s", prompts[i]);
    }
    return r->stop ? -1 : 0;
}

static void run_with(sandbox *sb, const char *code, recorder *r, sandbox_cell *cell)
{
    char err[512] = "";
    assert_int_equal(sandbox_exec(sb, code, record_call, r, cell, err, sizeof err), 0);
}

/* Echoes each prompt and context back, NUL bytes and all, by their lengths:
 * "<prompt>|<context>". */
static int echo_lengths(void *userdata, int kind, const char *model, const char *const *prompts,
                        const size_t *prompt_lens, const char *const *contexts,
                        const size_t *context_lens, size_t n, char **results, size_t *result_lens)
{
    for (size_t i = 0; i < n; i++) {
        size_t ctx = contexts && contexts[i] ? context_lens[i] : 0;
        results[i] = malloc(prompt_lens[i] + ctx + 2);
        memcpy(results[i], prompts[i], prompt_lens[i]);
        results[i][prompt_lens[i]] = '|';
        if (ctx)
            memcpy(results[i] + prompt_lens[i] + 1, contexts[i], ctx);
        result_lens[i] = prompt_lens[i] + 1 + ctx;
        results[i][result_lens[i]] = '\0';
    }
    return 0;
}

/* Text with NUL bytes crosses the boundary by its length, both ways: prompts,
 * contexts, replies, the final answer, output and variables read back. */
static void test_nul_bytes(void **state)
{
    sandbox *sb = start_default(state);
    sandbox_cell cell;
    char err[256];
    assert_int_equal(sandbox_exec(sb,
                                  "r = rlm_query('p\\x00q', context='c\\x00')\n"
                                  "print(repr(r), repr(llm_query_batched(['\\x00', 'z'])))\n"
                                  "FINAL(r + '\\x00end')",
                                  echo_lengths, NULL, &cell, err, sizeof err),
                     0);
    assert_false(cell.raised);
    assert_string_equal(cell.output, "'p\\x00q|c\\x00' ['\\x00|', 'z|']\n");
    assert_int_equal(cell.final_answer_len, 10);
    assert_memory_equal(cell.final_answer, "p\0q|c\0\0end", 10);
    sandbox_cell_clear(&cell);
    run(sb, "print('a\\x00b', end='')", &cell);
    assert_int_equal(cell.output_len, 3);
    assert_memory_equal(cell.output, "a\0b", 3);
    sandbox_cell_clear(&cell);
    expect_output(sb, "v = 'x\\x00\\x00y'", "");
    char *value = NULL;
    size_t value_len = 0;
    assert_int_equal(sandbox_get_var(sb, "v", &value, &value_len, err, sizeof err), 0);
    assert_int_equal(value_len, 4);
    assert_memory_equal(value, "x\0\0y", 4);
    free(value);
    sandbox_free(sb);
}

static void test_llm_query(void **state)
{
    sandbox *sb = start_default(state);
    recorder r = {.fail_prompt = -1};
    sandbox_cell cell;
    run_with(sb, "llm_query('hi there')", &r, &cell);
    assert_false(cell.raised);
    assert_string_equal(cell.output, "'R:hi there'\n");
    assert_int_equal(cell.n_calls, 1);
    assert_int_equal(r.last_kind, SANDBOX_CALL_LLM);
    assert_string_equal(r.last_model, "(default)");
    sandbox_cell_clear(&cell);

    run_with(sb, "print(llm_query(prompt='p', model='small'))", &r, &cell);
    assert_string_equal(cell.output, "R:p\n");
    assert_string_equal(r.last_model, "small");
    sandbox_cell_clear(&cell);

    /* Without a callback, sub-calls answer with an error string. */
    run(sb, "print(llm_query('x'))", &cell);
    assert_non_null(strstr(cell.output, "Error:"));
    sandbox_cell_clear(&cell);
    sandbox_free(sb);
}

static void test_llm_query_batched(void **state)
{
    sandbox *sb = start_default(state);
    recorder r = {.fail_prompt = 1};
    sandbox_cell cell;
    run_with(sb, "out = llm_query_batched(['a', 'b', 'c'])\nprint(out)", &r, &cell);
    assert_false(cell.raised);
    /* One frame, results in order, the failed slot holds its error. */
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.n_prompts, 3);
    assert_string_equal(cell.output, "['R:a', 'Error: failed b', 'R:c']\n");
    assert_int_equal(cell.n_calls, 3);
    sandbox_cell_clear(&cell);

    run_with(sb, "print(llm_query_batched([]))", &r, &cell);
    assert_string_equal(cell.output, "[]\n");
    sandbox_cell_clear(&cell);

    run_with(sb, "llm_query_batched('one string')", &r, &cell);
    assert_true(cell.raised);
    assert_non_null(strstr(cell.output, "TypeError"));
    sandbox_cell_clear(&cell);
    sandbox_free(sb);
}

/* Plain batches travel as a raw frame (prompt lengths + bytes): every kind of
 * string must arrive exactly, in order, however many there are. */
static void test_llm_query_batched_raw(void **state)
{
    sandbox *sb = start_default(state);
    recorder r = {.fail_prompt = -1};
    sandbox_cell cell;
    run_with(sb,
             "out = llm_query_batched(['', 'caf\\u00e9 \\u2603', 'bad \\udcff end', 12, "
             "'x' * 100000] + ['p%d' % i for i in range(1500)])\n"
             "print(len(out), out[0], out[1], out[2], out[3], len(out[4]), out[5], out[-1])",
             &r, &cell);
    if (cell.raised)
        print_message("output: %s\n", cell.output);
    assert_false(cell.raised);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.n_prompts, 1505);
    assert_string_equal(r.prompts[0], "");
    assert_string_equal(r.prompts[1], "caf\xc3\xa9 \xe2\x98\x83");
    assert_string_equal(r.prompts[2], "bad ? end");
    assert_string_equal(r.prompts[3], "12");
    assert_string_equal(cell.output,
                        "1505 R: R:caf\xc3\xa9 \xe2\x98\x83 R:bad ? end R:12 100002 R:p0 R:p1499\n");
    sandbox_cell_clear(&cell);

    /* str() of an item is model code: emptying the list meanwhile changes
     * nothing that is sent (the frame points into the strs). */
    run_with(sb,
             "class Evil:\n    def __str__(self):\n        batch.clear()\n        return 'evil'\n"
             "batch = ['y' * 5 + str(len('abc')), Evil(), 'z' * 3]\n"
             "print(llm_query_batched(batch), batch)",
             &r, &cell);
    assert_false(cell.raised);
    assert_string_equal(cell.output, "['R:yyyyy3', 'R:evil', 'R:zzz'] []\n");
    sandbox_cell_clear(&cell);
    sandbox_free(sb);
}

/* The batch callback (sandbox_batch_fn) of the tests: reads the prompts as
 * they arrive (all, or the first read_only), answers "S:<prompt>" and lets
 * each prompt go at once; or declines, and the recorder (its first member,
 * the userdata of the plain callback too) gets the batch whole. */
typedef struct streamer {
    recorder r;
    int calls;
    int decline;
    size_t read_only;   /* 0: every prompt */
    int released_ok;    /* every released prompt read back NULL */
} streamer;

static int stream_call(void *userdata, int kind, const char *model, sandbox_batch *b, size_t n,
                       char **results, size_t *result_lens)
{
    (void)kind;
    (void)model;
    streamer *s = userdata;
    s->calls++;
    if (s->decline)
        return SANDBOX_BATCH_DECLINE;
    size_t got = 0;
    int last = 0;
    while (!last && (!s->read_only || got < s->read_only))
        got = sandbox_batch_more(b, -1, &last);
    s->released_ok = 1;
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        const char *p = i < got ? sandbox_batch_prompt(b, i, &len) : NULL;
        if (!p) {
            results[i] = strdup("Error: unread");
            continue;
        }
        results[i] = malloc(len + 3);
        memcpy(results[i], "S:", 2);
        memcpy(results[i] + 2, p, len + 1);
        result_lens[i] = len + 2;
        sandbox_batch_release(b, i);
        s->released_ok &= sandbox_batch_prompt(b, i, &len) == NULL;
    }
    return 0;
}

static void run_streamed(sandbox *sb, const char *code, streamer *s, sandbox_cell *cell)
{
    char err[512] = "";
    assert_int_equal(sandbox_exec_batched(sb, code, record_call, stream_call, s, cell, err, sizeof err), 0);
}

/* A plain batch goes to the batch callback, which gets its prompts as they
 * arrive, exact and in order, and may let each go early. */
static void test_llm_query_batched_streamed(void **state)
{
    sandbox *sb = start_default(state);
    streamer s = {.r = {.fail_prompt = -1}};
    sandbox_cell cell;
    run_streamed(sb,
                 "out = llm_query_batched(['', 'caf\\u00e9', 'bad \\udcff end', 'a\\x00b', 'x' * 100000] "
                 "+ ['p%d' % i for i in range(3000)])\n"
                 "print(len(out), out[0], out[1], out[2], repr(out[3]), len(out[4]), out[5], out[-1])",
                 &s, &cell);
    if (cell.raised)
        print_message("output: %s\n", cell.output);
    assert_false(cell.raised);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.r.calls, 0);
    assert_true(s.released_ok);
    assert_int_equal(cell.n_calls, 3005);
    assert_string_equal(cell.output, "3005 S: S:caf\xc3\xa9 S:bad ? end 'S:a\\x00b' 100002 S:p0 S:p2999\n");
    sandbox_cell_clear(&cell);

    /* Non-ASCII prompts (encoded a group at a time as they are sent), lone
     * surrogates, characters outside the BMP, objects that are not str. */
    run_streamed(sb, "out = llm_query_batched(['\\u00e9%d\\u2603\\udcff\\U0001f600' % i for i in range(1000)]"
                     " + list(range(300)))\n"
                     "print(out[999] == 'S:\\u00e9999\\u2603?\\U0001f600', out[1299], len(out))", &s, &cell);
    assert_string_equal(cell.output, "True S:299 1300\n");
    sandbox_cell_clear(&cell);

    /* The callee reads three prompts of 2,000 and answers: the rest is read
     * and dropped, and the next cell finds the stream in step. */
    s.read_only = 3;
    run_streamed(sb, "out = llm_query_batched(['q%d' % i for i in range(2000)])\n"
                     "print(out[2], out[3], len(out))", &s, &cell);
    assert_string_equal(cell.output, "S:q2 Error: unread 2000\n");
    sandbox_cell_clear(&cell);
    s.read_only = 0;

    /* Declined: the same batch, whole, through the plain callback; a batch
     * with contexts never comes to the batch callback. */
    s.decline = 1;
    run_streamed(sb, "print(llm_query_batched(['a', 'b']))", &s, &cell);
    assert_string_equal(cell.output, "['R:a', 'R:b']\n");
    assert_int_equal(s.calls, 4);
    assert_int_equal(s.r.calls, 1);
    sandbox_cell_clear(&cell);
    s.decline = 0;
    run_streamed(sb, "print(rlm_query_batched(['a'], contexts=['c']))", &s, &cell);
    assert_int_equal(s.calls, 4);
    assert_int_equal(s.r.calls, 2);
    sandbox_cell_clear(&cell);
    sandbox_free(sb);
}

static void test_rlm_query(void **state)
{
    fixture *fx = *state;
    sandbox *sb = start_default(state);
    recorder r = {.fail_prompt = -1};
    sandbox_cell cell;
    run_with(sb, "print(rlm_query('sum it', context='1 2 3'))", &r, &cell);
    assert_false(cell.raised);
    assert_string_equal(cell.output, "R:sum it\n");
    assert_int_equal(r.last_kind, SANDBOX_CALL_RLM);
    /* The context reaches the callback on its own, not joined to the prompt. */
    assert_string_equal(r.prompts[0], "sum it");
    assert_true(r.had_contexts);
    assert_string_equal(r.contexts[0], "1 2 3");
    sandbox_cell_clear(&cell);

    run_with(sb, "print(rlm_query_batched(['a', 'b'], contexts=['x', None]))", &r, &cell);
    assert_false(cell.raised);
    assert_string_equal(cell.output, "['R:a', 'R:b']\n");
    assert_int_equal(r.n_prompts, 2);
    assert_true(r.had_contexts);
    assert_string_equal(r.contexts[0], "x");
    assert_string_equal(r.contexts[1], "(none)");
    sandbox_cell_clear(&cell);

    /* No context anywhere: no array at all. */
    run_with(sb, "print(rlm_query_batched(['p', 'q']))", &r, &cell);
    assert_string_equal(cell.output, "['R:p', 'R:q']\n");
    assert_false(r.had_contexts);
    sandbox_cell_clear(&cell);
    run_with(sb, "rlm_query_batched(['p'], contexts=[None])\nrlm_query('p', context=None)", &r,
             &cell);
    assert_false(cell.raised);
    assert_false(r.had_contexts);
    assert_int_equal(r.last_kind, SANDBOX_CALL_RLM);
    sandbox_cell_clear(&cell);

    /* The whole input as a context, and objects that are not str (str() of
     * them, like prompts); the context's one invalid byte is U+FFFD, three
     * bytes in UTF-8. */
    run_with(sb, "rlm_query('all', context=context)\n"
                 "rlm_query_batched(['n', 'l'], contexts=[12, [1, 'a']])", &r, &cell);
    assert_false(cell.raised);
    assert_string_equal(r.contexts[0], "12");
    assert_string_equal(r.contexts[1], "[1, 'a']");
    sandbox_cell_clear(&cell);
    run_with(sb, "rlm_query('all', context=context)", &r, &cell);
    assert_int_equal(r.context_len[0], fx->context_len + 2);
    assert_true(strncmp(r.contexts[0], "The quick", 9) == 0);
    sandbox_cell_clear(&cell);

    expect_raise(sb, "rlm_query_batched(['a', 'b'], contexts=['x'])", "2 prompts but 1 contexts");
    expect_raise(sb, "rlm_query_batched(['a'], contexts='x')", "TypeError");
    /* llm_query never has contexts. */
    run_with(sb, "llm_query_batched(['a', 'b'])", &r, &cell);
    assert_int_equal(r.last_kind, SANDBOX_CALL_LLM);
    assert_false(r.had_contexts);
    sandbox_cell_clear(&cell);
    sandbox_free(sb);
}

static void test_callback_stop(void **state)
{
    sandbox *sb = start_default(state);
    recorder r = {.fail_prompt = -1, .stop = 1};
    sandbox_cell cell;
    run_with(sb, "x = 1\nllm_query('a')\nx = 2", &r, &cell);
    assert_true(cell.raised);
    assert_non_null(strstr(cell.output, "stopped"));
    sandbox_cell_clear(&cell);
    expect_output(sb, "print(x)", "1\n");
    sandbox_free(sb);
}

static void test_sigint_during_subcall(void **state)
{
    /* A SIGINT while the child waits for a reply: it stays in sync, the cell
     * is interrupted, the same process serves the next cell. */
    sandbox *sb = start_default(state);
    int pid = sandbox_pid(sb);
    recorder r = {.fail_prompt = -1, .interrupt = pid};
    sandbox_cell cell;
    expect_output(sb, "kept = 'yes'", "");
    run_with(sb, "v = llm_query('a')\nprint('after')", &r, &cell);
    assert_true(cell.raised);
    assert_false(cell.restarted);
    sandbox_cell_clear(&cell);
    assert_int_equal(sandbox_pid(sb), pid);
    expect_output(sb, "print(kept)", "yes\n");
    sandbox_free(sb);
}

/* ---- imports and lockdown ---- */

static void test_imports(void **state)
{
    sandbox *sb = start_default(state);
    expect_output(sb,
                  "import re, json, math, collections, itertools, functools, statistics\n"
                  "import string, textwrap, heapq, bisect, datetime, random, difflib\n"
                  "import unicodedata, fractions, decimal, dataclasses, typing, operator\n"
                  "import copy, csv\nfrom io import StringIO\n"
                  "print(json.dumps({'a': re.findall('o', 'foo')}), statistics.median([3, 1, 2]))",
                  "{\"a\": [\"o\", \"o\"]} 2\n");
    /* Library code importing lazily: datetime.strptime pulls in _strptime. */
    expect_output(sb,
                  "import datetime\n"
                  "print(datetime.datetime.strptime('2024-03-05', '%Y-%m-%d').day)",
                  "5\n");
    expect_output(sb, "@dataclasses.dataclass\nclass P:\n    x: int\nprint(P(3))", "P(x=3)\n");
    expect_raise(sb, "import os", "ImportError: import of 'os' is not allowed in the sandbox");
    expect_raise(sb, "import os", "Allowed modules: re, json, math");
    expect_raise(sb, "import socket", "import of 'socket' is not allowed");
    expect_raise(sb, "__import__('subprocess')", "import of 'subprocess' is not allowed");
    expect_raise(sb, "from os import path", "import of 'os' is not allowed");
    expect_raise(sb, "exec('import ctypes', {})", "import of 'ctypes' is not allowed");
    expect_raise(sb, "import sys", "import of 'sys' is not allowed");
    /* What models reach for in a plain Python: timing, enums, pretty
     * printing, bytes. time.sleep passes the seccomp filter. */
    expect_output(sb,
                  "import time, enum, pprint, struct, base64, zlib, html, array, calendar\n"
                  "t = time.time(); time.sleep(0.001)\n"
                  "class C(enum.Enum):\n    A = 1\n"
                  "print(time.time() >= t, C(1).name, struct.unpack('<I', b'\\x01\\0\\0\\0')[0],\n"
                  "      base64.b64encode(zlib.decompress(zlib.compress(b'hi'))).decode(),\n"
                  "      html.escape('<a>'), array.array('i', [1, 2]).tolist(), calendar.isleap(2024))\n"
                  "pprint.pprint({'k': [1]})",
                  "True A 1 aGk= &lt;a&gt; [1, 2] True\n{'k': [1]}\n");
    /* Their attributes are put back after the cell like every allowed module's. */
    expect_output(sb, "import time\ntime.time = None\nprint(1)", "1\n");
    expect_output(sb, "import time\nprint(callable(time.time))", "True\n");
    /* ast and builtins are allowed: nothing new, builtins is __builtins__. */
    expect_output(sb, "import ast, builtins\nprint(builtins is __builtins__, "
                      "type(ast.parse('x = 1').body[0]).__name__)",
                  "True Assign\n");
    /* ... and neither gets around the import guard or the restore of builtins. */
    expect_raise(sb, "import builtins\nbuiltins.__import__('os')", "import of 'os' is not allowed");
    expect_raise(sb, "from builtins import __import__ as imp\nimp('subprocess')",
                 "import of 'subprocess' is not allowed");
    expect_output(sb, "import builtins\nbuiltins.len = lambda x: 99\nbuiltins.__import__ = "
                      "lambda *a, **k: 'forged'\nprint(len('ab'))",
                  "99\n");
    expect_output(sb, "print(len('ab'))", "2\n");
    expect_raise(sb, "import os", "import of 'os' is not allowed");
    expect_output(sb, "import ast\nast.parse = None\nprint(1)", "1\n");
    expect_output(sb, "import ast\nprint(ast.parse is not None)\nx = 2\nx", "True\n2\n");
    /* Threads and processes: refused with a pointer to the batched calls. */
    expect_raise(sb, "import threading", "llm_query_batched");
    expect_raise(sb, "from concurrent.futures import ThreadPoolExecutor",
                 "import of 'concurrent.futures' is not allowed: the sandbox runs no threads");
    expect_raise(sb, "import multiprocessing", "rlm_query_batched");
    expect_raise(sb, "import _thread", "llm_query_batched");
    sandbox_free(sb);
}

static void test_lockdown(void **state)
{
    sandbox *sb = start_default(state);
    assert_non_null(strstr(sandbox_layers(sb), "seccomp"));
    assert_non_null(strstr(sandbox_layers(sb), "rlimits"));
    expect_raise(sb, "open('/etc/passwd')", "PermissionError");
    expect_raise(sb, "open('/tmp/rlm-sandbox-test-file', 'w')", "PermissionError");
    /* The import guard is a courtesy; the filter holds even for code that
     * reaches os through an allowed module. */
    expect_output(sb, "os = __import__('json').codecs.sys.modules['os']", "");
    expect_raise(sb, "os.fork()", "PermissionError");
    expect_raise(sb, "os.execv('/bin/true', ['true'])", "PermissionError");
    expect_raise(sb, "os.kill(os.getpid() + 1, 0)", "PermissionError");
    expect_raise(sb, "os.mkdir('/tmp/rlm-sandbox-test-dir')", "PermissionError");
    expect_raise(sb, "os.rename('/tmp', '/tmp2')", "PermissionError");
    expect_raise(sb, "os.setuid(0)", "PermissionError");
    expect_raise(sb, "os.listdir('/')", "PermissionError");
    expect_raise(sb, "os.unshare(0) if hasattr(os, 'unshare') else os.chroot('/')",
                 "PermissionError");
    expect_output(sb, "print(os.system('true') != 0)", "True\n");
    /* Signals to itself still work (CPython and libc use them). */
    expect_output(sb, "os.kill(os.getpid(), 0)", "");
    sandbox_free(sb);

    sb = start_with(*state, 30, 1, 0, 0, 1);
    assert_string_equal(sandbox_layers(sb), "none (unsafe)");
    expect_output(sb, "print(len(open('/etc/passwd').read()) > 0)", "True\n");
    sandbox_free(sb);
}

/* ---- timeouts, crashes, protocol ---- */

static void test_infinite_loop_timeout(void **state)
{
    sandbox *sb = start_with(*state, 0.5, 2, 0, 0, 0);
    int pid = sandbox_pid(sb);
    expect_output(sb, "survivor = 7", "");
    sandbox_cell cell;
    run(sb, "while True:\n    pass", &cell);
    assert_true(cell.timed_out);
    assert_true(cell.raised);
    assert_false(cell.restarted); /* SIGINT broke the loop: same process */
    assert_non_null(strstr(cell.output, "TimeoutError: cell exceeded 0.5 s wall time"));
    assert_null(strstr(cell.output, "KeyboardInterrupt"));
    sandbox_cell_clear(&cell);
    assert_int_equal(sandbox_pid(sb), pid);
    expect_output(sb, "print(survivor)", "7\n");
    sandbox_free(sb);
}

static void test_uninterruptible_hang(void **state)
{
    fixture *fx = *state;
    sandbox *sb = start_with(fx, 0.5, 0.5, 0, 0, 0);
    int pid = sandbox_pid(sb);
    expect_output(sb, "lost = 1", "");
    sandbox_cell cell;
    /* deque(maxlen=0) drains an endless C iterator without ever checking
     * for signals: only SIGKILL ends it. */
    run(sb, "import collections, itertools\ncollections.deque(itertools.count(), maxlen=0)",
        &cell);
    assert_true(cell.timed_out);
    assert_true(cell.restarted);
    assert_non_null(strstr(cell.output, "variables were lost"));
    sandbox_cell_clear(&cell);
    assert_true(sandbox_pid(sb) != pid);
    assert_int_equal(kill(pid, 0), -1); /* reaped: not even a zombie */
    assert_int_equal(sandbox_forked(sb), fx->factory != NULL); /* restarted from it */
    expect_raise(sb, "print(lost)", "NameError");
    char expect[64];
    snprintf(expect, sizeof expect, "%zu\n", fx->context_len);
    expect_output(sb, "print(len(context))", expect);

    /* A catastrophic regex ends either way, and the REPL works after. */
    run(sb, "import re\nre.match(r'(a+)+$', 'a' * 40 + 'b')", &cell);
    assert_true(cell.timed_out);
    assert_true(cell.raised);
    sandbox_cell_clear(&cell);
    expect_output(sb, "print(len(context))", expect);
    sandbox_free(sb);
}

static void test_child_killed(void **state)
{
    sandbox *sb = start_default(state);
    int pid = sandbox_pid(sb);
    expect_output(sb, "v = 1", "");
    /* The child is the init of its PID namespace: from outside, only SIGKILL
     * (what the OOM killer sends) and signals it handles reach it. */
    kill(pid, SIGKILL);
    sandbox_cell cell;
    run(sb, "print('next')", &cell);
    assert_true(cell.restarted);
    assert_true(cell.raised);
    assert_non_null(strstr(cell.output, "died"));
    assert_non_null(strstr(cell.output, "out of memory"));
    sandbox_cell_clear(&cell);
    assert_true(sandbox_pid(sb) != pid);
    expect_output(sb, "print('alive')", "alive\n");
    expect_raise(sb, "v", "NameError");

    /* A SIGINT between cells is harmless. */
    pid = sandbox_pid(sb);
    kill(pid, SIGINT);
    expect_output(sb, "print('fine')", "fine\n");
    assert_int_equal(sandbox_pid(sb), pid);
    sandbox_free(sb);
}

/* Runs code (through the batch callback when streamed), which must end its
 * child with needle in the output; a fresh child then works. */
static void expect_restart_by(sandbox *sb, const char *code, int streamed, const char *needle)
{
    int pid = sandbox_pid(sb);
    sandbox_cell cell;
    streamer s = {.r = {.fail_prompt = -1}};
    if (streamed)
        run_streamed(sb, code, &s, &cell);
    else
        run(sb, code, &cell);
    if (!cell.restarted || !strstr(cell.output, needle))
        print_message("output: %s\n", cell.output);
    assert_true(cell.restarted);
    assert_non_null(strstr(cell.output, needle));
    sandbox_cell_clear(&cell);
    assert_true(sandbox_pid(sb) != pid);
    expect_output(sb, "print('ok')", "ok\n");
}

static void expect_restart(sandbox *sb, const char *code, const char *needle)
{
    expect_restart_by(sb, code, 0, needle);
}

static void test_protocol_violations(void **state)
{
    /* Model code that escapes to os can write to the host's socket; the host
     * must survive whatever comes and replace the child. */
    sandbox *sb = start_with(*state, 2, 0.5, 0, 0, 0);
    const char *os = "os = __import__('json').codecs.sys.modules['os']\n";
    char code[512];
    snprintf(code, sizeof code, "%sos.write(3, b'\\xff\\xff\\xff\\xff' + b'x' * 64)", os);
    expect_restart(sb, code, "oversized");
    snprintf(code, sizeof code, "%sos.write(3, b'\\x00\\x00\\x00\\x05hello')", os);
    expect_restart(sb, code, "garbled");
    snprintf(code, sizeof code,
             "%sp = b'{\"type\":\"bogus\"}'\nos.write(3, len(p).to_bytes(4, 'big') + p)", os);
    expect_restart(sb, code, "unexpected frame");
    /* Half a frame, then silence: the timeout ends it. */
    snprintf(code, sizeof code, "%sos.write(3, b'\\x00\\x00\\x01\\x00{\"ty')\nwhile True: pass",
             os);
    expect_restart(sb, code, "restarted");
    /* A batch whose prompt lengths do not match the raw frame after it. */
    snprintf(code, sizeof code,
             "%sp = b'{\"type\":\"call\",\"kind\":\"llm\",\"prompt_lengths\":[5]}'\n"
             "os.write(3, len(p).to_bytes(4, 'big') + p + b'\\x00\\x00\\x00\\x04abc\\x00')",
             os);
    expect_restart(sb, code, "malformed call frame");
    /* A batch announced, its prompts never sent: the cell's timeout ends it. */
    snprintf(code, sizeof code,
             "%sp = b'{\"type\":\"call\",\"kind\":\"llm\",\"prompt_lengths\":[5]}'\n"
             "os.write(3, len(p).to_bytes(4, 'big') + p)\nwhile True: pass",
             os);
    expect_restart(sb, code, "restarted");
    /* The child closing the socket. */
    snprintf(code, sizeof code, "%sos.close(3)\nwhile True: pass", os);
    expect_restart(sb, code, "restarted");
    sandbox_free(sb);
}

/* A hostile child's streamed batch: every flaw ends the child. Invalid UTF-8
 * in a prompt is repaired, not refused. */
static void test_streamed_protocol_violations(void **state)
{
    sandbox *sb = start_with(*state, 2, 0.5, 0, 0, 0);
    const char *os = "os = __import__('json').codecs.sys.modules['os']\n"
                     "p = b'{\"type\":\"call\",\"kind\":\"llm\",\"prompt_lengths\":[2,1]}'\n";
    char code[1024];
    /* The raw frame's length is not the pieces' sum. */
    snprintf(code, sizeof code,
             "%sos.write(3, len(p).to_bytes(4, 'big') + p + b'\\x00\\x00\\x00\\x06ab\\x00c\\x00')\n"
             "while True: pass", os);
    expect_restart_by(sb, code, 1, "announced");
    /* A piece not followed by its NUL. */
    snprintf(code, sizeof code,
             "%sos.write(3, len(p).to_bytes(4, 'big') + p + b'\\x00\\x00\\x00\\x05abXc\\x00')\n"
             "while True: pass", os);
    expect_restart_by(sb, code, 1, "does not end");
    /* The first prompt, then silence: the cell's time ends the wait. */
    snprintf(code, sizeof code,
             "%sos.write(3, len(p).to_bytes(4, 'big') + p + b'\\x00\\x00\\x00\\x05ab\\x00')\n"
             "while True: pass", os);
    expect_restart_by(sb, code, 1, "did not arrive");
    /* Invalid UTF-8 arrives repaired (the reply is read back raw). */
    streamer s = {.r = {.fail_prompt = -1}};
    sandbox_cell cell;
    snprintf(code, sizeof code,
             "%sos.write(3, len(p).to_bytes(4, 'big') + p + b'\\x00\\x00\\x00\\x05\\xff!\\x00c\\x00')\n"
             "print(os.read(3, 4096)[4:])", os);
    run_streamed(sb, code, &s, &cell);
    if (!strstr(cell.output, "S:\\xef\\xbf\\xbd!"))
        print_message("output: %s\n", cell.output);
    assert_non_null(strstr(cell.output, "S:\\xef\\xbf\\xbd!"));
    assert_non_null(strstr(cell.output, "S:c"));
    sandbox_cell_clear(&cell);
    sandbox_free(sb);
}

/* ---- bounds ---- */

static long rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static void test_output_bounded(void **state)
{
    sandbox *sb = start_with(*state, 1, 1, 0, 1000, 0);
    sandbox_cell cell;
    run(sb, "print('x' * 50_000_000)\nprint('end')", &cell);
    assert_false(cell.raised);
    assert_true(cell.output_chars >= 50000000);
    assert_true(strlen(cell.output) < 1100);
    assert_non_null(strstr(cell.output, "characters cut"));
    assert_true(strncmp(cell.output, "xxxx", 4) == 0);
    size_t len = strlen(cell.output);
    assert_string_equal(cell.output + len - 5, "\nend\n");
    sandbox_cell_clear(&cell);

    /* Printing forever for a while costs no memory. */
    int pid = sandbox_pid(sb);
    long before = rss_kb(pid);
    run(sb, "while True:\n    print('y' * 1000)", &cell);
    assert_true(cell.timed_out);
    assert_false(cell.restarted);
    assert_true(cell.output_chars > 100000);
    assert_true(strlen(cell.output) < 1500);
    assert_non_null(strstr(cell.output, "TimeoutError"));
    sandbox_cell_clear(&cell);
    long after = rss_kb(pid);
    if (after - before > 50 * 1024)
        print_message("RSS grew from %ld kB to %ld kB\n", before, after);
    assert_true(after - before < 50 * 1024);
    expect_output(sb, "print('still here')", "still here\n");
    sandbox_free(sb);
}

static void test_memory_bomb(void **state)
{
    sandbox *sb = start_with(*state, 30, 1, (size_t)1 << 30, 0, 0);
    expect_raise(sb, "x = bytearray(1 << 44)", "MemoryError");
#ifndef UNDER_ASAN
    /* Under ASan there is no RLIMIT_AS (see src/child/lockdown.c). */
    expect_raise(sb, "x = b'x' * (1536 << 20)", "MemoryError");
    sandbox_cell cell;
    run(sb, "chunks = []\nwhile True:\n    chunks.append(' ' * 10_000_000)", &cell);
    assert_true(cell.raised);
    assert_true(cell.restarted || strstr(cell.output, "MemoryError"));
    sandbox_cell_clear(&cell);
    run(sb, "chunks = None", &cell);
    sandbox_cell_clear(&cell);
#endif
    expect_output(sb, "print(1 + 1)", "2\n");
    sandbox_free(sb);
}

static void test_names_restored(void **state)
{
    fixture *fx = *state;
    sandbox *sb = start_default(state);
    expect_output(sb,
                  "llm_query = None\ncontext = 'mine'\ndel FINAL\nanswer = 5\n"
                  "SHOW_VARS = print\n__builtins__ = None",
                  "");
    char expect[256];
    snprintf(expect, sizeof expect, "builtin_function_or_method %zu {'content': '', 'ready': False}\n",
             fx->context_len);
    expect_output(sb, "print(type(llm_query).__name__, len(context), answer)", expect);
    expect_output(sb, "FINAL('back')", "");
    /* The values of a still-valid answer dict are kept. */
    expect_output(sb, "answer['content'] = 'partial'", "");
    expect_output(sb, "print(answer['content'])", "partial\n");
    /* Tampering with the import guard is undone after the cell. */
    expect_output(sb, "__builtins__.__import__ = lambda *args, **kwargs: 1", "");
    expect_output(sb, "import json\nprint(json.dumps(1))", "1\n");
    expect_raise(sb, "import os", "not allowed");
    /* The helpers are the model's to rebind (its own `chunks = [...]` is a
     * common name), and the rebinding stands. */
    expect_output(sb, "chunks = ['a', 'b']\ngrep = 3\ndel search", "");
    expect_output(sb, "print(chunks, grep, 'search' in globals(), count_tokens('abcdefg'))",
                  "['a', 'b'] 3 False 2\n");
    expect_output(sb, "context_0 = 'x'\nprint(context_0)", "x\n");
    expect_output(sb, "print(context_0 is context)", "True\n");
    sandbox_free(sb);
}

/* What a cell leaves behind that the request boundaries undo or refuse
 * (docs/sandbox.md): hooks that cannot be removed, the gc walks, the code of
 * library functions, library classes, built-in modules made afresh, module
 * attributes anywhere, signal handlers and limits, keys of the model's own
 * str classes. The model's own functions and classes stay its to change. */
#define SYS "sys = __import__('json').codecs.sys\n"
static void test_request_boundaries(void **state)
{
    sandbox *sb = start_default(state);
    expect_raise(sb, SYS "sys.settrace(print)", "settrace is not available in the sandbox");
    expect_raise(sb, SYS "sys.setprofile(print)", "setprofile is not available in the sandbox");
    expect_raise(sb, SYS "sys.modules['importlib._bootstrap']._builtin_from_name('gc')",
                 "built-in modules cannot be created in the sandbox");
    expect_raise(sb, "import json\njson.JSONEncoder.default = None", "immutable type");
    expect_raise(sb, "import ast\nast.Expr.__setattr__ = None", "immutable type");
    expect_raise(sb, "import json\njson.dumps.__code__ = (lambda: 0).__code__",
                 "not available in the sandbox");
    expect_output(sb,
                  "def f():\n    return 1\nf.__code__ = (lambda: 2).__code__\n"
                  "class A:\n    pass\nA.x = 3\nimport collections\n"
                  "P = collections.namedtuple('P', 'a b', defaults=[1])\nprint(f(), A.x, P(0))",
                  "2 3 P(a=0, b=1)\n");
    /* An audit hook is refused without a word (CPython swallows the
     * refusal); compiling goes on. */
    expect_output(sb, SYS "sys.addaudithook(lambda event, args: 1 / 0)\nprint('asked')",
                  "asked\n");
    expect_output(sb, "print('still compiles')", "still compiles\n");
    expect_output(sb,
                  SYS "sys.modules['traceback'].format_exception = None\n"
                      "sys.modules['re']._compile = None\nsys.setrecursionlimit(60)\n"
                      "signal = sys.modules['_signal']\nsignal.signal(2, signal.SIG_IGN)\n"
                      "old = signal.setitimer(signal.ITIMER_REAL, 30)",
                  "");
    expect_output(sb,
                  SYS "import re\nsignal = sys.modules['_signal']\n"
                      "print(sys.modules['traceback'].format_exception.__name__, "
                      "re.sub('a', 'b', 'a'), sys.getrecursionlimit(), "
                      "signal.getsignal(2).__name__, signal.getitimer(signal.ITIMER_REAL))",
                  "format_exception b 1000 default_int_handler (0.0, 0.0)\n");
    expect_raise(sb, "raise ValueError('formatted')", "ValueError: formatted");
    expect_output(sb, SYS "print('_rlm_glue' in sys.modules)", "False\n");
    /* Keys of a str subclass are dropped after the cell, without a lookup
     * that would run their __eq__ (here: one that ends the process). */
    expect_output(sb,
                  SYS "class K(str):\n    def __hash__(self):\n        return str.__hash__(self)\n"
                      "    def __eq__(self, other):\n        sys.modules['os']._exit(9)\n"
                      "g = globals()\nfor name in ('FINAL', 'llm_query', 'answer'):\n"
                      "    value = g.pop(name)\n    g[K(name)] = value\n"
                      "value.pop('ready')\nvalue[K('ready')] = True\n"
                      "sys.modules.pop('json')\nsys.modules[K('json')] = None\nx = 1",
                  "");
    expect_output(sb,
                  "print([k for k in globals() if type(k) is not str], FINAL.__module__, "
                  "answer, x)",
                  "[] _rlm {'content': '', 'ready': False} 1\n");
    sandbox_free(sb);
}

/* The child's C entry points meet objects whose methods are model code:
 * they hold their references, check exact types, and never call a str
 * subclass's methods (docs/sandbox.md). */
static void test_hostile_objects(void **state)
{
    sandbox *sb = start_default(state);
    expect_output(sb,
                  "class S(str):\n"
                  "    def strip(self, *args):\n        return 12345\n"
                  "    def __repr__(self):\n        raise RuntimeError('repr')\n"
                  "    def __hash__(self):\n        return str.__hash__(self)\n"
                  "    def __eq__(self, other):\n        raise RuntimeError('eq')\n"
                  "class T:\n    def __str__(self):\n        return S('from a subclass')\n"
                  "x = 'the value of x'\nt = T()\nglobals()[S('zz')] = 1",
                  "");
    sandbox_cell cell;
    run(sb, "FINAL_VAR(S(' x '))", &cell);
    assert_string_equal(cell.final_answer, "the value of x");
    sandbox_cell_clear(&cell);
    run(sb, "FINAL(T())", &cell);
    assert_string_equal(cell.final_answer, "from a subclass");
    sandbox_cell_clear(&cell);
    run(sb, "FINAL_VAR(S('nothing here'))", &cell); /* not a literal: the value answers */
    assert_string_equal(cell.final_answer, "nothing here");
    sandbox_cell_clear(&cell);
    run(sb, "answer['content'] = T()\nanswer['ready'] = S('yes')", &cell);
    assert_string_equal(cell.final_answer, "from a subclass");
    sandbox_cell_clear(&cell);
    char *value = NULL, err[256];
    assert_int_equal(sandbox_get_var(sb, "t", &value, NULL, err, sizeof err), 0);
    assert_string_equal(value, "from a subclass");
    free(value);
    expect_output(sb, "globals()[S('zz')] = 1\nprint('zz' in SHOW_VARS(), 'x: str' in SHOW_VARS())",
                  "False True\n");
    expect_raise(sb, "grep('fox', **{S('max_hits'): 1})", "keyword names must be plain str");
    sandbox_free(sb);
}

static void test_get_var(void **state)
{
    sandbox *sb = start_default(state);
    expect_output(sb, "items = [1, 'two']\nclass Odd:\n    def __str__(self):\n"
                      "        raise RuntimeError('no str')\nodd = Odd()",
                  "");
    char *value = NULL, err[256];
    assert_int_equal(sandbox_get_var(sb, "items", &value, NULL, err, sizeof err), 0);
    assert_string_equal(value, "[1, 'two']");
    free(value);
    assert_int_equal(sandbox_get_var(sb, " 'items' ", &value, NULL, err, sizeof err), 0);
    free(value);
    assert_int_equal(sandbox_get_var(sb, "missing", &value, NULL, err, sizeof err), 1);
    assert_non_null(strstr(value, "no variable"));
    free(value);
    assert_int_equal(sandbox_get_var(sb, "odd", &value, NULL, err, sizeof err), 1);
    assert_non_null(strstr(value, "no str"));
    free(value);
    sandbox_free(sb);
}

/* ---- more inputs, host variables ---- */

static int memfd_with(const char *text)
{
    int fd = memfd_create("input", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    return fd;
}

static void add_text_input(sandbox *sb, const char *name, const char *text)
{
    sandbox_input in = {.context_fd = memfd_with(text), .context_len = strlen(text),
                        .data_fd = -1};
    char err[512] = "";
    int rc = sandbox_add_input(sb, name, &in, err, sizeof err);
    if (rc != 0)
        print_message("sandbox_add_input: %s\n", err);
    assert_int_equal(rc, 0);
    close(in.context_fd); /* borrowed: the sandbox has its own */
}

static char pack_root[64];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void put_file(const char *rel, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", pack_root, rel);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A directory of two files as an ingest pack: a dict input. */
static void add_pack_input(sandbox *sb, const char *name)
{
    snprintf(pack_root, sizeof pack_root, "/tmp/rlm-sandbox-pack-XXXXXX");
    assert_non_null(mkdtemp(pack_root));
    put_file("alpha.txt", "first line\nthe needle is here\n");
    put_file("gamma.txt", "caf\xc3\xa9 needle\nno match\n");
    ingest_set *set = NULL;
    char err[512] = "";
    const char *args[] = {pack_root};
    assert_int_equal(ingest_open(args, 1, NULL, &set, err, sizeof err), 0);
    sandbox_input in = {.data_fd = -1, .context_pack = 1};
    assert_int_equal(ingest_pack(set, &in.context_fd, &in.context_len, &in.data_fd, err,
                                 sizeof err), 0);
    int rc = sandbox_add_input(sb, name, &in, err, sizeof err);
    if (rc != 0)
        print_message("sandbox_add_input: %s\n", err);
    assert_int_equal(rc, 0);
    close(in.context_fd);
    if (in.data_fd >= 0)
        close(in.data_fd);
    ingest_free(set);
    nftw(pack_root, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Checks every input is there as loaded, and the helpers work on each. */
static void expect_inputs(sandbox *sb, const fixture *fx)
{
    char expect[128];
    snprintf(expect, sizeof expect, "True %zu\n", fx->context_len);
    expect_output(sb, "print(context_0 is context, len(context_0))", expect);
    expect_output(sb, "print(type(context_1).__name__, ascii(context_1))",
                  "str 'second input: caf\\xe9 au lait\\ngrep me here\\n'\n");
    expect_output(sb, "print(type(context_2).__name__, [k[-9:] for k in context_2])",
                  "dict ['alpha.txt', 'gamma.txt']\n");
    expect_output(sb, "print(ascii(list(context_2.values())[1]))",
                  "'caf\\xe9 needle\\nno match\\n'\n");
    /* grep on context_1: offsets into context_1, which is not ASCII. */
    expect_output(sb, "h = grep('grep me', context=context_1)\n"
                      "print(len(h), h[0]['offset'], context_1[h[0]['offset']:][:7])",
                  "1 27 grep me\n");
    expect_output(sb, "print(len(grep('grep me')), len(grep('grep me', context=context)))",
                  "0 0\n");
    expect_output(sb, "h = grep('needle', context=context_2)\n"
                      "print(len(h), [x['doc'][-9:] for x in h])",
                  "2 ['alpha.txt', 'gamma.txt']\n");
    /* One document of an input: a set of one. */
    expect_output(sb, "d = list(context_2.values())[1]\nh = grep('needle', context=d)\n"
                      "print(len(h), h[0]['doc'], d[h[0]['offset']:])",
                  "1 None needle\nno match\n\n");
    expect_output(sb, "print(chunks(context=context_1) == [context_1], len(chunks(by='docs', "
                      "context=context_2)))",
                  "True 2\n");
    expect_output(sb, "print(sorted(x['doc'][-9:] for x in search('needle', context=context_2)),"
                      " len(search('lait', context=context_1)))",
                  "['alpha.txt', 'gamma.txt'] 1\n");
    expect_output(sb, "print(len(search('fox')) > 0, len(grep('fox', max_hits=3)))", "True 3\n");
}

static void test_add_input(void **state)
{
    fixture *fx = *state;
    sandbox *sb = start_default(state);
    add_text_input(sb, "context_1", "second input: caf\xc3\xa9 au lait\ngrep me here\n");
    add_pack_input(sb, "context_2");
    expect_inputs(sb, fx);
    expect_raise(sb, "grep('x', context='made here')", "one of the inputs");

    /* Protected like context: rebinding lasts one cell. */
    expect_output(sb, "context_1 = 'mine'\ncontext_2 = None\ncontext_0 = 0\nprint(context_1)",
                  "mine\n");
    expect_output(sb, "print(context_1[:6], len(context_2), context_0 is context)",
                  "second 2 True\n");
    /* The inputs are listed with the model's variables: the names are how a
     * model finds them. */
    sandbox_cell cell;
    run(sb, "print(SHOW_VARS())", &cell);
    assert_non_null(strstr(cell.output, "  context_1: str (40 chars)\n"));
    assert_non_null(strstr(cell.output, "  context_2: dict (2 items)\n"));
    assert_non_null(strstr(cell.output, "  h: list (1 items)\n"));
    sandbox_cell_clear(&cell);

    /* Names the host may not bind. */
    char err[512];
    sandbox_input in = {.context_fd = -1, .data_fd = -1};
    assert_int_equal(sandbox_add_input(sb, "context", &in, err, sizeof err), -1);
    assert_int_equal(sandbox_add_input(sb, "context_0", &in, err, sizeof err), -1);
    assert_int_equal(sandbox_add_input(sb, "context_1", &in, err, sizeof err), -1);
    assert_non_null(strstr(err, "already"));
    assert_int_equal(sandbox_add_input(sb, "2nd", &in, err, sizeof err), -1);
    assert_int_equal(sandbox_add_input(sb, "grep", &in, err, sizeof err), -1);
    assert_int_equal(sandbox_add_input(sb, "__builtins__", &in, err, sizeof err), -1);
    assert_int_equal(sandbox_add_input(sb, "a b", &in, err, sizeof err), -1);
    /* An input the child cannot load leaves it working. */
    int fd = memfd_with("abc");
    sandbox_input short_in = {.context_fd = fd, .context_len = 1000, .data_fd = -1};
    int pid = sandbox_pid(sb);
    assert_int_equal(sandbox_add_input(sb, "context_3", &short_in, err, sizeof err), -1);
    assert_non_null(strstr(err, "bytes"));
    close(fd);
    assert_int_equal(sandbox_pid(sb), pid);
    expect_raise(sb, "context_3", "NameError");
    /* No descriptor at all: an empty str. */
    assert_int_equal(sandbox_add_input(sb, "context_3", &in, err, sizeof err), 0);
    expect_output(sb, "print(repr(context_3))", "''\n");
    sandbox_free(sb);
}

/* An ingest pack of one file read as JSON or JSON lines (a file, so the
 * pack is external and the child maps the file itself). rc: what
 * sandbox_add_input returned, or with start set, a sandbox started on it. */
static int json_input(sandbox_factory *factory, sandbox **sb, const char *name, const char *file,
                      const char *text, ingest_format format, char *err, size_t errlen)
{
    snprintf(pack_root, sizeof pack_root, "/tmp/rlm-sandbox-json-XXXXXX");
    assert_non_null(mkdtemp(pack_root));
    put_file(file, text);
    char path[256];
    snprintf(path, sizeof path, "%s/%s", pack_root, file);
    ingest_options opt;
    ingest_options_init(&opt);
    opt.format = format;
    ingest_set *set = NULL;
    const char *args[] = {path};
    assert_int_equal(ingest_open(args, 1, &opt, &set, err, errlen), 0);
    sandbox_input in = {.data_fd = -1, .context_pack = 1, .parsed = 1};
    assert_int_equal(ingest_pack(set, &in.context_fd, &in.context_len, &in.data_fd, err, errlen), 0);
    in.data_len = in.data_fd >= 0 ? ingest_total_bytes(set) : 0;
    int rc;
    if (!*sb) {
        sandbox_options opts = {.exe_path = SANDBOX_EXE, .context_fd = in.context_fd,
                                .context_len = in.context_len, .context_pack = 1,
                                .data_fd = in.data_fd, .data_len = in.data_len, .parsed = 1,
                                .cell_timeout = 30, .factory = factory};
        rc = sandbox_start(&opts, sb, err, errlen);
    } else {
        rc = sandbox_add_input(*sb, name, &in, err, errlen);
    }
    close(in.context_fd);
    if (in.data_fd >= 0)
        close(in.data_fd);
    ingest_free(set);
    nftw(pack_root, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    return rc;
}

/* JSON and JSON lines inputs: parsed in the child into values, summarised
 * for the host; a document that is not JSON is an input error (-2) with its
 * line and column; JSON lines that are not JSON are skipped and listed; the
 * helpers search the JSON text. */
static void test_parsed_inputs(void **state)
{
    fixture *fx = *state;
    char err[512] = "";
    sandbox *sb = NULL;
    int rc = json_input(fx->factory, &sb, NULL, "data.json",
                        "{\"users\": [{\"name\": \"ann\", \"age\": 31},\n {\"name\": \"b\xc3\xb8" "b\"}],"
                        " \"n\": 2}", INGEST_JSON, err, sizeof err);
    if (rc != 0)
        print_message("start: %s\n", err);
    assert_int_equal(rc, 0);
    expect_output(sb, "print(type(context).__name__, context['users'][1]['name'], context['n'] + 1,"
                      " context_0 is context)",
                  "dict b\xc3\xb8" "b 3 True\n");
    expect_output(sb, "h = grep('ann')\nprint(len(h), h[0]['line'], h[0]['doc'])", "1 1 None\n");
    const json_t *summary = sandbox_input_summary(sb, 0);
    assert_non_null(summary);
    assert_string_equal(json_string_value(json_object_get(summary, "type")), "dict");
    assert_int_equal(json_integer_value(json_object_get(summary, "length")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(summary, "keys"), 0)),
                        "users");
    assert_non_null(strstr(json_string_value(json_object_get(summary, "preview")), "'ann'"));

    /* JSON lines: records of any type; a broken line is skipped and named. */
    rc = json_input(NULL, &sb, "context_1", "r.jsonl",
                    "{\"id\": 1, \"tags\": [\"x\"]}\n\n\"text\"\n{broken\n[1, 2]\n{\"id\": 5}",
                    INGEST_JSONL, err, sizeof err);
    if (rc != 0)
        print_message("add: %s\n", err);
    assert_int_equal(rc, 0);
    expect_output(sb, "print(context_1)", "[{'id': 1, 'tags': ['x']}, 'text', [1, 2], {'id': 5}]\n");
    expect_output(sb, "print(grep('id', context=context_1)[1]['line'])", "6\n");
    summary = sandbox_input_summary(sb, 1);
    assert_non_null(summary);
    assert_int_equal(json_integer_value(json_object_get(summary, "skipped")), 1);
    assert_non_null(strstr(json_string_value(json_array_get(json_object_get(summary, "problems"), 0)),
                           "r.jsonl line 4: not valid JSON"));
    assert_string_equal(json_string_value(json_array_get(json_object_get(summary, "first_keys"), 1)),
                        "tags");
    /* Not JSON: refused with -2, the sandbox goes on without it. */
    rc = json_input(NULL, &sb, "context_2", "bad.json", "[1, 2,\n  oops]", INGEST_JSON, err,
                    sizeof err);
    assert_int_equal(rc, -2);
    assert_non_null(strstr(err, "bad.json is not valid JSON: Expecting value at line 2, column 3"));
    expect_raise(sb, "context_2", "NameError");
    expect_output(sb, "print(len(context_1))", "4\n");
    /* A restart parses them again. */
    sandbox_cell cell;
    run(sb, "import json\njson.codecs.sys.modules['os']._exit(3)", &cell);
    assert_true(cell.restarted);
    sandbox_cell_clear(&cell);
    expect_output(sb, "print(context['n'], context_1[3])", "2 {'id': 5}\n");
    sandbox_free(sb);

    /* A first input that is not JSON: no sandbox, -2. */
    sb = NULL;
    rc = json_input(fx->factory, &sb, NULL, "worse.json", "{\"a\": }", INGEST_JSON, err,
                    sizeof err);
    assert_int_equal(rc, -2);
    assert_null(sb);
    assert_non_null(strstr(err, "worse.json is not valid JSON: Expecting value at line 1, column 7"));
}

static void test_set_var(void **state)
{
    sandbox *sb = start_default(state);
    char err[512] = "";
    assert_int_equal(sandbox_set_var(sb, "answer_1", "forty-two \xc3\xa9", err, sizeof err), 0);
    expect_output(sb, "print(type(answer_1).__name__, answer_1)", "str forty-two \xc3\xa9\n");
    /* Not protected: model code may rebind it. */
    expect_output(sb, "answer_1 = 5", "");
    expect_output(sb, "print(answer_1)", "5\n");
    /* Set again: the latest value. */
    assert_int_equal(sandbox_set_var(sb, "answer_1", "again", err, sizeof err), 0);
    assert_int_equal(sandbox_set_var(sb, "answer_2", "", err, sizeof err), 0);
    expect_output(sb, "print(answer_1, repr(answer_2))", "again ''\n");
    assert_int_equal(sandbox_set_var(sb, "context", "x", err, sizeof err), -1);
    assert_int_equal(sandbox_set_var(sb, "answer", "x", err, sizeof err), -1);
    assert_int_equal(sandbox_set_var(sb, "llm_query", "x", err, sizeof err), -1);
    assert_int_equal(sandbox_set_var(sb, "bad-name", "x", err, sizeof err), -1);
    assert_int_equal(sandbox_set_var(sb, "grep", "x", err, sizeof err), -1);
    assert_int_equal(sandbox_set_var(sb, "history", "x", err, sizeof err), -1);
    expect_output(sb, "print(type(llm_query).__name__)", "builtin_function_or_method\n");

    /* A protected JSON value: a conversation's history_0, also `history`. */
    json_t *messages = json_pack("[{s:s,s:s},{s:s,s:s}]", "role", "user", "content", "q\xc3\xa9?",
                                 "role", "assistant", "content", "```repl\nprint(1)\n```");
    assert_int_equal(sandbox_set_value(sb, "history_0", messages, err, sizeof err), 0);
    expect_output(sb, "print(history is history_0, len(history), history[0]['role'], "
                      "ascii(history[0]['content']))",
                  "True 2 user 'q\\xe9?'\n");
    expect_output(sb, "history = None\nhistory_0 = 1", "");
    expect_output(sb, "print(len(history), history_0[1]['role'])", "2 assistant\n");
    /* Set once. */
    assert_int_equal(sandbox_set_value(sb, "history_0", messages, err, sizeof err), -1);
    assert_int_equal(sandbox_set_value(sb, "history_1", messages, err, sizeof err), 0);
    json_t *nested = json_pack("{s:[i,f,b,n,{s:s}]}", "k", 1, 2.5, 1, "x", "y");
    assert_int_equal(sandbox_set_value(sb, "history_2", nested, err, sizeof err), 0);
    expect_output(sb, "print(history_2)", "{'k': [1, 2.5, True, None, {'x': 'y'}]}\n");
    json_decref(nested);
    /* A restarted child gets them back. */
    sandbox_cell cell;
    run(sb, "import json\njson.codecs.sys.modules['os']._exit(3)", &cell);
    assert_true(cell.restarted);
    sandbox_cell_clear(&cell);
    expect_output(sb, "print(history[0]['role'], len(history_1), answer_1, answer_2 == '')",
                  "user 2 again True\n");
    json_decref(messages);
    sandbox_free(sb);
}

/* A restarted child gets every input and every host variable back. */
static void test_inputs_survive_restart(void **state)
{
    fixture *fx = *state;
    sandbox *sb = start_with(fx, 5, 0.5, 0, 0, 0);
    add_text_input(sb, "context_1", "second input: caf\xc3\xa9 au lait\ngrep me here\n");
    add_pack_input(sb, "context_2");
    char err[512] = "";
    assert_int_equal(sandbox_set_var(sb, "answer_1", "kept", err, sizeof err), 0);
    expect_output(sb, "mine = 1\nh = grep('grep me', context=context_1)", "");
    int pid = sandbox_pid(sb);
    sandbox_cell cell;
    run(sb, "__import__('json').codecs.sys.modules['os']._exit(7)", &cell);
    assert_true(cell.restarted);
    assert_non_null(strstr(cell.output, "exited with status 7"));
    assert_non_null(strstr(cell.output, "`context_1`, `context_2`, `answer_1`"));
    sandbox_cell_clear(&cell);
    assert_true(sandbox_pid(sb) != pid);
    expect_raise(sb, "mine", "NameError");
    expect_output(sb, "print(answer_1)", "kept\n");
    expect_inputs(sb, fx);

    /* The timeout path too: SIGKILL and a fresh child. */
    run(sb, "import collections, itertools\ncollections.deque(itertools.count(), maxlen=0)",
        &cell);
    assert_true(cell.restarted);
    assert_true(cell.timed_out);
    sandbox_cell_clear(&cell);
    expect_output(sb, "print(answer_1, len(context_2), context_1[:6])", "kept 2 second\n");
    /* A later input after the restarts goes on the list too. */
    add_text_input(sb, "context_3", "fourth");
    expect_output(sb, "print(context_3)", "fourth\n");
    sandbox_free(sb);
}

/* ---- cancel ---- */

typedef struct canceller {
    atomic_int flag;
    double after;
} canceller;

static void *cancel_later(void *arg)
{
    canceller *c = arg;
    usleep((useconds_t)(c->after * 1e6));
    c->flag = 1;
    return NULL;
}

static void test_cancel(void **state)
{
    fixture *fx = *state;
    canceller c = {.after = 0.3};
    sandbox_options opts = {.exe_path = SANDBOX_EXE, .context_fd = fx->context_fd,
                            .context_len = fx->context_len, .data_fd = -1,
                            .cell_timeout = 30, .kill_grace = 0.5, .cancel = &c.flag};
    sandbox *sb = NULL;
    char err[512] = "";
    assert_int_equal(sandbox_start(&opts, &sb, err, sizeof err), 0);
    int pid = sandbox_pid(sb);
    expect_output(sb, "kept = 'yes'", "");

    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, cancel_later, &c), 0);
    sandbox_cell cell;
    run(sb, "while True:\n    pass", &cell);
    pthread_join(thread, NULL);
    if (!cell.cancelled)
        print_message("output: %s\n", cell.output);
    assert_true(cell.cancelled);
    assert_true(cell.raised);
    assert_false(cell.timed_out);
    assert_false(cell.restarted);
    assert_true(cell.seconds < 5);
    assert_non_null(strstr(cell.output, "cancelled by the user"));
    assert_null(strstr(cell.output, "TimeoutError"));
    assert_null(strstr(cell.output, "KeyboardInterrupt"));
    sandbox_cell_clear(&cell);

    /* Set before the cell: nothing runs. */
    run(sb, "kept = 'no'", &cell);
    assert_true(cell.cancelled);
    sandbox_cell_clear(&cell);
    c.flag = 0;
    expect_output(sb, "print(kept)", "yes\n");
    assert_int_equal(sandbox_pid(sb), pid);

    /* Code that ignores the interrupt is killed after the grace. */
    assert_int_equal(pthread_create(&thread, NULL, cancel_later, &c), 0);
    run(sb, "import collections, itertools\ncollections.deque(itertools.count(), maxlen=0)",
        &cell);
    pthread_join(thread, NULL);
    assert_true(cell.cancelled);
    assert_true(cell.restarted);
    assert_false(cell.timed_out);
    assert_non_null(strstr(cell.output, "cancelled by the user"));
    sandbox_cell_clear(&cell);
    c.flag = 0;
    expect_output(sb, "print('works')", "works\n");
    /* A cancel between cells does not hit the next one. */
    kill(sandbox_pid(sb), SIGUSR1);
    usleep(50000);
    expect_output(sb, "print('still')", "still\n");
    sandbox_free(sb);
}

/* ---- life cycle ---- */

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* ---- the search-index service (fd 6) ---- */

static sandbox *start_cached(const fixture *fx, int context_fd, size_t context_len,
                             const char *dir, double timeout)
{
    sandbox_options opts = {.exe_path = SANDBOX_EXE, .context_fd = context_fd,
                            .context_len = context_len, .data_fd = -1,
                            .search_cache_dir = dir, .cell_timeout = timeout, .kill_grace = 2,
                            .factory = fx->factory};
    sandbox *sb = NULL;
    char err[512] = "";
    if (sandbox_start(&opts, &sb, err, sizeof err) != 0)
        print_message("sandbox_start: %s\n", err);
    assert_non_null(sb);
    return sb;
}

/* Names of the files in dir, and whether any holds `marker`. */
static size_t cache_files(const char *dir, const char *marker, int *marked)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    *marked = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        n++;
        assert_int_equal(strncmp(e->d_name, "bm25-", 5), 0);
        assert_non_null(strstr(e->d_name, ".idx"));
        assert_null(strstr(e->d_name, ".tmp"));
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        static char block[1 << 16];
        size_t got;
        while ((got = fread(block, 1, sizeof block, f)) > 0)
            *marked |= memmem(block, got, marker, strlen(marker)) != NULL;
        fclose(f);
    }
    closedir(d);
    return n;
}

/* The child only asks: the host builds the index of the first input from
 * its own copy and hands over a read-only descriptor; a request for
 * another key gets nothing, and bytes the child sends to be stored end the
 * service without reaching a file. A later sandbox finds the stored index. */
static void test_search_cache_service(void **state)
{
    fixture *fx = *state;
    char dir[] = "/tmp/rlm-sandbox-cache-XXXXXX";
    assert_non_null(mkdtemp(dir));
    sandbox *sb = start_cached(fx, fx->context_fd, fx->context_len, dir, 30);
    expect_output(sb, "r = search('fox')\nprint(len(r), 'fox' in r[0]['text'])", "10 True\n");
    int marked;
    assert_int_equal(cache_files(dir, "POISON", &marked), 1);
    expect_output(sb,
                  "os = __import__('json').codecs.sys.modules['os']\n"
                  "os.write(6, b'L' + b'0' * 32)\n"
                  "print(os.read(6, 1))\n"
                  "os.write(6, b'S' + b'0' * 32 + b'POISON' * 100000)\n"
                  "print(os.read(6, 1))\n",
                  "b'\\x00'\nb''\n");
    expect_output(sb, "print(len(search('brown fox')))", "10\n");
    assert_int_equal(cache_files(dir, "POISON", &marked), 1);
    assert_false(marked);
    sandbox_free(sb);

    struct stat before, after;
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[512] = "";
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    closedir(d);
    assert_int_equal(stat(path, &before), 0);
    sb = start_cached(fx, fx->context_fd, fx->context_len, dir, 30);
    expect_output(sb, "print(len(search('quick')))", "10\n");
    /* a request cut short: freeing the sandbox does not wait on it */
    expect_output(sb, "os = __import__('json').codecs.sys.modules['os']\nos.write(6, b'L')",
                  "1\n");
    sandbox_free(sb);
    assert_int_equal(stat(path, &after), 0);
    assert_true(before.st_ino == after.st_ino && before.st_mtime == after.st_mtime);
    unlink(path);
    assert_int_equal(rmdir(dir), 0);
}

/* A cell interrupted while the host builds the index: a TimeoutError, not
 * a killed child, and the index arrives for a later search(). */
static void test_search_cache_interrupted(void **state)
{
    fixture *fx = *state;
    char dir[] = "/tmp/rlm-sandbox-cache-XXXXXX";
    assert_non_null(mkdtemp(dir));
    size_t len = (size_t)48 << 20;
    int fd = memfd_create("big", MFD_CLOEXEC);
    assert_int_equal(ftruncate(fd, (off_t)len), 0);
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(p != MAP_FAILED);
    for (size_t i = 0, n = 0; i + 16 < len; n++)
        i += (size_t)snprintf(p + i, 17, "w%zu %s", n % 100000, n % 9 ? "x\n" : "y ");
    memset(p + len - 16, ' ', 16);
    munmap(p, len);
    sandbox *sb = start_cached(fx, fd, len, dir, 0.05);
    int done = 0, timeouts = 0;
    for (int i = 0; i < 400 && !done; i++) {
        sandbox_cell cell;
        run(sb, "print(len(search('w77')))", &cell);
        if (cell.restarted)
            print_message("cell %d: %s\n", i, cell.output);
        assert_false(cell.restarted);
        if (cell.timed_out)
            timeouts++;
        else
            done = strcmp(cell.output, "10\n") == 0;
        if (!cell.timed_out && !done)
            print_message("output: %s\n", cell.output);
        sandbox_cell_clear(&cell);
    }
    assert_true(done);
    assert_true(timeouts > 0);
    sandbox_free(sb);
    close(fd);
    int marked;
    assert_int_equal(cache_files(dir, "POISON", &marked), 1);
    assert_int_equal(nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS), 0);
}

static void test_start_errors(void **state)
{
    (void)state;
    sandbox_options opts = {.exe_path = "/nonexistent/rlm-sandbox", .context_fd = -1};
    sandbox *sb = NULL;
    char err[512] = "";
    assert_int_equal(sandbox_start(&opts, &sb, err, sizeof err), -1);
    assert_null(sb);
    assert_non_null(strstr(err, "No such file"));
    /* A program that is not the sandbox dies during start-up. */
    opts.exe_path = "/bin/true";
    assert_int_equal(sandbox_start(&opts, &sb, err, sizeof err), -1);
    assert_non_null(strstr(err, "start-up"));
    /* A context fd holding fewer bytes than announced. */
    int fd = memfd_create("short", MFD_CLOEXEC);
    assert_int_equal(write(fd, "abc", 3), 3);
    opts.exe_path = SANDBOX_EXE;
    opts.context_fd = fd;
    opts.context_len = 1000;
    assert_int_equal(sandbox_start(&opts, &sb, err, sizeof err), -1);
    assert_non_null(strstr(err, "context"));
    close(fd);
}

/* The child reads every input as a pack: raw bytes on fd 4 (an init frame
 * without context_format: "pack") are refused, with the reason on the
 * channel. The host's sandbox layer turns raw bytes into a pack itself. */
static void test_child_takes_only_packs(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int text = memfd_create("raw", 0);
    assert_int_equal(write(text, "raw bytes", 9), 9);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        /* Above the fds we hand over first, so the dup2s cannot collide. */
        int chan = fcntl(sv[1], F_DUPFD, 10), ctx = fcntl(text, F_DUPFD, 10);
        if (null < 0 || chan < 0 || ctx < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 ||
            dup2(chan, 3) < 0 || dup2(ctx, 4) < 0 || dup2(null, 5) < 0 || dup2(null, 6) < 0)
            _exit(99);
        execl(SANDBOX_EXE, SANDBOX_EXE, (char *)NULL);
        _exit(98);
    }
    close(sv[1]);
    close(text);
    char err[256];
    json_t *init = json_pack("{s:s, s:i, s:b, s:i, s:i, s:i}", "type", "init", "version", 2,
                             "has_context", 1, "context_len", 9, "output_limit", 1000,
                             "memory_limit", 0);
    assert_int_equal(frame_write(sv[0], init, 1 << 20, err, sizeof err), 0);
    json_decref(init);
    json_t *reply = NULL;
    assert_int_equal(frame_read(sv[0], 1 << 20, &reply, err, sizeof err), FRAME_READY);
    assert_string_equal(json_string_value(json_object_get(reply, "type")), "error");
    assert_non_null(strstr(json_string_value(json_object_get(reply, "message")), "not a context pack"));
    json_decref(reply);
    close(sv[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 3);
}

static void test_no_leaks_no_zombies(void **state)
{
    int before = count_fds();
    sandbox *sb = start_default(state);
    int pid = sandbox_pid(sb);
    sandbox_cell cell;
    run(sb, "print(1)", &cell);
    sandbox_cell_clear(&cell);
    /* The duplicates kept for restarts go with the sandbox. */
    add_text_input(sb, "context_2", "more");
    char err[256];
    assert_int_equal(sandbox_set_var(sb, "answer_1", "a", err, sizeof err), 0);
    sandbox_free(sb);
    assert_int_equal(count_fds(), before);
    assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
    sandbox_free(NULL);
}

static void test_orphan_exits(void **state)
{
    /* If the host dies mid-cell, the child must not spin on as an orphan. We
     * become a subreaper so the orphan is ours to wait for. */
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t host = fork();
    assert_true(host >= 0);
    if (host == 0) {
        close(pipefd[0]);
        sandbox *sb = start_default(state);
        int pid = sandbox_pid(sb);
        if (write(pipefd[1], &pid, sizeof pid) != sizeof pid)
            _exit(1);
        alarm(1); /* the "host" dies during the cell */
        sandbox_cell cell;
        char err[256];
        sandbox_exec(sb, "while True:\n    pass", NULL, NULL, &cell, err, sizeof err);
        _exit(2);
    }
    close(pipefd[1]);
    int child = -1;
    assert_int_equal(read(pipefd[0], &child, sizeof child), (ssize_t)sizeof child);
    close(pipefd[0]);
    int status;
    assert_int_equal(waitpid(host, &status, 0), host);
    assert_true(WIFSIGNALED(status));
    /* Bounded wait for the orphan: it exits as soon as it sees the hang-up. */
    pid_t got = 0;
    for (int i = 0; i < 500 && got == 0; i++) {
        got = waitpid(child, &status, WNOHANG);
        if (got == 0)
            usleep(10000);
    }
    if (got == 0) {
        kill(child, SIGKILL);
        waitpid(child, &status, 0);
    }
    assert_int_equal(got, child);
    prctl(PR_SET_CHILD_SUBREAPER, 0);
}

/* ---- the factory ---- */

/* A field of /proc/PID/smaps_rollup ("Rss", "Pss", "Shared_Dirty") in kB. */
static long smaps_kb(int pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    long kb = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            kb = strtol(line + n + 1, NULL, 10);
    fclose(f);
    assert_true(kb >= 0);
    return kb;
}

/* The parent pid and state of process pid, from /proc/PID/stat; 0 when the
 * process is gone. */
static int proc_parent(int pid, char *state)
{
    char path[64], text[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char *close_paren = strrchr(text, ')');
    int ppid = 0;
    if (!close_paren || sscanf(close_paren + 2, "%c %d", state, &ppid) != 2)
        return 0;
    return ppid;
}

/* Threads of process pid, by /proc/PID/task. */
static int count_threads(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Our children, by /proc: how many there are, and how many are zombies. */
static int count_children(int *zombies)
{
    DIR *d = opendir("/proc");
    assert_non_null(d);
    int n = 0;
    *zombies = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        char state = '?';
        if (*end != '\0' || pid <= 0 || proc_parent((int)pid, &state) != getpid())
            continue;
        n++;
        *zombies += state == 'Z';
    }
    closedir(d);
    return n;
}

/* A forked child has the layers, the Python and the namespaces a spawned one
 * has; it is our child; its memory is the zygote's until it writes to it;
 * and its random module is seeded anew. */
static void test_factory_child_like_spawned(void **state)
{
    fixture *fx = *state;
    fixture spawned = {.context_fd = fx->context_fd, .context_len = fx->context_len};
    sandbox *a = start_with(&spawned, 30, 1, 0, 0, 0);
    sandbox *b = start_default(state);
    sandbox *c = start_default(state);
    assert_string_equal(sandbox_layers(b), sandbox_layers(a));
    assert_string_equal(sandbox_layers_json(b), sandbox_layers_json(a));
    assert_string_equal(sandbox_warnings(b), sandbox_warnings(a));
    assert_string_equal(sandbox_python_version(b), sandbox_python_version(a));
    print_message("forked child layers: %s\n", sandbox_layers(b));
    char state_char;
    assert_int_equal(proc_parent(sandbox_pid(b), &state_char), getpid());
    /* Its threads too (the watchdog, the allocator's helper): a fork copies
     * only the forking thread, so it starts its own. */
    assert_int_equal(count_threads(sandbox_pid(b)), count_threads(sandbox_pid(a)));
    if (strstr(sandbox_layers(b), "pid)")) {
        /* Alone in its PID namespace: process 1, no parent in sight. */
        expect_output(b, "os = __import__('json').codecs.sys.modules['os']\n"
                         "print(os.getpid(), os.getppid())",
                      "1 0\n");
    }
    /* Each child draws its own random numbers (CPython reseeds after fork). */
    sandbox_cell x, y;
    run(b, "import random\nprint(random.getrandbits(64))", &x);
    run(c, "import random\nprint(random.getrandbits(64))", &y);
    assert_string_not_equal(x.output, y.output);
    sandbox_cell_clear(&x);
    sandbox_cell_clear(&y);
    /* Pages it has not written are the zygote's (copy-on-write); a spawned
     * child shares no dirty page with anyone. */
    long shared_forked = smaps_kb(sandbox_pid(b), "Shared_Dirty");
    long shared_spawned = smaps_kb(sandbox_pid(a), "Shared_Dirty");
    print_message("Shared_Dirty: forked %ld kB, spawned %ld kB; Pss forked %ld kB of Rss %ld kB\n",
                  shared_forked, shared_spawned, smaps_kb(sandbox_pid(b), "Pss"),
                  smaps_kb(sandbox_pid(b), "Rss"));
    assert_true(shared_forked > 4096);
    assert_true(shared_forked > 4 * shared_spawned);
    sandbox_free(a);
    sandbox_free(b);
    sandbox_free(c);
}

typedef struct starter {
    const fixture *fx;
    int index;
    sandbox *sb[4];
} starter;

static void *start_four(void *arg)
{
    starter *st = arg;
    for (int i = 0; i < 4; i++) {
        st->sb[i] = start_with(st->fx, 30, 1, 0, 0, 0);
        char code[64], expect[64];
        snprintf(code, sizeof code, "mine = %d\nprint(mine, len(context))", st->index * 4 + i);
        snprintf(expect, sizeof expect, "%d %zu\n", st->index * 4 + i, st->fx->context_len);
        expect_output(st->sb[i], code, expect);
    }
    return NULL;
}

/* Sixteen children from four threads at once: all forked, all distinct,
 * all working, and all reaped once freed. */
static void test_factory_concurrent_starts(void **state)
{
    fixture *fx = *state;
    int children_before, zombies;
    children_before = count_children(&zombies);
    starter st[4];
    pthread_t threads[4];
    for (int t = 0; t < 4; t++) {
        st[t] = (starter){.fx = fx, .index = t};
        assert_int_equal(pthread_create(&threads[t], NULL, start_four, &st[t]), 0);
    }
    for (int t = 0; t < 4; t++)
        pthread_join(threads[t], NULL);
    int pids[16];
    for (int k = 0; k < 16; k++) {
        sandbox *sb = st[k / 4].sb[k % 4];
        pids[k] = sandbox_pid(sb);
        assert_true(sandbox_forked(sb));
        for (int j = 0; j < k; j++)
            assert_true(pids[j] != pids[k]);
        char expect[32];
        snprintf(expect, sizeof expect, "%d\n", k);
        expect_output(sb, "print(mine)", expect); /* its own namespace */
    }
    assert_int_equal(count_children(&zombies), children_before + 16);
    for (int k = 0; k < 16; k++)
        sandbox_free(st[k / 4].sb[k % 4]);
    assert_int_equal(count_children(&zombies), children_before);
    assert_int_equal(zombies, 0);
    for (int k = 0; k < 16; k++)
        assert_int_equal(kill(pids[k], 0), -1);
}

/* Kills the sandbox's process: the next cell finds it gone and restarts it.
 * Returns that cell's output (malloc'd). */
static char *kill_and_run(sandbox *sb)
{
    kill(sandbox_pid(sb), SIGKILL);
    sandbox_cell cell;
    run(sb, "print('again')", &cell);
    assert_true(cell.restarted);
    char *output = cell.output;
    cell.output = NULL;
    sandbox_cell_clear(&cell);
    return output;
}

/* A dead zygote: the factory fails for good and children are spawned. */
static void test_factory_zygote_killed(void **state)
{
    fixture *fx = *state;
    fixture own = {.context_fd = fx->context_fd, .context_len = fx->context_len,
                   .factory = new_factory(0)};
    sandbox *forked = start_with(&own, 30, 1, 0, 0, 0);
    int zygote = sandbox_factory_pid(own.factory);
    assert_int_equal(kill(zygote, SIGKILL), 0);
    sandbox_options opts = {.exe_path = SANDBOX_EXE, .context_fd = fx->context_fd,
                            .context_len = fx->context_len, .data_fd = -1,
                            .factory = own.factory};
    sandbox *spawned = NULL;
    char err[512];
    assert_int_equal(sandbox_start(&opts, &spawned, err, sizeof err), 0);
    assert_false(sandbox_forked(spawned));
    assert_int_equal(sandbox_factory_pid(own.factory), -1); /* reaped */
    assert_string_equal(sandbox_layers(spawned), sandbox_layers(forked));
    char expect[32];
    snprintf(expect, sizeof expect, "%zu\n", fx->context_len);
    expect_output(spawned, "print(len(context))", expect);
    /* The forked child lives on, and its restart is a spawn. */
    expect_output(forked, "print(len(context))", expect);
    free(kill_and_run(forked));
    assert_false(sandbox_forked(forked));
    expect_output(forked, "print(len(context))", expect);
    sandbox_free(forked);
    sandbox_free(spawned);
    sandbox_factory_free(own.factory);

    /* Killed before its first fork (still starting Python): the same. */
    own.factory = new_factory(0);
    kill(sandbox_factory_pid(own.factory), SIGKILL);
    opts.factory = own.factory;
    assert_int_equal(sandbox_start(&opts, &spawned, err, sizeof err), 0);
    assert_false(sandbox_forked(spawned));
    expect_output(spawned, "print(len(context))", expect);
    sandbox_free(spawned);
    sandbox_factory_free(own.factory);
    sandbox_factory_free(NULL);
}

/* A conversation's factory holds its inputs: a sandbox started with
 * factory_inputs is forked with them in memory already (context and
 * context_1), and so is its restart; the data one question leaves goes to
 * the next question's sandbox as a snapshot, shared references and all, and
 * comes back after a restart; with the zygote gone, sandboxes are spawned and
 * load the inputs and the snapshot themselves; a flawed snapshot is refused
 * whole. */
static void test_factory_inputs(void **state)
{
    fixture *fx = *state;
    sandbox_factory *f = new_factory(0);
    char err[512] = "", expect[96];
    sandbox_input first = {.context_fd = fx->context_fd, .context_len = fx->context_len,
                           .data_fd = -1};
    int second_fd = memfd_with("the second input");
    sandbox_input second = {.context_fd = second_fd, .context_len = 16, .data_fd = -1};
    assert_int_equal(sandbox_factory_add_input(f, NULL, &first, err, sizeof err), 0);
    assert_int_equal(sandbox_factory_add_input(f, "context_1", &second, err, sizeof err), 0);
    close(second_fd);
    sandbox_options opts = {.exe_path = SANDBOX_EXE, .context_fd = -1, .data_fd = -1,
                            .factory = f, .factory_inputs = 1};
    sandbox *sb = NULL;
    int rc = sandbox_start(&opts, &sb, err, sizeof err);
    if (rc != 0)
        print_message("sandbox_start: %s\n", err);
    assert_int_equal(rc, 0);
    assert_true(sandbox_forked(sb));
    snprintf(expect, sizeof expect, "%zu True the second input\n", fx->context_len);
    const char *show = "print(len(context), context_0 is context, context_1)";
    expect_output(sb, show, expect);
    free(kill_and_run(sb));
    assert_true(sandbox_forked(sb));
    expect_output(sb, show, expect);

    expect_output(sb, "data = {'k': [1, 2]}\nshared = [data, data]\ndef f():\n    pass", "");
    sandbox_snapshot snap;
    assert_int_equal(sandbox_take_snapshot(sb, 1 << 20, &snap, err, sizeof err), 0);
    assert_int_equal(snap.variables, 2);
    assert_true(snap.fd >= 0 && snap.len > 16);
    char *listed = json_dumps(snap.not_carried, JSON_COMPACT);
    assert_string_equal(listed, "[{\"reason\":\"not_data\",\"count\":1,\"names\":[\"f\"]}]");
    free(listed);
    sandbox_free(sb);

    assert_int_equal(sandbox_start(&opts, &sb, err, sizeof err), 0);
    size_t variables = 0;
    assert_int_equal(sandbox_load_snapshot(sb, snap.fd, snap.len, &variables, err, sizeof err), 0);
    assert_int_equal(variables, 2);
    const char *carried = "print(data, shared[0] is shared[1] is data, 'f' in globals())";
    expect_output(sb, carried, "{'k': [1, 2]} True False\n");
    char *restarted = kill_and_run(sb);
    assert_non_null(strstr(restarted, "the data of earlier questions"));
    free(restarted);
    expect_output(sb, carried, "{'k': [1, 2]} True False\n");
    sandbox_free(sb);

    kill(sandbox_factory_pid(f), SIGKILL);
    assert_int_equal(sandbox_start(&opts, &sb, err, sizeof err), 0);
    assert_false(sandbox_forked(sb));
    expect_output(sb, show, expect);
    assert_int_equal(sandbox_load_snapshot(sb, snap.fd, snap.len, NULL, err, sizeof err), 0);
    expect_output(sb, carried, "{'k': [1, 2]} True False\n");
    sandbox_free(sb);

    assert_int_equal(sandbox_start(&opts, &sb, err, sizeof err), 0);
    int bad = memfd_with("RLMSNAP\x01 and then nonsense");
    assert_int_equal(sandbox_load_snapshot(sb, bad, 26, &variables, err, sizeof err), 1);
    assert_non_null(strstr(err, "invalid snapshot"));
    assert_int_equal(variables, 0);
    close(bad);
    expect_output(sb, "print('data' in globals())", "False\n");
    sandbox_free(sb);
    sandbox_snapshot_clear(&snap);
    sandbox_factory_free(f);
}

/* Freeing the factory kills the zygote only: its children work on, and
 * restart by spawning. */
static void test_factory_freed_first(void **state)
{
    fixture *fx = *state;
    fixture own = {.context_fd = fx->context_fd, .context_len = fx->context_len,
                   .factory = new_factory(0)};
    sandbox *a = start_with(&own, 30, 1, 0, 0, 0);
    sandbox *b = start_with(&own, 30, 1, 0, 0, 0);
    int zygote = sandbox_factory_pid(own.factory);
    sandbox_factory_free(own.factory);
    assert_int_equal(kill(zygote, 0), -1); /* killed and reaped */
    expect_output(a, "x = 'a'\nprint(x)", "a\n");
    expect_output(b, "print(len(context) > 0)", "True\n");
    kill(sandbox_pid(b), SIGKILL);
    sandbox_cell cell;
    run(b, "print('back')", &cell);
    assert_true(cell.restarted);
    sandbox_cell_clear(&cell);
    assert_false(sandbox_forked(b));
    expect_output(b, "print('back')", "back\n");
    expect_output(a, "print(x)", "a\n");
    sandbox_free(a);
    sandbox_free(b);
}

/* A factory without namespaces forks children without them, and says so; a
 * child that asks for namespaces is spawned with them instead. */
static void test_factory_without_namespaces(void **state)
{
    fixture *fx = *state;
    sandbox_factory *f = new_factory(1);
    sandbox_options opts = {.exe_path = SANDBOX_EXE, .context_fd = fx->context_fd,
                            .context_len = fx->context_len, .data_fd = -1,
                            .no_namespaces = 1, .factory = f};
    sandbox *plain = NULL, *isolated = NULL;
    char err[512];
    assert_int_equal(sandbox_start(&opts, &plain, err, sizeof err), 0);
    assert_true(sandbox_forked(plain));
    assert_non_null(strstr(sandbox_layers(plain), "(without: namespaces)"));
    assert_non_null(strstr(sandbox_warnings(plain), "namespaces: switched off"));
    expect_output(plain, "os = __import__('json').codecs.sys.modules['os']\n"
                         "print(os.getpid() != 1)",
                  "True\n");
    expect_raise(plain, "open('/etc/passwd')", "PermissionError");
    opts.no_namespaces = 0;
    assert_int_equal(sandbox_start(&opts, &isolated, err, sizeof err), 0);
    assert_false(sandbox_forked(isolated));
    assert_null(strstr(sandbox_layers(isolated), "without: namespaces"));
    sandbox_free(plain);
    sandbox_free(isolated);
    sandbox_factory_free(f);

    opts.exe_path = "/nonexistent/rlm-sandbox";
    assert_int_equal(sandbox_factory_new(&opts, &f, err, sizeof err), -1);
    assert_null(f);
    assert_non_null(strstr(err, "No such file"));
}

int main(void)
{
    signal(SIGPIPE, SIG_DFL); /* the host must not depend on ignoring it */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_print_and_namespace),
        cmocka_unit_test(test_helpers_from_policy),
        cmocka_unit_test(test_last_expression_display),
        cmocka_unit_test(test_exception_traceback),
        cmocka_unit_test(test_final_forms),
        cmocka_unit_test(test_context_loaded),
        cmocka_unit_test(test_show_vars),
        cmocka_unit_test(test_llm_query),
        cmocka_unit_test(test_nul_bytes),
        cmocka_unit_test(test_llm_query_batched),
        cmocka_unit_test(test_llm_query_batched_raw),
        cmocka_unit_test(test_llm_query_batched_streamed),
        cmocka_unit_test(test_streamed_protocol_violations),
        cmocka_unit_test(test_rlm_query),
        cmocka_unit_test(test_callback_stop),
        cmocka_unit_test(test_sigint_during_subcall),
        cmocka_unit_test(test_imports),
        cmocka_unit_test(test_lockdown),
        cmocka_unit_test(test_infinite_loop_timeout),
        cmocka_unit_test(test_uninterruptible_hang),
        cmocka_unit_test(test_child_killed),
        cmocka_unit_test(test_protocol_violations),
        cmocka_unit_test(test_output_bounded),
        cmocka_unit_test(test_memory_bomb),
        cmocka_unit_test(test_names_restored),
        cmocka_unit_test(test_request_boundaries),
        cmocka_unit_test(test_hostile_objects),
        cmocka_unit_test(test_get_var),
        cmocka_unit_test(test_add_input),
        cmocka_unit_test(test_search_cache_service),
        cmocka_unit_test(test_search_cache_interrupted),
        cmocka_unit_test(test_set_var),
        cmocka_unit_test(test_parsed_inputs),
        cmocka_unit_test(test_inputs_survive_restart),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_start_errors),
        cmocka_unit_test(test_child_takes_only_packs),
        cmocka_unit_test(test_no_leaks_no_zombies),
        cmocka_unit_test(test_orphan_exits),
    };
    const struct CMUnitTest factory_tests[] = {
        cmocka_unit_test(test_factory_child_like_spawned),
        cmocka_unit_test(test_factory_concurrent_starts),
        cmocka_unit_test(test_factory_zygote_killed),
        cmocka_unit_test(test_factory_inputs),
        cmocka_unit_test(test_factory_freed_first),
        cmocka_unit_test(test_factory_without_namespaces),
    };
    int failed = cmocka_run_group_tests_name("spawned children", tests, setup, teardown);
    failed += cmocka_run_group_tests_name("children forked by a factory", tests, setup_forked,
                                          teardown);
    failed += cmocka_run_group_tests_name("the factory", factory_tests, setup_forked, teardown);
    return failed;
}

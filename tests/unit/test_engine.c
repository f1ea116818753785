/* test_engine — the RLM loop in process, with nothing faked but the model:
 * engine_run over the real call path (calls, the dispatcher, HTTP) to the
 * fake server, and a real rlm-sandbox. Model replies are data (fakelm rules
 * matched on the turn's message). Each case pins one path of the turn state
 * machine (docs/internals/engine.md): code then FINAL_VAR, a failing cell fed
 * back, a reply with no code nudged, the iteration limit's last request, a
 * budget that stops the run, and sub-calls answered in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "budget.h"
#include "calls.h"
#include "ingest.h"
#include "engine.h"
#include "fakelm_spawn.h"
#include "lm.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FAKELM RLM_BUILD_DIR "/fakelm"
#define SANDBOX_EXE RLM_BUILD_DIR "/rlm-sandbox"

typedef struct fixture {
    char dir[64];
    pid_t server_pid;
    char base[128];
    lm *model;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/rlm-test-engine-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->server_pid > 0) {
        kill(f->server_pid, SIGTERM);
        waitpid(f->server_pid, NULL, 0);
    }
    lm_free(f->model);
    const char *names[] = {"script.json", "port", "fakelm.stderr"};
    char path[128];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", f->dir, names[i]);
        unlink(path);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Starts fakelm with the rules and a dispatcher pointed at it. */
static void serve(fixture *f, const char *rules)
{
    char script[128], port_path[128], log_path[128];
    snprintf(script, sizeof script, "%s/script.json", f->dir);
    snprintf(port_path, sizeof port_path, "%s/port", f->dir);
    snprintf(log_path, sizeof log_path, "%s/fakelm.stderr", f->dir);
    FILE *s = fopen(script, "w");
    assert_non_null(s);
    fprintf(s, "{\"rules\": %s}", rules);
    fclose(s);
    const char *argv[] = {FAKELM, "--script", script, "--port", "0", "--port-file", port_path, NULL};
    int port;
    f->server_pid = fakelm_spawn(argv, port_path, log_path, &port);
    snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d/v1", port);
    char err[256] = "";
    lm_options lo = {.base_url = f->base, .concurrency = 8, .timeout = 60, .max_retries = -1};
    f->model = lm_new(&lo, err, sizeof err);
    if (!f->model)
        fail_msg("lm_new: %s", err);
}

static engine_params params(int max_iterations)
{
    engine_params p = {.model = "fake-root", .sub_model = "fake-sub",
                       .max_iterations = max_iterations, .output_limit = 20000,
                       .cell_timeout = 60, .sandbox_exe = SANDBOX_EXE,
                       .mode = ENGINE_MODE_RLM, .compact_at = 1.0};
    return p;
}

/* One question over the text `input` with these budget limits. */
static void run(fixture *f, const engine_params *p, budget_limits limits, const char *input,
                const char *question, engine_outcome *out)
{
    calls_options o = {.root_lm = f->model, .root_base_url = f->base, .limits = limits};
    calls *c = NULL;
    char err[256] = "";
    if (calls_new(&o, &c, err, sizeof err) != 0)
        fail_msg("calls_new: %s", err);
    engine_params with = *p;
    assert_int_equal(ingest_open_text(input, strlen(input), &with.docs, err, sizeof err), 0);
    engine_run(&with, c, NULL, question, NULL, NULL, out);
    ingest_free(with.docs);
    calls_free(c);
}

static void expect_answer(const engine_outcome *out, const char *answer, const char *how)
{
    if (out->status != RLM_OK)
        fail_msg("status %d: %s", (int)out->status, out->error ? out->error : "(no error)");
    assert_non_null(out->answer);
    assert_string_equal(out->answer, answer);
    assert_non_null(out->how);
    assert_string_equal(out->how, how);
}

/* The paper's loop: code over the input with a batch of sub-calls, then
 * FINAL_VAR naming the variable the code made. */
static void test_code_subcalls_then_final_var(void **state)
{
    fixture *f = *state;
    serve(f, "[{\"match\": \"^echo (\\\\w+)$\", \"reply\": \"<$1>\"},"
             " {\"match\": \"Turn 1 of\", \"reply\": \"Let me look.\\n```repl\\n"
             "words = context.split()\\nparts = llm_query_batched(['echo ' + w for w in words])\\n"
             "result = '-'.join(parts)\\nprint(len(parts))\\n```\"},"
             " {\"match\": \"(?s)3.*Turn 2 of\", \"reply\": \"FINAL_VAR(result)\"}]");
    engine_params p = params(5);
    engine_outcome out;
    run(f, &p, budget_no_limits(), "alpha beta gamma", "Echo every word.", &out);
    expect_answer(&out, "<alpha>-<beta>-<gamma>", "FINAL_VAR in text");
    assert_int_equal(out.iterations, 2);
    assert_int_equal(out.blocks, 1);
    assert_int_equal(out.sub_calls, 3);
    assert_int_equal(out.sub_call_errors, 0);
    assert_string_equal(out.mode, "rlm");
    assert_null(out.stopped_by);
    engine_outcome_clear(&out);
}

/* A cell that raises: the traceback goes back to the root, which answers. */
static void test_failing_cell_fed_back(void **state)
{
    fixture *f = *state;
    serve(f, "[{\"match\": \"(?s)NameError.*no_such_name.*Turn 2 of\","
             " \"reply\": \"FINAL(recovered)\"},"
             " {\"match\": \"Turn 1 of\", \"reply\": \"```repl\\nprint(no_such_name)\\n```\"}]");
    engine_params p = params(5);
    engine_outcome out;
    run(f, &p, budget_no_limits(), "text", "Fail once.", &out);
    expect_answer(&out, "recovered", "FINAL in text");
    assert_int_equal(out.iterations, 2);
    assert_int_equal(out.blocks, 1);
    engine_outcome_clear(&out);
}

/* A reply with neither code nor an answer is nudged, and the turn counts. */
static void test_reply_without_code_nudged(void **state)
{
    fixture *f = *state;
    serve(f, "[{\"match\": \"(?s)no repl block to run.*Turn 2 of\", \"reply\": \"FINAL(nudged)\"},"
             " {\"match\": \"Turn 1 of\", \"reply\": \"I will think about it.\"}]");
    engine_params p = params(5);
    engine_outcome out;
    run(f, &p, budget_no_limits(), "text", "Think.", &out);
    expect_answer(&out, "nudged", "FINAL in text");
    assert_int_equal(out.iterations, 2);
    assert_int_equal(out.blocks, 0);
    engine_outcome_clear(&out);
}

/* Every turn used on code: one last request, with no code run, asks for the
 * answer from what the root has seen. */
static void test_iteration_limit_last_request(void **state)
{
    fixture *f = *state;
    serve(f, "[{\"match\": \"You have used all your turns\", \"reply\": \"FINAL(out of turns)\"},"
             " {\"match\": \"Turn\", \"reply\": \"```repl\\nx = 1\\nprint(x)\\n```\"}]");
    engine_params p = params(2);
    engine_outcome out;
    run(f, &p, budget_no_limits(), "text", "Loop.", &out);
    expect_answer(&out, "out of turns", "FINAL in text");
    assert_int_equal(out.blocks, 2);
    assert_int_equal(out.iterations, 3);
    engine_outcome_clear(&out);
}

/* A budget that runs out in a cell: no more sub-calls, the root is asked
 * once more, and the outcome names the budget. */
static void test_budget_stops_the_run(void **state)
{
    fixture *f = *state;
    serve(f, "[{\"match\": \"budget is spent\", \"reply\": \"FINAL(stopped)\"},"
             " {\"match\": \"^sub \", \"reply\": \"ok\"},"
             " {\"match\": \"Turn 1 of\", \"reply\": \"```repl\\n"
             "for i in range(10):\\n    llm_query('sub %d' % i)\\n```\"}]");
    engine_params p = params(5);
    budget_limits limits = budget_no_limits();
    limits.max_subcalls = 3;
    engine_outcome out;
    run(f, &p, limits, "text", "Spend.", &out);
    expect_answer(&out, "stopped", "FINAL in text");
    assert_non_null(out.stopped_by);
    assert_string_equal(out.stopped_by, "max_subcalls");
    assert_true(out.sub_calls <= 3);
    engine_outcome_clear(&out);
}

/* A history past compact_at x context_window: the root writes a note, the
 * history becomes the system prompt plus that note, and the run goes on to
 * its answer (the variables stayed in the sandbox). */
static void test_compaction_keeps_going(void **state)
{
    fixture *f = *state;
    serve(f, "[{\"match\": \"history is about to be cut\", \"reply\": \"NOTE: result holds it\"},"
             " {\"match\": \"(?s)Your note on them:.*NOTE: result holds it.*Turn 2 of\","
             " \"reply\": \"FINAL_VAR(result)\"},"
             " {\"match\": \"Turn 1 of\", \"reply\": \"```repl\\nresult = 'forty-two'\\n"
             "print('x' * 8000)\\n```\"}]");
    engine_params p = params(5);
    p.context_window = 4000;
    p.compact_at = 0.5;
    engine_outcome out;
    run(f, &p, budget_no_limits(), "text", "Compact.", &out);
    expect_answer(&out, "forty-two", "FINAL_VAR in text");
    engine_outcome_clear(&out);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_code_subcalls_then_final_var, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_cell_fed_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_without_code_nudged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iteration_limit_last_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budget_stops_the_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_keeps_going, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

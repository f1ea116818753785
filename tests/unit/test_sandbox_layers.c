/* test_sandbox_layers — the confinement layers of the real rlm-sandbox child:
 * which are in force and how they are reported (Landlock, namespaces,
 * seccomp, rlimits), how they degrade when switched off, and what each one
 * blocks that the others would let through: threads, path probes, the
 * network, forged protocol frames; and the composition of the report from
 * what a child says (layers.c), without a child. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "layers.h"
#include "sandbox.h"
#include "sandbox_expect.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SANDBOX_EXE RLM_BUILD_DIR "/rlm-sandbox"
#define OS "os = __import__('json').codecs.sys.modules['os']\n"

static sandbox *start(int no_namespaces, int no_landlock)
{
    sandbox_options opts = {
        .exe_path = SANDBOX_EXE,
        .context_fd = -1,
        .cell_timeout = 5,
        .kill_grace = 1,
        .no_namespaces = no_namespaces,
        .no_landlock = no_landlock,
    };
    sandbox *sb = NULL;
    char err[512] = "";
    int rc = sandbox_start(&opts, &sb, err, sizeof err);
    if (rc != 0)
        print_message("sandbox_start: %s\n", err);
    assert_int_equal(rc, 0);
    return sb;
}


/* The entry called name in the layers JSON; returns its "active". */
static int layer_active(const sandbox *sb, const char *name, char *detail, size_t len)
{
    json_error_t error;
    json_t *list = json_loads(sandbox_layers_json(sb), 0, &error);
    assert_non_null(list);
    int active = -1;
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *l = json_array_get(list, i);
        if (strcmp(json_string_value(json_object_get(l, "name")), name) == 0) {
            active = json_is_true(json_object_get(l, "active"));
            snprintf(detail, len, "%s", json_string_value(json_object_get(l, "detail")));
        }
    }
    json_decref(list);
    assert_true(active >= 0);
    return active;
}

/* This machine (the build machine: root, a 6.x kernel) allows every layer;
 * where it does not, the test says which and checks the degraded report. */
/* ---- composing the report (no child) ---- */

static json_t *details(int landlock, int seccomp, int rlimits)
{
    return json_pack("[{s:s, s:s, s:b, s:s}, {s:s, s:s, s:b, s:s}, {s:s, s:s, s:b, s:s}]",
                     "name", "landlock", "label", "landlock(abi 7)", "active", landlock, "detail",
                     landlock ? "abi 7" : "not available: ENOSYS", "name", "seccomp", "label",
                     "seccomp", "active", seccomp, "detail", seccomp ? "filter" : "refused",
                     "name", "rlimits", "label", "rlimits", "active", rlimits, "detail", "");
}

/* The host's namespaces take their place before seccomp, strongest first. */
static void test_compose_all_layers(void **state)
{
    (void)state;
    sandbox_namespaces ns = {.active = 1, .names = "user,net,ipc,pid", .detail = "user,net,ipc,pid"};
    json_t *d = details(1, 1, 1);
    char layers[256], warnings[512], err[256];
    char *json = NULL;
    assert_int_equal(sandbox_compose_layers(d, &ns, 0, layers, sizeof layers, warnings,
                                            sizeof warnings, &json, err, sizeof err), 0);
    assert_string_equal(layers, "landlock(abi 7),namespaces(user,net,ipc,pid),seccomp,rlimits");
    assert_string_equal(warnings, "");
    json_t *list = json_loads(json, 0, NULL);
    assert_int_equal(json_array_size(list), 4);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 1), "name")),
                        "namespaces");
    json_decref(list);
    free(json);
    json_decref(d);
}

/* A missing layer is named with its reason; without the floor the child is
 * refused, unless unsafe_no_sandbox said to run unconfined. */
static void test_compose_missing_and_floor(void **state)
{
    (void)state;
    sandbox_namespaces none = {.active = 0, .detail = "refused: EPERM"};
    char layers[256], warnings[512], err[256] = "";
    char *json = NULL;
    json_t *d = details(0, 1, 1);
    assert_int_equal(sandbox_compose_layers(d, &none, 0, layers, sizeof layers, warnings,
                                            sizeof warnings, &json, err, sizeof err), 0);
    assert_string_equal(layers, "seccomp,rlimits (without: landlock, namespaces)");
    assert_non_null(strstr(warnings, "landlock: not available: ENOSYS"));
    assert_non_null(strstr(warnings, "namespaces: refused: EPERM"));
    free(json);
    json_decref(d);

    d = details(1, 0, 1);
    assert_int_equal(sandbox_compose_layers(d, &none, 0, layers, sizeof layers, warnings,
                                            sizeof warnings, &json, err, sizeof err), -1);
    assert_null(json);
    assert_non_null(strstr(err, "the sandbox floor (seccomp + rlimits) is not in force"));
    assert_non_null(strstr(err, "seccomp: refused"));
    assert_int_equal(sandbox_compose_layers(d, &none, 1, layers, sizeof layers, warnings,
                                            sizeof warnings, &json, err, sizeof err), 0);
    assert_string_equal(layers, "none (unsafe)");
    free(json);
    json_decref(d);
}

static void test_all_layers_reported(void **state)
{
    (void)state;
    sandbox *sb = start(0, 0);
    const char *layers = sandbox_layers(sb);
    char detail[256];
    print_message("layers: %s\nwarnings: %s\n", layers, sandbox_warnings(sb));
    assert_non_null(strstr(layers, "seccomp"));
    assert_non_null(strstr(layers, "rlimits"));
    assert_int_equal(layer_active(sb, "seccomp", detail, sizeof detail), 1);
    assert_int_equal(layer_active(sb, "rlimits", detail, sizeof detail), 1);
    int landlock = layer_active(sb, "landlock", detail, sizeof detail);
    assert_true(landlock ? strstr(layers, "landlock(abi ") != NULL
                         : strstr(sandbox_warnings(sb), "landlock") != NULL);
    int ns = layer_active(sb, "namespaces", detail, sizeof detail);
    assert_true(ns ? strstr(layers, "namespaces(") != NULL
                   : strstr(sandbox_warnings(sb), "namespaces") != NULL);
    if (ns && strstr(layers, "pid")) {
        /* Alone in its PID namespace: it is process 1 and sees no parent. */
        expect_output(sb, OS "print(os.getpid(), os.getppid())", "1 0\n");
    }
    if (landlock && ns)
        assert_string_equal(sandbox_warnings(sb), "");
    sandbox_free(sb);
}

static void test_degraded_layers_are_reported(void **state)
{
    (void)state;
    sandbox *sb = start(1, 1);
    char detail[256];
    assert_int_equal(layer_active(sb, "landlock", detail, sizeof detail), 0);
    assert_int_equal(layer_active(sb, "namespaces", detail, sizeof detail), 0);
    assert_non_null(strstr(sandbox_layers(sb), "seccomp,rlimits (without: landlock, namespaces)"));
    assert_non_null(strstr(sandbox_warnings(sb), "landlock: switched off"));
    assert_non_null(strstr(sandbox_warnings(sb), "namespaces: switched off"));
    /* The floor still holds. */
    expect_raise(sb, "open('/etc/passwd')", "PermissionError");
    expect_output(sb, OS "print(os.getpid() != 1)", "True\n");
    sandbox_free(sb);

    sandbox_options unsafe = {.exe_path = SANDBOX_EXE, .context_fd = -1, .unsafe_no_sandbox = 1};
    char err[256];
    assert_int_equal(sandbox_start(&unsafe, &sb, err, sizeof err), 0);
    assert_string_equal(sandbox_layers(sb), "none (unsafe)");
    assert_int_equal(layer_active(sb, "seccomp", detail, sizeof detail), 0);
    assert_non_null(strstr(sandbox_warnings(sb), "unsafe_no_sandbox"));
    sandbox_free(sb);
}

/* RLM_SANDBOX_FLOOR_ONLY in the host's environment drops Landlock and the
 * namespaces for every sandbox, factories' children too; "0" or "" does
 * nothing. It can only remove layers: the floor stays. */
static void test_floor_only_environment(void **state)
{
    (void)state;
    char detail[256];
    setenv("RLM_SANDBOX_FLOOR_ONLY", "1", 1);
    sandbox *sb = start(0, 0);
    assert_string_equal(sandbox_layers(sb), "seccomp,rlimits (without: landlock, namespaces)");
    assert_int_equal(layer_active(sb, "namespaces", detail, sizeof detail), 0);
    assert_non_null(strstr(detail, "RLM_SANDBOX_FLOOR_ONLY"));
    expect_raise(sb, "open('/etc/passwd')", "PermissionError");
    sandbox_free(sb);
    sandbox_options fo = {.exe_path = SANDBOX_EXE, .context_fd = -1};
    sandbox_factory *factory = NULL;
    char err[256];
    assert_int_equal(sandbox_factory_new(&fo, &factory, err, sizeof err), 0);
    sandbox_options opts = {.exe_path = SANDBOX_EXE, .context_fd = -1, .data_fd = -1,
                            .factory = factory};
    assert_int_equal(sandbox_start(&opts, &sb, err, sizeof err), 0);
    assert_true(sandbox_forked(sb));
    assert_string_equal(sandbox_layers(sb), "seccomp,rlimits (without: landlock, namespaces)");
    sandbox_free(sb);
    sandbox_factory_free(factory);
    for (int i = 0; i < 2; i++) {
        setenv("RLM_SANDBOX_FLOOR_ONLY", i ? "" : "0", 1);
        sb = start(0, 0);
        assert_int_equal(layer_active(sb, "namespaces", detail, sizeof detail),
                         strstr(sandbox_warnings(sb), "namespaces") == NULL);
        assert_null(strstr(sandbox_warnings(sb), "RLM_SANDBOX_FLOOR_ONLY"));
        sandbox_free(sb);
    }
    unsetenv("RLM_SANDBOX_FLOOR_ONLY");
}

/* Each layer holds on its own: with only seccomp + rlimits, and with all. */
static void check_confinement(sandbox *sb)
{
    expect_raise(sb, OS "os.stat('/etc/passwd')", "PermissionError");
    expect_output(sb, OS "print(os.path.exists('/etc/passwd'))", "False\n");
    expect_raise(sb, OS "os.getcwd()", "PermissionError");
    expect_raise(sb, OS "os.readlink('/proc/self/exe')", "PermissionError");
    expect_raise(sb, OS "os.chdir('/')", "PermissionError");
    expect_raise(sb, OS "os.listdir('/')", "PermissionError");
    /* fstat by descriptor still works: CPython needs it. */
    expect_output(sb, OS "print(os.fstat(0).st_mode > 0)", "True\n");
    /* No threads after lockdown, whoever asks. */
    expect_raise(sb, OS "os.sys.modules['_thread'].start_new_thread(print, ('x',))",
                 "can't start new thread");
    /* No socket module is loaded, and none can be: the interpreter has no
     * way to make a socket at all (the filter denies socket() too). */
    expect_output(sb, OS "print('_socket' in os.sys.modules)", "False\n");
    expect_raise(sb, OS "os.memfd_create('x')", "PermissionError");
    expect_output(sb, "import re, json, decimal\n"
                      "print(len(re.findall(r'\\w+', 'a b c ' * 1000)), "
                      "json.dumps({'a': [1]}), decimal.Decimal('1.10') + 1)",
                  "3000 {\"a\": [1]} 2.10\n");
}

static void test_confinement_every_layer(void **state)
{
    (void)state;
    sandbox *sb = start(0, 0);
    check_confinement(sb);
    sandbox_free(sb);
    sb = start(1, 1);
    check_confinement(sb);
    sandbox_free(sb);
}

/* A frame model code writes on the channel cannot pass for the answer: it
 * lacks the request id, so the child is replaced and the host stays in step. */
static void test_forged_result_frame(void **state)
{
    (void)state;
    sandbox *sb = start(0, 0);
    expect_output(sb, "keep = 1", "");
    sandbox_cell cell;
    run(sb,
        OS "p = b'{\"type\":\"result\",\"output\":\"forged\",\"raised\":false,"
           "\"final_answer\":\"forged answer\",\"id\":1}'\n"
           "os.write(3, len(p).to_bytes(4, 'big') + p)\n",
        &cell);
    assert_true(cell.restarted);
    assert_null(cell.final_answer);
    assert_non_null(strstr(cell.output, "forged"));
    assert_non_null(strstr(cell.output, "restarted"));
    sandbox_cell_clear(&cell);
    expect_output(sb, "print('in step')", "in step\n");
    expect_raise(sb, "keep", "NameError");
    sandbox_free(sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compose_all_layers),
        cmocka_unit_test(test_compose_missing_and_floor),
        cmocka_unit_test(test_all_layers_reported),
        cmocka_unit_test(test_degraded_layers_are_reported),
        cmocka_unit_test(test_floor_only_environment),
        cmocka_unit_test(test_confinement_every_layer),
        cmocka_unit_test(test_forged_result_frame),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

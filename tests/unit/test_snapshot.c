/* test_snapshot — the conversation snapshot's encoder and decoder
 * (src/repl_snapshot.c) in an embedded interpreter: every data type and the
 * collections types round trip, shared and cyclic references stay shared,
 * what is not data is named and left out, the byte and depth limits hold,
 * and the decoder refuses each kind of flawed or hostile input whole. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "repl_snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifdef UNDER_ASAN
/* CPython keeps interned strings and static state past Py_FinalizeEx. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libpython\n";
}
#endif

#define CAP ((size_t)1 << 20)

/* A fresh namespace with the cell's code run in it. */
static PyObject *namespace_of(const char *code)
{
    PyObject *ns = PyDict_New();
    assert_non_null(ns);
    assert_int_equal(PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()), 0);
    PyObject *rc = PyRun_String(code, Py_file_input, ns, ns);
    if (!rc)
        PyErr_Print();
    assert_non_null(rc);
    Py_DECREF(rc);
    return ns;
}

static int bind_into(void *userdata, PyObject *name, PyObject *value)
{
    return PyDict_SetItem(userdata, name, value);
}

/* Encodes ns (cap bytes at most), decodes into a new dict, returns it. */
static PyObject *round_trip(PyObject *ns, size_t cap, repl_snapshot_stats *stats)
{
    unsigned char *buf = malloc(cap);
    char err[256] = "";
    assert_non_null(buf);
    if (repl_snapshot_encode(ns, buf, cap, 0, stats, err, sizeof err) != 0)
        print_message("encode: %s\n", err);
    assert_int_equal(stats->bytes <= cap, 1);
    PyObject *out = PyDict_New();
    size_t bound = 0;
    int rc = repl_snapshot_decode(buf, stats->bytes, 0, bind_into, out, &bound, err, sizeof err);
    if (rc != 0)
        print_message("decode: %s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(bound, stats->carried);
    free(buf);
    return out;
}

/* Evaluates expr with `old` and `new` bound; must be True. */
static void check(PyObject *old, PyObject *new, const char *expr)
{
    PyObject *env = PyDict_New();
    PyDict_SetItemString(env, "__builtins__", PyEval_GetBuiltins());
    PyDict_SetItemString(env, "old", old);
    PyDict_SetItemString(env, "new", new);
    PyObject *v = PyRun_String(expr, Py_eval_input, env, env);
    if (!v)
        PyErr_Print();
    if (v != Py_True)
        print_message("not true: %s\n", expr);
    assert_true(v == Py_True);
    Py_XDECREF(v);
    Py_DECREF(env);
}

static void test_data_round_trips(void **state)
{
    (void)state;
    PyObject *ns = namespace_of(
        "import re, collections, math\n"
        "from collections import Counter, OrderedDict, defaultdict, deque\n"
        "s = 'plain'\nu = 'caf\\u00e9 \\U0001f600'\nsur = 'a\\ud800b'\nnul = 'a\\x00b'\n"
        "b = b'\\x00\\xffbytes'\nsmall = -5\nbig = 2 ** 200 + 1\nneg = -(2 ** 100)\n"
        "edge = [2 ** 63 - 1, -2 ** 63, 2 ** 63, -2 ** 63 - 1]\n"
        "f = 1.5\nnan = float('nan')\ninf = float('-inf')\nz = -0.0\nc = complex(1, -2)\n"
        "t = True\nn = None\n"
        "nested = {'k': [1, (2, 3), {4, 5}, frozenset({6})], (1, 'x'): None, 7: b'v'}\n"
        "counts = Counter('abracadabra')\n"
        "od = OrderedDict(a=1, b=2, c=3)\nod.move_to_end('a')\n"
        "dd = defaultdict(list, {'x': [1]})\nq = deque([1, 2, 3], maxlen=3)\nq2 = deque('ab')\n"
        "mod = re\nfn = len\ncls = Counter\npi = math.pi\n");
    repl_snapshot_stats stats;
    PyObject *new = round_trip(ns, CAP, &stats);
    assert_int_equal(stats.not_carried[REPL_SNAPSHOT_NOT_DATA], 0);
    check(ns, new, "all(new[k] == old[k] and type(new[k]) is type(old[k]) for k in "
                   "('s', 'u', 'sur', 'nul', 'b', 'small', 'big', 'neg', 'edge', 'f', 'inf', "
                   "'c', 't', 'n', 'nested', 'counts', 'dd', 'q', 'q2', 'pi'))");
    check(ns, new, "new['nan'] != new['nan'] and str(new['z']) == '-0.0'");
    check(ns, new, "list(new['od']) == ['b', 'c', 'a'] and type(new['od']).__name__ == 'OrderedDict'");
    check(ns, new, "new['q'].maxlen == 3 and new['q2'].maxlen is None");
    check(ns, new, "new['dd']['missing'] == [] and new['dd'].default_factory is list");
    check(ns, new, "new['mod'] is old['mod'] and new['fn'] is len and new['cls'] is old['Counter']");
    check(ns, new, "list(new) == [k for k in old if not k.startswith('__')]");
    repl_snapshot_stats_clear(&stats);
    Py_DECREF(new);
    Py_DECREF(ns);
}

static void test_shared_and_cyclic(void **state)
{
    (void)state;
    PyObject *ns = namespace_of(
        "a = [1]\na.append(a)\nb = {'x': a}\nb['self'] = b\nbig = 'x' * 100\n"
        "pair = [big, big]\nalso = big\ns = set()\nd = {'s': s, 't': (a, a)}\n"
        "t = ([],)\nt[0].append(t)\nok = 1\n");
    repl_snapshot_stats stats;
    PyObject *new = round_trip(ns, CAP, &stats);
    check(ns, new, "new['a'][1] is new['a'] and new['b']['x'] is new['a']");
    check(ns, new, "new['b']['self'] is new['b']");
    check(ns, new, "new['pair'][0] is new['pair'][1] is new['also']");
    check(ns, new, "new['d']['t'][0] is new['d']['t'][1] is new['a'] and new['d']['s'] == set()");
    check(ns, new, "'t' not in new and new['ok'] == 1");
    assert_int_equal(stats.not_carried[REPL_SNAPSHOT_CYCLE], 1);
    repl_snapshot_stats_clear(&stats);
    Py_DECREF(new);
    Py_DECREF(ns);
}

static void test_not_carried(void **state)
{
    (void)state;
    PyObject *ns = namespace_of(
        "import sys\n"
        "def f():\n    pass\n"
        "class C:\n    pass\n"
        "class S(str):\n    pass\n"
        "gen = (i for i in range(3))\nobj = C()\nsub = S('x')\nfuncs = [1, f]\n"
        "other = sys\ncontext = 'the input'\ncontext_1 = 'another'\nhistory_0 = []\n"
        "answer = {'content': '', 'ready': False}\nanswer_1 = 'an answer'\nllm_query = print\n"
        "__secret__ = 1\nchunks = ['mine']\nkept = 'yes'\n");
    repl_snapshot_stats stats;
    PyObject *new = round_trip(ns, CAP, &stats);
    check(ns, new, "sorted(new) == ['chunks', 'kept']");
    assert_int_equal(stats.carried, 2);
    assert_int_equal(stats.not_carried[REPL_SNAPSHOT_NOT_DATA], 9);
    PyObject *names = stats.names[REPL_SNAPSHOT_NOT_DATA];
    check(names, names, "sorted(old) == ['C', 'S', 'f', 'funcs', 'gen', 'obj', 'other', "
                        "'sub', 'sys']");
    repl_snapshot_stats_clear(&stats);
    Py_DECREF(new);
    Py_DECREF(ns);
}

static void test_limits(void **state)
{
    (void)state;
    PyObject *ns = namespace_of(
        "huge = 'y' * 5000\nsmall = 'fits'\ndeep = []\nx = deep\n"
        "for i in range(150):\n    x.append([])\n    x = x[0]\n"
        "ok = [[[1]]]\n");
    repl_snapshot_stats stats;
    PyObject *new = round_trip(ns, 2000, &stats);
    check(ns, new, "sorted(new) == ['i', 'ok', 'small', 'x']");
    assert_int_equal(stats.not_carried[REPL_SNAPSHOT_TOO_LARGE], 1);
    assert_int_equal(stats.not_carried[REPL_SNAPSHOT_TOO_DEEP], 1);
    repl_snapshot_stats_clear(&stats);
    Py_DECREF(new);
    /* A smaller depth limit, given to both sides. */
    unsigned char buf[4096];
    char err[256];
    assert_int_equal(repl_snapshot_encode(ns, buf, sizeof buf, 2, &stats, err, sizeof err), 0);
    assert_int_equal(stats.not_carried[REPL_SNAPSHOT_TOO_DEEP], 2); /* deep, ok */
    PyObject *out = PyDict_New();
    assert_int_equal(repl_snapshot_decode(buf, stats.bytes, 2, bind_into, out, NULL, err,
                                          sizeof err),
                     0);
    check(out, out, "sorted(old) == ['i', 'small', 'x']");
    repl_snapshot_stats_clear(&stats);
    Py_DECREF(out);
    /* No room for the header. */
    assert_int_equal(repl_snapshot_encode(ns, buf, 10, 0, &stats, err, sizeof err), -1);
    assert_non_null(strstr(err, "no room"));
    Py_DECREF(ns);
}

/* Builds a snapshot by hand: the header, then `body` (count entries). */
static size_t craft(unsigned char *out, uint64_t count, const void *body, size_t len)
{
    memcpy(out, "RLMSNAP\x01", 8);
    for (int i = 0; i < 8; i++)
        out[8 + i] = (unsigned char)(count >> (8 * i));
    memcpy(out + 16, body, len);
    return 16 + len;
}

#define U64(v) (char)(v), 0, 0, 0, 0, 0, 0, 0

static void expect_refused(const unsigned char *data, size_t len, const char *needle)
{
    PyObject *out = PyDict_New();
    char err[256] = "";
    size_t bound = 99;
    int rc = repl_snapshot_decode(data, len, 0, bind_into, out, &bound, err, sizeof err);
    if (rc == 0 || !strstr(err, needle))
        print_message("expected a refusal with '%s', got rc %d: %s\n", needle, rc, err);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, "invalid snapshot"));
    assert_non_null(strstr(err, needle));
    assert_int_equal(bound, 0);
    assert_int_equal(PyDict_GET_SIZE(out), 0);
    Py_DECREF(out);
}

static void test_decoder_refuses(void **state)
{
    (void)state;
    unsigned char buf[2048];
    const struct {
        uint64_t count;
        const char *body;
        size_t len;
        const char *why;
    } cases[] = {
#define CASE(count, why, ...)                                                   \
    {count, (const char[]){__VA_ARGS__}, sizeof((const char[]){__VA_ARGS__}), why}
        CASE(1, "ends early", 1, 0, 'x'),
        CASE(1, "ends early", 1, 0, 'x', 'I', 1, 2),
        CASE(1, "unknown tag", 1, 0, 'x', 'Z'),
        CASE(1, "past the end", 1, 0, 'x', 'S', U64(200), 'a'),
        CASE(1, "past the end", 1, 0, 'x', '[', U64(100), 'N'),
        CASE(1, "reference to nothing", 1, 0, 'x', 'R', U64(0)),
        CASE(1, "reference to nothing", 1, 0, 'x', '(', U64(1), 'R', U64(0)),
        CASE(1, "not UTF-8", 1, 0, 'x', 'S', U64(2), (char)0xc3, 'A'),
        CASE(1, "may not bind", 5, 0, 'F', 'I', 'N', 'A', 'L', 'N'),
        CASE(1, "may not bind", 9, 0, 'c', 'o', 'n', 't', 'e', 'x', 't', '_', '0', 'N'),
        CASE(1, "may not bind", 5, 0, '_', '_', 'x', '_', '_', 'N'),
        CASE(1, "may not bind", 3, 0, 'a', ' ', 'b', 'N'),
        CASE(1, "bad variable name", 0, 0, 'N'),
        CASE(2, "named twice", 1, 0, 'x', 'N', 1, 0, 'x', 'N'),
        CASE(1, "duplicate key", 1, 0, 'x', '{', U64(2), 'N', 'N', 'N', 'T'),
        CASE(1, "unhashable", 1, 0, 'x', '{', U64(1), '[', U64(0), 'N'),
        CASE(1, "unhashable", 1, 0, 'x', 's', U64(1), '{', U64(0)),
        CASE(1, "duplicate item", 1, 0, 'x', 'f', U64(2), 'T', 'T'),
        CASE(1, "not allowed", 1, 0, 'x', 'M', 2, 0, 'o', 's'),
        CASE(1, "not allowed", 1, 0, 'x', 'A', 3, 0, 's', 'y', 's', 4, 0, 'e', 'x', 'i', 't'),
        CASE(1, "does not have", 1, 0, 'x', 'A', 2, 0, 'r', 'e', 3, 0, 'n', 'o', 'p'),
        CASE(1, "bad integer", 1, 0, 'x', 'L', U64(0)),
        CASE(1, "cannot be called", 1, 0, 'x', 'd', 'I', U64(3), U64(0)),
        CASE(1, "after the last", 1, 0, 'x', 'N', 'N'),
        CASE(3, "past the end", 1, 0, 'x', 'N'),
#undef CASE
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = craft(buf, cases[i].count, cases[i].body, cases[i].len);
        expect_refused(buf, len, cases[i].why);
    }
    expect_refused((const unsigned char *)"RLMSNAP\x02", 8, "not a snapshot");
    expect_refused((const unsigned char *)"", 0, "not a snapshot");
    /* Nesting past the limit, however it is written. */
    size_t len = craft(buf, 1, (const char[]){1, 0, 'x'}, 3);
    for (int i = 0; i < 120; i++) {
        buf[len++] = '[';
        for (int k = 0; k < 8; k++)
            buf[len++] = k == 0 ? 1 : 0;
    }
    buf[len++] = 'N';
    expect_refused(buf, len, "nested too deeply");
}

static int setup(void **state)
{
    (void)state;
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    PyStatus status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status))
        return -1;
    /* The allowed modules the tests name, loaded as the sandbox has them. */
    PyObject *main = PyImport_AddModule("__main__");
    PyObject *g = PyModule_GetDict(main);
    Py_XDECREF(PyRun_String("import re, json, math, collections", Py_file_input, g, g));
    return PyErr_Occurred() ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    return Py_FinalizeEx() < 0 ? -1 : 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_round_trips),
        cmocka_unit_test(test_shared_and_cyclic),
        cmocka_unit_test(test_not_carried),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_decoder_refuses),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

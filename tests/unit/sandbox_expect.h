/* sandbox_expect — cell assertions shared by the sandbox unit tests: run a
 * cell, and check its whole output or that it raised. Include after cmocka.h
 * and sandbox.h. */
#ifndef RLM_TEST_SANDBOX_EXPECT_H
#define RLM_TEST_SANDBOX_EXPECT_H

#include <string.h>

/* Runs code; the cell must run (even if it raised) and have output. */
static void run(sandbox *sb, const char *code, sandbox_cell *cell)
{
    char err[512] = "";
    int rc = sandbox_exec(sb, code, NULL, NULL, cell, err, sizeof err);
    if (rc != 0)
        print_message("sandbox_exec: %s\n", err);
    assert_int_equal(rc, 0);
    assert_non_null(cell->output);
}

/* Runs code and checks the whole output and that it did not raise. */
static void expect_output(sandbox *sb, const char *code, const char *expected)
{
    sandbox_cell cell;
    run(sb, code, &cell);
    if (strcmp(cell.output, expected) != 0 || cell.raised)
        print_message("code: %s\noutput: %s\n", code, cell.output);
    assert_false(cell.raised);
    assert_string_equal(cell.output, expected);
    sandbox_cell_clear(&cell);
}

/* Runs code that must raise, with `needle` in its output. */
static void expect_raise(sandbox *sb, const char *code, const char *needle)
{
    sandbox_cell cell;
    run(sb, code, &cell);
    if (!cell.raised || !strstr(cell.output, needle))
        print_message("code: %s\noutput: %s\n", code, cell.output);
    assert_true(cell.raised);
    assert_non_null(strstr(cell.output, needle));
    assert_null(cell.final_answer);
    sandbox_cell_clear(&cell);
}

#endif

/* Unit tests for pricing: the built-in table, exact and dated-name lookups,
 * prices files (overrides, additions, and every kind of bad entry), and the
 * cost of one call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pricing.h"

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_builtin_exact_and_dated(void **state)
{
    pricing *p = pricing_new();
    assert_non_null(p);
    assert_true(pricing_count(p) >= 20);
    price pr;
    assert_int_equal(pricing_lookup(p, "gpt-5-mini", &pr), 1);
    assert_true(fabs(pr.input - 0.25) < 1e-12 && fabs(pr.output - 2.0) < 1e-12);
    /* Dated variants take the longest matching entry, never a shorter one. */
    assert_int_equal(pricing_lookup(p, "gpt-4o-mini-2024-07-18", &pr), 1);
    assert_true(fabs(pr.input - 0.15) < 1e-12);
    assert_int_equal(pricing_lookup(p, "gpt-4o-2024-08-06", &pr), 1);
    assert_true(fabs(pr.input - 2.50) < 1e-12);
    assert_int_equal(pricing_lookup(p, "claude-sonnet-4-5-20250929", &pr), 1);
    assert_true(fabs(pr.output - 15.0) < 1e-12);
    assert_int_equal(pricing_lookup(p, "claude-opus-4-1-20250805", &pr), 1);
    assert_true(fabs(pr.input - 15.0) < 1e-12);
    assert_int_equal(pricing_lookup(p, "claude-haiku-4-5-latest", &pr), 1);
    assert_int_equal(pricing_lookup(p, "openai/gpt-5", &pr), 1);
    /* A version suffix is not a date: no guess from a shorter name. */
    assert_int_equal(pricing_lookup(p, "gpt-5-pro", &pr), 0);
    assert_int_equal(pricing_lookup(p, "gpt-5-1", &pr), 0);
    assert_int_equal(pricing_lookup(p, "my-local-llama", &pr), 0);
    assert_int_equal(pricing_lookup(p, "", &pr), 0);
    assert_int_equal(pricing_lookup(NULL, "gpt-5", &pr), 0);
    pricing_free(p);
    pricing_free(NULL);
}

static void test_cost(void **state)
{
    price pr = {.input = 1.25, .cached_input = 0.125, .output = 10};
    /* 1M in, 1M out: 1.25 + 10. */
    assert_true(fabs(pricing_cost(&pr, 1000000, 0, 0, 1000000) - 11.25) < 1e-9);
    /* Half the prompt from the provider's cache. */
    assert_true(fabs(pricing_cost(&pr, 1000000, 500000, 0, 0) - (0.625 + 0.0625)) < 1e-9);
    /* Not reported → unknown, never 0. */
    assert_true(pricing_cost(&pr, -1, 0, 0, 10) < 0);
    assert_true(pricing_cost(&pr, 10, 0, 0, -1) < 0);
    assert_true(fabs(pricing_cost(&pr, 100, -1, 0, 0) - 100 * 1.25 / 1e6) < 1e-15);
    /* More cached than prompt is clamped. */
    assert_true(fabs(pricing_cost(&pr, 100, 500, 0, 0) - 100 * 0.125 / 1e6) < 1e-15);
}

/* Anthropic: writes at 1.25x input, reads at 0.1x; the prompt counts all three. */
static void test_cost_cache_write(void **state)
{
    (void)state;
    pricing *p = pricing_new();
    price pr;
    assert_int_equal(pricing_lookup(p, "claude-sonnet-4-5-20250929", &pr), 1);
    assert_true(fabs(pr.cache_write - 3.75) < 1e-12);
    assert_true(fabs(pr.cached_input - 0.30) < 1e-12);
    /* The recorded message_cache_usage.json: 21 fresh, 188086 written, 2048 read, 393 out. */
    double usd = pricing_cost(&pr, 21 + 188086 + 2048, 2048, 188086, 393);
    assert_true(fabs(usd - (21 * 3.0 + 188086 * 3.75 + 2048 * 0.30 + 393 * 15.0) / 1e6) < 1e-12);
    /* Without the cache the same tokens cost the input price. */
    assert_true(fabs(pricing_cost(&pr, 190155, 0, 0, 393) - (190155 * 3.0 + 393 * 15.0) / 1e6) < 1e-12);
    /* Writes past what the prompt left after the reads are clamped. */
    assert_true(fabs(pricing_cost(&pr, 100, 60, 100, 0) - (60 * 0.30 + 40 * 3.75) / 1e6) < 1e-12);
    /* OpenAI's automatic cache has no write surcharge. */
    assert_int_equal(pricing_lookup(p, "gpt-5-mini", &pr), 1);
    assert_true(fabs(pr.cache_write - pr.input) < 1e-12);
    pricing_free(p);
}

static void test_file_overrides_and_adds(void **state)
{
    char path[] = "/tmp/rlm-test-prices-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_file(path, "{\"gpt-5\": {\"input\": 2, \"output\": 20},"
                     " \"root-model\": {\"input\": 1000, \"cached_input\": 100, \"cache_write\": 1250,"
                     " \"output\": 2000}}");
    pricing *p = pricing_new();
    char err[512];
    assert_int_equal(pricing_load_file(p, path, err, sizeof err), 0);
    price pr;
    assert_int_equal(pricing_lookup(p, "gpt-5", &pr), 1);
    assert_true(fabs(pr.input - 2) < 1e-12 && fabs(pr.cached_input - 2) < 1e-12);
    assert_int_equal(pricing_lookup(p, "gpt-5-2025-08-07", &pr), 1);
    assert_true(fabs(pr.output - 20) < 1e-12);
    assert_int_equal(pricing_lookup(p, "root-model", &pr), 1);
    assert_true(fabs(pr.cached_input - 100) < 1e-12);
    assert_true(fabs(pr.cache_write - 1250) < 1e-12);
    assert_int_equal(pricing_lookup(p, "gpt-5", &pr), 1);
    assert_true(fabs(pr.cache_write - 2) < 1e-12);
    pricing_free(p);
    unlink(path);
}

static void test_bad_files_leave_table_alone(void **state)
{
    static const char *bad[] = {
        "[1, 2]",
        "{\"m\": 3}",
        "{\"m\": {\"input\": 1}}",
        "{\"m\": {\"input\": -1, \"output\": 1}}",
        "{\"m\": {\"input\": \"1\", \"output\": 1}}",
        "{\"m\": {\"input\": 1, \"output\": 1, \"ouput\": 2}}",
        "{\"m\": {\"input\": 1, \"output\": 1, \"cache_write\": -1}}",
        "{\"gpt-5\": {\"input\": 9, \"output\": 9}, \"x\": {\"input\": 1}}",
        "{not json",
        "{\"\": {\"input\": 1, \"output\": 1}}",
    };
    char path[] = "/tmp/rlm-test-prices-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(path, bad[i]);
        pricing *p = pricing_new();
        char err[512] = "";
        assert_int_equal(pricing_load_file(p, path, err, sizeof err), -1);
        assert_non_null(strstr(err, path));
        price pr;
        assert_int_equal(pricing_lookup(p, "gpt-5", &pr), 1);
        assert_true(fabs(pr.input - 1.25) < 1e-12);
        pricing_free(p);
    }
    unlink(path);
    pricing *p = pricing_new();
    char err[512];
    assert_int_equal(pricing_load_file(p, "/nonexistent/prices.json", err, sizeof err), -1);
    pricing_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_exact_and_dated),
        cmocka_unit_test(test_cost),
        cmocka_unit_test(test_cost_cache_write),
        cmocka_unit_test(test_file_overrides_and_adds),
        cmocka_unit_test(test_bad_files_leave_table_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for tokens.c: the estimate per kind of text (rounded up, no
 * overflow at the top of size_t), the kind a name suggests, and the rate
 * limiter's reckoning. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tokens.h"

static void test_prose(void **state)
{
    (void)state;
    assert_int_equal(tokens_estimate(0, TOKENS_PROSE), 0);
    assert_int_equal(tokens_estimate(1, TOKENS_PROSE), 1);
    assert_int_equal(tokens_estimate(3, TOKENS_PROSE), 1);
    assert_int_equal(tokens_estimate(4, TOKENS_PROSE), 2);
    assert_int_equal(tokens_estimate(7, TOKENS_PROSE), 2);
    assert_int_equal(tokens_estimate(8, TOKENS_PROSE), 3);
    assert_int_equal(tokens_estimate(11, TOKENS_PROSE), 4); /* count_tokens("hello world") */
    assert_int_equal(tokens_estimate(35, TOKENS_PROSE), 10);
    assert_int_equal(tokens_estimate(36, TOKENS_PROSE), 11);
    assert_int_equal(tokens_estimate(3500000, TOKENS_PROSE), 1000000);
    /* no overflow at the top of the range: ceil(SIZE_MAX * 2 / 7) */
    size_t top = tokens_estimate(SIZE_MAX, TOKENS_PROSE);
    assert_true(top > SIZE_MAX / 4 && top < SIZE_MAX / 3);
    size_t big = (size_t)1 << 62;
    assert_true(tokens_estimate(big, TOKENS_PROSE) > big / 4);
}

static void test_code_and_json(void **state)
{
    (void)state;
    assert_int_equal(tokens_estimate(9, TOKENS_CODE), 3);
    assert_int_equal(tokens_estimate(10, TOKENS_CODE), 4);
    assert_int_equal(tokens_estimate(10, TOKENS_JSON), 4);
    assert_int_equal(tokens_estimate(11, TOKENS_JSON), 5);
    assert_true(tokens_estimate(SIZE_MAX, TOKENS_JSON) > tokens_estimate(SIZE_MAX, TOKENS_CODE));
}

static void test_kind_of_name(void **state)
{
    (void)state;
    assert_int_equal(tokens_kind_of_name("src/a.c"), TOKENS_CODE);
    assert_int_equal(tokens_kind_of_name("x/Makefile"), TOKENS_CODE);
    assert_int_equal(tokens_kind_of_name("d.JSON"), TOKENS_JSON);
    assert_int_equal(tokens_kind_of_name("log.jsonl"), TOKENS_JSON);
    assert_int_equal(tokens_kind_of_name("notes.txt"), TOKENS_PROSE);
    assert_int_equal(tokens_kind_of_name("README"), TOKENS_PROSE);
    assert_int_equal(tokens_kind_of_name("dir.c/README"), TOKENS_PROSE);
}

static void test_rate(void **state)
{
    (void)state;
    assert_true(tokens_for_rate(0) == 0);
    assert_true(tokens_for_rate(400) == 100);
    assert_true(tokens_for_rate(2) == 0.5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prose),
        cmocka_unit_test(test_code_and_json),
        cmocka_unit_test(test_kind_of_name),
        cmocka_unit_test(test_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

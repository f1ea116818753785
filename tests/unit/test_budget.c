/* Unit tests for budget: each limit refuses at the right point, batches are
 * admitted or refused whole, input estimates count before issuing, the first
 * exhausted limit sticks, and the last request's own rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "budget.h"

static budget make(double cost, long tokens, double time, long subcalls)
{
    budget_limits l = {.max_cost = cost, .max_tokens = tokens, .max_time = time, .max_subcalls = subcalls};
    budget b;
    budget_init(&b, &l, 100.0);
    return b;
}

static void test_no_limits(void **state)
{
    budget b;
    budget_init(&b, NULL, 0);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(budget_admit(&b, 100, 1000000, 50, 1e9), BUDGET_NONE);
        budget_charge(&b, 1000000, 100);
    }
    assert_int_equal(b.subcalls, 100000);
    assert_int_equal(b.exhausted, BUDGET_NONE);
    assert_null(budget_kind_name(BUDGET_NONE));
}

static void test_subcalls_batch_refused_whole(void **state)
{
    budget b = make(-1, -1, -1, 100);
    assert_int_equal(budget_admit(&b, 70, 0, 0, 100), BUDGET_NONE);
    /* 30 left: a batch of 100 is refused, nothing of it counted. */
    assert_int_equal(budget_admit(&b, 100, 0, 0, 100), BUDGET_SUBCALLS);
    assert_int_equal(b.subcalls, 70);
    assert_int_equal(b.exhausted, BUDGET_SUBCALLS);
    /* Exhausted sticks, even for what would fit. */
    assert_int_equal(budget_admit(&b, 1, 0, 0, 100), BUDGET_SUBCALLS);
    assert_int_equal(budget_admit(&b, 0, 0, 0, 100), BUDGET_SUBCALLS);
    assert_string_equal(budget_kind_name(b.exhausted), "max_subcalls");
    char msg[128];
    budget_describe(&b, b.exhausted, 100, msg, sizeof msg);
    assert_string_equal(msg, "max_subcalls: 70 sub-calls made of 100");
}

static void test_subcalls_exact_fit_and_zero(void **state)
{
    budget b = make(-1, -1, -1, 30);
    assert_int_equal(budget_admit(&b, 30, 0, 0, 100), BUDGET_NONE);
    /* Root requests do not count as sub-calls. */
    assert_int_equal(budget_admit(&b, 0, 0, 0, 100), BUDGET_NONE);
    assert_int_equal(b.root_calls, 1);
    assert_int_equal(budget_admit(&b, 1, 0, 0, 100), BUDGET_SUBCALLS);
    b = make(-1, -1, -1, 0);
    assert_int_equal(budget_admit(&b, 0, 0, 0, 100), BUDGET_NONE);
    assert_int_equal(budget_admit(&b, 1, 0, 0, 100), BUDGET_SUBCALLS);
}

static void test_tokens_spent_and_estimated(void **state)
{
    budget b = make(-1, 1000, -1, -1);
    assert_int_equal(budget_admit(&b, 0, 300, 0, 100), BUDGET_NONE);
    budget_charge(&b, 400, 0);
    /* 600 left: an input of 601 cannot fit; 600 can. */
    budget c = b;
    assert_int_equal(budget_admit(&c, 5, 601, 0, 100), BUDGET_TOKENS);
    assert_int_equal(budget_admit(&b, 5, 600, 0, 100), BUDGET_NONE);
    /* Output is only known afterwards: one call may end over the limit... */
    budget_charge(&b, 900, 0);
    assert_int_equal(b.tokens, 1300);
    /* ...and then nothing more is issued. */
    assert_int_equal(budget_admit(&b, 0, 0, 0, 100), BUDGET_TOKENS);
    budget_charge(&b, -1, 0);   /* not reported: nothing added */
    assert_int_equal(b.tokens, 1300);
}

static void test_cost_and_unknown(void **state)
{
    budget b = make(0.05, -1, -1, -1);
    assert_int_equal(budget_admit(&b, 0, 0, 0.01, 100), BUDGET_NONE);
    budget_charge(&b, 10, 0.03);
    budget_charge(&b, 10, -1);
    assert_int_equal(b.unknown_cost_calls, 1);
    budget c = b;
    assert_int_equal(budget_admit(&c, 3, 0, 0.021, 100), BUDGET_COST);
    assert_int_equal(budget_admit(&b, 3, 0, 0.02, 100), BUDGET_NONE);
    budget_charge(&b, 10, 0.02);
    assert_int_equal(budget_admit(&b, 0, 0, 0, 100), BUDGET_COST);
    char msg[128];
    budget_describe(&b, BUDGET_COST, 100, msg, sizeof msg);
    assert_string_equal(msg, "max_cost: $0.05 spent of $0.05");
}

static void test_time_and_final(void **state)
{
    budget b = make(0.01, 10, 5, 1);
    assert_int_equal(budget_admit(&b, 0, 0, 0, 104.9), BUDGET_NONE);
    assert_true(budget_time_left(&b, 104) > 0.99 && budget_time_left(&b, 104) < 1.01);
    /* Time is the reason once it is up, whatever else is also spent. */
    budget_charge(&b, 100, 1);
    assert_int_equal(budget_admit(&b, 5, 0, 0, 105), BUDGET_TIME);
    assert_int_equal(budget_time_left(&b, 200), 0);

    /* The last request ignores cost, tokens and sub-calls... */
    b = make(0.01, 10, 5, 1);
    budget_charge(&b, 100, 1);
    assert_int_equal(budget_admit(&b, 0, 0, 0, 101), BUDGET_TOKENS);
    assert_int_equal(budget_admit_final(&b, 101), BUDGET_NONE);
    assert_int_equal(b.exhausted, BUDGET_TOKENS);
    /* ...and time: past max_time it is still made, bounded by its own timeout. */
    assert_int_equal(budget_admit_final(&b, 1000), BUDGET_NONE);
    assert_int_equal(b.exhausted, BUDGET_TOKENS);
    assert_int_equal(b.root_calls, 2);
    budget n;
    budget_init(&n, NULL, 0);
    assert_int_equal(budget_admit_final(&n, 1e9), BUDGET_NONE);
    assert_true(budget_time_left(&n, 1e9) > 1e17);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_limits),
        cmocka_unit_test(test_subcalls_batch_refused_whole),
        cmocka_unit_test(test_subcalls_exact_fit_and_zero),
        cmocka_unit_test(test_tokens_spent_and_estimated),
        cmocka_unit_test(test_cost_and_unknown),
        cmocka_unit_test(test_time_and_final),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

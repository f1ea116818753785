/* Unit tests for budget: each limit refuses at the right point, batches are
 * admitted or refused whole, input estimates count before issuing, the first
 * exhausted limit sticks, and the last request's own rule; for trees, a check
 * that counts nothing, what a parent has left and a child's share of it, and
 * the sentence naming whose limit ran out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
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

/* The prompt cache's side is counted apart and limits nothing by itself:
 * the cost limit holds against what was billed. */
static void test_cache_counted_apart(void **state)
{
    budget b = make(0.05, 1000, -1, -1);
    budget_charge(&b, 600, 0.01);
    budget_charge_cache(&b, 500, 40, 0.04);
    budget_charge_cache(&b, -1, -1, -1);   /* not reported, unknown: nothing added */
    assert_int_equal(b.cached_tokens, 500);
    assert_int_equal(b.cache_write_tokens, 40);
    assert_true(b.cost_no_cache > 0.0399 && b.cost_no_cache < 0.0401);
    assert_true(b.cost > 0.0099 && b.cost < 0.0101);
    /* What the cache saved is not spent: a call that fits the billed cost is admitted. */
    assert_int_equal(budget_admit(&b, 0, 100, 0.03, 100), BUDGET_NONE);
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

static void test_check_counts_nothing(void **state)
{
    budget b = make(-1, -1, -1, 10);
    assert_int_equal(budget_check(&b, 10, 0, 0, 100), BUDGET_NONE);
    assert_int_equal(budget_check(&b, 11, 0, 0, 100), BUDGET_SUBCALLS);
    /* Neither answer counted anything or marked the budget. */
    assert_int_equal(b.subcalls, 0);
    assert_int_equal(b.root_calls, 0);
    assert_int_equal(b.exhausted, BUDGET_NONE);
    budget_count(&b, 4);
    budget_count(&b, 0);
    assert_int_equal(b.subcalls, 4);
    assert_int_equal(b.root_calls, 1);
    /* Counting ignores the limits: the caller checked (or it is a last request). */
    budget_count(&b, 20);
    assert_int_equal(b.subcalls, 24);
    assert_int_equal(budget_check(&b, 0, 0, 0, 100), BUDGET_NONE);
    /* The first reason sticks, and an exhausted budget refuses everything. */
    budget_exhaust(&b, BUDGET_SUBCALLS);
    budget_exhaust(&b, BUDGET_COST);
    assert_int_equal(b.exhausted, BUDGET_SUBCALLS);
    assert_int_equal(budget_check(&b, 0, 0, 0, 100), BUDGET_SUBCALLS);
    /* budget_admit is check, then count or exhaust. */
    budget t = make(-1, -1, 5, -1);
    assert_int_equal(budget_check(&t, 0, 0, 0, 105), BUDGET_TIME);
    assert_int_equal(t.exhausted, BUDGET_NONE);
    assert_int_equal(budget_admit(&t, 0, 0, 0, 105), BUDGET_TIME);
    assert_int_equal(t.exhausted, BUDGET_TIME);
}

static void test_left_and_share(void **state)
{
    /* A parent with 10 sub-calls, 1000 tokens and $1, part spent. */
    budget parent = make(1.0, 1000, 60, 10);
    budget_count(&parent, 4);
    budget_charge(&parent, 300, 0.25);
    budget_limits left = budget_no_limits();
    budget_limit_to_left(&parent, &left);
    assert_int_equal(left.max_subcalls, 6);
    assert_int_equal(left.max_tokens, 700);
    assert_true(fabs(left.max_cost - 0.75) < 1e-12);
    assert_true(left.max_time < 0);
    /* An ancestor with less left lowers it; one with more or none changes nothing. */
    budget top = make(-1, 5000, -1, 8);
    budget_count(&top, 5);
    budget_limit_to_left(&top, &left);
    assert_int_equal(left.max_subcalls, 3);
    assert_int_equal(left.max_tokens, 700);
    assert_true(fabs(left.max_cost - 0.75) < 1e-12);
    /* Overspent (a last request went over) is nothing left, never negative. */
    budget over = make(0.1, 10, -1, 1);
    budget_count(&over, 3);
    budget_charge(&over, 50, 0.5);
    budget_limits none = budget_no_limits();
    budget_limit_to_left(&over, &none);
    assert_int_equal(none.max_subcalls, 0);
    assert_int_equal(none.max_tokens, 0);
    assert_true(none.max_cost == 0);

    budget_limits half = budget_share(&left, 0.5);
    assert_int_equal(half.max_subcalls, 1);   /* 1.5 rounded down */
    assert_int_equal(half.max_tokens, 350);
    assert_true(fabs(half.max_cost - 0.375) < 1e-12);
    assert_true(half.max_time < 0);
    /* Binary fractions do not lose a call: 0.3 x 10 is 3, 0.7 x 10 is 7. */
    budget_limits ten = {.max_cost = -1, .max_tokens = 10, .max_time = 30, .max_subcalls = 10};
    assert_int_equal(budget_share(&ten, 0.3).max_subcalls, 3);
    assert_int_equal(budget_share(&ten, 0.7).max_tokens, 7);
    assert_int_equal(budget_share(&ten, 1.0).max_subcalls, 10);
    /* A limit the parent does not have stays unlimited; time is never shared out. */
    assert_true(budget_share(&ten, 0.5).max_cost < 0);
    assert_true(budget_share(&ten, 0.5).max_time < 0);
}

static void test_describe_whose(void **state)
{
    budget b = make(0.5, 2000, 10, 3);
    budget_count(&b, 3);
    budget_charge(&b, 1200, 0.125);
    char msg[160];
    budget_describe_as(&b, BUDGET_SUBCALLS, 100, "this child's share", msg, sizeof msg);
    assert_string_equal(msg, "max_subcalls: 3 of this child's share of 3 sub-calls used");
    budget_describe_as(&b, BUDGET_TOKENS, 100, "the whole run's limit", msg, sizeof msg);
    assert_string_equal(msg, "max_tokens: 1200 of the whole run's limit of 2000 tokens used");
    budget_describe_as(&b, BUDGET_COST, 100, "the parent RLM's share", msg, sizeof msg);
    assert_string_equal(msg, "max_cost: $0.125 of the parent RLM's share of $0.5 used");
    budget_describe_as(&b, BUDGET_TIME, 112, "the whole run's limit", msg, sizeof msg);
    assert_string_equal(msg, "max_time: 12.0 s of the whole run's limit of 10 s used");
    /* Without whose: the run's own sentence, as before. */
    budget_describe_as(&b, BUDGET_SUBCALLS, 100, NULL, msg, sizeof msg);
    assert_string_equal(msg, "max_subcalls: 3 sub-calls made of 3");
    budget_describe_as(&b, BUDGET_NONE, 100, "this child's share", msg, sizeof msg);
    assert_string_equal(msg, "no budget exhausted");
}

static void test_describe_refusal_names_the_refused_call(void **state)
{
    budget b = make(0.01, 1000, 100, 20);
    budget_count(&b, 3);
    budget_charge(&b, 50, 0.00055);
    char msg[256];
    assert_int_equal(budget_admit(&b, 17, 400, 0.012, 100), BUDGET_COST);
    budget_describe_refusal(&b, BUDGET_COST, 17, 400, 0.012, 100, NULL, msg, sizeof msg);
    assert_string_equal(msg, "max_cost: a batch of 17 sub-calls (estimated $0.012 of input) would go "
                             "past the limit: $0.00055 spent of $0.01");
    b.exhausted = BUDGET_NONE;
    assert_int_equal(budget_admit(&b, 18, 10, 0, 100), BUDGET_SUBCALLS);
    budget_describe_refusal(&b, BUDGET_SUBCALLS, 18, 10, 0, 100, "this child's share", msg, sizeof msg);
    assert_string_equal(msg, "max_subcalls: a batch of 18 sub-calls would go past this child's share: "
                             "3 of this child's share of 20 sub-calls used");
    /* Spent past the limit: the sentence on what was spent, as before. */
    budget_charge(&b, 10, 0.02);
    b.exhausted = BUDGET_COST;
    budget_describe_refusal(&b, BUDGET_COST, 1, 10, 0.001, 100, NULL, msg, sizeof msg);
    assert_string_equal(msg, "max_cost: $0.02055 spent of $0.01");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_limits),
        cmocka_unit_test(test_cache_counted_apart),
        cmocka_unit_test(test_subcalls_batch_refused_whole),
        cmocka_unit_test(test_subcalls_exact_fit_and_zero),
        cmocka_unit_test(test_tokens_spent_and_estimated),
        cmocka_unit_test(test_cost_and_unknown),
        cmocka_unit_test(test_time_and_final),
        cmocka_unit_test(test_check_counts_nothing),
        cmocka_unit_test(test_left_and_share),
        cmocka_unit_test(test_describe_whose),
        cmocka_unit_test(test_describe_refusal_names_the_refused_call),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

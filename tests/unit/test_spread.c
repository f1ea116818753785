/* Unit tests for spread.c: least-outstanding choice with ties in turn, a
 * URL nobody answers at drained at once and timeouts or 5xx only after a
 * few in a row, the retry sent elsewhere, the probe schedule doubling to its
 * cap, and a URL brought back by a probe or by an answer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "spread.h"

static void test_least_outstanding(void **state)
{
    (void)state;
    spread s;
    assert_int_equal(spread_init(&s, 3), 0);
    /* Three at once: one each, in turn. */
    size_t a = spread_pick(&s, 3), b = spread_pick(&s, 3), c = spread_pick(&s, 3);
    assert_true(a != b && b != c && a != c);
    /* URL b answers: it has the fewest now and gets the next two... */
    double probe;
    assert_int_equal(spread_end(&s, b, SPREAD_ALIVE, &probe), 0);
    assert_int_equal(spread_pick(&s, 3), b);
    /* ...and then all are even again: the next goes to any of them. */
    assert_int_equal(s.urls[a].outstanding + s.urls[b].outstanding + s.urls[c].outstanding, 3);
    spread_free(&s);
}

static void test_unreachable_drains_at_once(void **state)
{
    (void)state;
    spread s;
    assert_int_equal(spread_init(&s, 2), 0);
    size_t first = spread_pick(&s, 2);
    double probe = -1;
    assert_int_equal(spread_end(&s, first, SPREAD_UNREACHABLE, &probe), 1);
    assert_true(probe == SPREAD_PROBE_FIRST);
    assert_int_equal(spread_live(&s), 1);
    /* Nothing goes to it while the other lives, however busy that one is. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(spread_pick(&s, 2), 1 - first);
    /* A second failure of a drained URL schedules no second probe. */
    assert_int_equal(spread_end(&s, first, SPREAD_UNREACHABLE, &probe), 0);
    spread_free(&s);
}

static void test_failures_in_a_row(void **state)
{
    (void)state;
    spread s;
    assert_int_equal(spread_init(&s, 2), 0);
    double probe;
    for (int i = 0; i < SPREAD_FAILURES_TO_DRAIN - 1; i++) {
        spread_pick(&s, 2);
        assert_int_equal(spread_end(&s, 0, SPREAD_FAILED, &probe), 0);
    }
    /* An answer in between starts the count again. */
    assert_int_equal(spread_end(&s, 0, SPREAD_ALIVE, &probe), 0);
    for (int i = 0; i < SPREAD_FAILURES_TO_DRAIN - 1; i++)
        assert_int_equal(spread_end(&s, 0, SPREAD_FAILED, &probe), 0);
    assert_int_equal(spread_live(&s), 2);
    assert_int_equal(spread_end(&s, 0, SPREAD_FAILED, &probe), 1);
    assert_int_equal(spread_live(&s), 1);
    /* Cancelled attempts say nothing. */
    assert_int_equal(spread_end(&s, 1, SPREAD_NEUTRAL, &probe), 0);
    assert_int_equal(spread_live(&s), 1);
    spread_free(&s);
}

static void test_retry_goes_elsewhere(void **state)
{
    (void)state;
    spread s;
    assert_int_equal(spread_init(&s, 3), 0);
    for (int i = 0; i < 6; i++) {
        size_t failed = spread_pick(&s, 3);
        double probe;
        spread_end(&s, failed, SPREAD_FAILED, &probe);
        s.urls[failed].failures = 0;   /* keep all three live */
        size_t next = spread_pick(&s, failed);
        assert_true(next != failed);
        spread_end(&s, next, SPREAD_ALIVE, &probe);
    }
    /* With one URL only, the retry goes back to it. */
    spread one;
    assert_int_equal(spread_init(&one, 1), 0);
    assert_int_equal(spread_pick(&one, 0), 0);
    spread_free(&one);
    spread_free(&s);
}

static void test_probes_back_off_and_revive(void **state)
{
    (void)state;
    spread s;
    assert_int_equal(spread_init(&s, 2), 0);
    double probe;
    spread_pick(&s, 2);
    assert_int_equal(spread_end(&s, 0, SPREAD_UNREACHABLE, &probe), 1);
    double want = SPREAD_PROBE_FIRST;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(spread_probed(&s, 0, 0, &probe), 1);
        want = want * 2 < SPREAD_PROBE_MAX ? want * 2 : SPREAD_PROBE_MAX;
        assert_true(probe == want);
    }
    assert_true(probe == SPREAD_PROBE_MAX);
    /* The probe answers: live again, the next drain starts from the
     * first wait. */
    assert_int_equal(spread_probed(&s, 0, 1, &probe), 0);
    assert_int_equal(spread_live(&s), 2);
    spread_pick(&s, 2);
    assert_int_equal(spread_end(&s, 0, SPREAD_UNREACHABLE, &probe), 1);
    assert_true(probe == SPREAD_PROBE_FIRST);
    spread_free(&s);
}

static void test_all_drained(void **state)
{
    (void)state;
    spread s;
    assert_int_equal(spread_init(&s, 2), 0);
    double probe;
    spread_end(&s, 0, SPREAD_UNREACHABLE, &probe);
    spread_end(&s, 1, SPREAD_UNREACHABLE, &probe);
    assert_int_equal(spread_live(&s), 0);
    /* Requests still go somewhere (to fail with the server's own error),
     * spread by what is outstanding... */
    size_t a = spread_pick(&s, 2), b = spread_pick(&s, 2);
    assert_true(a != b);
    /* ...and an answer from one brings it back; the probe chain then ends. */
    assert_int_equal(spread_end(&s, a, SPREAD_ALIVE, &probe), 0);
    assert_int_equal(spread_live(&s), 1);
    assert_int_equal(spread_probed(&s, a, 0, &probe), 0);
    assert_int_equal(s.urls[a].probing, 0);
    spread_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_least_outstanding),
        cmocka_unit_test(test_unreachable_drains_at_once),
        cmocka_unit_test(test_failures_in_a_row),
        cmocka_unit_test(test_retry_goes_elsewhere),
        cmocka_unit_test(test_probes_back_off_and_revive),
        cmocka_unit_test(test_all_drained),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

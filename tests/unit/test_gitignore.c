/* Unit tests for gitignore.c: the glob engine (`*`, `?`, classes, `**`) and
 * the rule semantics (anchors, directory-only, negation, comments, bases). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "gitignore.h"

static int glob(const char *p, const char *s)
{
    return gitignore_glob_match(p, strlen(p), s, strlen(s));
}

static void test_glob_table(void **state)
{
    static const struct { const char *pattern, *path; int match; } cases[] = {
        {"*.c", "main.c", 1},          {"*.c", "src/main.c", 0},
        {"?.c", "a.c", 1},             {"?.c", "ab.c", 0},
        {"?", "\xc3\xa9", 1},          {"[abc].txt", "b.txt", 1},
        {"[!abc].txt", "b.txt", 0},    {"[^abc].txt", "d.txt", 1},
        {"**/foo", "foo", 1},          {"**/foo", "a/b/foo", 1},
        {"a/**/b", "a/b", 1},          {"a/**/b", "a/x/y/b", 1},
        {"a/**", "a/x/y", 1},          {"a/**", "b/x", 0},
        {"a**b", "axxb", 1},           {"a**b", "ax/xb", 0},
        {"\\*.c", "*.c", 1},           {"\\*.c", "x.c", 0},
        {"build", "build", 1},         {"[", "[", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (glob(cases[i].pattern, cases[i].path) != cases[i].match)
            fail_msg("'%s' vs '%s': expected %d", cases[i].pattern, cases[i].path, cases[i].match);
    }
}

static void test_rules(void **state)
{
    gitignore *g = gitignore_new(100);
    const char text[] = "# a comment\n\n*.log\n!keep.log\n/build/\ndocs/*.tmp\nnode_modules\n"
                        "\\#literal\ntrailing   \n";
    assert_int_equal(gitignore_add_text(g, "", text, strlen(text)), 0);
    assert_int_equal(gitignore_count(g), 7);
    assert_int_equal(gitignore_match(g, "x.log", 0), GITIGNORE_IGNORE);
    assert_int_equal(gitignore_match(g, "deep/x.log", 0), GITIGNORE_IGNORE);
    assert_int_equal(gitignore_match(g, "deep/keep.log", 0), GITIGNORE_INCLUDE);
    assert_int_equal(gitignore_match(g, "build", 1), GITIGNORE_IGNORE);
    assert_int_equal(gitignore_match(g, "build", 0), GITIGNORE_NONE);   /* dir-only */
    assert_int_equal(gitignore_match(g, "src/build", 1), GITIGNORE_NONE); /* anchored */
    assert_int_equal(gitignore_match(g, "docs/a.tmp", 0), GITIGNORE_IGNORE);
    assert_int_equal(gitignore_match(g, "docs/sub/a.tmp", 0), GITIGNORE_NONE);
    assert_int_equal(gitignore_match(g, "a/node_modules", 1), GITIGNORE_IGNORE);
    assert_int_equal(gitignore_match(g, "#literal", 0), GITIGNORE_IGNORE);
    assert_int_equal(gitignore_match(g, "trailing", 0), GITIGNORE_IGNORE);
    assert_int_equal(gitignore_match(g, "main.c", 0), GITIGNORE_NONE);
    gitignore_free(g);
}

static void test_nested_base_and_truncate(void **state)
{
    gitignore *g = gitignore_new(100);
    assert_int_equal(gitignore_add_pattern(g, "*.txt"), 0);
    size_t mark = gitignore_count(g);
    const char sub[] = "!notes.txt\n/local.md\n";
    assert_int_equal(gitignore_add_text(g, "sub/", sub, strlen(sub)), 0);
    assert_int_equal(gitignore_match(g, "sub/notes.txt", 0), GITIGNORE_INCLUDE);
    assert_int_equal(gitignore_match(g, "other/notes.txt", 0), GITIGNORE_IGNORE);
    assert_int_equal(gitignore_match(g, "sub/local.md", 0), GITIGNORE_IGNORE);
    assert_int_equal(gitignore_match(g, "local.md", 0), GITIGNORE_NONE);
    gitignore_truncate(g, mark);
    assert_int_equal(gitignore_match(g, "sub/notes.txt", 0), GITIGNORE_IGNORE);
    gitignore_free(g);
}

static void test_rule_limit(void **state)
{
    gitignore *g = gitignore_new(2);
    const char text[] = "a\nb\nc\n";
    assert_int_equal(gitignore_add_text(g, "", text, strlen(text)), -1);
    assert_int_equal(gitignore_count(g), 2);
    gitignore_free(g);
    gitignore_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_glob_table),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_nested_base_and_truncate),
        cmocka_unit_test(test_rule_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

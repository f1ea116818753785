/* Unit tests for prompt.c: the feedback and nudge messages, the first and
 * next questions, compaction, and the system prompt's coverage of the REPL
 * contract. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prompt.h"
#include "sandbox_policy.h"
#include "util.h"

#include "utf8_expect.h"

static void assert_before(const char *hay, const char *a, const char *b)
{
    const char *pa = strstr(hay, a), *pb = strstr(hay, b);
    if (!pa || !pb || pa >= pb)
        fail_msg("expected [%s] before [%s] in:\n%s", a, b, hay);
}

static void test_first_user(void **state)
{
    (void)state;
    const char *question = "How many lines mention \"error\"?\nCount carefully.";
    char *m = prompt_first_user("DESCRIPTION-HERE\n", question, 12);
    assert_non_null(m);
    assert_non_null(strstr(m, "DESCRIPTION-HERE"));
    assert_non_null(strstr(m, question));
    assert_non_null(strstr(m, "Turn 1 of 12"));
    assert_before(m, "DESCRIPTION-HERE", question);
    free(m);
}

static void test_feedback(void **state)
{
    (void)state;
    prompt_block_result blocks[4] = {
        {"print(1)", "1\n", 0, "x: int", 0, 0, 0},
        {"x = 2", "", 0, NULL, 0, 0, 0},
        {"while True: pass", "TimeoutError", 0, NULL, 1, 1, 1},
        {"1/0", "Traceback...\nZeroDivisionError: division by zero", 0,
         "context: str, context_0: str, counts: dict, f: function", 1, 0, 0},
    };
    char *m = prompt_feedback(blocks, 4, 3, 10, "Your text FINAL was not accepted.");
    assert_non_null(m);
    assert_non_null(strstr(m, "[block 1 of 4 output]\n1\n"));
    assert_non_null(strstr(m, "[block 2 of 4 output]\n(no output)\n"));
    const char *third = strstr(m, "[block 3 of 4 output");
    assert_non_null(third);
    assert_non_null(strstr(third, "timed out"));
    assert_non_null(strstr(third, "restarted"));
    assert_non_null(strstr(third, "variables were lost"));
    assert_non_null(strstr(m, "[block 4 of 4 output; raised an exception]\nTraceback"));
    assert_before(m, "[block 1 of 4", "[block 2 of 4");
    assert_before(m, "[block 2 of 4", "[block 3 of 4");
    assert_before(m, "[block 3 of 4", "[block 4 of 4");
    /* The last block's variables, after the outputs and before the note. */
    assert_null(strstr(m, "x: int"));
    assert_non_null(strstr(m, "\nREPL variables: context: str, context_0: str, counts: dict, "
                              "f: function\n"));
    assert_before(m, "ZeroDivisionError", "REPL variables:");
    assert_before(m, "REPL variables:", "Your text FINAL was not accepted.");
    assert_before(m, "Your text FINAL was not accepted.", "Turn 3 of 10.");
    assert_null(strstr(m, "print(1)")); /* the model wrote the code: not echoed */
    assert_null(strstr(m, "last turn"));
    free(m);
}

static void test_feedback_states(void **state)
{
    (void)state;
    prompt_block_result interrupted = {"f()", NULL, 0, NULL, 0, 1, 0};
    char *m = prompt_feedback(&interrupted, 1, 10, 10, NULL);
    assert_non_null(m);
    assert_non_null(strstr(m, "[block 1 of 1 output; timed out and was interrupted, variables kept]"));
    assert_non_null(strstr(m, "(no output)"));
    assert_non_null(strstr(m, "Turn 10 of 10."));
    assert_non_null(strstr(m, "last turn"));
    free(m);

    prompt_block_result crashed = {"f()", "  \n", 0, NULL, 0, 0, 1};
    m = prompt_feedback(&crashed, 1, 2, 5, "");
    assert_non_null(m);
    assert_non_null(strstr(m, "crashed and was restarted, all variables were lost"));
    assert_non_null(strstr(m, "(no output)"));
    free(m);

    /* output bytes that are not UTF-8 cannot leak into the message */
    prompt_block_result binary = {"x", "ok \xFF\xFE end", 0, NULL, 0, 0, 0};
    m = prompt_feedback(&binary, 1, 2, 5, NULL);
    assert_non_null(m);
    assert_true(valid_utf8(m, strlen(m)));
    assert_non_null(strstr(m, "ok \xEF\xBF\xBD\xEF\xBF\xBD end"));
    free(m);

    m = prompt_feedback(NULL, 0, 2, 5, NULL);
    assert_non_null(m);
    assert_non_null(strstr(m, "Turn 2 of 5."));
    free(m);
}

static void test_nudge_and_last_turn(void **state)
{
    (void)state;
    char *m = prompt_nudge(4, 9);
    assert_non_null(m);
    assert_non_null(strstr(m, "Turn 4 of 9."));
    assert_non_null(strstr(m, "```repl"));
    assert_non_null(strstr(m, "FINAL("));
    free(m);
    m = prompt_last_turn();
    assert_non_null(m);
    assert_non_null(strstr(m, "FINAL("));
    assert_non_null(strstr(m, "FINAL_VAR("));
    free(m);
}

static void test_last_turn_budget(void **state)
{
    (void)state;
    char *m = prompt_last_turn_budget("max_cost: $0.0213 spent of $0.02");
    assert_non_null(m);
    assert_non_null(strstr(m, "(max_cost: $0.0213 spent of $0.02)"));
    assert_non_null(strstr(m, "no more sub-calls"));
    assert_non_null(strstr(m, "FINAL("));
    assert_non_null(strstr(m, "FINAL_VAR("));
    free(m);
    /* Control bytes never reach the model; NULL still gives a message. */
    m = prompt_last_turn_budget("max_time:\n\x1b[2J 5 s");
    assert_non_null(m);
    assert_null(strchr(m, '\x1b'));
    assert_non_null(strstr(m, "(max_time:[2J 5 s)"));
    free(m);
    m = prompt_last_turn_budget(NULL);
    assert_non_null(m);
    assert_non_null(strstr(m, "a limit was reached"));
    free(m);
}

static size_t count_words(const char *s)
{
    size_t n = 0;
    int in_word = 0;
    for (; *s; s++) {
        int space = *s == ' ' || *s == '\n' || *s == '\t';
        if (!space && !in_word)
            n++;
        in_word = !space;
    }
    return n;
}

static void test_system_prompt(void **state)
{
    (void)state;
    char *s = prompt_system(17);
    assert_non_null(s);
    static const char *const names[] = {
        "context", "llm_query(prompt, model=None)", "llm_query_batched(prompts, model=None)",
        "rlm_query(", "rlm_query_batched(", "FINAL(value)", "FINAL_VAR(name)",
        "answer[\"content\"]", "answer[\"ready\"] = True", "{\"content\": \"\", \"ready\": False}",
        "print(SHOW_VARS())",
        "grep(pattern, flags=", "chunks(max_chars=", "search(query, k=10)", "count_tokens(text)",
        "print", "```repl", "17 turns", "in order", "error string", "100,000",
        "truncated", "no files", "no network",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strstr(s, names[i]) && !(strcmp(names[i], "truncated") == 0 && strstr(s, "cut")))
            fail_msg("system prompt does not mention [%s]", names[i]);
    /* Every name and module of the policy table (sandbox_policy.h): the
     * prompt may not hide one the sandbox binds or allows. A numbered name
     * is mentioned with a digit after it (context_0, answer_1). */
    for (size_t i = 0; i < sandbox_repl_names_count; i++) {
        const sandbox_repl_name *n = &sandbox_repl_names[i];
        char word[64];
        int found = 0;
        for (int d = 0; d <= 9 && n->numbered && !found; d++) {
            snprintf(word, sizeof word, "`%s%d`", n->name, d);
            found = strstr(s, word) != NULL;
        }
        for (int form = 0; form < 2 && !n->numbered && !found; form++) {
            snprintf(word, sizeof word, form ? "`%s(" : "`%s`", n->name);
            found = strstr(s, word) != NULL;
        }
        if (!found)
            fail_msg("system prompt does not mention the REPL name %s", n->name);
    }
    const char *imports = strstr(s, "You may import");
    assert_non_null(imports);
    for (size_t i = 0; i < sandbox_allowed_modules_count; i++) {
        char word[32];
        snprintf(word, sizeof word, " %s", sandbox_allowed_modules[i]);
        if (!strstr(imports, word))
            fail_msg("system prompt does not allow import %s", sandbox_allowed_modules[i]);
    }
    /* Small, though it teaches the whole contract: conversations' names too. */
    size_t words = count_words(s);
    if (words < 500 || words > 1000)
        fail_msg("system prompt has %zu words", words);
    assert_true(valid_utf8(s, strlen(s)));
    free(s);
}

/* The system prompt is rlm's template filled; a user's template gets the
 * same placeholders, and nothing else of it changes. */
static void test_system_prompt_template(void **state)
{
    (void)state;
    char *template = prompt_system_template();
    char *filled = prompt_system_fill(template, 17, NULL);
    char *direct = prompt_system(17);
    assert_string_equal(filled, direct);
    for (size_t i = 0; prompt_placeholders[i]; i++)
        if (strcmp(prompt_placeholders[i], "{context_description}") != 0 &&
            !strstr(template, prompt_placeholders[i]))
            fail_msg("the template lacks %s", prompt_placeholders[i]);
    assert_null(strstr(filled, "{max_iterations}"));
    assert_non_null(strstr(filled, "You have 17 turns"));
    free(template);
    free(filled);
    free(direct);

    char *mine = prompt_system_fill("Turns: {max_iterations}. Input: {context_description}\n"
                                    "Modules: {allowed_modules}. Keep {x}, {{y}}, {max_iter and {",
                                    4, "a str of 12 characters\x01");
    assert_non_null(mine);
    assert_non_null(strstr(mine, "Turns: 4. Input: a str of 12 characters\xef\xbf\xbd\n"));
    assert_non_null(strstr(mine, "Modules: re, json, math,"));
    assert_non_null(strstr(mine, " and array. Keep {x}, {{y}}, {max_iter and {"));
    free(mine);
    mine = prompt_system_fill("{context_description}", 1, NULL);
    assert_string_equal(mine, "{context_description}");
    free(mine);
}

/* A later question of a conversation names what carried over and the new input. */
static void test_next_question(void **state)
{
    (void)state;
    char *m = prompt_next_question("A str of 12 characters.", "context_2",
                                   "Not carried over (functions, classes and other objects "
                                   "that are not data): f, Cat.",
                                   "How many cats?", 3, 10);
    assert_non_null(m);
    assert_non_null(strstr(m, "number 3"));
    assert_non_null(strstr(m, "starts afresh"));
    assert_non_null(strstr(m, "functions and classes you defined are not"));
    assert_non_null(strstr(m, "Not carried over (functions, classes and other objects that are "
                              "not data): f, Cat."));
    assert_non_null(strstr(m, "answer_1 .. answer_2"));
    assert_non_null(strstr(m, "`context_2`"));
    assert_non_null(strstr(m, "A str of 12 characters."));
    assert_non_null(strstr(m, "How many cats?"));
    assert_non_null(strstr(m, "Turn 1 of 10."));
    free(m);

    /* No new input, first follow-up: no answers range beyond answer_1. */
    m = prompt_next_question(NULL, NULL, NULL, "And dogs?", 2, 5);
    assert_non_null(m);
    assert_null(strstr(m, "new input"));
    assert_null(strstr(m, "Not carried"));
    assert_non_null(strstr(m, "answer_1 .. answer_1"));
    assert_non_null(strstr(m, "And dogs?"));
    free(m);
}

/* The compacted history keeps the note (control bytes cleaned), the
 * question and the turn label. */
static void test_compaction_messages(void **state)
{
    (void)state;
    char *ask = prompt_compact_request();
    assert_non_null(ask);
    assert_non_null(strstr(ask, "variables"));
    free(ask);
    char *m = prompt_compacted("found 12 cats in `cats`\x01", "How many cats?", 4, 4);
    assert_non_null(m);
    assert_non_null(strstr(m, "found 12 cats in `cats`"));
    assert_null(strchr(m, '\x01'));
    assert_non_null(strstr(m, "How many cats?"));
    assert_non_null(strstr(m, "Turn 4 of 4. This is the last turn"));
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_user),
        cmocka_unit_test(test_feedback),
        cmocka_unit_test(test_feedback_states),
        cmocka_unit_test(test_nudge_and_last_turn),
        cmocka_unit_test(test_last_turn_budget),
        cmocka_unit_test(test_system_prompt),
        cmocka_unit_test(test_system_prompt_template),
        cmocka_unit_test(test_next_question),
        cmocka_unit_test(test_compaction_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

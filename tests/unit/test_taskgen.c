/* Unit tests for the benchmark task generators: determinism, that the gold
 * answer is what the data says, the scoring rules, and that the scripted
 * OOLONG strategies (run by python3 against a stand-in llm_query_batched
 * that answers from the key) reach the gold answer in bounded waves. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "taskgen.h"
#include "util.h"

static char *slurp(const char *dir, const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    buf b;
    buf_init(&b, (size_t)1 << 30);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(buf_append(&b, chunk, n), 0);
    fclose(f);
    if (len)
        *len = b.len;
    return buf_take(&b);
}

static void make_task(const task_spec *spec, char *dir, size_t dirlen)
{
    snprintf(dir, dirlen, "/tmp/rlm-taskgen-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char err[256];
    assert_int_equal(taskgen_write(spec, dir, err, sizeof err), 0);
}

static void remove_task(const char *dir)
{
    static const char *const files[] = {"context.txt", "question.txt", "gold.txt", "key.jsonl", "task.json",
                                        "script.json", "docs.jsonl", "run.py", "run.out"};
    char path[512];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void test_sniah_needle_once_at_its_depth(void **state)
{
    task_spec spec = {.family = TASK_SNIAH, .seed = 7, .tokens = 100000, .depth = 20, .variant = -1};
    char dir[64];
    make_task(&spec, dir, sizeof dir);
    size_t len;
    char *ctx = slurp(dir, "context.txt", &len);
    char *gold = slurp(dir, "gold.txt", NULL);
    char *question = slurp(dir, "question.txt", NULL);
    assert_true(len >= 400000 && len < 401000);
    gold[strcspn(gold, "\n")] = '\0';
    const char *needle = strstr(ctx, "special magic numbers for ");
    assert_non_null(needle);
    assert_null(strstr(needle + 1, "special magic numbers for "));
    /* Depth 20 of 0..39: just past the middle. */
    double at = (double)(needle - ctx) / (double)len;
    assert_true(at > 0.49 && at < 0.53);
    char expect[128];
    const char *key_start = needle + strlen("special magic numbers for ");
    size_t key_len = strcspn(key_start, " ");
    snprintf(expect, sizeof expect, "is: %s.", gold);
    assert_non_null(strstr(needle, expect));
    assert_non_null(memmem(question, strlen(question), key_start, key_len));
    char answer[64];
    snprintf(answer, sizeof answer, "The number is %s.", gold);
    assert_true(taskgen_score("contains", gold, answer) == 1);
    assert_true(taskgen_score("contains", gold, "The number is 0000000.") == 0);
    free(ctx);
    free(gold);
    free(question);
    remove_task(dir);
}

static void test_same_seed_same_bytes(void **state)
{
    task_spec spec = {.family = TASK_OOLONG, .seed = 42, .lines = 3000, .depth = -1, .variant = -1};
    char a[64], b[64];
    make_task(&spec, a, sizeof a);
    make_task(&spec, b, sizeof b);
    size_t la, lb;
    char *ca = slurp(a, "context.txt", &la), *cb = slurp(b, "context.txt", &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(ca, cb, la);
    free(ca);
    free(cb);
    spec.seed = 43;
    char c[64];
    make_task(&spec, c, sizeof c);
    char *cc = slurp(c, "context.txt", &lb);
    ca = slurp(a, "context.txt", &la);
    assert_true(la != lb || memcmp(ca, cc, la) != 0);
    free(ca);
    free(cc);
    remove_task(a);
    remove_task(b);
    remove_task(c);
}

/* Counts labels from the answer key, the way the oracle will see them. */
static void count_key(const char *dir, size_t counts[6], size_t *lines)
{
    char *key = slurp(dir, "key.jsonl", NULL);
    *lines = 0;
    memset(counts, 0, 6 * sizeof counts[0]);
    for (char *line = key; *line;) {
        char *nl = strchr(line, '\n');
        *nl = '\0';
        json_t *obj = json_loads(line, 0, NULL);
        assert_non_null(obj);
        const char *label = json_string_value(json_object_get(obj, "label"));
        for (int i = 0; i < 6; i++)
            if (strcmp(label, taskgen_labels[i]) == 0)
                counts[i]++;
        json_decref(obj);
        (*lines)++;
        line = nl + 1;
    }
    free(key);
}

static void test_oolong_gold_matches_the_key(void **state)
{
    for (int variant = 0; variant < 3; variant++) {
        task_spec spec = {.family = TASK_OOLONG, .seed = 5, .lines = 5000, .depth = -1, .variant = variant};
        char dir[64];
        make_task(&spec, dir, sizeof dir);
        size_t counts[6], lines;
        count_key(dir, counts, &lines);
        assert_int_equal(lines, 5000);
        char *gold = slurp(dir, "gold.txt", NULL);
        char *question = slurp(dir, "question.txt", NULL);
        gold[strcspn(gold, "\n")] = '\0';
        if (variant == 0) {
            int asked = -1;
            for (int i = 0; i < 6; i++) {
                char quoted[64];
                snprintf(quoted, sizeof quoted, "label '%s'", taskgen_labels[i]);
                if (strstr(question, quoted))
                    asked = i;
            }
            assert_true(asked >= 0);
            char want[32];
            snprintf(want, sizeof want, "%zu", counts[asked]);
            assert_string_equal(gold, want);
        } else {
            int best = 0;
            for (int i = 1; i < 6; i++)
                if (variant == 1 ? counts[i] > counts[best] : counts[i] < counts[best])
                    best = i;
            assert_string_equal(gold, taskgen_labels[best]);
        }
        /* Every context line has the documented shape. */
        char *ctx = slurp(dir, "context.txt", NULL);
        assert_true(strncmp(ctx, "Date: ", 6) == 0);
        assert_non_null(strstr(ctx, " || User: "));
        assert_non_null(strstr(ctx, " || Instance: "));
        free(ctx);
        free(gold);
        free(question);
        remove_task(dir);
    }
}

static void test_scoring(void **state)
{
    assert_true(taskgen_score("exact", "numeric", "  Numeric.\n") == 1);
    assert_true(taskgen_score("exact", "numeric", "location") == 0);
    assert_true(taskgen_score("numeric", "100", "The answer is 100.") == 1);
    assert_true(taskgen_score("numeric", "100", "about 102") > 0.56 && taskgen_score("numeric", "100", "about 102") < 0.57);
    assert_true(taskgen_score("numeric", "100", "no idea") == 0);
    assert_true(taskgen_score("contains", "8497121", "It is 8497121.") == 1);
    assert_true(taskgen_score("contains", "8497121", "It is 8497122.") == 0);
    assert_true(taskgen_score("f1", "(1, 2)\n(3, 4)", "(2, 1) and (3,4)") == 1);
    double half = taskgen_score("f1", "(1, 2)\n(3, 4)", "(1, 2)\n(5, 6)");
    assert_true(half > 0.49 && half < 0.51);
    assert_true(taskgen_score("f1", "(1, 2)", "(1, 2) (1, 2) (1, 2)") == 1);
    assert_true(taskgen_score("f1", "(1, 2)", "1 2") == 0);
    assert_true(taskgen_score("exact", "x", NULL) == 0);
    assert_int_equal(taskgen_family_parse("pairs"), TASK_PAIRS);
    assert_int_equal(taskgen_family_parse("nope"), -1);
}

static void test_pairs_gold_is_scored_perfect_against_itself(void **state)
{
    task_spec spec = {.family = TASK_PAIRS, .seed = 9, .lines = 2000, .depth = -1, .variant = -1};
    char dir[64];
    make_task(&spec, dir, sizeof dir);
    char *gold = slurp(dir, "gold.txt", NULL);
    assert_non_null(strchr(gold, '('));
    assert_true(taskgen_score("f1", gold, gold) == 1);
    free(gold);
    remove_task(dir);
    char err[256];
    assert_int_equal(taskgen_write(&spec, "/proc/no-such-dir/x", err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create"));
}

/* Runs the turn-1 code of dir's script.json in python3 with `context` the
 * task's input and llm_query_batched answering every prompt's lines from the
 * key, as fakelm's oracle does. Returns what it printed last: a JSON object
 * {"result": ..., "batches": [batch sizes], "lines": [lines per prompt]}. */
static json_t *run_strategy(const char *dir)
{
    static const char harness[] =
        "import json, sys\n"
        "d = sys.argv[1]\n"
        "key = {}\n"
        "for line in open(d + '/key.jsonl'):\n"
        "    o = json.loads(line)\n"
        "    key[o['instance']] = o['label']\n"
        "code = [r['reply'] for r in json.load(open(d + '/script.json'))['rules']\n"
        "        if r['match'] == '(?i)turn 1 of'][0]\n"
        "code = code.split('```repl\\n', 1)[1].rsplit('```', 1)[0]\n"
        "context = open(d + '/context.txt').read()\n"
        "batches, lines = [], []\n"
        "def llm_query_batched(prompts):\n"
        "    batches.append(len(prompts))\n"
        "    out = []\n"
        "    for p in prompts:\n"
        "        body = p.split('\\n\\n', 1)[1].split('\\n')\n"
        "        lines.append(len(body))\n"
        "        out.append('\\n'.join(key[l.split(' || Instance: ')[1]] for l in body))\n"
        "    return out\n"
        "env = {'context': context, 'llm_query_batched': llm_query_batched}\n"
        "exec(code, env)\n"
        "print(json.dumps({'result': env['result'], 'batches': batches, 'lines': lines}))\n";
    char script[512], out[512];
    snprintf(script, sizeof script, "%s/run.py", dir);
    snprintf(out, sizeof out, "%s/run.out", dir);
    FILE *f = fopen(script, "w");
    assert_non_null(f);
    assert_true(fputs(harness, f) >= 0);
    assert_int_equal(fclose(f), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || dup2(fd, 1) < 0)
            _exit(127);
        execlp("python3", "python3", script, dir, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("python3 %s failed (status %d)", script, status);
    size_t len;
    char *text = slurp(dir, "run.out", &len);
    while (len > 0 && text[len - 1] == '\n')
        text[--len] = '\0';
    const char *last = strrchr(text, '\n');
    json_t *root = json_loads(last ? last + 1 : text, 0, NULL);
    free(text);
    assert_non_null(root);
    return root;
}

/* The OOLONG strategies stream: 64,150 lines make 642 prompts of 100 lines
 * (the last of 50) sent as a wave of 640 and a wave of 2, never all at
 * once, and the counts they add up over the waves give the gold answer, for
 * every question kind and for OOLONG-Pairs. */
static void test_oolong_strategy_streams_in_waves(void **state)
{
    (void)state;
    for (int kind = 0; kind < 5; kind++) {
        task_spec spec = {.family = kind < 4 ? TASK_OOLONG : TASK_PAIRS, .seed = 3, .lines = 64150,
                          .depth = -1, .variant = kind < 4 ? kind : -1};
        char dir[64];
        make_task(&spec, dir, sizeof dir);
        json_t *run = run_strategy(dir);
        json_t *batches = json_object_get(run, "batches"), *lines = json_object_get(run, "lines");
        assert_int_equal(json_array_size(batches), 2);
        assert_int_equal(json_integer_value(json_array_get(batches, 0)), 640);
        assert_int_equal(json_integer_value(json_array_get(batches, 1)), 2);
        assert_int_equal(json_array_size(lines), 642);
        for (size_t i = 0; i < 641; i++)
            assert_int_equal(json_integer_value(json_array_get(lines, i)), 100);
        assert_int_equal(json_integer_value(json_array_get(lines, 641)), 50);
        size_t gold_len;
        char *gold = slurp(dir, "gold.txt", &gold_len);
        while (gold_len > 0 && gold[gold_len - 1] == '\n')
            gold[--gold_len] = '\0';
        const char *result = json_string_value(json_object_get(run, "result"));
        assert_non_null(result);
        const char *scoring = kind == 0 || kind == 3 ? "numeric" : kind < 4 ? "exact" : "f1";
        if (taskgen_score(scoring, gold, result) != 1)
            fail_msg("kind %d: result \"%.200s\" against gold \"%.200s\"", kind, result, gold);
        free(gold);
        json_decref(run);
        remove_task(dir);
    }
}

/* docqa: 1,000 documents under their header lines and in docs.jsonl; the gold
 * answer is reached by following the question's chain through the key, each
 * hop's fact stated once, in its own document, with lookalike negatives. */
static void test_docqa_chain_leads_to_gold(void **state)
{
    (void)state;
    char dir[64];
    task_spec spec = {.family = TASK_DOCQA, .seed = 5, .tokens = 65536, .depth = -1, .variant = -1};
    make_task(&spec, dir, sizeof dir);
    char *context = slurp(dir, "context.txt", NULL), *gold = slurp(dir, "gold.txt", NULL);
    char *question = slurp(dir, "question.txt", NULL), *docs = slurp(dir, "docs.jsonl", NULL);
    size_t headers = 0, doc_lines = 0;
    for (const char *p = context; (p = strstr(p, "=== Document ")); p++)
        headers++;
    for (const char *p = docs; (p = strchr(p, '\n')); p++)
        doc_lines++;
    assert_int_equal(headers, 1000);
    assert_int_equal(doc_lines, 1000);
    gold[strcspn(gold, "\n")] = '\0';

    /* Walk the chain: the question ends "... of START?"; relations outermost first. */
    char path[512];
    snprintf(path, sizeof path, "%s/key.jsonl", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    json_t *facts = json_array();
    char line[1024];
    while (fgets(line, sizeof line, f))
        json_array_append_new(facts, json_loads(line, 0, NULL));
    fclose(f);
    const char *q = strstr(question, "?");
    assert_non_null(q);
    const char *start = q;
    while (start > question && start[-1] != ' ')
        start--;
    char entity[64];
    snprintf(entity, sizeof entity, "%.*s", (int)(q - start), start);
    size_t hops = 0;
    long docs_used[8];
    /* Relations innermost first: scan "the X of" backwards through the question. */
    for (const char *end = start; end > question + 8;) {
        const char *of = end - 4; /* " of " before the entity or the next "the" */
        if (strncmp(of, " of ", 4) != 0)
            break;
        const char *rel = of;
        while (rel > question && rel[-1] != ' ')
            rel--;
        char relation[32];
        snprintf(relation, sizeof relation, "%.*s", (int)(of - rel), rel);
        json_t *fact, *hit = NULL;
        size_t i;
        json_array_foreach(facts, i, fact) {
            if (strcmp(json_string_value(json_object_get(fact, "subject")), entity) == 0 &&
                strcmp(json_string_value(json_object_get(fact, "relation")), relation) == 0)
                hit = fact;
        }
        assert_non_null(hit);
        const char *sentence = json_string_value(json_object_get(hit, "fact"));
        const char *at = strstr(context, sentence);
        assert_non_null(at);
        assert_null(strstr(at + 1, sentence));
        assert_true(hops < 8);
        docs_used[hops] = (long)json_integer_value(json_object_get(hit, "doc"));
        for (size_t k = 0; k < hops; k++)
            assert_true(docs_used[k] != docs_used[hops]);
        hops++;
        snprintf(entity, sizeof entity, "%s", json_string_value(json_object_get(hit, "object")));
        end = rel - 4; /* before "the " */
        if (end < question || strncmp(end, "the ", 4) != 0)
            break;
    }
    assert_true(hops >= 3 && hops <= 6);
    assert_string_equal(entity, gold);
    /* Every hop has a lookalike negative sharing the relation. */
    size_t lookalikes = 0, i;
    json_t *fact;
    json_array_foreach(facts, i, fact) {
        const char *subject = json_string_value(json_object_get(fact, "subject"));
        json_t *other;
        size_t j;
        json_array_foreach(facts, j, other) {
            const char *s2 = json_string_value(json_object_get(other, "subject"));
            if (i != j && strlen(s2) > strlen(subject) && strncmp(s2, subject, strlen(subject)) == 0 &&
                strcmp(json_string_value(json_object_get(fact, "relation")),
                       json_string_value(json_object_get(other, "relation"))) == 0)
                lookalikes++;
        }
    }
    assert_true(lookalikes >= hops);
    assert_true(taskgen_score("exact", gold, entity) == 1.0);
    json_decref(facts);
    free(context);
    free(gold);
    free(question);
    free(docs);
    remove_task(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniah_needle_once_at_its_depth),
        cmocka_unit_test(test_same_seed_same_bytes),
        cmocka_unit_test(test_oolong_gold_matches_the_key),
        cmocka_unit_test(test_scoring),
        cmocka_unit_test(test_oolong_strategy_streams_in_waves),
        cmocka_unit_test(test_pairs_gold_is_scored_perfect_against_itself),
        cmocka_unit_test(test_docqa_chain_leads_to_gold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
